//! `feature_kernels._core`: the one PyO3 binding of altscore.
//!
//! - the kernels' Python face, used by training and drift: [`plan::FeaturePlan`] (column and
//!   row paths), [`ensemble::PyTreeEnsemble`], [`policy`] (score policy, logistic, routing hash);
//! - the evaluation log's writer ([`logwriter`]), the one implementation of its format;
//! - the data plane's handle for the control plane ([`plane::DataPlane`],
//!   [`plane::PyServingModel`]) and the feature-store client ([`plane::FeatureStoreClient`]).
//!
//! Rust errors become Python exceptions only in [`errors`].

mod ensemble;
mod errors;
mod logger;
mod logwriter;
mod plan;
mod plane;
mod policy;

use altscore_kernels::plan::InputKind;
use pyo3::prelude::*;

/// Kinds of inputs, as the spec names them (for the Python side's checks).
#[pyfunction]
fn input_kinds() -> Vec<&'static str> {
    [
        InputKind::Number,
        InputKind::Integer,
        InputKind::Categorical,
    ]
    .iter()
    .map(|k| match k {
        InputKind::Number => "number",
        InputKind::Integer => "integer",
        InputKind::Categorical => "categorical",
    })
    .collect()
}

/// The kernels' case folding (`case_fold: true` in a spec) of each value, `None` kept: what
/// training counts `frequency_rank` categories on, by the rule the plan matches rows with.
#[pyfunction]
fn fold_case(values: Vec<Option<String>>) -> Vec<Option<String>> {
    values
        .into_iter()
        .map(|v| v.map(|s| altscore_kernels::kernels::categorical::fold_case(&s).into_owned()))
        .collect()
}

/// Send the Rust side's log lines to stderr at `level` (error, warning, info, debug), as text
/// or (`json`) one JSON object per line.
#[pyfunction]
#[pyo3(signature = (level, *, json = false))]
fn init_logging(level: &str, json: bool) {
    logger::install(level, json);
}

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<plan::FeaturePlan>()?;
    m.add_class::<ensemble::PyTreeEnsemble>()?;
    m.add_class::<policy::ScorePolicy>()?;
    m.add_class::<logwriter::LogWriter>()?;
    m.add_class::<plane::DataPlane>()?;
    m.add_class::<plane::PyServingModel>()?;
    m.add_class::<plane::FeatureStoreClient>()?;
    m.add_function(wrap_pyfunction!(input_kinds, m)?)?;
    m.add_function(wrap_pyfunction!(fold_case, m)?)?;
    m.add_function(wrap_pyfunction!(init_logging, m)?)?;
    m.add_function(wrap_pyfunction!(policy::logistic, m)?)?;
    m.add_function(wrap_pyfunction!(policy::routing_bucket, m)?)?;
    m.add_function(wrap_pyfunction!(logwriter::prediction_line, m)?)?;
    m.add_function(wrap_pyfunction!(logwriter::outcome_line, m)?)?;
    m.add_function(wrap_pyfunction!(plane::store_key, m)?)?;
    m.add("FeatureError", py.get_type::<errors::FeatureError>())?;
    m.add("PlanError", py.get_type::<errors::PlanError>())?;
    m.add(
        "ModelFormatError",
        py.get_type::<errors::ModelFormatError>(),
    )?;
    m.add("StoreError", py.get_type::<errors::StoreError>())?;
    m.add("LogWriteError", py.get_type::<errors::LogWriteError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "build_profile",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )?;
    Ok(())
}
