//! The crate's one error type. It becomes a Python exception only in `lib.rs`.

use std::fmt;

/// One bad field: where it is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// `numeric.<input>` or `categorical.<input>` (row path) or the column name (column path).
    pub field: String,
    pub description: String,
}

impl Violation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The plan (a normalised feature spec) is inconsistent.
    #[error("invalid feature plan: {0}")]
    Plan(String),
    /// Input data broke the spec; every bad field is listed.
    #[error("{} invalid field(s): {}", .0.len(), join(.0))]
    Invalid(Vec<Violation>),
    /// Array shapes or lengths do not fit together.
    #[error("shape error: {0}")]
    Shape(String),
    /// A tree-ensemble model is malformed or uses something the native evaluator does not support.
    #[error("unsupported or malformed XGBoost model: {0}")]
    Model(String),
}

fn join(v: &[Violation]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
