//! Prometheus metrics of the data plane and the control plane, on one `/metrics` endpoint served
//! by the data plane itself (no drain lag, no second process).
//!
//! gRPC-standard series (`grpc_server_*`, the names of go-grpc-prometheus) for every call on the
//! port, health and reflection included, are recorded by [`GrpcMetricsLayer`] from each
//! response's `grpc-status`; the domain series (`credit_scoring_*`) by the scoring code; process
//! series (`process_*`) by the prometheus crate's process collector. Labels are bounded: a path
//! that is not one of the served methods is counted as `unknown`.

use std::convert::Infallible;
use std::future::Future;
use std::net::TcpListener as StdListener;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus::{
    Encoder as _, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::{Layer, Service};

/// Latency buckets (seconds) of every duration histogram.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The RPCs served on the port: (service, method, type).
const METHODS: &[(&str, &str, &str)] = &[
    ("credit.scoring.v1.Scoring", "Score", "unary"),
    ("credit.scoring.v1.Scoring", "ScoreBatch", "unary"),
    ("credit.scoring.v1.Scoring", "ScoreStream", "bidi_stream"),
    ("credit.scoring.v1.Scoring", "GetModelInfo", "unary"),
    ("credit.scoring.v1.Scoring", "ReportOutcome", "unary"),
    ("inference.GRPCInferenceService", "ServerLive", "unary"),
    ("inference.GRPCInferenceService", "ServerReady", "unary"),
    ("inference.GRPCInferenceService", "ModelReady", "unary"),
    ("inference.GRPCInferenceService", "ServerMetadata", "unary"),
    ("inference.GRPCInferenceService", "ModelMetadata", "unary"),
    ("inference.GRPCInferenceService", "ModelInfer", "unary"),
    ("grpc.health.v1.Health", "Check", "unary"),
    ("grpc.health.v1.Health", "Watch", "server_stream"),
    ("grpc.health.v1.Health", "List", "unary"),
    (
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
        "bidi_stream",
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection",
        "ServerReflectionInfo",
        "bidi_stream",
    ),
];

const UNKNOWN: (&str, &str, &str) = ("unknown", "unknown", "unknown");

/// gRPC status code names, by number.
pub const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

#[must_use]
pub fn code_name(code: tonic::Code) -> &'static str {
    CODE_NAMES.get(code as usize).copied().unwrap_or("UNKNOWN")
}

/// A labelled child resolved on first use, then kept (no label lookup per call).
struct Lazy<T> {
    cell: OnceLock<T>,
}

impl<T: Clone> Lazy<T> {
    const fn new() -> Self {
        Self {
            cell: OnceLock::new(),
        }
    }

    fn get(&self, make: impl FnOnce() -> T) -> &T {
        self.cell.get_or_init(make)
    }
}

/// The `grpc_server_*` series of one method.
struct MethodSeries {
    labels: (&'static str, &'static str, &'static str),
    started: IntCounter,
    seconds: Histogram,
    handled: [Lazy<IntCounter>; 17],
}

/// The `credit_scoring_requests_total` / `_request_duration_seconds` series of one RPC.
struct RpcSeries {
    rpc: &'static str,
    latency: Histogram,
    requests: [Lazy<IntCounter>; 17],
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub applicants: IntCounterVec,
    pub model_info: IntGaugeVec,
    pub model_loads: IntCounterVec,
    pub compile_seconds: Gauge,
    pub parity_diff: GaugeVec,
    pub shadow_failures: IntCounter,
    pub store_failures: IntCounter,
    pub store_latency: Histogram,
    pub degraded: IntCounter,
    pub in_flight: IntGauge,
    pub log_dropped: IntCounter,
    pub log_expired: IntCounter,
    pub shed: IntCounterVec,
    pub tls_handshake_failures: IntCounterVec,
    pub connections_open: IntGauge,
    pub connections_evicted: IntCounter,
    pub auth_denied: IntCounterVec,
    pub grpc_started: IntCounterVec,
    pub grpc_handled: IntCounterVec,
    pub grpc_seconds: HistogramVec,
    pub grpc_received: IntCounterVec,
    pub grpc_sent: IntCounterVec,
    methods: Vec<MethodSeries>,
    rpcs: Vec<RpcSeries>,
}

const SCORING_RPCS: [&str; 7] = [
    "Score",
    "ScoreBatch",
    "ScoreStream",
    "GetModelInfo",
    "ReportOutcome",
    // The Open Inference Protocol's (inference.GRPCInferenceService).
    "ModelInfer",
    "ModelMetadata",
];

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counter(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<HistogramVec> {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let grpc = ["grpc_service", "grpc_method", "grpc_type"];
        let model_info = IntGaugeVec::new(
            Opts::new(
                "credit_scoring_model_info",
                "1 for each model being served, labelled with its identity.",
            ),
            &["model_name", "model_version", "variant", "schema_hash"],
        )?;
        r.register(Box::new(model_info.clone()))?;
        let compile_seconds = Gauge::new(
            "credit_scoring_model_compile_seconds",
            "Seconds the champion took to compile (from the cache record on a cache hit).",
        )?;
        r.register(Box::new(compile_seconds.clone()))?;
        let parity_diff = GaugeVec::new(
            Opts::new(
                "credit_scoring_model_parity_max_abs_diff",
                "Largest |served PD - XGBoost PD| on the reference sample of each served model.",
            ),
            &["variant"],
        )?;
        r.register(Box::new(parity_diff.clone()))?;
        let store_latency = Histogram::with_opts(
            HistogramOpts::new(
                "credit_scoring_feature_store_lookup_duration_seconds",
                "Time of one feature-store lookup (one round trip per request or micro-batch).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        r.register(Box::new(store_latency.clone()))?;
        let in_flight = IntGauge::new(
            "grpc_server_calls_in_flight",
            "Calls started and not yet finished, on every service of the port.",
        )?;
        r.register(Box::new(in_flight.clone()))?;
        let connections_open = IntGauge::new(
            "credit_scoring_connections_open",
            "Connections open on the gRPC port (TLS handshakes in progress included).",
        )?;
        r.register(Box::new(connections_open.clone()))?;
        let requests = counter_vec(
            &r,
            "credit_scoring_requests_total",
            "Scoring requests by RPC and gRPC status code (stream messages count one each).",
            &["rpc", "code"],
        )?;
        let latency = histogram_vec(
            &r,
            "credit_scoring_request_duration_seconds",
            "Server time per request (per message for streams).",
            &["rpc"],
        )?;
        let grpc_started = counter_vec(
            &r,
            "grpc_server_started_total",
            "RPCs started on the server.",
            &grpc,
        )?;
        let grpc_seconds = histogram_vec(
            &r,
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its status.",
            &grpc,
        )?;
        let methods = METHODS
            .iter()
            .chain(std::iter::once(&UNKNOWN))
            .map(|labels| MethodSeries {
                labels: *labels,
                started: grpc_started.with_label_values(&[labels.0, labels.1, labels.2]),
                seconds: grpc_seconds.with_label_values(&[labels.0, labels.1, labels.2]),
                handled: std::array::from_fn(|_| Lazy::new()),
            })
            .collect();
        let rpcs = SCORING_RPCS
            .iter()
            .map(|rpc| RpcSeries {
                rpc,
                latency: latency.with_label_values(&[rpc]),
                requests: std::array::from_fn(|_| Lazy::new()),
            })
            .collect();
        Ok(Self {
            methods,
            rpcs,
            requests,
            latency,
            grpc_started,
            grpc_seconds,
            applicants: counter_vec(
                &r,
                "credit_scoring_applicants_scored_total",
                "Applicants scored, by model version and variant (shadow scorings not included).",
                &["model_version", "variant"],
            )?,
            model_info,
            model_loads: counter_vec(
                &r,
                "credit_scoring_model_loads_total",
                "Model load attempts by outcome (loaded, rejected, unavailable).",
                &["outcome"],
            )?,
            compile_seconds,
            parity_diff,
            shadow_failures: counter(
                &r,
                "credit_scoring_shadow_failures_total",
                "Shadow (challenger) scorings that failed or were skipped under load; the \
                 champion's answer was still given.",
            )?,
            store_failures: counter(
                &r,
                "credit_scoring_feature_store_failures_total",
                "Feature-store lookups that failed, timed out or found no active version.",
            )?,
            store_latency,
            degraded: counter(
                &r,
                "credit_scoring_degraded_answers_total",
                "Answers given without feature-store values because the store failed.",
            )?,
            in_flight,
            log_dropped: counter(
                &r,
                "credit_scoring_prediction_log_dropped_total",
                "Prediction records the log could not take (full or failing); requests were \
                 answered.",
            )?,
            shed: counter_vec(
                &r,
                "credit_scoring_calls_shed_total",
                "Scoring calls (`calls`: unary; `streams`: ScoreStream) answered \
                 RESOURCE_EXHAUSTED at once because the server had its limit of them in flight.",
                &["kind"],
            )?,
            log_expired: counter(
                &r,
                "credit_scoring_prediction_log_expired_total",
                "Prediction records deleted from the local log by its retention (size cap or \
                 age; oldest segments first).",
            )?,
            connections_open,
            connections_evicted: counter(
                &r,
                "credit_scoring_connections_evicted_total",
                "Connections of the gRPC port closed by the server because it had its limit of \
                 them open and another arrived (the one quiet the longest is closed).",
            )?,
            tls_handshake_failures: counter_vec(
                &r,
                "credit_scoring_tls_handshake_failures_total",
                "TLS handshakes on the gRPC port that failed (`error`: no or a bad certificate, \
                 a plaintext client, ...) or took longer than the handshake timeout (`timeout`).",
                &["reason"],
            )?,
            auth_denied: counter_vec(
                &r,
                "credit_scoring_auth_denied_total",
                "Calls of state-changing RPCs refused: no identity (UNAUTHENTICATED) or one not \
                 allowed (PERMISSION_DENIED).",
                &["rpc", "code"],
            )?,
            grpc_handled: counter_vec(
                &r,
                "grpc_server_handled_total",
                "RPCs completed on the server, whatever their status.",
                &["grpc_service", "grpc_method", "grpc_type", "grpc_code"],
            )?,
            grpc_received: counter_vec(
                &r,
                "grpc_server_msg_received_total",
                "Stream messages received on the server (scoring streams).",
                &grpc,
            )?,
            grpc_sent: counter_vec(
                &r,
                "grpc_server_msg_sent_total",
                "Stream messages sent by the server (scoring streams).",
                &grpc,
            )?,
            registry: r,
        })
    }

    /// The exposition text of every series.
    #[must_use]
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    /// One scoring request (or stream message) finished with `code` after `seconds`.
    pub fn observe(&self, rpc: &str, code: tonic::Code, seconds: f64, n: u64) {
        let Some(series) = self.rpcs.iter().find(|s| s.rpc == rpc) else {
            return;
        };
        let i = (code as usize).min(16);
        series.requests[i]
            .get(|| self.requests.with_label_values(&[rpc, CODE_NAMES[i]]))
            .inc_by(n);
        for _ in 0..n {
            series.latency.observe(seconds);
        }
    }

    fn method(&self, path: &str) -> &MethodSeries {
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        self.methods
            .iter()
            .find(|m| m.labels.0 == service && m.labels.1 == method)
            .or_else(|| self.methods.last())
            .unwrap_or(&self.methods[0])
    }
}

/// Records one call's end, once.
struct Recorder {
    metrics: Arc<Metrics>,
    method: usize,
    started: Instant,
    done: bool,
}

impl Recorder {
    fn finish(&mut self, code: usize) {
        if self.done {
            return;
        }
        self.done = true;
        let metrics = &self.metrics;
        let series = &metrics.methods[self.method];
        let (s, m, t) = series.labels;
        metrics.in_flight.dec();
        series.handled[code]
            .get(|| {
                metrics
                    .grpc_handled
                    .with_label_values(&[s, m, t, CODE_NAMES[code]])
            })
            .inc();
        series.seconds.observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // The body was dropped before its status: the client went away.
        self.finish(tonic::Code::Cancelled as usize);
    }
}

/// The status code (index into [`CODE_NAMES`]) of `grpc-status`; 2 (UNKNOWN) for a bad one.
fn status_code(headers: &http::HeaderMap) -> Option<usize> {
    let value = headers.get("grpc-status")?;
    let code = value
        .to_str()
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|c| *c < CODE_NAMES.len());
    Some(code.unwrap_or(tonic::Code::Unknown as usize))
}

/// Counts every call of the port in the `grpc_server_*` series.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl GrpcMetricsLayer {
    #[must_use]
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> Service<http::Request<B>> for GrpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Body<Data = Bytes> + Send + 'static,
{
    type Response = http::Response<MeteredBody<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let metrics = self.metrics.clone();
        let series = metrics.method(req.uri().path());
        series.started.inc();
        let method = metrics
            .methods
            .iter()
            .position(|m| std::ptr::eq(m, series))
            .unwrap_or(0);
        metrics.in_flight.inc();
        let mut recorder = Recorder {
            metrics,
            method,
            started: Instant::now(),
            done: false,
        };
        let future = self.inner.call(req);
        Box::pin(async move {
            let response = future.await?;
            if let Some(code) = status_code(response.headers()) {
                recorder.finish(code); // trailers-only answer
            }
            Ok(response.map(|inner| MeteredBody {
                inner,
                recorder: Some(recorder),
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the call's status when its trailers pass.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        recorder: Option<Recorder>,
    }
}

impl<B: Body<Data = Bytes>> Body for MeteredBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(r) = this.recorder.as_mut() {
                        r.finish(status_code(trailers).unwrap_or(tonic::Code::Unknown as usize));
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(r) = this.recorder.as_mut() {
                    r.finish(tonic::Code::Unknown as usize);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(r) = this.recorder.as_mut() {
                    r.finish(tonic::Code::Internal as usize);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serve `GET /metrics` on `listener` until `stop` turns true, beside two plain-HTTP probes for
/// orchestrators that cannot speak gRPC health over TLS (Kubernetes' `grpc` probe is
/// plaintext only): `/readyz` answers 200 exactly when gRPC health says `SERVING` (`ready`:
/// a champion passed its gates and the port is not draining), else 503; `/livez` answers 200
/// while the runtime answers at all.
pub async fn serve(
    listener: StdListener,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
    ready: Arc<AtomicBool>,
) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        log::error!("metrics listener unusable");
        return;
    };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let metrics = metrics.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                let ready = ready.load(Ordering::Acquire);
                async move {
                    let text = |status: u16, body: &'static [u8]| {
                        http::Response::builder()
                            .status(status)
                            .header("content-type", "text/plain; charset=utf-8")
                            .body(Full::new(Bytes::from_static(body)))
                    };
                    let response = match req.uri().path() {
                        "/metrics" => http::Response::builder()
                            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                            .body(Full::new(Bytes::from(metrics.render()))),
                        "/readyz" if ready => text(200, b"SERVING\n"),
                        "/readyz" => text(503, b"NOT_SERVING\n"),
                        "/livez" => text(200, b"ok\n"),
                        _ => text(404, b"not found: try /metrics, /readyz or /livez\n"),
                    };
                    Ok::<_, Infallible>(response.unwrap_or_default())
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The global bounds on work in flight: `credit.scoring.v1.Scoring` unary calls (and the Open
/// Inference Protocol's `ModelInfer` and `ModelMetadata`) beyond `calls`, and `ScoreStream`
/// streams open beyond `streams` (counted apart, so clients holding streams open cannot starve
/// unary calls, nor the reverse), are answered at once with `RESOURCE_EXHAUSTED` and a
/// `grpc-retry-pushback-ms` trailer, and counted; health, reflection and the Open Inference
/// Protocol's probes are never shed, so a busy server still reports its health.
#[derive(Clone)]
pub struct ShedLayer {
    calls: Arc<ShedState>,
    streams: Arc<ShedState>,
}

struct ShedState {
    what: &'static str,
    limit: usize,
    pushback_ms: u64,
    in_flight: std::sync::atomic::AtomicUsize,
    shed: IntCounter,
}

impl ShedLayer {
    #[must_use]
    pub fn new(
        calls: usize,
        streams: usize,
        pushback: std::time::Duration,
        shed: &IntCounterVec,
    ) -> Self {
        let state = |what: &'static str, limit: usize| {
            Arc::new(ShedState {
                what,
                limit: limit.max(1),
                pushback_ms: u64::try_from(pushback.as_millis()).unwrap_or(u64::MAX),
                in_flight: std::sync::atomic::AtomicUsize::new(0),
                shed: shed.with_label_values(&[what]),
            })
        };
        Self {
            calls: state("calls", calls),
            streams: state("streams", streams),
        }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shedding<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Shedding {
            inner,
            calls: self.calls.clone(),
            streams: self.streams.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Shedding<S> {
    inner: S,
    calls: Arc<ShedState>,
    streams: Arc<ShedState>,
}

/// Whether a call of `path` takes a place in the bounds: every `Scoring` call, and the Open
/// Inference Protocol's model calls (its liveness and readiness probes, like health, never).
fn is_shed(path: &str) -> bool {
    path.starts_with("/credit.scoring.v1.Scoring/")
        || path == "/inference.GRPCInferenceService/ModelInfer"
        || path == "/inference.GRPCInferenceService/ModelMetadata"
}

/// One call's place in the bound, given back when its answer (a stream's last message) is
/// done or dropped.
struct Permit(Arc<ShedState>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl<S, B> Service<http::Request<B>> for Shedding<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        if !is_shed(path) {
            return Box::pin(self.inner.call(req));
        }
        let state = if path.ends_with("/ScoreStream") {
            &self.streams
        } else {
            &self.calls
        };
        let before = state
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let permit = Permit(state.clone());
        if before >= state.limit {
            drop(permit);
            state.shed.inc();
            let status = tonic::Status::resource_exhausted(format!(
                "the server has {} {} in flight, its limit; retry after {} ms",
                state.limit, state.what, state.pushback_ms
            ));
            let mut response = status.into_http::<tonic::body::Body>();
            if let Ok(v) = http::HeaderValue::from_str(&state.pushback_ms.to_string()) {
                response.headers_mut().insert("grpc-retry-pushback-ms", v);
            }
            return Box::pin(std::future::ready(Ok(response)));
        }
        let future = self.inner.call(req);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|inner| {
                tonic::body::Body::new(HeldBody {
                    inner,
                    _permit: permit,
                })
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body holding its call's [`Permit`] until it ends or is dropped.
    struct HeldBody {
        #[pin]
        inner: tonic::body::Body,
        _permit: Permit,
    }
}

impl Body for HeldBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
