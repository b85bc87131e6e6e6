//! The gRPC port's accept loop: a bound on open connections, and TCP options.
//!
//! tonic's own accept loop retries a failed `accept` at once, so a server out of file
//! descriptors spins on it while no new client gets in (measured before this module: ~41,700
//! idle connections locked every new client out, the accept loop at ~96 % CPU). Here:
//!
//! - at most `max_connections` are open; a connection accepted beyond that closes the ones that
//!   have been quiet the longest (no bytes read from them for the longest time: an idle
//!   attacker's connection goes before a client that calls; 1/256 of the limit at once, so a
//!   flood pays one scan per batch), so a new client is always served; closures are counted in
//!   `credit_scoring_connections_evicted_total`;
//! - a failed `accept` (out of descriptors, ...) is logged and retried after a pause, never in
//!   a loop;
//! - accepted sockets get `TCP_NODELAY` and TCP keepalive (a vanished peer's socket is
//!   reclaimed).
//!
//! Eviction shuts the socket down (`shutdown(2)`, both ways): the connection's reads end, and
//! hyper closes it as it would a peer that left. The registry entry is removed (under its lock)
//! before the socket is closed, so the descriptor shut down is always the tracked one.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// At the limit, the quietest `max / EVICT_FRACTION` connections are closed at once.
const EVICT_FRACTION: usize = 256;

/// Pause after a failed `accept` (out of descriptors and the like).
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

struct Entry {
    fd: RawFd,
    /// Milliseconds since the registry's start at the connection's last read.
    last_read: Arc<AtomicU64>,
}

/// The open connections of the port.
pub struct Connections {
    max: usize,
    start: Instant,
    next_id: AtomicU64,
    /// Connections closed since [`Connections::take_closed`] was last called.
    closed: AtomicU64,
    open: Mutex<HashMap<u64, Entry>>,
    open_gauge: IntGauge,
    evicted: IntCounter,
}

impl Connections {
    #[must_use]
    pub fn new(max: usize, open_gauge: IntGauge, evicted: IntCounter) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            start: Instant::now(),
            next_id: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            open_gauge,
            evicted,
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Track `tcp`; when the limit is reached, first close the connection quiet the longest.
    pub(crate) fn admit(self: &Arc<Self>, tcp: &TcpStream) -> Ticket {
        let last_read = Arc::new(AtomicU64::new(self.now_ms()));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= self.max {
            // One pass finds the quietest 1/256 of the limit (at least one, enough for this
            // connection): a flood of new connections pays one scan per batch, not per accept.
            let batch = (self.max / EVICT_FRACTION).max(open.len() + 1 - self.max);
            let mut by_quiet: Vec<(u64, u64)> = open
                .iter()
                .map(|(id, e)| (e.last_read.load(Ordering::Relaxed), *id))
                .collect();
            let batch = batch.min(by_quiet.len());
            if batch > 0 {
                by_quiet.select_nth_unstable(batch - 1);
            }
            for (_, id) in &by_quiet[..batch] {
                if let Some(e) = open.remove(id) {
                    shutdown(e.fd);
                    self.evicted.inc();
                }
            }
        }
        open.insert(
            id,
            Entry {
                fd: tcp.as_raw_fd(),
                last_read: last_read.clone(),
            },
        );
        self.open_gauge
            .set(i64::try_from(open.len()).unwrap_or(i64::MAX));
        Ticket {
            id,
            last_read,
            connections: self.clone(),
        }
    }

    fn release(&self, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.remove(&id);
        self.closed.fetch_add(1, Ordering::Relaxed);
        self.open_gauge
            .set(i64::try_from(open.len()).unwrap_or(i64::MAX));
    }

    /// How many connections closed since the last call.
    pub fn take_closed(&self) -> u64 {
        self.closed.swap(0, Ordering::Relaxed)
    }

    /// How many connections are open.
    #[must_use]
    pub fn len(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[allow(unsafe_code)]
fn shutdown(fd: RawFd) {
    // SAFETY: `fd` is the descriptor of a connection still in the registry: its `Tracked`
    // removes the entry (under the same lock held by the caller) before the socket is closed,
    // so the descriptor is open and is that socket. shutdown(2) neither closes nor frees it.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// A connection's place in the registry; leaving it (drop) frees the place.
pub(crate) struct Ticket {
    id: u64,
    last_read: Arc<AtomicU64>,
    connections: Arc<Connections>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.connections.release(self.id);
    }
}

/// An accepted connection (TCP, or TLS over it) that records when it last read.
pub struct Tracked<S> {
    // Declared before `io`: dropped first, so the registry forgets the descriptor before the
    // socket closes.
    ticket: Ticket,
    io: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let now = self.ticket.connections.now_ms();
            self.ticket.last_read.store(now, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for Tracked<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// Accept connections on `listener` until `stop` completes (then the listener closes): each is
/// tracked in `connections` (beyond its limit, the quietest other one is closed), given
/// `TCP_NODELAY` and TCP keepalive, and handed to `accepted`. A failed accept is logged and
/// retried after a pause.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    connections: Arc<Connections>,
    tcp_keepalive: Duration,
    stop: impl Future<Output = ()>,
    mut accepted: F,
) where
    F: FnMut(Tracked<TcpStream>, SocketAddr) -> Fut,
    Fut: Future<Output = ()>,
{
    let keepalive = socket2::TcpKeepalive::new().with_time(tcp_keepalive);
    tokio::pin!(stop);
    loop {
        let accepted_now = tokio::select! {
            () = &mut stop => return,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted_now {
            Ok(a) => a,
            Err(e) => {
                log::warn!("accept failed: {e}; retrying in {ACCEPT_RETRY:?}");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
        let ticket = connections.admit(&tcp);
        accepted(Tracked { ticket, io: tcp }, peer).await;
    }
}

/// The plaintext port's connections, for `serve_with_incoming`; accepting stops when the stream
/// is dropped.
#[must_use]
pub fn incoming(
    listener: TcpListener,
    connections: Arc<Connections>,
    tcp_keepalive: Duration,
) -> ReceiverStream<io::Result<Tracked<TcpStream>>> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        let watch = tx.clone();
        accept_loop(
            listener,
            connections,
            tcp_keepalive,
            async move { watch.closed().await },
            |conn, _| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(Ok(conn)).await;
                }
            },
        )
        .await;
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    type Result = std::result::Result<(), Box<dyn std::error::Error>>;

    fn registry(max: usize) -> std::result::Result<Arc<Connections>, prometheus::Error> {
        Ok(Connections::new(
            max,
            IntGauge::new("open", "open")?,
            IntCounter::new("evicted", "evicted")?,
        ))
    }

    /// A client socket and the server's tracked end of it.
    async fn pair(
        listener: &TcpListener,
        connections: &Arc<Connections>,
    ) -> io::Result<(TcpStream, Tracked<TcpStream>)> {
        let client = TcpStream::connect(listener.local_addr()?).await?;
        let (server, _) = listener.accept().await?;
        let ticket = connections.admit(&server);
        Ok((client, Tracked { ticket, io: server }))
    }

    #[tokio::test]
    async fn beyond_the_limit_the_quietest_connection_is_closed() -> Result {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let connections = registry(2)?;
        let (mut older_client, mut older) = pair(&listener, &connections).await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (mut quiet_client, mut quiet) = pair(&listener, &connections).await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
        // the older connection reads: the newer one is now the quietest
        let mut byte = [0u8; 1];
        older_client.write_all(b"x").await?;
        older.read_exact(&mut byte).await?;
        assert_eq!(connections.len(), 2);

        let (_third_client, _third) = pair(&listener, &connections).await?;
        assert_eq!(connections.len(), 2);
        assert_eq!(connections.evicted.get(), 1);
        // the quiet one was shut down: both ends read EOF
        let mut rest = Vec::new();
        quiet.read_to_end(&mut rest).await?;
        assert!(rest.is_empty());
        quiet_client.read_to_end(&mut rest).await?;
        assert!(rest.is_empty());
        // the one that read stays open
        older_client.write_all(b"y").await?;
        older.read_exact(&mut byte).await?;
        assert_eq!(&byte, b"y");
        Ok(())
    }

    #[tokio::test]
    async fn a_closed_connection_frees_its_place() -> Result {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let connections = registry(1)?;
        let (_c1, first) = pair(&listener, &connections).await?;
        assert_eq!(connections.len(), 1);
        drop(first);
        assert!(connections.is_empty());
        let (_c2, _second) = pair(&listener, &connections).await?;
        assert_eq!(connections.evicted.get(), 0);
        assert_eq!(connections.open_gauge.get(), 1);
        Ok(())
    }
}
