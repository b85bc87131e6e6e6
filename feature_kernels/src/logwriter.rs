//! The evaluation log's writer and line encoders, for Python (`credit_core.evaluation`): the
//! data plane's implementation, read through the binding.

use std::path::PathBuf;
use std::time::Duration;

use altscore_kernels::fmt::push_py_float;
use altscore_server::log::{
    model_fields, push_outcome, push_prediction, LogConfig, LogError, OutcomeLine, PredictionLine,
    RecordLog, Target,
};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::LogWriteError;

fn to_py(e: LogError) -> PyErr {
    match &e {
        LogError::Write { written, count, .. } => {
            LogWriteError::new_err((e.to_string(), *written, *count))
        }
        LogError::Closed { .. } => PyRuntimeError::new_err(e.to_string()),
        LogError::Bad { .. } => PyValueError::new_err(e.to_string()),
    }
}

/// A buffered appender of one record kind to its own segment files in `directory`, or to the
/// Redis Stream `stream` = `(url, key, max_len)` (see `altscore_server::log`).
#[pyclass(module = "feature_kernels._core", name = "LogWriter", frozen)]
pub struct LogWriter {
    inner: RecordLog,
}

#[pymethods]
impl LogWriter {
    #[new]
    #[pyo3(signature = (directory, kind, *, flush_records, flush_seconds, max_segment_bytes, max_pending, fsync, stream=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        directory: Option<PathBuf>,
        kind: &str,
        flush_records: usize,
        flush_seconds: f64,
        max_segment_bytes: u64,
        max_pending: usize,
        fsync: bool,
        stream: Option<(String, String, u64)>,
    ) -> PyResult<Self> {
        if !(flush_seconds.is_finite() && flush_seconds > 0.0) {
            return Err(PyValueError::new_err(
                "flush_seconds and max_segment_bytes must be positive",
            ));
        }
        let config = LogConfig {
            flush_records,
            flush_seconds: Duration::from_secs_f64(flush_seconds),
            max_segment_bytes,
            max_pending,
            fsync,
            ..LogConfig::default()
        };
        let target = match (directory, stream) {
            (Some(directory), None) => Target::Segments(directory),
            (None, Some((url, key, max_len))) => Target::Stream { url, key, max_len },
            _ => {
                return Err(PyValueError::new_err(
                    "give a directory or a stream, not both",
                ))
            }
        };
        RecordLog::open_target(target, kind, config, None)
            .map(|inner| Self { inner })
            .map_err(to_py)
    }

    /// Buffer `count` whole lines; all or none when `whole`, else as many as fit. Returns how
    /// many were taken (the rest are dropped and counted).
    fn write(&self, py: Python<'_>, lines: &[u8], count: usize, whole: bool) -> PyResult<usize> {
        py.detach(|| self.inner.write(lines, count, whole))
            .map_err(to_py)
    }

    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.flush()).map_err(to_py)
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.close()).map_err(to_py)
    }

    #[getter]
    fn dropped(&self) -> u64 {
        self.inner.dropped()
    }

    #[getter]
    fn written(&self) -> u64 {
        self.inner.written()
    }

    #[getter]
    fn segment(&self) -> Option<PathBuf> {
        self.inner.segment()
    }
}

/// One prediction's log line (as the data plane writes it).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (ts, request_id, applicant_id, model_name, variant, model_version, pd, served, score, decision, reasons, degraded, imputed, features, predictor="native"))]
pub fn prediction_line<'py>(
    py: Python<'py>,
    ts: f64,
    request_id: &str,
    applicant_id: &str,
    model_name: &str,
    variant: &str,
    model_version: &str,
    pd: f64,
    served: bool,
    score: i32,
    decision: &str,
    reasons: Vec<String>,
    degraded: bool,
    imputed: Vec<String>,
    features: Vec<f32>,
    predictor: &str,
) -> Bound<'py, PyBytes> {
    let (mut out, mut time) = (Vec::new(), Vec::new());
    push_py_float(&mut time, ts);
    let fields = model_fields(model_name, variant, model_version, predictor);
    let line = PredictionLine {
        request_id,
        applicant_id,
        model: &fields,
        pd,
        served,
        score,
        decision,
        degraded,
        features: &features,
    };
    push_prediction(
        &mut out,
        &time,
        &line,
        reasons.iter().map(String::as_str),
        imputed.iter().map(String::as_str),
    );
    PyBytes::new(py, &out)
}

/// One outcome's log line (as the data plane writes it).
#[pyfunction]
#[pyo3(signature = (ts, request_id, applicant_id, defaulted, observed_at, correction=false, reporter=""))]
#[allow(clippy::fn_params_excessive_bools, clippy::too_many_arguments)]
pub fn outcome_line<'py>(
    py: Python<'py>,
    ts: f64,
    request_id: &str,
    applicant_id: &str,
    defaulted: bool,
    observed_at: Option<f64>,
    correction: bool,
    reporter: &str,
) -> Bound<'py, PyBytes> {
    let mut out = Vec::new();
    push_outcome(
        &mut out,
        &OutcomeLine {
            ts,
            request_id,
            applicant_id,
            defaulted,
            observed_at,
            correction,
            reporter,
        },
    );
    PyBytes::new(py, &out)
}
