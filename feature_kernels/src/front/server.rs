//! The HTTP/2 side: accept connections on the public port, answer `Score` / `ScoreBatch`
//! directly where [`Direct`](super::direct::Direct) can, and pass every other call, byte for
//! byte and in both directions (headers, messages, trailers, cancellation), to the Python
//! grpc.aio backend over a Unix socket.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};

use super::Shared;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type GrpcBody = BoxBody<Bytes, BoxError>;

const SCORE: &str = "/credit.scoring.v1.Scoring/Score";
const SCORE_BATCH: &str = "/credit.scoring.v1.Scoring/ScoreBatch";
/// HTTP/2 flow-control windows: large enough that a full batch never waits for a window update.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;

/// gRPC status codes the front end answers with itself.
#[derive(Debug, Clone, Copy)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    DeadlineExceeded = 4,
    ResourceExhausted = 8,
    Unavailable = 14,
}

impl Code {
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::Unavailable => "UNAVAILABLE",
        }
    }
}

/// A unary answer: one message, then the `grpc-status: 0` trailers.
struct Unary {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for Unary {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(d) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

fn grpc_response(body: GrpcBody) -> Response<GrpcBody> {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    resp
}

fn ok_response(framed: Vec<u8>) -> Response<GrpcBody> {
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    grpc_response(
        Unary {
            data: Some(Bytes::from(framed)),
            trailers: Some(trailers),
        }
        .boxed(),
    )
}

/// `grpc-message`: percent-encoded outside printable ASCII (and `%`), as the gRPC spec says.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A trailers-only error answer.
fn status_response(code: Code, message: &str) -> Response<GrpcBody> {
    let mut resp = grpc_response(Empty::new().map_err(|e| match e {}).boxed());
    let h = resp.headers_mut();
    h.insert("grpc-status", HeaderValue::from(code as u16));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", v);
    }
    resp
}

/// `grpc-timeout`: digits and a unit (H M S m u n).
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

enum ReadError {
    TooLarge(usize),
    Client,
}

/// The whole request body, refusing more than `limit` bytes.
async fn read_body(mut body: Incoming, limit: usize) -> Result<Vec<u8>, ReadError> {
    let mut data = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ReadError::Client)?;
        if let Ok(chunk) = frame.into_data() {
            if data.len() + chunk.len() > limit {
                return Err(ReadError::TooLarge(data.len() + chunk.len()));
            }
            data.extend_from_slice(&chunk);
        }
    }
    Ok(data)
}

/// The one uncompressed message of a unary request body, if that is what it holds.
fn single_message(data: &[u8]) -> Option<&[u8]> {
    let (head, message) = data.split_at_checked(5)?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    (head[0] == 0 && message.len() == len).then_some(message)
}

/// The connection to the Python backend (one HTTP/2 connection, reopened when it closes).
pub struct Backend {
    name: String,
    sender: Mutex<Option<SendRequest<GrpcBody>>>,
}

impl Backend {
    pub fn new(name: String) -> Self {
        Self {
            name,
            sender: Mutex::new(None),
        }
    }

    async fn connect(&self) -> Result<SendRequest<GrpcBody>, BoxError> {
        let mut guard = self.sender.lock().await;
        if let Some(s) = guard.as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        let stream = connect_abstract(&self.name)?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(conn);
        *guard = Some(sender.clone());
        Ok(sender)
    }

    async fn send(&self, req: Request<GrpcBody>) -> Result<Response<Incoming>, BoxError> {
        let mut sender = self.connect().await?;
        sender.ready().await?;
        Ok(sender.send_request(req).await?)
    }
}

fn connect_abstract(name: &str) -> io::Result<tokio::net::UnixStream> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let stream = std::os::unix::net::UnixStream::connect_addr(&addr)?;
    stream.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(stream)
}

/// The RPC's method name, for metrics of calls the front end answers itself.
fn method_of(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_owned()
}

async fn proxy(
    shared: &Shared,
    backend: &Backend,
    req: Request<GrpcBody>,
    started: Instant,
) -> Response<GrpcBody> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str)
        .to_owned();
    match Uri::builder()
        .scheme("http")
        .authority("backend")
        .path_and_query(path.as_str())
        .build()
    {
        Ok(uri) => parts.uri = uri,
        Err(_) => return status_response(Code::Unavailable, "bad request path"),
    }
    match backend.send(Request::from_parts(parts, body)).await {
        Ok(resp) => resp.map(|b| b.map_err(BoxError::from).boxed()),
        Err(e) => {
            shared.record_call(&method_of(&path), Code::Unavailable, started.elapsed());
            status_response(
                Code::Unavailable,
                &format!("scoring backend not reachable: {e}"),
            )
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    backend: Arc<Backend>,
    req: Request<Incoming>,
) -> Result<Response<GrpcBody>, Infallible> {
    let started = Instant::now();
    let batch = match req.uri().path() {
        SCORE => false,
        SCORE_BATCH => true,
        _ => {
            let req = req.map(|b| b.map_err(BoxError::from).boxed());
            return Ok(proxy(&shared, &backend, req, started).await);
        }
    };
    let rpc = if batch { "ScoreBatch" } else { "Score" };
    let (parts, body) = req.into_parts();
    let limit = shared.max_message_bytes + 5;
    let data = match read_body(body, limit).await {
        Ok(data) => data,
        Err(ReadError::TooLarge(n)) => {
            shared.record_call(rpc, Code::ResourceExhausted, started.elapsed());
            return Ok(status_response(
                Code::ResourceExhausted,
                &format!(
                    "SERVER: Received message larger than max ({} vs. {})",
                    n.saturating_sub(5),
                    shared.max_message_bytes
                ),
            ));
        }
        Err(ReadError::Client) => {
            return Ok(status_response(
                Code::Cancelled,
                "request body not received",
            ));
        }
    };
    if let Some(framed) = single_message(&data).and_then(|m| shared.answer(m, batch)) {
        let elapsed = started.elapsed();
        if grpc_timeout(&parts.headers).is_some_and(|t| elapsed > t) {
            shared.record_call(rpc, Code::DeadlineExceeded, elapsed);
            return Ok(status_response(Code::DeadlineExceeded, "Deadline Exceeded"));
        }
        shared.record_call(rpc, Code::Ok, elapsed);
        return Ok(ok_response(framed));
    }
    let body = Full::new(Bytes::from(data)).map_err(|e| match e {}).boxed();
    Ok(proxy(&shared, &backend, Request::from_parts(parts, body), started).await)
}

/// A listening socket on `host:port` that shares the port with the other workers.
pub fn bind(host: &str, port: u16) -> io::Result<std::net::TcpListener> {
    let addr: SocketAddr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, host.to_owned()))?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Serve until `stop` carries a grace period; then stop accepting, tell every connection to
/// go away (GOAWAY), and give the calls in flight that long to finish.
pub async fn serve(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    backend_name: String,
    mut stop: watch::Receiver<Option<Duration>>,
) -> io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let backend = Arc::new(Backend::new(backend_name));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(1024)
        .max_send_buf_size(1 << 20);
    let grace = loop {
        tokio::select! {
            changed = stop.changed() => {
                let grace = if changed.is_ok() { *stop.borrow() } else { Some(Duration::ZERO) };
                if let Some(grace) = grace {
                    break grace;
                }
            }
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                let (shared, backend) = (shared.clone(), backend.clone());
                let service = hyper::service::service_fn(move |req| {
                    handle(shared.clone(), backend.clone(), req)
                });
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(tcp), service));
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        }
    };
    drop(listener);
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
    Ok(())
}
