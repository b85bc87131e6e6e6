//! TLS on the gRPC port, with certificates re-read from disk.
//!
//! tonic's own TLS reads its PEM files once. Here each accepted connection is handshaken with
//! the current [`ServerConfig`], rebuilt when the certificate, key or client-CA file changed
//! (size, modification time or inode: a file replaced by rename or rewritten in place), so a
//! rotated certificate is served to the next connection without a restart; connections already
//! open keep theirs. A replacement that does not load (a half-written file, a key that does not
//! match) is logged and the previous configuration stays in use until the files change again.
//!
//! Handshakes run in their own tasks with a timeout, so a client that stalls its handshake holds
//! neither the accept loop nor other clients. Peer certificates reach the services through
//! tonic's `TlsConnectInfo` (`Request::peer_certs`).

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use prometheus::IntCounterVec;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::config::TlsFiles;
use crate::conn::{self, Connections, Tracked};

/// What identifies one version of a file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

pub(crate) fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(FileStamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode,
    })
}

fn stamps(files: &TlsFiles) -> Vec<Option<FileStamp>> {
    let mut out = vec![stamp(&files.cert), stamp(&files.key)];
    if let Some(ca) = &files.client_ca {
        out.push(stamp(ca));
    }
    out
}

fn pem_error(path: &Path, what: &str, e: impl std::fmt::Display) -> String {
    format!("TLS {what} {}: {e}", path.display())
}

/// The rustls configuration of `files` (HTTP/2 only, as gRPC needs).
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, String> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| pem_error(&files.cert, "certificate", e))?;
    if certs.is_empty() {
        return Err(pem_error(
            &files.cert,
            "certificate",
            "no certificate in it",
        ));
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| pem_error(&files.key, "key", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in
                CertificateDer::pem_file_iter(ca).map_err(|e| pem_error(ca, "client CA", e))?
            {
                let cert = cert.map_err(|e| pem_error(ca, "client CA", e))?;
                roots.add(cert).map_err(|e| pem_error(ca, "client CA", e))?;
            }
            if roots.is_empty() {
                return Err(pem_error(ca, "client CA", "no certificate in it"));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| pem_error(ca, "client CA", e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "TLS certificate {} and key {}: {e}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

struct Loaded {
    stamps: Vec<Option<FileStamp>>,
    config: Arc<ServerConfig>,
}

/// The current TLS configuration of the port, reloaded when its files change.
pub struct Reloading {
    files: TlsFiles,
    current: ArcSwap<Loaded>,
}

impl Reloading {
    /// Load `files` now (an error here is a start error).
    pub fn new(files: TlsFiles) -> Result<Self, String> {
        let stamps = stamps(&files);
        let config = Arc::new(server_config(&files)?);
        Ok(Self {
            files,
            current: ArcSwap::from_pointee(Loaded { stamps, config }),
        })
    }

    /// The configuration for a new connection: the files' current one when they changed and
    /// load, else the last that loaded.
    pub fn config(&self) -> Arc<ServerConfig> {
        let now = stamps(&self.files);
        let loaded = self.current.load();
        if loaded.stamps == now {
            return loaded.config.clone();
        }
        let config = match server_config(&self.files) {
            Ok(c) => {
                log::info!(
                    "TLS files changed: new connections get the certificate of {}",
                    self.files.cert.display()
                );
                Arc::new(c)
            }
            Err(e) => {
                log::error!("TLS files changed but do not load ({e}); keeping the previous ones");
                loaded.config.clone()
            }
        };
        self.current.store(Arc::new(Loaded {
            stamps: now,
            config: config.clone(),
        }));
        config
    }
}

/// Accept TCP connections on `listener` (through [`conn::accept_loop`]: the connection limit
/// and TCP options) and handshake each (at most `handshake_timeout`) in its own task; the
/// stream yields the connections that completed. Failed handshakes are counted in `failures`
/// by reason (`timeout`, `error`) and logged at debug. The accept loop ends when the stream is
/// dropped (the server stopped), closing the listener.
pub fn incoming(
    listener: TcpListener,
    connections: Arc<Connections>,
    tcp_keepalive: Duration,
    tls: Arc<Reloading>,
    handshake_timeout: Duration,
    failures: IntCounterVec,
) -> ReceiverStream<Result<TlsStream<Tracked<TcpStream>>, io::Error>> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        let watch = tx.clone();
        conn::accept_loop(
            listener,
            connections,
            tcp_keepalive,
            async move { watch.closed().await },
            move |tcp, peer| {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                let tx = tx.clone();
                let failures = failures.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(Ok(stream)).await;
                        }
                        Ok(Err(e)) => {
                            failures.with_label_values(&["error"]).inc();
                            log::debug!("TLS handshake with {peer} failed: {e}");
                        }
                        Err(_) => {
                            failures.with_label_values(&["timeout"]).inc();
                            log::debug!("TLS handshake with {peer} timed out");
                        }
                    }
                });
                std::future::ready(())
            },
        )
        .await;
    });
    ReceiverStream::new(rx)
}
