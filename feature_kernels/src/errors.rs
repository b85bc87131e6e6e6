//! The binding's exceptions: every Rust error becomes a Python one here, and only here.

use altscore_kernels::KernelError;
use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::PyErr;

create_exception!(
    _core,
    FeatureError,
    PyValueError,
    "Input data broke the feature spec. args: (message, [(field, description), ...]); from the \
     column path also a third, {'bad_rows': int, 'n_rows': int, 'per_column': [(column, \
     problems)], 'listed': [(column, row from 0, reason code, description)]}."
);
create_exception!(
    _core,
    PlanError,
    PyValueError,
    "The feature plan is inconsistent."
);
create_exception!(
    _core,
    ModelFormatError,
    PyValueError,
    "A tree-ensemble model is malformed or uses something the native evaluator does not support."
);
create_exception!(
    _core,
    StoreError,
    PyOSError,
    "The online feature store failed, timed out or has no active version."
);
create_exception!(
    _core,
    LogWriteError,
    PyOSError,
    "The evaluation log could not be written (args: (message, records written, records in all))."
);

/// The most violations of one column a column-path error lists (the rest are counted).
pub const MAX_COLUMN_VIOLATIONS: usize = 20;

pub fn to_py_err(err: KernelError) -> PyErr {
    match err {
        KernelError::InvalidRows(ref bad) => {
            let mut pairs: Vec<(String, String)> = bad
                .listed
                .iter()
                .map(|(row, v)| (v.field.clone(), format!("row {row}: {}", v.description)))
                .collect();
            for (column, count) in &bad.per_column {
                if *count > MAX_COLUMN_VIOLATIONS {
                    pairs.push((
                        column.clone(),
                        format!("{count} bad rows in all (first {MAX_COLUMN_VIOLATIONS} listed)"),
                    ));
                }
            }
            let listed: Vec<(String, usize, &'static str, String)> = bad
                .listed
                .iter()
                .map(|(row, v)| {
                    (
                        v.field.clone(),
                        *row,
                        v.kind.reason(),
                        v.description.to_string(),
                    )
                })
                .collect();
            let details = Python::attach(|py| -> PyResult<Py<PyDict>> {
                let d = PyDict::new(py);
                d.set_item("bad_rows", bad.bad_rows)?;
                d.set_item("n_rows", bad.n_rows)?;
                d.set_item("per_column", bad.per_column.clone())?;
                d.set_item("listed", listed)?;
                Ok(d.unbind())
            });
            match details {
                Ok(details) => FeatureError::new_err((err.to_string(), pairs, details)),
                Err(e) => e,
            }
        }
        KernelError::Plan(msg) => PlanError::new_err(msg),
        KernelError::Shape(msg) | KernelError::Policy(msg) => PyValueError::new_err(msg),
        KernelError::Model(_) => ModelFormatError::new_err(err.to_string()),
        KernelError::Invalid(ref v) => {
            let pairs: Vec<(String, String)> = v
                .iter()
                .map(|x| (x.field.clone(), x.description.to_string()))
                .collect();
            FeatureError::new_err((err.to_string(), pairs))
        }
    }
}
