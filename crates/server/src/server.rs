//! Running the data plane: its runtime (all cores), the gRPC port (tonic: `Scoring`, the Open
//! Inference Protocol v2's `inference.GRPCInferenceService`, health, reflection v1 and v1alpha),
//! the `/metrics` port, and a graceful stop.
//!
//! The gRPC port is bound at once (`SO_REUSEADDR`: a restart right after a stop binds, a port
//! another server listens on fails at once) but takes connections only from [`DataPlane::serve`]
//! on, which the control plane calls once its first champion is loaded (or known to be absent).

use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;
use tonic::transport::Server;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tower::util::MapResponseLayer;
use tower_http::catch_panic::CatchPanicLayer;

use crate::auth::Authorizer;
use crate::config::Config;
use crate::conn::{self, Connections};
use crate::deadline::DeadlineLayer;
use crate::errors::{size_limit_response, INTERNAL_MESSAGE};
use crate::log::{LogConfig, PredictionSink, RecordLog, Target};
use crate::metrics::{self, GrpcMetricsLayer, Metrics, ShedLayer};
use crate::oip::{InferenceService, INFERENCE_SERVICE};
use crate::outcomes::Ledger;
use crate::plane::{Plane, Variants};
use crate::proto;
use crate::proto::inference::GRPCInferenceServiceServer;
use crate::proto::scoring_server::ScoringServer;
use crate::service::ScoringService;
use crate::store::FeatureStore;
use crate::tls;

/// The service name health reports for besides the server as a whole ("") and
/// [`INFERENCE_SERVICE`].
pub const SCORING_SERVICE: &str = "credit.scoring.v1.Scoring";

/// Every name health reports for: the server as a whole, and each scoring service.
const HEALTH_NAMES: [&str; 3] = ["", SCORING_SERVICE, INFERENCE_SERVICE];

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {what} on {addr}: {error}")]
    Bind {
        what: &'static str,
        addr: String,
        error: std::io::Error,
    },
    #[error("cannot start the data plane: {0}")]
    Other(String),
}

fn resolve(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{host} resolves to no address")))
}

/// A socket bound to `host:port` (`SO_REUSEADDR`), not listening yet.
fn reserve(host: &str, port: u16) -> std::io::Result<Socket> {
    let addr = resolve(host, port)?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

fn local_port(socket: &Socket) -> u16 {
    socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map_or(0, |a| a.port())
}

/// A panic in a handler answers that call `INTERNAL` (the cause goes to the log); the data plane
/// goes on.
fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> http::Response<Full<Bytes>> {
    let what = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    log::error!("a call panicked: {what}");
    http::Response::builder()
        .header("content-type", "application/grpc")
        .header("grpc-status", "13")
        .header("grpc-message", INTERNAL_MESSAGE.replace(' ', "%20"))
        .body(Full::new(Bytes::new()))
        .unwrap_or_default()
}

/// The HTTP/2 and TCP settings of the gRPC port (the benchmark's transport floor takes the same).
#[must_use]
pub fn transport(config: &Config) -> Server {
    let server = Server::builder()
        .tcp_nodelay(true)
        .tcp_keepalive(Some(config.tcp_keepalive))
        .http2_keepalive_interval(Some(config.keepalive))
        .http2_keepalive_timeout(Some(config.keepalive))
        .max_concurrent_streams(Some(config.max_concurrent_streams))
        .http2_max_header_list_size(Some(config.max_header_list_bytes))
        .http2_max_pending_accept_reset_streams(Some(config.max_pending_reset_streams))
        .http2_max_local_error_reset_streams(Some(config.max_local_error_resets))
        .initial_stream_window_size(Some(1 << 20))
        .initial_connection_window_size(Some(4 << 20));
    // No `timeout`: the call timeout and the client's deadline are `DeadlineLayer`'s (one code,
    // DEADLINE_EXCEEDED, whether the body is still being read or the handler runs).
    match config.max_connection_age {
        Some(age) => server.max_connection_age(age),
        None => server,
    }
}

/// Descriptors kept for what is not a connection: the prediction log, model libraries, the
/// feature store, MLflow, metrics.
pub const RESERVED_DESCRIPTORS: usize = 512;

/// The open-connection limit: `configured`, else (and at most) the open-file limit, raised to
/// its hard limit first, less [`RESERVED_DESCRIPTORS`].
#[allow(unsafe_code)]
#[must_use]
pub fn connection_limit(configured: Option<usize>) -> usize {
    let mut files: usize = 1024;
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit write/read only the struct passed.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0 {
                if limit.rlim_cur < limit.rlim_max {
                    let raised = libc::rlimit {
                        rlim_cur: limit.rlim_max,
                        rlim_max: limit.rlim_max,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) == 0 {
                        limit = raised;
                    }
                }
                files = usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX);
            }
        }
    }
    let by_files = files.saturating_sub(RESERVED_DESCRIPTORS).max(1);
    configured.map_or(by_files, |c| c.min(by_files))
}

/// How often the server checks whether connections closed, to give their memory back.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(5);

/// Give the free memory of glibc's heaps back to the OS (`malloc_trim`). The buffers of
/// connections and streams are small allocations carved from per-thread heaps: when they are
/// freed the pages stay in the heaps, so without this the RSS that 8,000 idle connections or
/// 20 x 1,024 held streams took stayed after they closed (benchmarks/RESULTS.md, "Hostile
/// clients"). Returns whether memory was released.
#[allow(unsafe_code)]
#[must_use]
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heaps under their locks.
    unsafe {
        libc::malloc_trim(0) == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// Every [`TRIM_INTERVAL`], when connections closed since the last look,
/// [`release_free_memory`] (its time logged at debug). Clients that stay connected trigger
/// nothing; a steady churn of connections, one trim per interval at most.
async fn trim_after_closes(connections: Arc<Connections>) {
    let mut every = tokio::time::interval(TRIM_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let closed = connections.take_closed();
        if closed > 0 {
            let started = std::time::Instant::now();
            let released = release_free_memory();
            log::debug!(
                "{closed} connections closed: free memory given back ({released}) in {:?}",
                started.elapsed()
            );
        }
    }
}

/// Largest allocation glibc serves from its heaps; larger ones are mapped and unmapped on free.
pub const MMAP_THRESHOLD_BYTES: i32 = 128 * 1024;

/// Fix glibc's mmap and trim thresholds (its defaults move: after a large mapped buffer is freed
/// the mmap threshold rises, up to 32 MiB, and from then on the buffers of batches, streams and
/// log flushes are carved from the per-thread heaps and stay there). Measured over `make bench`'s
/// load: RSS 250 -> 310 MB with the moving threshold, 250 -> 257 MB with it fixed; the same
/// ratios to the transport floor.
#[allow(unsafe_code)]
fn fixed_malloc_thresholds() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before the runtime's threads
    // start, and glibc serializes it with allocation.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
}

/// The running data plane, owned by the control plane.
pub struct DataPlane {
    runtime: Runtime,
    pub plane: Arc<Plane>,
    health: HealthReporter,
    health_service: Mutex<Option<HealthServer<tonic_health::server::HealthService>>>,
    grpc_socket: Mutex<Option<Socket>>,
    grpc_port: u16,
    metrics_port: u16,
    stop: watch::Sender<bool>,
    server: Mutex<Option<JoinHandle<Result<(), String>>>>,
    failed: Arc<AtomicBool>,
    /// What `/readyz` answers: health is `SERVING`.
    ready: Arc<AtomicBool>,
    auth: Arc<Authorizer>,
}

impl DataPlane {
    /// Build the runtime, open the logs and the store, bind both ports; `/metrics` serves at
    /// once, the gRPC port from [`Self::serve`] on. `store` is built inside the runtime.
    pub fn start(
        config: Config,
        store: impl FnOnce() -> Result<FeatureStore, String>,
    ) -> Result<Self, StartError> {
        fixed_malloc_thresholds();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads.max(1))
            .thread_name("altscore-data-plane")
            .enable_all()
            .build()
            .map_err(|e| StartError::Other(format!("runtime: {e}")))?;
        let metrics = Arc::new(Metrics::new().map_err(|e| StartError::Other(e.to_string()))?);
        let auth = Arc::new(Authorizer::new(&config.auth).map_err(StartError::Other)?);
        let store = {
            let _guard = runtime.enter();
            store().map_err(StartError::Other)?
        };
        let dropped = metrics.log_dropped.clone();
        let target = |kind: &str| match &config.log_stream {
            Some(stream) => Target::Stream {
                url: stream.url.clone(),
                key: format!("{}:{kind}", stream.prefix),
                max_len: stream.max_len,
            },
            None => Target::Segments(config.evaluation_dir.clone()),
        };
        let predictions: Option<Arc<dyn PredictionSink>> = if config.log_predictions {
            let log = RecordLog::open_target(
                target("predictions"),
                "predictions",
                LogConfig {
                    max_total_bytes: config.log_max_bytes,
                    max_age: config.log_max_age,
                    ..LogConfig::default()
                },
                Some(Box::new(move |n| dropped.inc_by(n))),
            )
            .map_err(|e| StartError::Other(e.to_string()))?;
            let expired = metrics.log_expired.clone();
            log.on_expire(Box::new(move |n| expired.inc_by(n)));
            Some(Arc::new(log))
        } else {
            None
        };
        let outcomes =
            RecordLog::open_target(target("outcomes"), "outcomes", LogConfig::default(), None)
                .map_err(|e| StartError::Other(e.to_string()))?;
        let grpc_socket =
            reserve(&config.host, config.grpc_port).map_err(|error| StartError::Bind {
                what: "gRPC",
                addr: format!("{}:{}", config.host, config.grpc_port),
                error,
            })?;
        // Fail now on a port another server listens on: SO_REUSEADDR alone lets a second
        // bind through until listen().
        grpc_socket.listen(1024).map_err(|error| StartError::Bind {
            what: "gRPC",
            addr: format!("{}:{}", config.host, config.grpc_port),
            error,
        })?;
        let grpc_port = local_port(&grpc_socket);
        let metrics_addr = format!("{}:{}", config.metrics_host, config.metrics_port);
        let metrics_listener = resolve(&config.metrics_host, config.metrics_port)
            .and_then(StdListener::bind)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|error| StartError::Bind {
                what: "metrics",
                addr: metrics_addr,
                error,
            })?;
        let metrics_port = metrics_listener.local_addr().map_or(0, |a| a.port());
        let (stop, stopped) = watch::channel(false);
        let ready = Arc::new(AtomicBool::new(false));
        runtime.spawn(metrics::serve(
            metrics_listener,
            metrics.clone(),
            stopped,
            ready.clone(),
        ));
        let (health, health_service) = runtime.block_on(async {
            let reporter = HealthReporter::new();
            let service = HealthServer::new(
                tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
            );
            for name in HEALTH_NAMES {
                reporter
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
            (reporter, service)
        });
        let ledger = match &config.log_stream {
            Some(stream) => Ledger::redis(
                &stream.url,
                format!("{}:outcome-index", stream.prefix),
                Duration::from_secs(2),
            )
            .map_err(StartError::Other)?,
            None => Ledger::from_segments(&config.evaluation_dir).map_err(|e| {
                StartError::Other(format!(
                    "outcome log {}: {e}",
                    config.evaluation_dir.display()
                ))
            })?,
        };
        let plane = Arc::new(Plane::new(
            config,
            store,
            predictions,
            outcomes,
            ledger,
            metrics,
        ));
        Ok(Self {
            runtime,
            plane,
            health,
            health_service: Mutex::new(Some(health_service)),
            grpc_socket: Mutex::new(Some(grpc_socket)),
            grpc_port,
            metrics_port,
            stop,
            server: Mutex::new(None),
            failed: Arc::new(AtomicBool::new(false)),
            ready,
            auth,
        })
    }

    #[must_use]
    pub fn grpc_port(&self) -> u16 {
        self.grpc_port
    }

    #[must_use]
    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    /// Run a future on the data plane's runtime, blocking the caller.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Start taking calls on the gRPC port. Idempotent.
    pub fn serve(&self) -> Result<(), StartError> {
        let Some(socket) = self
            .grpc_socket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return Ok(());
        };
        let Some(health) = self
            .health_service
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return Ok(());
        };
        let config = &self.plane.config;
        let std_listener: StdListener = socket.into();
        let listener = {
            let _guard = self.runtime.enter();
            tokio::net::TcpListener::from_std(std_listener)
                .map_err(|e| StartError::Other(format!("gRPC listener: {e}")))?
        };
        let builder = transport(config);
        let tls = match &config.tls {
            Some(files) => Some(Arc::new(
                tls::Reloading::new(files.clone()).map_err(StartError::Other)?,
            )),
            None => None,
        };
        let handshake_timeout = config.handshake_timeout;
        let tcp_keepalive = config.tcp_keepalive;
        let max_connections = connection_limit(config.max_connections);
        log::info!("at most {max_connections} connections open on the gRPC port");
        let connections = Connections::new(
            max_connections,
            self.plane.metrics.connections_open.clone(),
            self.plane.metrics.connections_evicted.clone(),
        );
        let handshake_failures = self.plane.metrics.tls_handshake_failures.clone();
        // Compressed requests are read; answers go uncompressed: they are a few hundred bytes,
        // and compressing each cost more CPU than the whole scoring (measured).
        let scoring =
            ScoringServer::new(ScoringService::new(self.plane.clone(), self.auth.clone()))
                .max_decoding_message_size(config.max_message_bytes)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd);
        let inference = GRPCInferenceServiceServer::new(InferenceService::new(self.plane.clone()))
            .max_decoding_message_size(config.max_message_bytes)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd);
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| StartError::Other(format!("reflection: {e}")))?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| StartError::Other(format!("reflection: {e}")))?;
        let router = builder
            .layer(GrpcMetricsLayer::new(self.plane.metrics.clone()))
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(MapResponseLayer::new(
                size_limit_response::<tonic::body::Body> as fn(_) -> _,
            ))
            .layer(ShedLayer::new(
                config.max_in_flight,
                config.max_open_streams,
                config.retry_pushback,
                &self.plane.metrics.shed,
            ))
            .layer(DeadlineLayer::new(config.call_timeout))
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(scoring)
            .add_service(inference);
        let trim = self.runtime.spawn(trim_after_closes(connections.clone()));
        let mut stopped = self.stop.subscribe();
        let failed = self.failed.clone();
        let task = self.runtime.spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            let result = if let Some(tls) = tls {
                let incoming = tls::incoming(
                    listener,
                    connections,
                    tcp_keepalive,
                    tls,
                    handshake_timeout,
                    handshake_failures,
                );
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
            } else {
                let incoming = conn::incoming(listener, connections, tcp_keepalive);
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
            }
            .map_err(|e| e.to_string());
            trim.abort();
            if let Err(e) = &result {
                failed.store(true, Ordering::SeqCst);
                log::error!("the gRPC server stopped: {e}");
            }
            result
        });
        *self.server.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        Ok(())
    }

    /// Whether the gRPC server takes calls (false before `serve`, and once it has failed or
    /// stopped).
    #[must_use]
    pub fn running(&self) -> bool {
        if self.failed.load(Ordering::SeqCst) {
            return false;
        }
        self.server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// Serve `variants` (None: nothing) from now on; health follows.
    pub fn set_variants(&self, variants: Option<Variants>) {
        let serving = variants.is_some();
        self.plane.set_variants(variants);
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.runtime.block_on(async {
            for name in HEALTH_NAMES {
                self.health.set_service_status(name, status).await;
            }
        });
        self.ready.store(serving, Ordering::Release);
    }

    /// Health NOT_SERVING, stop accepting, give calls in flight `grace`, then write what the
    /// logs hold. Idempotent.
    pub fn shutdown(&self, grace: Duration) {
        self.ready.store(false, Ordering::Release);
        self.runtime.block_on(async {
            for name in HEALTH_NAMES {
                self.health
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
        });
        let _ = self.stop.send(true);
        let task = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let done = self
                .runtime
                .block_on(async { tokio::time::timeout(grace, task).await });
            if done.is_err() {
                log::warn!("calls still in flight after {grace:?}: stopping anyway");
            }
        }
        if let Some(p) = &self.plane.predictions {
            if let Err(e) = p.close() {
                log::error!("{e}");
            }
        }
        if let Err(e) = self.plane.outcomes.close() {
            log::error!("{e}");
        }
        let (written, dropped) = self
            .plane
            .predictions
            .as_ref()
            .map_or((0, 0), |p| (p.written(), p.dropped()));
        log::info!(
            predictions_logged = written,
            predictions_dropped = dropped;
            "data plane stopped: {written} predictions logged, {dropped} dropped"
        );
    }
}
