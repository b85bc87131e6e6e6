//! The native gRPC front end of a serving worker.
//!
//! It owns the public port (shared with the other workers through `SO_REUSEPORT`) and runs on
//! its own threads (tokio), never taking the GIL on its hot path. `Score` and `ScoreBatch`
//! messages that need nothing but their own features are answered here (see [`direct`]); every
//! other call, and every message with anything wrong in it, is passed unchanged to the worker's
//! Python grpc.aio server on an abstract Unix socket, which stays the one implementation of
//! validation errors, feature-store lookups, champion/challenger routing, explanations,
//! streams, health and reflection. What the direct path did (prediction-log lines, call counts
//! and latencies, applicants per model) is buffered here and handed to Python by
//! [`FrontEnd::drain`], which writes it to the evaluation log and the Prometheus metrics.

mod direct;
pub mod lines;
mod server;

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::sync::watch;

use crate::{FeaturePlan, PyTreeEnsemble};
use direct::{Direct, Policy};
use server::Code;

/// Buffered prediction-log bytes beyond which the direct path steps aside (Python then answers
/// and logs, with its own bound) until `drain` catches up: nothing is dropped here.
const MAX_PENDING_LOG_BYTES: usize = 32 << 20;

/// Calls the front end answered, for one `(rpc, code)`: count and latency histogram.
struct Calls {
    count: u64,
    buckets: Vec<u64>,
    sum: f64,
}

#[derive(Default)]
struct Sink {
    lines: Vec<u8>,
    n_lines: usize,
    calls: HashMap<(String, &'static str), Calls>,
    applicants: HashMap<(String, String), u64>,
}

impl Sink {
    fn is_empty(&self) -> bool {
        self.n_lines == 0 && self.calls.is_empty() && self.applicants.is_empty()
    }
}

/// State shared by the tokio threads and Python.
pub struct Shared {
    direct: RwLock<Option<Arc<Direct>>>,
    sink: Mutex<Sink>,
    ready: Condvar,
    max_message_bytes: usize,
    log_predictions: bool,
    /// Upper bounds of the latency histogram's buckets (the Python histogram's, +Inf last).
    bounds: Vec<f64>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Shared {
    fn sink(&self) -> std::sync::MutexGuard<'_, Sink> {
        self.sink.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The framed answer to `message`, when the direct path may give it.
    fn answer(&self, message: &[u8], batch: bool) -> Option<Vec<u8>> {
        let direct = self
            .direct
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        if self.log_predictions && self.sink().lines.len() >= MAX_PENDING_LOG_BYTES {
            return None;
        }
        let mut lines = Vec::new();
        let log = self.log_predictions.then(|| (&mut lines, unix_now()));
        let answer = direct.answer(message, batch, log)?;
        let mut sink = self.sink();
        sink.lines.extend_from_slice(&lines);
        if self.log_predictions {
            sink.n_lines += answer.rows; // one line per applicant
        }
        *sink
            .applicants
            .entry((direct.model_version.clone(), direct.variant.clone()))
            .or_default() += answer.rows as u64;
        drop(sink);
        self.ready.notify_one();
        Some(answer.framed)
    }

    fn record_call(&self, rpc: &str, code: Code, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(self.bounds.len().saturating_sub(1));
        let mut sink = self.sink();
        let calls = sink
            .calls
            .entry((rpc.to_owned(), code.name()))
            .or_insert_with(|| Calls {
                count: 0,
                buckets: vec![0; self.bounds.len()],
                sum: 0.0,
            });
        calls.count += 1;
        if let Some(b) = calls.buckets.get_mut(bucket) {
            *b += 1;
        }
        calls.sum += seconds;
    }
}

struct Running {
    port: u16,
    stop: watch::Sender<Option<Duration>>,
    thread: JoinHandle<()>,
}

/// What `drain` hands to Python: prediction-log bytes and their line count; per `(rpc, code)`
/// the count, latency-bucket counts and latency sum; applicants scored per (version, variant).
type Drained<'py> = (
    Bound<'py, PyBytes>,
    usize,
    Vec<(String, &'static str, u64, Vec<u64>, f64)>,
    Vec<(String, String, u64)>,
);

/// The native gRPC front end of one serving worker (see the module docs).
#[pyclass(module = "feature_kernels._core", name = "FrontEnd", frozen)]
pub struct FrontEnd {
    shared: Arc<Shared>,
    backend: String,
    threads: usize,
    running: Mutex<Option<Running>>,
}

#[pymethods]
impl FrontEnd {
    /// `backend`: the abstract Unix socket name the Python server listens on
    /// (`unix-abstract:<backend>`); `latency_bounds`: the latency histogram's bucket bounds.
    #[new]
    #[pyo3(signature = (*, backend, max_message_bytes, log_predictions, latency_bounds, threads=1))]
    fn new(
        backend: String,
        max_message_bytes: usize,
        log_predictions: bool,
        latency_bounds: Vec<f64>,
        threads: usize,
    ) -> PyResult<Self> {
        if latency_bounds.is_empty() || threads == 0 || backend.is_empty() {
            return Err(PyValueError::new_err(
                "need a backend name, latency bounds and at least one thread",
            ));
        }
        Ok(Self {
            shared: Arc::new(Shared {
                direct: RwLock::new(None),
                sink: Mutex::new(Sink::default()),
                ready: Condvar::new(),
                max_message_bytes,
                log_predictions,
                bounds: latency_bounds,
            }),
            backend,
            threads,
            running: Mutex::new(None),
        })
    }

    /// Bind `host:port` (`SO_REUSEPORT`) and start serving on the front end's own threads.
    /// Returns the bound port. Raises `OSError` when the address cannot be bound.
    fn start(&self, py: Python<'_>, host: &str, port: u16) -> PyResult<u16> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.is_some() {
            return Err(PyRuntimeError::new_err("the front end is already running"));
        }
        let listener = py
            .detach(|| server::bind(host, port))
            .map_err(|e| PyOSError::new_err(format!("cannot bind {host}:{port}: {e}")))?;
        let bound = listener
            .local_addr()
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        let mut builder = if self.threads == 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(self.threads);
            b
        };
        let runtime = builder
            .enable_all()
            .thread_name("altscore-front")
            .build()
            .map_err(|e| PyOSError::new_err(format!("cannot start the front end: {e}")))?;
        let (stop, stopped) = watch::channel(None);
        let (shared, backend) = (self.shared.clone(), self.backend.clone());
        let thread = std::thread::Builder::new()
            .name("altscore-front".into())
            .spawn(move || {
                if let Err(e) = runtime.block_on(server::serve(shared, listener, backend, stopped))
                {
                    eprintln!("altscore front end stopped: {e}");
                }
            })
            .map_err(|e| PyOSError::new_err(format!("cannot start the front end: {e}")))?;
        *running = Some(Running {
            port: bound.port(),
            stop,
            thread,
        });
        Ok(bound.port())
    }

    /// The bound port (0 before `start`).
    #[getter]
    fn port(&self) -> u16 {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, |r| r.port)
    }

    /// Answer directly with this model from now on (every request it can answer alone).
    /// `variant`: "champion" or "challenger"; `variant_code`: its `credit.scoring.v1.Variant`.
    #[pyo3(signature = (plan, ensemble, *, model_name, model_version, variant, variant_code, offset, factor, approve_below, decline_from, max_batch))]
    #[allow(clippy::too_many_arguments)]
    fn serve_directly(
        &self,
        plan: &FeaturePlan,
        ensemble: &PyTreeEnsemble,
        model_name: &str,
        model_version: &str,
        variant: &str,
        variant_code: i32,
        offset: f64,
        factor: f64,
        approve_below: f64,
        decline_from: f64,
        max_batch: usize,
    ) -> PyResult<()> {
        if plan.plan.n_outputs() != ensemble.inner.n_features() {
            return Err(PyValueError::new_err(format!(
                "the plan makes {} features, the model takes {}",
                plan.plan.n_outputs(),
                ensemble.inner.n_features()
            )));
        }
        let direct = Direct {
            plan: plan.plan.clone(),
            ensemble: ensemble.inner.clone(),
            policy: Policy {
                offset,
                factor,
                approve_below,
                decline_from,
            },
            max_batch,
            model_version: model_version.to_owned(),
            variant: variant.to_owned(),
            model_ref: crate::wire::encode_model_ref(model_name, model_version, variant_code),
            line_fields: lines::model_fields(model_name, variant, model_version),
        };
        *self
            .shared
            .direct
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(direct));
        Ok(())
    }

    /// Answer nothing directly: every call goes to the Python backend.
    fn serve_nothing_directly(&self) {
        *self
            .shared
            .direct
            .write()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Whether a model answers directly now.
    #[getter]
    fn serving_directly(&self) -> bool {
        self.shared
            .direct
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Everything recorded since the last call, waiting up to `timeout` seconds (GIL released)
    /// for something to be there.
    fn drain<'py>(&self, py: Python<'py>, timeout: f64) -> Drained<'py> {
        let shared = &self.shared;
        let taken = py.detach(|| {
            let mut sink = shared.sink();
            if sink.is_empty() && timeout > 0.0 {
                sink = shared
                    .ready
                    .wait_timeout(sink, Duration::from_secs_f64(timeout))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::take(&mut *sink)
        });
        let calls = taken
            .calls
            .into_iter()
            .map(|((rpc, code), c)| (rpc, code, c.count, c.buckets, c.sum))
            .collect();
        let applicants = taken
            .applicants
            .into_iter()
            .map(|((version, variant), n)| (version, variant, n))
            .collect();
        (
            PyBytes::new(py, &taken.lines),
            taken.n_lines,
            calls,
            applicants,
        )
    }

    /// Stop accepting, send GOAWAY on every connection, give calls in flight `grace` seconds,
    /// then end the front end's threads. Idempotent.
    fn stop(&self, py: Python<'_>, grace: f64) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(r) = running {
            let _ = r.stop.send(Some(Duration::from_secs_f64(grace.max(0.0))));
            py.detach(|| {
                let _ = r.thread.join();
            });
        }
    }
}

/// One prediction-log line as the front end writes it (the evaluation log's format; for tests
/// that compare it with `credit_core.evaluation`'s encoder).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (ts, request_id, applicant_id, model_name, variant, model_version, pd))]
pub fn prediction_log_line<'py>(
    py: Python<'py>,
    ts: f64,
    request_id: &str,
    applicant_id: &str,
    model_name: &str,
    variant: &str,
    model_version: &str,
    pd: f64,
) -> Bound<'py, PyBytes> {
    let (mut out, mut time) = (Vec::new(), Vec::new());
    lines::push_py_float(&mut time, ts);
    let fields = lines::model_fields(model_name, variant, model_version);
    lines::push_prediction(&mut out, &time, request_id, applicant_id, &fields, pd);
    PyBytes::new(py, &out)
}
