//! What the data plane is configured with (built by the control plane from its settings).

use std::path::PathBuf;
use std::time::Duration;

use altscore_kernels::policy::Policy;

use crate::auth::AuthConfig;
use crate::model::Predictor;

/// TLS material (PEM files). With `client_ca`, clients must present a certificate it signed.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// The prediction log as Redis Streams shared by every replica.
#[derive(Debug, Clone)]
pub struct LogStream {
    pub url: String,
    /// Keys are `<prefix>:predictions` and `<prefix>:outcomes`.
    pub prefix: String,
    /// Approximate cap of each stream (`MAXLEN ~`).
    pub max_len: u64,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub grpc_port: u16,
    pub metrics_host: String,
    pub metrics_port: u16,
    /// Runtime worker threads.
    pub threads: usize,
    pub max_message_bytes: usize,
    /// Most applicants in one `ScoreBatch` (and outcomes in one `ReportOutcome`).
    pub max_batch: usize,
    /// `ScoreStream`: most messages scored together.
    pub stream_batch_max: usize,
    /// `ScoreStream`: after a batch's first message, how long to wait for more (zero: what is
    /// already read).
    pub stream_batch_wait: Duration,
    /// `ScoreStream`: messages read ahead of scoring; beyond, the server stops reading.
    pub stream_queue: usize,
    /// `ScoreStream`: request ids remembered per stream to reject duplicates.
    pub stream_id_window: usize,
    pub store_timeout: Duration,
    pub policy: Policy,
    pub predictor: Predictor,
    /// Where predictions and outcomes are logged when `log_stream` is None (segment files).
    pub evaluation_dir: PathBuf,
    /// The shared log instead: Redis Stream `<prefix>:predictions` and `<prefix>:outcomes`.
    pub log_stream: Option<LogStream>,
    pub log_predictions: bool,
    /// Segment files: most bytes of prediction segments kept in `evaluation_dir` (oldest deleted
    /// beyond, counted). None: no cap.
    pub log_max_bytes: Option<u64>,
    /// Segment files: prediction segments older than this are deleted (counted). None: kept.
    pub log_max_age: Option<Duration>,
    pub shutdown_grace: Duration,
    pub tls: Option<TlsFiles>,
    /// Who may call state-changing RPCs (`ReportOutcome`).
    pub auth: AuthConfig,
    /// Longest a TLS handshake may take; a client that stalls longer is disconnected.
    pub handshake_timeout: Duration,
    /// HTTP/2 keepalive ping interval (a dead peer is dropped after one more interval).
    pub keepalive: Duration,
    /// Most concurrent calls (streams) on one connection.
    pub max_concurrent_streams: u32,
    /// Largest header list (bytes) a client may send in one request.
    pub max_header_list_bytes: u32,
    /// Streams a client may open and reset before the server has accepted them (an RST flood
    /// beyond is a protocol error that closes the connection).
    pub max_pending_reset_streams: usize,
    /// Streams the server may reset because of a client's protocol errors before it closes the
    /// connection.
    pub max_local_error_resets: usize,
    /// TCP keepalive of accepted connections (a vanished peer's socket is reclaimed).
    pub tcp_keepalive: Duration,
    /// Longest a unary call may take, reading its request included: a client that stalls its
    /// body is cut off (DEADLINE_EXCEEDED, see `deadline`). Streams are bounded only until their
    /// response starts.
    pub call_timeout: Option<Duration>,
    /// Connections older than this are closed gracefully (None: no limit).
    pub max_connection_age: Option<Duration>,
    /// Connections open at most on the gRPC port; beyond, the one quiet the longest is closed
    /// (see `conn`). None: the open-file limit (raised to its hard limit) less 512.
    pub max_connections: Option<usize>,
    /// Unary scoring calls in flight at most; beyond, RESOURCE_EXHAUSTED.
    pub max_in_flight: usize,
    /// `ScoreStream` streams open at most (every connection); beyond, RESOURCE_EXHAUSTED.
    pub max_open_streams: usize,
    /// The `grpc-retry-pushback-ms` a shed call is given.
    pub retry_pushback: Duration,
    /// Shadow scorings running at once at most; beyond, shadow work is skipped and counted.
    pub max_shadow_in_flight: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            grpc_port: 0,
            metrics_host: "127.0.0.1".into(),
            metrics_port: 0,
            threads: 2,
            max_message_bytes: 4 << 20,
            max_batch: 1000,
            stream_batch_max: 64,
            stream_batch_wait: Duration::ZERO,
            stream_queue: 256,
            stream_id_window: 65_536,
            store_timeout: Duration::from_millis(25),
            policy: Policy::standard(),
            predictor: Predictor::Native,
            evaluation_dir: PathBuf::from("var/evaluation"),
            log_stream: None,
            log_predictions: true,
            log_max_bytes: None,
            log_max_age: None,
            shutdown_grace: Duration::from_secs(5),
            tls: None,
            handshake_timeout: Duration::from_secs(10),
            auth: AuthConfig::default(),
            keepalive: Duration::from_secs(30),
            max_concurrent_streams: 1024,
            max_shadow_in_flight: 1024,
            max_header_list_bytes: 16 << 10,
            max_pending_reset_streams: 20,
            max_local_error_resets: 1024,
            tcp_keepalive: Duration::from_secs(60),
            max_connection_age: None,
            max_connections: None,
            call_timeout: Some(Duration::from_secs(30)),
            max_in_flight: 2048,
            max_open_streams: 4096,
            retry_pushback: Duration::from_millis(100),
        }
    }
}
