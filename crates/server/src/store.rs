//! The online feature store, read side: per-entity features looked up by applicant id, one round
//! trip per request or micro-batch, under a hard timeout.
//!
//! Two backends keep one contract (the Python contract tests run against both through the
//! binding):
//! - [`Backend::Redis`]: redis-rs on tokio, standalone (`ConnectionManager`: multiplexed,
//!   reconnects by itself) or Redis Cluster (`MGET` is split by slot by the client);
//! - [`Backend::Embedded`]: the laptop default, in process, filled from the served model's entity
//!   snapshot.
//!
//! Key layout (written by `training publish` through `credit_core.feature_store`)::
//!
//! ```text
//! altscore:fs:{namespace}:active                  the active version's name
//! altscore:fs:{namespace}:{version}:{entity_id}   the entity's features, a JSON object
//! ```
//!
//! A read sends `GET pointer` and `MGET` of the keys under the version it saw last, together
//! (one round trip; on a single server the reads of concurrent requests are coalesced into one
//! such pair, see [`RedisStore`]). When the pointer still names that version that is the
//! answer; when it names another (just after an activation) a second `MGET` follows and the
//! version is remembered: a switch is seen by the very next read, and one `MGET` never mixes two
//! versions. No active
//! version is a failure of the store (a Redis restarted empty must not turn every applicant into
//! a new customer), as is a timeout, a refused connection or a corrupt value. Failures are
//! logged once per outage (and once when the store is back), not once per request.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use tokio::sync::{mpsc, oneshot};

pub const KEY_PREFIX: &str = "altscore:fs";

/// `MGET`'s answer: each key's bytes, or nothing.
type Raw = Vec<Option<Vec<u8>>>;

/// One stored feature value.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredValue {
    Number(f64),
    Text(String),
}

/// One entity's features, by name.
pub type StoredRow = HashMap<String, StoredValue>;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum StoreError {
    #[error(
        "feature store read of {ids} ids in {namespace:?} at {at} timed out after {seconds} s"
    )]
    Timeout {
        ids: usize,
        namespace: String,
        at: String,
        seconds: f64,
    },
    #[error("feature store at {at} failed: {what}")]
    Failed { at: String, what: String },
    #[error("feature store at {at} has no active version of {namespace:?} (nothing published, or restarted empty)")]
    NoActiveVersion { at: String, namespace: String },
    #[error("feature store at {at}: corrupt value under {key}: {what}")]
    Corrupt {
        at: String,
        key: String,
        what: String,
    },
    #[error("feature store: {0}")]
    BadArgument(String),
}

#[must_use]
pub fn pointer_key(namespace: &str) -> String {
    format!("{KEY_PREFIX}:{namespace}:active")
}

#[must_use]
pub fn data_key(namespace: &str, version: &str, entity: &str) -> String {
    format!("{KEY_PREFIX}:{namespace}:{version}:{entity}")
}

pub fn check_name(what: &str, value: &str) -> Result<(), StoreError> {
    if value.is_empty() || value.contains(':') {
        return Err(StoreError::BadArgument(format!(
            "{what} must be a non-empty string without ':': {value:?}"
        )));
    }
    Ok(())
}

/// A stored JSON object to a row; numbers and strings only. Read straight into the row (no
/// intermediate `serde_json::Value` tree: that cost 5 µs of a 60 µs Redis-enriched scoring).
pub fn decode_row(raw: &[u8]) -> Result<StoredRow, String> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    let row =
        serde::de::Deserializer::deserialize_map(&mut de, RowVisitor).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(row)
}

struct RowVisitor;

impl<'de> serde::de::Visitor<'de> for RowVisitor {
    type Value = StoredRow;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of numbers and strings")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<StoredRow, A::Error> {
        let mut row = StoredRow::with_capacity(map.size_hint().unwrap_or(16));
        while let Some(key) = map.next_key::<String>()? {
            let value = map
                .next_value_seed(ValueSeed)
                .map_err(|e| serde::de::Error::custom(format!("{key}: {e}")))?;
            row.insert(key, value);
        }
        Ok(row)
    }
}

/// One value of a stored row: a number (as `f64`) or a string; anything else is an error.
struct ValueSeed;

impl<'de> serde::de::DeserializeSeed<'de> for ValueSeed {
    type Value = StoredValue;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<StoredValue, D::Error> {
        d.deserialize_any(self)
    }
}

impl serde::de::Visitor<'_> for ValueSeed {
    type Value = StoredValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or a string")
    }

    fn visit_f64<E>(self, v: f64) -> Result<StoredValue, E> {
        Ok(StoredValue::Number(v))
    }

    // JSON numbers are read as floats, as Python reads them
    fn visit_i64<E>(self, v: i64) -> Result<StoredValue, E> {
        Ok(StoredValue::Number(v as f64))
    }

    fn visit_u64<E>(self, v: u64) -> Result<StoredValue, E> {
        Ok(StoredValue::Number(v as f64))
    }

    fn visit_str<E>(self, v: &str) -> Result<StoredValue, E> {
        Ok(StoredValue::Text(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<StoredValue, E> {
        Ok(StoredValue::Text(v))
    }
}

/// A URL with its password hidden, for messages.
fn safe_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

enum Conn {
    Single(ConnectionManager),
    Cluster(tokio::sync::Mutex<Option<ClusterConnection>>, ClusterClient),
}

/// Redis (standalone or Cluster).
///
/// On a single server, concurrent reads are coalesced: one task sends the lookups waiting at
/// that moment as one pipelined `GET pointer` + `MGET` (up to [`COALESCE_MAX_IDS`] ids) while
/// the next ones queue, so under load Redis and this process see one command pair for many
/// requests instead of one each. Rows are decoded per request (a corrupt value fails only the
/// requests that asked for it), and each request keeps its own timeout.
pub struct RedisStore {
    at: String,
    shared: Arc<Shared>,
    lookups: OnceLock<mpsc::Sender<Lookup>>,
}

/// Most entity ids one coalesced read asks for (a larger single request goes alone).
pub const COALESCE_MAX_IDS: usize = 1024;
/// Lookups waiting for the coalescing task; beyond, callers wait (inside their timeout).
const COALESCE_QUEUE: usize = 4096;

/// One caller's read, waiting for the coalescing task.
struct Lookup {
    namespace: String,
    ids: Vec<String>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    reply: oneshot::Sender<Result<Vec<Option<StoredRow>>, StoreError>>,
}

struct Shared {
    at: String,
    conn: Conn,
    /// namespace -> the active version the last read saw.
    seen: Mutex<HashMap<String, String>>,
}

impl RedisStore {
    /// `urls`: one `redis://`, `rediss://` or `unix://` URL, or (cluster) several seed nodes.
    /// Connections are made on first use, inside a runtime.
    pub fn new(
        urls: &[String],
        cluster: bool,
        connect_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let at = urls
            .iter()
            .map(|u| safe_url(u))
            .collect::<Vec<_>>()
            .join(",");
        let bad =
            |e: redis::RedisError| StoreError::BadArgument(format!("bad Redis URL {at:?}: {e}"));
        let conn = if cluster {
            let client = ClusterClient::builder(urls.to_vec())
                .connection_timeout(connect_timeout)
                .retries(1)
                .build()
                .map_err(bad)?;
            Conn::Cluster(tokio::sync::Mutex::new(None), client)
        } else {
            let [url] = urls else {
                return Err(StoreError::BadArgument(format!(
                    "one Redis URL expected (set cluster mode for several): {at:?}"
                )));
            };
            let client = redis::Client::open(url.as_str()).map_err(bad)?;
            // No response timeout of the client's own (redis-rs defaults to 500 ms): each
            // read's budget (`ALTSCORE_FEATURE_STORE_TIMEOUT_SECONDS`, or the caller's) is the one bound.
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(None)
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(10))
                .set_max_delay(Duration::from_millis(500));
            Conn::Single(ConnectionManager::new_lazy_with_config(client, config).map_err(bad)?)
        };
        Ok(Self {
            at: at.clone(),
            shared: Arc::new(Shared {
                at,
                conn,
                seen: Mutex::new(HashMap::new()),
            }),
            lookups: OnceLock::new(),
        })
    }

    /// Features of each id under the active version, in the order of `ids` (`None`: unknown).
    /// Inside a tokio runtime (the coalescing task is started on the first call).
    async fn get_many(
        &self,
        namespace: &str,
        ids: &[&str],
        timeout: Duration,
    ) -> Result<Vec<Option<StoredRow>>, StoreError> {
        if matches!(self.shared.conn, Conn::Cluster(..)) || ids.len() >= COALESCE_MAX_IDS {
            let (active, raws) = self.shared.fetch(namespace, ids).await?;
            let raws = ids.iter().copied().zip(raws.iter().map(Option::as_deref));
            return self.shared.decode(namespace, &active, raws);
        }
        let queue = self.lookups.get_or_init(|| {
            let (tx, rx) = mpsc::channel(COALESCE_QUEUE);
            tokio::spawn(coalesce(self.shared.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let lookup = Lookup {
            namespace: namespace.to_string(),
            ids: ids.iter().map(|id| (*id).to_string()).collect(),
            deadline: tokio::time::Instant::now() + timeout,
            timeout,
            reply,
        };
        let stopped = || StoreError::Failed {
            at: self.at.clone(),
            what: "the feature-store read task stopped".into(),
        };
        queue.send(lookup).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The coalescing task: every lookup waiting when the previous read ends goes into the next.
async fn coalesce(shared: Arc<Shared>, mut queue: mpsc::Receiver<Lookup>) {
    while let Some(first) = queue.recv().await {
        let mut n = first.ids.len();
        let mut batch = vec![first];
        while n < COALESCE_MAX_IDS {
            match queue.try_recv() {
                Ok(lookup) => {
                    n += lookup.ids.len();
                    batch.push(lookup);
                }
                Err(_) => break,
            }
        }
        while !batch.is_empty() {
            let namespace = batch[0].namespace.clone();
            let (group, rest): (Vec<Lookup>, Vec<Lookup>) =
                batch.into_iter().partition(|l| l.namespace == namespace);
            batch = rest;
            shared.answer(&namespace, group).await;
        }
    }
}

impl Shared {
    /// One read for the lookups of `group` (all of `namespace`), each answered on its own.
    async fn answer(&self, namespace: &str, group: Vec<Lookup>) {
        let group: Vec<Lookup> = group.into_iter().filter(|l| !l.reply.is_closed()).collect();
        // The read waits as long as the most patient caller; each caller is also cut at its own
        // budget by [`FeatureStore::get_many`], so an early deadline never fails the others.
        let Some(deadline) = group.iter().map(|l| l.deadline).max() else {
            return; // every caller gave up
        };
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut unique: Vec<&str> = Vec::new();
        for id in group.iter().flat_map(|l| &l.ids) {
            index.entry(id.as_str()).or_insert_with(|| {
                unique.push(id.as_str());
                unique.len() - 1
            });
        }
        let fetched = match tokio::time::timeout_at(deadline, self.fetch(namespace, &unique)).await
        {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout {
                ids: unique.len(),
                namespace: namespace.to_string(),
                at: self.at.clone(),
                seconds: group
                    .iter()
                    .map(|l| l.timeout)
                    .max()
                    .unwrap_or_default()
                    .as_secs_f64(),
            }),
        };
        let answers: Vec<_> = group
            .iter()
            .map(|l| match &fetched {
                Err(e) => Err(e.clone()),
                Ok((active, raws)) => self.decode(
                    namespace,
                    active,
                    l.ids
                        .iter()
                        .map(|id| (id.as_str(), raws[index[id.as_str()]].as_deref())),
                ),
            })
            .collect();
        drop(index);
        drop(unique);
        for (lookup, answer) in group.into_iter().zip(answers) {
            let _ = lookup.reply.send(answer); // a caller that timed out is gone: fine
        }
    }

    /// Decode the raw values of `ids` read under `active`.
    fn decode<'a>(
        &self,
        namespace: &str,
        active: &str,
        raws: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) -> Result<Vec<Option<StoredRow>>, StoreError> {
        raws.map(|(id, raw)| {
            raw.map(|bytes| {
                decode_row(bytes).map_err(|what| StoreError::Corrupt {
                    at: self.at.clone(),
                    key: data_key(namespace, active, id),
                    what,
                })
            })
            .transpose()
        })
        .collect()
    }

    fn failed(&self, e: &redis::RedisError) -> StoreError {
        StoreError::Failed {
            at: self.at.clone(),
            what: e.to_string(),
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        match &self.conn {
            Conn::Single(manager) => {
                let mut c = manager.clone();
                cmd.query_async(&mut c).await.map_err(|e| self.failed(&e))
            }
            Conn::Cluster(slot, client) => {
                let mut c = {
                    let mut guard = slot.lock().await;
                    if let Some(c) = &*guard {
                        c.clone()
                    } else {
                        let c = client
                            .get_async_connection()
                            .await
                            .map_err(|e| self.failed(&e))?;
                        *guard = Some(c.clone());
                        c
                    }
                };
                cmd.query_async(&mut c).await.map_err(|e| self.failed(&e))
            }
        }
    }

    fn mget_cmd(namespace: &str, version: &str, ids: &[&str]) -> redis::Cmd {
        let mut cmd = redis::cmd("MGET");
        for id in ids {
            cmd.arg(data_key(namespace, version, id));
        }
        cmd
    }

    async fn mget(&self, namespace: &str, version: &str, ids: &[&str]) -> Result<Raw, StoreError> {
        self.query(&Self::mget_cmd(namespace, version, ids)).await
    }

    /// The active version and the rows of `version`, read together: one pipelined request on
    /// a single server (one write and one reply to wait for); a cluster routes the two commands
    /// to their slots' nodes.
    async fn pointer_and_rows(
        &self,
        pointer: &redis::Cmd,
        namespace: &str,
        version: &str,
        ids: &[&str],
    ) -> Result<(Option<String>, Raw), StoreError> {
        match &self.conn {
            Conn::Single(manager) => {
                let mut pipe = redis::pipe();
                pipe.add_command(pointer.clone())
                    .add_command(Self::mget_cmd(namespace, version, ids));
                let mut c = manager.clone();
                pipe.query_async(&mut c).await.map_err(|e| self.failed(&e))
            }
            Conn::Cluster(..) => {
                let (active, values) =
                    tokio::join!(self.query(pointer), self.mget(namespace, version, ids));
                Ok((active?, values?))
            }
        }
    }

    /// The active version and the raw values of `ids` under it.
    async fn fetch(&self, namespace: &str, ids: &[&str]) -> Result<(String, Raw), StoreError> {
        let pointer = redis::cmd("GET").arg(pointer_key(namespace)).clone();
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(namespace)
            .cloned();
        let (active, mut values): (Option<String>, Option<Raw>) = match &seen {
            None => (self.query(&pointer).await?, None),
            Some(version) => {
                let (active, values) = self
                    .pointer_and_rows(&pointer, namespace, version, ids)
                    .await?;
                (active, Some(values))
            }
        };
        let Some(active) = active else {
            self.seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(namespace);
            return Err(StoreError::NoActiveVersion {
                at: self.at.clone(),
                namespace: namespace.to_string(),
            });
        };
        if seen.as_deref() != Some(active.as_str()) {
            values = Some(self.mget(namespace, &active, ids).await?);
            self.seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(namespace.to_string(), active.clone());
        }
        let values = values.unwrap_or_default();
        if values.len() != ids.len() {
            return Err(StoreError::Failed {
                at: self.at.clone(),
                what: format!(
                    "MGET answered {} values for {} keys",
                    values.len(),
                    ids.len()
                ),
            });
        }
        Ok((active, values))
    }
}

/// Rows of one version: entity id -> (expiry, row).
type Version = HashMap<String, (Option<Instant>, StoredRow)>;

/// The in-process store of a laptop run: Redis's behaviour (versions, pointer, expiry) in maps.
#[derive(Default)]
pub struct EmbeddedStore {
    data: RwLock<HashMap<String, HashMap<String, Version>>>,
    active: RwLock<HashMap<String, String>>,
}

impl EmbeddedStore {
    /// Write rows under a version that is not the active one.
    pub fn publish(
        &self,
        namespace: &str,
        version: &str,
        rows: Vec<(String, StoredRow)>,
        ttl: Option<Duration>,
    ) -> Result<usize, StoreError> {
        check_name("namespace", namespace)?;
        check_name("version", version)?;
        if self.active_version(namespace)?.as_deref() == Some(version) {
            return Err(StoreError::BadArgument(format!(
                "version {version:?} of {namespace:?} is active: publish a new one"
            )));
        }
        let expiry = ttl.map(|t| Instant::now() + t);
        let n = rows.len();
        let mut data = self.data.write().unwrap_or_else(PoisonError::into_inner);
        let target = data
            .entry(namespace.to_string())
            .or_default()
            .entry(version.to_string())
            .or_default();
        for (id, row) in rows {
            target.insert(id, (expiry, row));
        }
        Ok(n)
    }

    /// Switch the active version (one step); expired rows are dropped.
    pub fn activate(&self, namespace: &str, version: &str) -> Result<(), StoreError> {
        check_name("namespace", namespace)?;
        check_name("version", version)?;
        let now = Instant::now();
        self.active
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(namespace.to_string(), version.to_string());
        let mut data = self.data.write().unwrap_or_else(PoisonError::into_inner);
        for versions in data.values_mut() {
            versions.retain(|_, rows| {
                rows.retain(|_, (exp, _)| exp.is_none_or(|e| e > now));
                !rows.is_empty()
            });
        }
        Ok(())
    }

    pub fn active_version(&self, namespace: &str) -> Result<Option<String>, StoreError> {
        check_name("namespace", namespace)?;
        Ok(self
            .active
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(namespace)
            .cloned())
    }

    fn get_many(
        &self,
        namespace: &str,
        ids: &[&str],
    ) -> Result<Vec<Option<StoredRow>>, StoreError> {
        let Some(version) = self.active_version(namespace)? else {
            return Err(StoreError::NoActiveVersion {
                at: "embedded".into(),
                namespace: namespace.to_string(),
            });
        };
        let now = Instant::now();
        let data = self.data.read().unwrap_or_else(PoisonError::into_inner);
        let rows = data.get(namespace).and_then(|v| v.get(&version));
        Ok(ids
            .iter()
            .map(|id| {
                rows.and_then(|r| r.get(*id))
                    .filter(|(exp, _)| exp.is_none_or(|e| e > now))
                    .map(|(_, row)| row.clone())
            })
            .collect())
    }
}

pub enum Backend {
    Redis(RedisStore),
    Embedded(EmbeddedStore),
}

/// The store the data plane reads, with its outage state.
pub struct FeatureStore {
    pub backend: Backend,
    failing: AtomicBool,
}

impl fmt::Debug for FeatureStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backend {
            Backend::Redis(r) => write!(f, "RedisStore({})", r.at),
            Backend::Embedded(_) => f.write_str("EmbeddedStore"),
        }
    }
}

impl FeatureStore {
    #[must_use]
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            failing: AtomicBool::new(false),
        }
    }

    #[must_use]
    pub fn embedded(&self) -> Option<&EmbeddedStore> {
        match &self.backend {
            Backend::Embedded(e) => Some(e),
            Backend::Redis(_) => None,
        }
    }

    /// Features of each id under the active version, in the order of `ids`; `None` for an
    /// unknown (or expired) entity. At most `timeout`, then [`StoreError::Timeout`].
    pub async fn get_many(
        &self,
        namespace: &str,
        ids: &[&str],
        timeout: Duration,
    ) -> Result<Vec<Option<StoredRow>>, StoreError> {
        check_name("namespace", namespace)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let result = match &self.backend {
            Backend::Embedded(e) => e.get_many(namespace, ids),
            Backend::Redis(r) => {
                match tokio::time::timeout(timeout, r.get_many(namespace, ids, timeout)).await {
                    Ok(result) => result,
                    Err(_) => Err(StoreError::Timeout {
                        ids: ids.len(),
                        namespace: namespace.to_string(),
                        at: r.at.clone(),
                        seconds: timeout.as_secs_f64(),
                    }),
                }
            }
        };
        match &result {
            Err(StoreError::BadArgument(_)) => {}
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    log::warn!("{e} (logged once until the store answers again)");
                }
            }
            Ok(_) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    log::info!("feature store {self:?} answers again");
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_decode_numbers_and_strings_only() {
        let row = decode_row(br#"{"a":1.5,"b":"x","c":-0.0,"d":1e-300}"#).unwrap_or_default();
        assert_eq!(row.get("a"), Some(&StoredValue::Number(1.5)));
        assert_eq!(row.get("b"), Some(&StoredValue::Text("x".into())));
        assert_eq!(row.get("d"), Some(&StoredValue::Number(1e-300)));
        assert_eq!(row.get("c"), Some(&StoredValue::Number(-0.0)));
        assert_eq!(row.len(), 4);
        let ints = decode_row(br#"{"i":-3,"u":18446744073709551615}"#).unwrap_or_default();
        assert_eq!(ints.get("i"), Some(&StoredValue::Number(-3.0)));
        assert_eq!(ints.get("u"), Some(&StoredValue::Number(u64::MAX as f64)));
        let last = decode_row(br#"{"a":1,"a":"x"}"#).unwrap_or_default();
        assert_eq!(
            last.get("a"),
            Some(&StoredValue::Text("x".into())),
            "the last one wins"
        );
        let err = |raw: &[u8]| decode_row(raw).err().unwrap_or_default();
        assert!(err(br#"{"a":null}"#).starts_with("a: invalid type: null"));
        assert!(err(br#"{"ok":1,"b":{"c":1}}"#).starts_with("b: invalid type: map"));
        assert!(err(br#"{"b":[1]}"#).starts_with("b: invalid type: sequence"));
        assert!(err(br#"{"b":true}"#).starts_with("b: invalid type: boolean"));
        assert!(!err(b"[1]").is_empty());
        assert!(!err(b"{").is_empty());
        assert!(!err(br#"{"a":1} x"#).is_empty(), "trailing bytes");
        assert!(!err(b"").is_empty());
    }

    #[test]
    fn urls_hide_passwords() {
        assert_eq!(safe_url("redis://u:s3cret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(safe_url("redis://h:1/0"), "redis://h:1/0");
    }

    #[test]
    fn embedded_store_versions_and_expiry() {
        let s = EmbeddedStore::default();
        let row: StoredRow = [("x".to_string(), StoredValue::Number(1.0))].into();
        assert_eq!(
            s.publish("ns", "v1", vec![("a".into(), row.clone())], None)
                .ok(),
            Some(1)
        );
        assert!(
            s.get_many("ns", &["a"]).is_err(),
            "no active version is a failure"
        );
        assert!(s.activate("ns", "v1").is_ok());
        assert_eq!(
            s.get_many("ns", &["a", "b"]).ok(),
            Some(vec![Some(row.clone()), None])
        );
        assert!(
            s.publish("ns", "v1", vec![], None).is_err(),
            "the active version is read-only"
        );
        assert!(s.publish("n:s", "v2", vec![], None).is_err());
        assert!(s
            .publish("ns", "v2", vec![("a".into(), row)], Some(Duration::ZERO))
            .is_ok());
        assert!(s.activate("ns", "v2").is_ok());
        assert_eq!(s.get_many("ns", &["a"]).ok(), Some(vec![None]), "expired");
    }
}
