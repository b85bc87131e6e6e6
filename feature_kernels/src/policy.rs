//! The score policy, the logistic function and the routing hash, read from Python (one
//! implementation, in `altscore-kernels`).

use altscore_kernels::policy::{logistic as kernel_logistic, Policy};
use altscore_kernels::routing;
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;

use crate::errors::to_py_err;

/// PD -> points and decision (see `credit_core.ScoringPolicy` for the rule).
#[pyclass(module = "feature_kernels._core", name = "ScorePolicy", frozen)]
pub struct ScorePolicy {
    pub inner: Policy,
}

#[pymethods]
impl ScorePolicy {
    /// Raises `ValueError` for parameters that make no policy.
    #[new]
    fn new(
        base_score: f64,
        base_odds: f64,
        pdo: f64,
        approve_below: f64,
        decline_from: f64,
    ) -> PyResult<Self> {
        Policy::new(base_score, base_odds, pdo, approve_below, decline_from)
            .map(|inner| Self { inner })
            .map_err(to_py_err)
    }

    #[getter]
    fn factor(&self) -> f64 {
        self.inner.factor()
    }

    #[getter]
    fn offset(&self) -> f64 {
        self.inner.offset()
    }

    /// Points for a PD.
    fn score(&self, pd: f64) -> i32 {
        self.inner.score(pd)
    }

    /// The decision for a PD: "approve", "review" or "decline".
    fn decide(&self, pd: f64) -> &'static str {
        self.inner.decision(pd).name()
    }

    /// `score` of many PDs.
    fn scores<'py>(
        &self,
        py: Python<'py>,
        pd: PyReadonlyArray1<'py, f64>,
    ) -> Bound<'py, PyArray1<i32>> {
        let pd = pd.as_array();
        pd.iter()
            .map(|p| self.inner.score(*p))
            .collect::<Vec<_>>()
            .into_pyarray(py)
    }

    /// The `credit.scoring.v1.Decision` numbers of many PDs (APPROVE 1, REVIEW 2, DECLINE 3).
    fn decision_codes<'py>(
        &self,
        py: Python<'py>,
        pd: PyReadonlyArray1<'py, f64>,
    ) -> Bound<'py, PyArray1<i32>> {
        let pd = pd.as_array();
        pd.iter()
            .map(|p| self.inner.decision(*p).code())
            .collect::<Vec<_>>()
            .into_pyarray(py)
    }
}

/// The logistic function of each margin: the PD the server answers for it.
#[pyfunction]
pub fn logistic<'py>(
    py: Python<'py>,
    margin: PyReadonlyArray1<'py, f64>,
) -> Bound<'py, PyArray1<f64>> {
    margin
        .as_array()
        .iter()
        .map(|m| kernel_logistic(*m))
        .collect::<Vec<_>>()
        .into_pyarray(py)
}

/// The sticky routing point of an id in [0, 1): an applicant whose id falls below the
/// challenger share meets the challenger (the same on every process, host and restart).
#[pyfunction]
pub fn routing_bucket(key: &str) -> f64 {
    routing::bucket(key)
}
