//! The crate's error types: one enum of violation kinds (each with its machine-readable reason)
//! and one error enum. They become Python exceptions or gRPC statuses only at the edges.

use std::borrow::Cow;
use std::fmt;

/// Why a field is bad. `reason()` is the machine-readable code a client matches on
/// (`google.rpc.BadRequest.FieldViolation.reason`); the description says the same in English.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// A name the model's spec does not have.
    UnknownFeature,
    /// A value of the wrong type, or an input sent in the other map.
    WrongType,
    /// A required input is absent.
    MissingRequired,
    /// NaN or an infinity where a number is needed.
    NotFinite,
    /// A fraction for an integer input.
    NotInteger,
    /// Outside the spec's allowed range.
    OutOfRange,
    /// A category the model does not know, under an `error` policy.
    UnknownCategory,
    /// `numeric_values` together with `numeric`, or with the wrong number of values.
    BadNumericValues,
    /// `numeric_values` built for another layout than the served model's.
    NumericLayoutMismatch,
    /// An empty id where one is needed.
    EmptyId,
    /// A request id used twice in one batch or stream.
    DuplicateId,
    /// A request or applicant id longer than the server accepts.
    IdTooLong,
    /// A batch with no items, or with more than the limit.
    BadBatchSize,
    /// Bytes that are not a valid protobuf message of the expected type.
    Malformed,
    /// A value the feature store provides, sent by the request where the spec forbids it.
    FromFeatureStore,
    /// A time that is not a Unix time in seconds.
    BadTime,
    /// A column of the wrong length, absent or not an input (column path).
    BadColumn,
    /// An Open Inference Protocol tensor of the wrong shape, sent twice, or whose contents do
    /// not match its shape and data type.
    BadTensor,
    /// Stands for the violations not listed (the list is capped).
    TooManyViolations,
}

impl ViolationKind {
    /// The reason code (`UPPER_SNAKE_CASE`, stable across versions).
    #[must_use]
    pub fn reason(self) -> &'static str {
        match self {
            Self::UnknownFeature => "UNKNOWN_FEATURE",
            Self::WrongType => "WRONG_TYPE",
            Self::MissingRequired => "MISSING_REQUIRED",
            Self::NotFinite => "NOT_FINITE",
            Self::NotInteger => "NOT_INTEGER",
            Self::OutOfRange => "OUT_OF_RANGE",
            Self::UnknownCategory => "UNKNOWN_CATEGORY",
            Self::BadNumericValues => "BAD_NUMERIC_VALUES",
            Self::NumericLayoutMismatch => "NUMERIC_LAYOUT_MISMATCH",
            Self::EmptyId => "EMPTY_ID",
            Self::DuplicateId => "DUPLICATE_ID",
            Self::IdTooLong => "ID_TOO_LONG",
            Self::BadBatchSize => "BAD_BATCH_SIZE",
            Self::Malformed => "MALFORMED",
            Self::FromFeatureStore => "FROM_FEATURE_STORE",
            Self::BadTime => "BAD_TIME",
            Self::BadColumn => "BAD_COLUMN",
            Self::BadTensor => "BAD_TENSOR",
            Self::TooManyViolations => "TOO_MANY_VIOLATIONS",
        }
    }
}

/// One bad field: where it is, what kind of problem, and the problem in English.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// `numeric.<input>` or `categorical.<input>` (row path) or the column name (column path);
    /// the server prefixes `applicant.` and `requests[i].`.
    pub field: String,
    pub kind: ViolationKind,
    pub description: Cow<'static, str>,
}

impl Violation {
    pub fn new(
        field: impl Into<String>,
        kind: ViolationKind,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            field: field.into(),
            kind,
            description: description.into(),
        }
    }

    /// The same violation under `prefix` (`applicant.`, `requests[3].` ...).
    #[must_use]
    pub fn prefixed(mut self, prefix: &str) -> Self {
        if !prefix.is_empty() {
            self.field.insert_str(0, prefix);
        }
        self
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// Rows of a column batch (the training path) that broke the spec.
#[derive(Debug)]
pub struct BadRows {
    /// The first problems of each column (a capped number per column), in the order met:
    /// (row from 0, the violation; its field is the column).
    pub listed: Vec<(usize, Violation)>,
    /// Every column with a problem and how many problems it has (one per bad cell), by name.
    pub per_column: Vec<(String, usize)>,
    /// Rows with at least one problem.
    pub bad_rows: usize,
    /// Rows in the batch.
    pub n_rows: usize,
}

impl fmt::Display for BadRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} rows break the spec (",
            self.bad_rows, self.n_rows
        )?;
        for (i, (column, count)) in self.per_column.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{column}: {count}")?;
        }
        write!(f, ")")
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
    /// Rows of a column batch broke the spec (the first problems per column are listed).
    #[error("{0}")]
    InvalidRows(BadRows),
    /// Array shapes or lengths do not fit together.
    #[error("shape error: {0}")]
    Shape(String),
    /// A tree-ensemble model is malformed or uses something the native evaluator does not support.
    #[error("unsupported or malformed XGBoost model: {0}")]
    Model(String),
    /// Score-policy parameters that make no policy.
    #[error("invalid score policy: {0}")]
    Policy(String),
}

fn join(v: &[Violation]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
