//! Who may call a state-changing RPC (`ReportOutcome`: its outcomes decide champion/challenger
//! promotion).
//!
//! A caller is allowed when it presents
//! - a client certificate (verified by the TLS handshake against the client CA) whose subject
//!   common name or one of whose subject alternative names (DNS, URI, e-mail) is listed in
//!   [`AuthConfig::writers`], or
//! - `authorization: Bearer <token>` where the SHA-256 of the token (lowercase hex) is a line of
//!   [`AuthConfig::tokens_file`] (`<hex> [name]`; `#` starts a comment). The file is re-read
//!   when it changes, so tokens are added and revoked without a restart.
//!
//! With neither configured (the laptop default) only loopback callers are allowed.
//! No credentials: `UNAUTHENTICATED`; a token that is not listed: `UNAUTHENTICATED`; a verified
//! certificate that is not listed: `PERMISSION_DENIED`. A token is never logged or echoed.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;
use x509_parser::extensions::GeneralName;

use crate::errors::Failure;
use crate::tls::{stamp, FileStamp};

/// Who may call state-changing RPCs.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Certificate identities (subject CN or SAN) allowed.
    pub writers: Vec<String>,
    /// Lines of `<sha256 hex of a token> [name]`.
    pub tokens_file: Option<PathBuf>,
}

/// An allowed caller, as the logs name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A listed certificate identity.
    Certificate(String),
    /// A listed token, by its name in the file (or the first 12 hex digits of its hash).
    Token(String),
    /// A loopback caller while no writers are configured.
    Loopback,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Certificate(id) => write!(f, "certificate {id}"),
            Caller::Token(name) => write!(f, "token {name}"),
            Caller::Loopback => f.write_str("loopback"),
        }
    }
}

/// Token hash (hex) -> name.
type Tokens = HashMap<String, String>;

/// Parse a tokens file's text.
pub fn parse_tokens(text: &str) -> Result<Tokens, String> {
    let mut tokens = Tokens::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let hash = parts.next().unwrap_or("").to_ascii_lowercase();
        let hash = hash.strip_prefix("sha256:").unwrap_or(&hash).to_string();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "line {}: expected the 64 hex digits of a token's SHA-256, then an optional name",
                number + 1
            ));
        }
        let name = parts.collect::<Vec<_>>().join(" ");
        let name = if name.is_empty() {
            hash[..12].to_string()
        } else {
            name
        };
        tokens.insert(hash, name);
    }
    Ok(tokens)
}

/// SHA-256 of a token, lowercase hex (what the tokens file lists).
#[must_use]
pub fn token_hash(token: &str) -> String {
    use std::fmt::Write as _;
    Sha256::digest(token.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

struct TokenFile {
    path: PathBuf,
    current: ArcSwap<(Option<FileStamp>, Tokens)>,
}

impl TokenFile {
    fn open(path: &Path) -> Result<Self, String> {
        let now = stamp(path);
        let tokens = read_tokens(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee((now, tokens)),
        })
    }

    /// The listed tokens, re-read when the file changed (a file that no longer parses keeps the
    /// previous list, logged).
    fn tokens(&self) -> Arc<(Option<FileStamp>, Tokens)> {
        let loaded = self.current.load_full();
        let now = stamp(&self.path);
        if now == loaded.0 {
            return loaded;
        }
        let tokens = match read_tokens(&self.path) {
            Ok(t) => {
                log::info!("{} re-read: {} token(s)", self.path.display(), t.len());
                t
            }
            Err(e) => {
                log::error!("{e}; keeping the previous tokens");
                loaded.1.clone()
            }
        };
        let next = Arc::new((now, tokens));
        self.current.store(next.clone());
        next
    }
}

fn read_tokens(path: &Path) -> Result<Tokens, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("tokens file {}: {e}", path.display()))?;
    parse_tokens(&text).map_err(|e| format!("tokens file {}: {e}", path.display()))
}

/// The identities a certificate carries: subject common names, then SAN DNS names, URIs and
/// e-mail addresses.
#[must_use]
pub fn identities(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let mut out: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                    out.push((*s).to_string());
                }
                _ => {}
            }
        }
    }
    out
}

/// Decides who may call state-changing RPCs.
pub struct Authorizer {
    writers: HashSet<String>,
    tokens: Option<TokenFile>,
}

impl Authorizer {
    /// Reads the tokens file now (an unreadable or malformed one is a start error).
    pub fn new(config: &AuthConfig) -> Result<Self, String> {
        let tokens = config
            .tokens_file
            .as_deref()
            .map(TokenFile::open)
            .transpose()?;
        Ok(Self {
            writers: config.writers.iter().cloned().collect(),
            tokens,
        })
    }

    fn configured(&self) -> bool {
        !self.writers.is_empty() || self.tokens.is_some()
    }

    /// Whether a caller with these credentials may call `rpc`.
    pub fn authorize(
        &self,
        rpc: &str,
        metadata: &MetadataMap,
        peer_certs: Option<&[CertificateDer<'static>]>,
        remote: Option<SocketAddr>,
    ) -> Result<Caller, Failure> {
        if !self.configured() {
            return if remote.is_some_and(|a| a.ip().is_loopback()) {
                Ok(Caller::Loopback)
            } else {
                Err(Failure::Unauthenticated(format!(
                    "{rpc} is open to loopback callers only until the server names who may call \
                     it (ALTSCORE_OUTCOME_WRITERS or ALTSCORE_OUTCOME_TOKENS_FILE)"
                )))
            };
        }
        if let Some(value) = metadata.get("authorization") {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim)
                .filter(|t| !t.is_empty());
            let Some(token) = token else {
                return Err(Failure::Unauthenticated(
                    "the authorization header is not `Bearer <token>`".into(),
                ));
            };
            let listed = self
                .tokens
                .as_ref()
                .and_then(|f| f.tokens().1.get(&token_hash(token)).cloned());
            return match listed {
                Some(name) => Ok(Caller::Token(name)),
                None => Err(Failure::Unauthenticated(
                    "the bearer token is not valid here".into(),
                )),
            };
        }
        if let Some(cert) = peer_certs.and_then(<[_]>::first) {
            let ids = identities(cert);
            if let Some(id) = ids.iter().find(|id| self.writers.contains(*id)) {
                return Ok(Caller::Certificate(id.clone()));
            }
            let shown = ids.first().map_or("(no name)", String::as_str);
            let shown: String = shown.chars().take(128).collect();
            return Err(Failure::PermissionDenied(format!(
                "the client certificate {shown} may not call {rpc}"
            )));
        }
        Err(Failure::Unauthenticated(format!(
            "{rpc} needs a client certificate listed in ALTSCORE_OUTCOME_WRITERS or a bearer token"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file_lines() -> Result<(), String> {
        let hash = token_hash("s3cret");
        assert_eq!(
            hash,
            "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0"
        );
        let text = format!(
            "# writers\n{hash} lender batch job\n\nsha256:{}\n",
            "A".repeat(64)
        );
        let tokens = parse_tokens(&text)?;
        assert_eq!(
            tokens.get(&hash).map(String::as_str),
            Some("lender batch job")
        );
        assert_eq!(
            tokens.get(&"a".repeat(64)).map(String::as_str),
            Some("aaaaaaaaaaaa")
        );
        assert_eq!(
            parse_tokens("abc name\n"),
            Err(
                "line 1: expected the 64 hex digits of a token's SHA-256, then an optional name"
                    .into()
            )
        );
        Ok(())
    }

    fn authorizer(writers: &[&str], tokens: Option<&str>) -> Result<(Authorizer, PathBuf), String> {
        let path = std::env::temp_dir().join(format!(
            "altscore-tokens-{}-{}",
            std::process::id(),
            token_hash(tokens.unwrap_or(""))
        ));
        if let Some(text) = tokens {
            std::fs::write(&path, text).map_err(|e| e.to_string())?;
        }
        let config = AuthConfig {
            writers: writers.iter().map(|s| (*s).to_string()).collect(),
            tokens_file: tokens.map(|_| path.clone()),
        };
        Ok((Authorizer::new(&config)?, path))
    }

    fn bearer(token: &str) -> Result<MetadataMap, String> {
        let mut m = MetadataMap::new();
        let value = format!("Bearer {token}").parse().map_err(|_| "header")?;
        m.insert("authorization", value);
        Ok(m)
    }

    fn addr(text: &str) -> Result<Option<SocketAddr>, String> {
        text.parse().map(Some).map_err(|_| text.to_string())
    }

    #[test]
    fn loopback_only_when_nobody_is_named() -> Result<(), String> {
        let (a, _) = authorizer(&[], None)?;
        let none = MetadataMap::new();
        assert_eq!(
            a.authorize("ReportOutcome", &none, None, addr("127.0.0.1:5000")?),
            Ok(Caller::Loopback)
        );
        let denied = a.authorize("ReportOutcome", &none, None, addr("10.1.2.3:5000")?);
        assert_eq!(
            denied.map_err(|f| f.code()),
            Err(tonic::Code::Unauthenticated)
        );
        Ok(())
    }

    #[test]
    fn tokens_are_checked_by_hash_and_reloaded() -> Result<(), String> {
        let line = format!("{} ops\n", token_hash("good"));
        let (a, path) = authorizer(&["svc.lender.example"], Some(&line))?;
        let local = addr("127.0.0.1:5000")?;
        assert_eq!(
            a.authorize("ReportOutcome", &bearer("good")?, None, local),
            Ok(Caller::Token("ops".into()))
        );
        // Configured: loopback alone is no longer enough, and a wrong token is refused.
        for metadata in [MetadataMap::new(), bearer("bad")?] {
            let r = a.authorize("ReportOutcome", &metadata, None, local);
            assert_eq!(r.map_err(|f| f.code()), Err(tonic::Code::Unauthenticated));
        }
        // Revoked by rewriting the file (another length: a new stamp even within one tick).
        std::fs::write(&path, format!("{} new-name\n", token_hash("other")))
            .map_err(|e| e.to_string())?;
        let r = a.authorize("ReportOutcome", &bearer("good")?, None, local);
        assert_eq!(r.map_err(|f| f.code()), Err(tonic::Code::Unauthenticated));
        let _ = std::fs::remove_file(path);
        Ok(())
    }
}
