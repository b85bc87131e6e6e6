//! The binding's exceptions: every Rust error becomes a Python one here, and only here.

use altscore_kernels::KernelError;
use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::PyErr;

create_exception!(
    _core,
    FeatureError,
    PyValueError,
    "Input data broke the feature spec. args: (message, [(field, description), ...])."
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

pub fn to_py_err(err: KernelError) -> PyErr {
    match err {
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
