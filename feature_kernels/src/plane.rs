//! The data plane's handle for the Python control plane: start it, hand it gated models, swap
//! them, stop it. Everything per request runs in Rust (`altscore-server`); nothing here is on a
//! request's path.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use altscore_kernels::reasons::{ReasonGroup, Reasons};
use altscore_kernels::routing::{Mode, Routing};
use altscore_server::auth::AuthConfig;
use altscore_server::config::{Config, LogStream, TlsFiles};
use altscore_server::model::{EntityLookup, ModelParts, Predictor, ServingModel, Variant};
use altscore_server::plane::Variants;
use altscore_server::proto;
use altscore_server::server::DataPlane as Server;
use altscore_server::store::{
    check_name, data_key, pointer_key, Backend, EmbeddedStore, FeatureStore, RedisStore,
    StoreError as RustStoreError, StoredRow, StoredValue,
};
use altscore_server::tl2cgen::CompiledLibrary;
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray2};
use prost::Message as _;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyString};

use crate::ensemble::{rows, PyTreeEnsemble};
use crate::errors::{to_py_err, StoreError};
use crate::plan::FeaturePlan;
use crate::policy::ScorePolicy;

/// `(namespace, [(input, overridable)], optional)`: what a model needs from the feature store.
type EntitySpec = (String, Vec<(String, bool)>, bool);

fn seconds(what: &str, s: f64) -> PyResult<Duration> {
    if s.is_finite() && s >= 0.0 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(PyValueError::new_err(format!(
            "{what} must be a non-negative number of seconds, got {s}"
        )))
    }
}

fn predictor(name: &str) -> PyResult<Predictor> {
    Predictor::parse(name).ok_or_else(|| {
        PyValueError::new_err(format!(
            "predictor must be 'native' or 'tl2cgen', got {name:?}"
        ))
    })
}

fn store_err(e: RustStoreError) -> PyErr {
    match e {
        RustStoreError::BadArgument(m) => PyValueError::new_err(m),
        other => StoreError::new_err(other.to_string()),
    }
}

/// A model ready to hand to the data plane (built after the control plane's gates pass; the
/// gates call `predict` and `shap` on it).
#[pyclass(module = "feature_kernels._core", name = "ServingModel", frozen)]
pub struct PyServingModel {
    pub inner: Arc<ServingModel>,
}

#[pymethods]
impl PyServingModel {
    /// `reasons`: `(code, text, columns)` per spec feature, in spec order; `entity`:
    /// `(namespace, [(input, overridable)], optional)` for a model with feature-store inputs;
    /// `model_info`: the serialized `credit.scoring.v1.ModelInfo`; `compiled_library`: the
    /// TL2cgen library (required when `predictor` is `"tl2cgen"`).
    #[new]
    #[pyo3(signature = (plan, ensemble, *, name, version, variant, reasons, top_k, entity, model_info, compiled_library, predictor))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        plan: &FeaturePlan,
        ensemble: &PyTreeEnsemble,
        name: String,
        version: String,
        variant: &str,
        reasons: Vec<(String, String, Vec<usize>)>,
        top_k: usize,
        entity: Option<EntitySpec>,
        model_info: &[u8],
        compiled_library: Option<PathBuf>,
        predictor: &str,
    ) -> PyResult<Self> {
        let variant = Variant::parse(variant).ok_or_else(|| {
            PyValueError::new_err(format!(
                "variant must be champion or challenger, got {variant:?}"
            ))
        })?;
        let plan_arc = plan.plan.clone();
        let groups = reasons
            .into_iter()
            .map(|(code, text, columns)| ReasonGroup {
                code,
                text,
                columns,
            })
            .collect();
        let reasons = Reasons::new(groups, top_k, plan_arc.n_outputs()).map_err(to_py_err)?;
        let entity = entity
            .map(|(namespace, inputs, optional)| {
                EntityLookup::new(&plan_arc, namespace, &inputs, optional)
            })
            .transpose()
            .map_err(to_py_err)?;
        let mut info = proto::ModelInfo::decode(model_info)
            .map_err(|e| PyValueError::new_err(format!("model_info is not a ModelInfo: {e}")))?;
        info.numeric_values_layout
            .clone_from(&plan_arc.numeric_layout);
        let compiled = compiled_library
            .map(|path| CompiledLibrary::open(&path, plan_arc.n_outputs()))
            .transpose()
            .map_err(PyOSError::new_err)?
            .map(Arc::new);
        let parts = ModelParts {
            name,
            version,
            variant,
            plan: plan_arc,
            ensemble: ensemble.inner.clone(),
            compiled,
            reasons,
            entity,
            info,
        };
        ServingModel::new(parts, self::predictor(predictor)?)
            .map(|m| Self { inner: Arc::new(m) })
            .map_err(to_py_err)
    }

    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }

    #[getter]
    fn version(&self) -> &str {
        &self.inner.version
    }

    #[getter]
    fn variant(&self) -> &'static str {
        self.inner.variant.name()
    }

    /// PD of each row of `x` (float32 `[n, n_features]`, NaN = missing) by `predictor`
    /// (default: the model's own).
    #[pyo3(signature = (x, predictor=None))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f32>,
        predictor: Option<&str>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let (data, n, m) = rows(&x)?;
        if m != self.inner.plan.n_outputs() {
            return Err(PyValueError::new_err(format!(
                "x has {m} columns, the model takes {}",
                self.inner.plan.n_outputs()
            )));
        }
        let which = predictor
            .map(self::predictor)
            .transpose()?
            .unwrap_or(self.inner.predictor);
        let model = &self.inner;
        py.detach(|| model.predict_with(which, data, n))
            .map(|pd| pd.into_pyarray(py))
            .map_err(to_py_err)
    }

    /// The reason codes of each row of `x` (float32 `[n, n_features]`), most adverse first: the
    /// exact `TreeSHAP` and reason choice of an answer with `explain` (a replay compares them).
    fn reason_codes(
        &self,
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f32>,
    ) -> PyResult<Vec<Vec<String>>> {
        let (data, n, m) = rows(&x)?;
        let model = &self.inner;
        if m != model.plan.n_outputs() {
            return Err(PyValueError::new_err(format!(
                "x has {m} columns, the model takes {}",
                model.plan.n_outputs()
            )));
        }
        let explained = py.detach(|| model.explain(data, n)).map_err(to_py_err)?;
        Ok(explained
            .iter()
            .map(|e| model.reason_codes(e).map(str::to_string).collect())
            .collect())
    }
}

/// Reads the online feature store with the data plane's client (the contract tests use it; the
/// server itself reads inside the data plane). `url` None: an embedded store, which this object
/// can also publish to.
#[pyclass(module = "feature_kernels._core", name = "FeatureStoreClient", frozen)]
pub struct FeatureStoreClient {
    runtime: tokio::runtime::Runtime,
    store: FeatureStore,
}

fn build_store(
    url: Option<&str>,
    cluster: bool,
    connect_timeout: Duration,
) -> Result<FeatureStore, RustStoreError> {
    let backend = match url {
        None => Backend::Embedded(EmbeddedStore::default()),
        Some(url) => {
            let urls: Vec<String> = url.split(',').map(|u| u.trim().to_string()).collect();
            Backend::Redis(RedisStore::new(&urls, cluster, connect_timeout)?)
        }
    };
    Ok(FeatureStore::new(backend))
}

fn row_to_py<'py>(py: Python<'py>, row: &StoredRow) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in row {
        match v {
            StoredValue::Number(x) => d.set_item(k, *x)?,
            StoredValue::Text(s) => d.set_item(k, s)?,
        }
    }
    Ok(d)
}

fn rows_from_py(rows: Vec<(String, Bound<'_, PyDict>)>) -> PyResult<Vec<(String, StoredRow)>> {
    rows.into_iter()
        .map(|(id, values)| {
            let mut row = HashMap::new();
            for (k, v) in values.iter() {
                let key: String = k.extract()?;
                let value = if let Ok(s) = v.cast::<PyString>() {
                    StoredValue::Text(s.to_str()?.to_owned())
                } else if v.is_instance_of::<PyFloat>() || v.extract::<f64>().is_ok() {
                    StoredValue::Number(v.extract::<f64>()?)
                } else {
                    return Err(PyValueError::new_err(format!(
                        "feature {key:?} of {id:?}: a value must be a number or a string"
                    )));
                };
                row.insert(key, value);
            }
            Ok((id, row))
        })
        .collect()
}

fn embedded(store: &FeatureStore) -> PyResult<&EmbeddedStore> {
    store
        .embedded()
        .ok_or_else(|| PyRuntimeError::new_err("only the embedded store is written here"))
}

#[pymethods]
impl FeatureStoreClient {
    #[new]
    #[pyo3(signature = (url=None, *, cluster=false, connect_timeout=2.0))]
    fn new(url: Option<&str>, cluster: bool, connect_timeout: f64) -> PyResult<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        let timeout = seconds("connect_timeout", connect_timeout)?;
        let store = {
            let _guard = runtime.enter();
            build_store(url, cluster, timeout).map_err(store_err)?
        };
        Ok(Self { runtime, store })
    }

    /// Features of each id under the active version (None for an unknown entity); one round
    /// trip, at most `timeout` seconds. Raises `StoreError` on failure, timeout, or when no
    /// version is active.
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        namespace: &str,
        ids: Vec<String>,
        timeout: f64,
    ) -> PyResult<Vec<Option<Bound<'py, PyDict>>>> {
        if !(timeout.is_finite() && timeout > 0.0) {
            return Err(PyValueError::new_err(format!(
                "feature store timeout must be a positive number of seconds: {timeout}"
            )));
        }
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let found = py
            .detach(|| {
                self.runtime.block_on(self.store.get_many(
                    namespace,
                    &refs,
                    Duration::from_secs_f64(timeout),
                ))
            })
            .map_err(store_err)?;
        found
            .iter()
            .map(|r| r.as_ref().map(|row| row_to_py(py, row)).transpose())
            .collect()
    }

    /// Embedded store: write `(entity_id, {feature: number | str})` rows under a version that
    /// is not the active one (`ttl_seconds`: rows expire). Returns the rows written.
    #[pyo3(signature = (namespace, version, rows, *, ttl_seconds=None))]
    fn publish(
        &self,
        namespace: &str,
        version: &str,
        rows: Vec<(String, Bound<'_, PyDict>)>,
        ttl_seconds: Option<f64>,
    ) -> PyResult<usize> {
        let ttl = ttl_seconds.map(|t| seconds("ttl_seconds", t)).transpose()?;
        embedded(&self.store)?
            .publish(namespace, version, rows_from_py(rows)?, ttl)
            .map_err(store_err)
    }

    fn activate(&self, namespace: &str, version: &str) -> PyResult<()> {
        embedded(&self.store)?
            .activate(namespace, version)
            .map_err(store_err)
    }

    fn active_version(&self, namespace: &str) -> PyResult<Option<String>> {
        embedded(&self.store)?
            .active_version(namespace)
            .map_err(store_err)
    }
}

/// The data plane (see `altscore_server::server`): one per process.
#[pyclass(module = "feature_kernels._core", name = "DataPlane", frozen)]
pub struct DataPlane {
    inner: Server,
}

#[pymethods]
impl DataPlane {
    /// Start the runtime, bind the gRPC port (connections are taken from `serve()` on) and serve
    /// `/metrics`. `store_url` None: the embedded feature store. Raises `OSError` when a port
    /// cannot be bound.
    #[new]
    #[pyo3(signature = (*, host, grpc_port, metrics_host, metrics_port, threads, max_message_bytes,
        max_batch, stream_batch_max, stream_batch_wait, stream_queue, stream_id_window, store_url,
        store_cluster, store_timeout, policy, predictor, evaluation_dir, log_predictions,
        shutdown_grace, tls_cert=None, tls_key=None, tls_client_ca=None, keepalive=30.0,
        max_concurrent_streams=1024, max_shadow_in_flight=1024, log_stream=None,
        handshake_timeout=10.0, outcome_writers=None, outcome_tokens_file=None,
        log_max_bytes=None, log_max_age=None, max_in_flight=2048, max_open_streams=4096, retry_pushback=0.1,
        max_header_list_bytes=16384, max_pending_reset_streams=20, max_local_error_resets=1024,
        tcp_keepalive=60.0, max_connection_age=None, call_timeout=None, max_connections=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        host: String,
        grpc_port: u16,
        metrics_host: String,
        metrics_port: u16,
        threads: usize,
        max_message_bytes: usize,
        max_batch: usize,
        stream_batch_max: usize,
        stream_batch_wait: f64,
        stream_queue: usize,
        stream_id_window: usize,
        store_url: Option<String>,
        store_cluster: bool,
        store_timeout: f64,
        policy: &ScorePolicy,
        predictor: &str,
        evaluation_dir: PathBuf,
        log_predictions: bool,
        shutdown_grace: f64,
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
        tls_client_ca: Option<PathBuf>,
        keepalive: f64,
        max_concurrent_streams: u32,
        max_shadow_in_flight: usize,
        log_stream: Option<(String, String, u64)>,
        handshake_timeout: f64,
        outcome_writers: Option<Vec<String>>,
        outcome_tokens_file: Option<PathBuf>,
        log_max_bytes: Option<u64>,
        log_max_age: Option<f64>,
        max_in_flight: usize,
        max_open_streams: usize,
        retry_pushback: f64,
        max_header_list_bytes: u32,
        max_pending_reset_streams: usize,
        max_local_error_resets: usize,
        tcp_keepalive: f64,
        max_connection_age: Option<f64>,
        call_timeout: Option<f64>,
        max_connections: Option<usize>,
    ) -> PyResult<Self> {
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                client_ca: tls_client_ca,
            }),
            (None, None) if tls_client_ca.is_none() => None,
            _ => {
                return Err(PyValueError::new_err(
                    "TLS needs both a certificate and a key (and a client CA only with them)",
                ))
            }
        };
        let config = Config {
            host,
            grpc_port,
            metrics_host,
            metrics_port,
            threads,
            max_message_bytes,
            max_batch,
            stream_batch_max,
            stream_batch_wait: seconds("stream_batch_wait", stream_batch_wait)?,
            stream_queue,
            stream_id_window,
            store_timeout: seconds("store_timeout", store_timeout)?,
            policy: policy.inner,
            predictor: self::predictor(predictor)?,
            evaluation_dir,
            log_stream: log_stream.map(|(url, prefix, max_len)| LogStream {
                url,
                prefix,
                max_len,
            }),
            log_predictions,
            log_max_bytes,
            log_max_age: log_max_age.map(|s| seconds("log_max_age", s)).transpose()?,
            shutdown_grace: seconds("shutdown_grace", shutdown_grace)?,
            tls,
            keepalive: seconds("keepalive", keepalive)?,
            max_concurrent_streams,
            max_shadow_in_flight,
            max_in_flight,
            max_open_streams,
            retry_pushback: seconds("retry_pushback", retry_pushback)?,
            max_header_list_bytes,
            max_pending_reset_streams,
            max_local_error_resets,
            tcp_keepalive: seconds("tcp_keepalive", tcp_keepalive)?,
            max_connection_age: max_connection_age
                .map(|s| seconds("max_connection_age", s))
                .transpose()?,
            call_timeout: call_timeout
                .map(|s| seconds("call_timeout", s))
                .transpose()?,
            max_connections,
            handshake_timeout: seconds("handshake_timeout", handshake_timeout)?,
            auth: AuthConfig {
                writers: outcome_writers.unwrap_or_default(),
                tokens_file: outcome_tokens_file,
            },
        };
        let timeout = config.store_timeout.max(Duration::from_millis(250));
        py.detach(|| {
            Server::start(config, || {
                build_store(store_url.as_deref(), store_cluster, timeout).map_err(|e| e.to_string())
            })
        })
        .map(|inner| Self { inner })
        .map_err(|e| PyOSError::new_err(e.to_string()))
    }

    #[getter]
    fn grpc_port(&self) -> u16 {
        self.inner.grpc_port()
    }

    #[getter]
    fn metrics_port(&self) -> u16 {
        self.inner.metrics_port()
    }

    /// Take calls on the gRPC port from now on.
    fn serve(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.serve())
            .map_err(|e| PyOSError::new_err(e.to_string()))
    }

    /// Whether the gRPC server is up: False once it has failed (the process must then exit).
    #[getter]
    fn running(&self) -> bool {
        self.inner.running()
    }

    /// Serve `champion` (and `challenger`, routed by `mode` / `share`) from now on; calls in
    /// flight finish on the models they started with. `champion` None: serve nothing (health
    /// NOT_SERVING).
    #[pyo3(signature = (champion, challenger=None, mode="off", share=0.0))]
    fn set_models(
        &self,
        py: Python<'_>,
        champion: Option<&PyServingModel>,
        challenger: Option<&PyServingModel>,
        mode: &str,
        share: f64,
    ) -> PyResult<()> {
        let mode = Mode::parse(mode).ok_or_else(|| {
            PyValueError::new_err(format!(
                "routing mode must be off, split or shadow, got {mode:?}"
            ))
        })?;
        if !(0.0..=1.0).contains(&share) {
            return Err(PyValueError::new_err(format!(
                "challenger share must be in [0, 1], got {share}"
            )));
        }
        let variants = match champion {
            None => None,
            Some(c) => {
                if c.inner.variant != Variant::Champion
                    || challenger.is_some_and(|x| x.inner.variant != Variant::Challenger)
                {
                    return Err(PyValueError::new_err(
                        "models are served under the variant they were built for",
                    ));
                }
                Some(Variants {
                    champion: c.inner.clone(),
                    challenger: challenger.map(|x| x.inner.clone()),
                    routing: Routing {
                        mode,
                        challenger_share: share,
                    },
                })
            }
        };
        py.detach(|| self.inner.set_variants(variants));
        Ok(())
    }

    /// The embedded store: publish rows and activate their version (laptop runs; the control
    /// plane fills it from the served model's entity snapshot).
    fn publish_embedded(
        &self,
        namespace: &str,
        version: &str,
        rows: Vec<(String, Bound<'_, PyDict>)>,
    ) -> PyResult<usize> {
        let store = embedded(&self.inner.plane.store)?;
        let n = store
            .publish(namespace, version, rows_from_py(rows)?, None)
            .map_err(store_err)?;
        store.activate(namespace, version).map_err(store_err)?;
        Ok(n)
    }

    /// Whether the feature store is the embedded one.
    #[getter]
    fn embedded_store(&self) -> bool {
        self.inner.plane.store.embedded().is_some()
    }

    /// Open the feature store's connection before the first request needs it: one lookup of
    /// `namespace`, at most `timeout` seconds. Returns None, or why it failed.
    fn warm_up_store(
        &self,
        py: Python<'_>,
        namespace: &str,
        timeout: f64,
    ) -> PyResult<Option<String>> {
        let timeout = seconds("timeout", timeout)?;
        let plane = &self.inner;
        Ok(py
            .detach(|| plane.block_on(plane.plane.store.get_many(namespace, &["warm-up"], timeout)))
            .err()
            .map(|e| e.to_string()))
    }

    /// Control-plane metrics, on the data plane's `/metrics`.
    fn count_model_load(&self, outcome: &str) -> PyResult<()> {
        if !matches!(outcome, "loaded" | "rejected" | "unavailable") {
            return Err(PyValueError::new_err(format!(
                "unknown outcome {outcome:?}"
            )));
        }
        self.inner
            .plane
            .metrics
            .model_loads
            .with_label_values(&[outcome])
            .inc();
        Ok(())
    }

    fn set_compile_seconds(&self, seconds: f64) {
        self.inner.plane.metrics.compile_seconds.set(seconds);
    }

    fn set_parity(&self, variant: &str, max_abs_diff: f64) {
        self.inner
            .plane
            .metrics
            .parity_diff
            .with_label_values(&[variant])
            .set(max_abs_diff);
    }

    fn clear_parity(&self, variant: &str) {
        let _ = self
            .inner
            .plane
            .metrics
            .parity_diff
            .remove_label_values(&[variant]);
    }

    /// Health NOT_SERVING, stop accepting, give calls in flight `grace` seconds, write the logs.
    fn shutdown(&self, py: Python<'_>, grace: f64) -> PyResult<()> {
        let grace = seconds("grace", grace)?;
        py.detach(|| self.inner.shutdown(grace));
        Ok(())
    }
}

/// The feature store's keys (the data plane reads them; `training publish` writes them):
/// the active-version pointer of `namespace`, or with `version` the key prefix of its rows.
#[pyfunction]
#[pyo3(signature = (namespace, version=None))]
pub fn store_key(namespace: &str, version: Option<&str>) -> PyResult<String> {
    check_name("namespace", namespace).map_err(store_err)?;
    match version {
        None => Ok(pointer_key(namespace)),
        Some(v) => {
            check_name("version", v).map_err(store_err)?;
            Ok(data_key(namespace, v, ""))
        }
    }
}
