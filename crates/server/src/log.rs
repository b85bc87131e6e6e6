//! The evaluation log: what each variant predicted, and the outcomes observed later, as JSON
//! lines (`credit_core.evaluation` reads them; its module docs give the reading rules). One
//! writer implementation: the data plane's sink, and Python's `EvaluationWriter` through the
//! binding. Two destinations behind the one buffer ([`Target`]):
//!
//! - **Segment files** (the laptop default). Several writers at once: every writer owns its
//!   segment files, `<kind>-<host>-<pid>-<start_ns>-<seq>.jsonl`, created with `O_EXCL`; a
//!   writer only appends,
//!   whole lines, and starts the next segment once the current one holds `max_segment_bytes`.
//!   A failed write closes the segment (its tail may be torn; readers ignore a torn tail) and what
//!   was not written goes back to the front of the buffer, so no record is written twice.
//! - **A Redis Stream** shared by every replica (`XADD <key> MAXLEN ~ <cap> * r <line>`, one
//!   entry per record, the line without its newline). One flush is one pipelined `MULTI` ..
//!   `EXEC`: all of its records are added or none, and on failure they all stay buffered. A
//!   connection lost after `EXEC` was sent but before its reply can add a flush twice (at least
//!   once): outcome matching keeps one prediction per model, request id and variant, so a
//!   repeated record never changes what `compare` counts.
//!
//! Cost on the caller: [`RecordLog::write`] appends bytes to a buffer under a mutex (no I/O). A
//! background thread appends the buffer to the file when `flush_records` records wait or
//! `flush_seconds` passed since the oldest; `flush` and `close` do it on the caller's thread.
//! When `max_pending` records already wait (the disk keeps failing), new ones are dropped,
//! counted and logged: a full or failing log never fails or blocks a request.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use altscore_kernels::fmt::{push_json_str, push_py_float};

/// Takes encoded prediction records for the log; never fails and never blocks a request for long
/// (a full or failing sink drops and counts).
pub trait PredictionSink: Send + Sync {
    /// `lines`: `count` whole JSON lines (copied; the caller keeps its buffer).
    fn submit(&self, lines: &[u8], count: usize);
    /// Write what is buffered (at shutdown).
    fn close(&self) -> Result<(), LogError>;
    /// Records written so far.
    fn written(&self) -> u64;
    /// Records dropped so far (full or failing sink).
    fn dropped(&self) -> u64;
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    #[error("evaluation log {kind}: writer is closed")]
    Closed { kind: String },
    #[error("evaluation log {kind}: writing {target} failed after {written} of {count} records: {error}")]
    Write {
        kind: String,
        target: String,
        written: usize,
        count: usize,
        error: String,
    },
    #[error("evaluation log {kind}: {what}")]
    Bad { kind: String, what: String },
}

/// Where a log's records go.
#[derive(Debug, Clone)]
pub enum Target {
    /// This writer's own segment files in a directory (created on first write).
    Segments(PathBuf),
    /// A Redis Stream shared by every writer: `url` (`redis://` or `rediss://`), the stream
    /// `key`, and `max_len`, the approximate cap (`MAXLEN ~`) that bounds Redis memory when the
    /// archiver falls behind.
    Stream {
        url: String,
        key: String,
        max_len: u64,
    },
}

impl Target {
    /// Where the records go, for messages (a URL's password is not shown).
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Segments(dir) => dir.display().to_string(),
            Self::Stream { url, key, .. } => format!("{} stream {key}", redact(url)),
        }
    }
}

/// `url` without the password of its user-info part.
#[must_use]
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let user = user_info.split_once(':').map_or(user_info, |(u, _)| u);
    let slash = if rest.contains('/') { "/" } else { "" };
    format!("{scheme}://{user}:***@{host}{slash}{path}")
}

/// How a writer flushes and rotates.
#[derive(Debug, Clone, Copy)]
pub struct LogConfig {
    pub flush_records: usize,
    pub flush_seconds: Duration,
    pub max_segment_bytes: u64,
    pub max_pending: usize,
    pub fsync: bool,
    /// Segment files only: the most bytes of this kind's segments in the folder (every
    /// writer's); beyond, the oldest closed segments are deleted and their records counted as
    /// expired. None: no cap.
    pub max_total_bytes: Option<u64>,
    /// Segment files only: closed segments last written longer ago than this are deleted
    /// (counted as expired). None: kept.
    pub max_age: Option<Duration>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            flush_records: 512,
            flush_seconds: Duration::from_secs(1),
            max_segment_bytes: 64 << 20,
            max_pending: 200_000,
            fsync: false,
            max_total_bytes: None,
            max_age: None,
        }
    }
}

/// The largest emptied buffer kept for reuse (a burst's bigger buffer is freed).
const MAX_SPARE_BYTES: usize = 1 << 20;

struct State {
    pending: Vec<u8>,
    /// The buffer the last flush wrote, emptied, for `pending` to take next: the buffer keeps
    /// its capacity instead of growing from nothing (and being freed) on every flush.
    spare: Vec<u8>,
    pending_count: usize,
    oldest: Instant,
    retry_at: Instant,
    closed: bool,
}

struct Io {
    file: Option<File>,
    segment: Option<PathBuf>,
    segment_bytes: u64,
    seq: u64,
    /// The stream target's connection (opened on first flush, dropped after a failure).
    redis: Option<redis::Connection>,
}

/// Connect and read/write timeouts of the stream target: a flush waits at most this long per
/// step for a Redis that does not answer (the records stay buffered meanwhile).
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

struct Inner {
    target: Target,
    /// The stream target's client (parsed once at open).
    client: Option<redis::Client>,
    kind: String,
    stem: String,
    config: LogConfig,
    state: Mutex<State>,
    cond: Condvar,
    io: Mutex<Io>,
    dropped: AtomicU64,
    written: AtomicU64,
    expired: AtomicU64,
    on_drop: Option<Box<dyn Fn(u64) + Send + Sync>>,
    on_expire: Mutex<Option<ExpireHook>>,
}

/// Told how many records a retention sweep deleted.
pub type ExpireHook = Box<dyn Fn(u64) + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This host's name as a file-name part (`[A-Za-z0-9.]`, the rest `_`).
fn host() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut out = String::new();
    let mut run = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '.' {
            out.push(c);
            run = false;
        } else if !run {
            out.push('_');
            run = true;
        }
    }
    if out.is_empty() {
        "host".into()
    } else {
        out
    }
}

/// Unix time in seconds, as a float.
#[must_use]
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A buffered appender of one record kind to this writer's own segment files.
pub struct RecordLog {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl RecordLog {
    /// A writer of `kind` (`predictions`, `outcomes`) into `directory` (created on first write).
    /// `on_drop` is told how many records were dropped, each time some are.
    pub fn open(
        directory: &Path,
        kind: &str,
        config: LogConfig,
        on_drop: Option<Box<dyn Fn(u64) + Send + Sync>>,
    ) -> Result<Self, LogError> {
        Self::open_target(
            Target::Segments(directory.to_path_buf()),
            kind,
            config,
            on_drop,
        )
    }

    /// A writer of `kind` to `target`. A stream target's URL is checked here; Redis itself is
    /// reached on the first flush (a Redis that is down only delays the records).
    pub fn open_target(
        target: Target,
        kind: &str,
        config: LogConfig,
        on_drop: Option<Box<dyn Fn(u64) + Send + Sync>>,
    ) -> Result<Self, LogError> {
        let bad = |what: &str| LogError::Bad {
            kind: kind.to_string(),
            what: what.to_string(),
        };
        if config.flush_records < 1 || config.max_pending < config.flush_records {
            return Err(bad("need 1 <= flush_records <= max_pending"));
        }
        if config.flush_seconds.is_zero() || config.max_segment_bytes < 1 {
            return Err(bad("flush_seconds and max_segment_bytes must be positive"));
        }
        let client = match &target {
            Target::Segments(_) => None,
            Target::Stream { url, key, max_len } => {
                if key.is_empty() || *max_len < 1 {
                    return Err(bad("a stream needs a key and a positive max_len"));
                }
                Some(
                    redis::Client::open(url.as_str())
                        .map_err(|e| bad(&format!("bad Redis URL {}: {e}", redact(url))))?,
                )
            }
        };
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let now = Instant::now();
        let inner = Arc::new(Inner {
            target,
            client,
            kind: kind.to_string(),
            stem: format!("{kind}-{}-{}-{start}", host(), std::process::id()),
            config,
            state: Mutex::new(State {
                pending: Vec::new(),
                spare: Vec::new(),
                pending_count: 0,
                oldest: now,
                retry_at: now,
                closed: false,
            }),
            cond: Condvar::new(),
            io: Mutex::new(Io {
                file: None,
                segment: None,
                segment_bytes: 0,
                seq: 0,
                redis: None,
            }),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            on_drop,
            on_expire: Mutex::new(None),
        });
        let worker = inner.clone();
        let thread = std::thread::Builder::new()
            .name(format!("evaluation-{kind}"))
            .spawn(move || worker.run())
            .map_err(|e| bad(&format!("cannot start its thread: {e}")))?;
        Ok(Self {
            inner,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Buffer `count` whole lines (`lines`). All of them, or (when `whole` is false) as many as
    /// fit under `max_pending`; the rest are dropped and counted. Returns how many were taken.
    pub fn write(&self, lines: &[u8], count: usize, whole: bool) -> Result<usize, LogError> {
        if count == 0 {
            return Ok(0);
        }
        let inner = &self.inner;
        let mut state = lock(&inner.state);
        if state.closed {
            return Err(LogError::Closed {
                kind: inner.kind.clone(),
            });
        }
        let room = inner.config.max_pending.saturating_sub(state.pending_count);
        let taken = if room >= count {
            count
        } else if whole {
            0
        } else {
            room
        };
        if taken < count {
            inner.dropped_records((count - taken) as u64, state.pending_count);
        }
        if taken == 0 {
            return Ok(0);
        }
        let end = if taken == count {
            lines.len()
        } else {
            nth_line_end(lines, taken)
        };
        if state.pending_count == 0 {
            state.oldest = Instant::now();
        }
        let first = state.pending_count == 0;
        state.pending.extend_from_slice(&lines[..end]);
        state.pending_count += taken;
        if first || state.pending_count >= inner.config.flush_records {
            inner.cond.notify_one();
        }
        Ok(taken)
    }

    /// Append everything buffered now, on the caller's thread. On failure the records not
    /// written stay buffered (none is written twice).
    pub fn flush(&self) -> Result<(), LogError> {
        self.inner.flush()
    }

    /// Stop the background thread and write what is buffered. Idempotent.
    pub fn close(&self) -> Result<(), LogError> {
        {
            let mut state = lock(&self.inner.state);
            state.closed = true;
            self.inner.cond.notify_all();
        }
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
        let result = self.inner.flush();
        let mut io = lock(&self.inner.io);
        io.file = None;
        io.redis = None;
        result
    }

    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    #[must_use]
    pub fn written(&self) -> u64 {
        self.inner.written.load(Ordering::Relaxed)
    }

    /// Records deleted by the retention of [`LogConfig::max_total_bytes`] / `max_age`.
    #[must_use]
    pub fn expired(&self) -> u64 {
        self.inner.expired.load(Ordering::Relaxed)
    }

    /// Call `hook` with the number of records each retention sweep deletes.
    pub fn on_expire(&self, hook: ExpireHook) {
        *lock(&self.inner.on_expire) = Some(hook);
    }

    /// The segment being appended to (None before the first write).
    #[must_use]
    pub fn segment(&self) -> Option<PathBuf> {
        lock(&self.inner.io).segment.clone()
    }
}

impl Drop for RecordLog {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl PredictionSink for RecordLog {
    fn submit(&self, lines: &[u8], count: usize) {
        if self.write(lines, count, true).is_err() {
            self.inner.dropped_records(count as u64, 0);
        }
    }

    fn close(&self) -> Result<(), LogError> {
        RecordLog::close(self)
    }

    fn written(&self) -> u64 {
        RecordLog::written(self)
    }

    fn dropped(&self) -> u64 {
        RecordLog::dropped(self)
    }
}

/// Byte offset just past the `n`-th newline.
fn nth_line_end(lines: &[u8], n: usize) -> usize {
    lines
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(n.saturating_sub(1))
        .map_or(lines.len(), |(i, _)| i + 1)
}

impl Inner {
    fn dropped_records(&self, lost: u64, waiting: usize) {
        let before = self.dropped.fetch_add(lost, Ordering::Relaxed);
        if before == 0 || (before + lost) / 10_000 > before / 10_000 {
            log::error!(
                "evaluation log {}: {waiting} records waiting, dropping {lost} (dropped so far: {})",
                self.kind,
                before + lost
            );
        }
        if let Some(f) = &self.on_drop {
            f(lost);
        }
    }

    fn due(&self, state: &State) -> bool {
        if state.pending_count == 0 || Instant::now() < state.retry_at {
            return false;
        }
        state.pending_count >= self.config.flush_records
            || state.oldest.elapsed() >= self.config.flush_seconds
    }

    fn run(&self) {
        loop {
            {
                let mut state = lock(&self.state);
                while !state.closed && !self.due(&state) {
                    let wait = if state.pending_count == 0 {
                        Duration::from_secs(3600)
                    } else {
                        let wake = (state.oldest + self.config.flush_seconds).max(state.retry_at);
                        wake.saturating_duration_since(Instant::now())
                            .max(Duration::from_millis(1))
                    };
                    state = self
                        .cond
                        .wait_timeout(state, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                if state.closed {
                    return;
                }
            }
            if let Err(e) = self.flush() {
                log::error!("{e}; retrying");
                lock(&self.state).retry_at = Instant::now() + self.config.flush_seconds;
            }
        }
    }

    fn flush(&self) -> Result<(), LogError> {
        let mut io = lock(&self.io);
        let (mut data, count) = {
            let mut state = lock(&self.state);
            let count = std::mem::take(&mut state.pending_count);
            let spare = std::mem::take(&mut state.spare);
            (std::mem::replace(&mut state.pending, spare), count)
        };
        if count == 0 {
            return Ok(());
        }
        match self.append(&mut io, &data) {
            Ok(()) => {
                io.segment_bytes += data.len() as u64;
                self.written.fetch_add(count as u64, Ordering::Relaxed);
                if data.capacity() <= MAX_SPARE_BYTES {
                    data.clear();
                    let mut state = lock(&self.state);
                    if state.spare.capacity() < data.capacity() {
                        state.spare = data;
                    }
                }
                Ok(())
            }
            Err((done, error)) => {
                #[allow(clippy::naive_bytecount)]
                let lines = data[..done].iter().filter(|b| **b == b'\n').count();
                self.written.fetch_add(lines as u64, Ordering::Relaxed);
                io.file = None; // the segment may end torn: never append to it again
                io.redis = None; // a connection that failed mid-reply is not reused
                let keep_from = data[..done]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |i| i + 1);
                let mut state = lock(&self.state);
                let mut rest = data[keep_from..].to_vec();
                rest.extend_from_slice(&state.pending);
                state.pending = rest;
                state.pending_count += count - lines;
                // The background thread may have looked while this flush held the records
                // (and gone to sleep on an empty buffer): it retries them after a pause.
                state.retry_at = Instant::now() + self.config.flush_seconds;
                self.cond.notify_one();
                Err(LogError::Write {
                    kind: self.kind.clone(),
                    target: self.target.describe(),
                    written: lines,
                    count,
                    error: error.to_string(),
                })
            }
        }
    }

    fn open_segment(&self, directory: &Path, io: &mut Io) -> io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(directory)?;
        loop {
            let path = directory.join(format!("{}-{:06}.jsonl", self.stem, io.seq));
            io.seq += 1;
            match OpenOptions::new()
                .append(true)
                .create_new(true)
                .mode(0o640)
                .open(&path)
            {
                Ok(f) => {
                    io.file = Some(f);
                    io.segment = Some(path.clone());
                    io.segment_bytes = 0;
                    self.sweep(directory, &path);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Retention, when a segment starts: delete this kind's closed segments in `directory`
    /// older than `max_age`, then the oldest until they and `current` fit `max_total_bytes`.
    /// The records deleted are counted (`expired`) and logged; a failure is logged only.
    fn sweep(&self, directory: &Path, current: &Path) {
        let (cap, max_age) = (self.config.max_total_bytes, self.config.max_age);
        if cap.is_none() && max_age.is_none() {
            return;
        }
        let prefix = format!("{}-", self.kind);
        let Ok(entries) = std::fs::read_dir(directory) else {
            return;
        };
        let mut segments: Vec<(SystemTime, PathBuf, u64)> = entries
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with(&prefix) && name.ends_with(".jsonl") && e.path() != current
            })
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().unwrap_or(UNIX_EPOCH), e.path(), meta.len()))
            })
            .collect();
        segments.sort();
        let mut total: u64 = segments.iter().map(|s| s.2).sum();
        let now = SystemTime::now();
        let (mut files, mut records) = (0u64, 0u64);
        for (modified, path, len) in segments {
            let too_old =
                max_age.is_some_and(|age| now.duration_since(modified).is_ok_and(|d| d > age));
            let too_big = cap.is_some_and(|cap| total > cap);
            if !(too_old || too_big) {
                break; // sorted oldest first: the rest are newer and fit
            }
            #[allow(clippy::naive_bytecount)]
            let lines = std::fs::read(&path)
                .map_or(0, |d| d.iter().filter(|b| **b == b'\n').count() as u64);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    total = total.saturating_sub(len);
                    files += 1;
                    records += lines;
                }
                Err(e) => log::error!("retention: cannot delete {}: {e}", path.display()),
            }
        }
        if files > 0 {
            self.expired.fetch_add(records, Ordering::Relaxed);
            if let Some(hook) = lock(&self.on_expire).as_ref() {
                hook(records);
            }
            log::warn!(
                "evaluation log {}: retention deleted {files} segment(s), {records} record(s) \
                 (cap {cap:?} bytes, max age {max_age:?})",
                self.kind
            );
        }
    }

    /// Write `data` (whole lines) to the target; on failure, how many bytes were written.
    fn append(&self, io: &mut Io, data: &[u8]) -> Result<(), (usize, io::Error)> {
        match &self.target {
            Target::Segments(directory) => self.append_segment(directory, io, data),
            Target::Stream { key, max_len, .. } => self
                .append_stream(io, key, *max_len, data)
                .map_err(|e| (0, io::Error::other(e))),
        }
    }

    /// One `MULTI` .. `EXEC` of one `XADD` per line: all of `data` is added, or none.
    fn append_stream(
        &self,
        io: &mut Io,
        key: &str,
        max_len: u64,
        data: &[u8],
    ) -> Result<(), redis::RedisError> {
        if io.redis.is_none() {
            let Some(client) = &self.client else {
                return Err(redis::RedisError::from(io::Error::other("no Redis client")));
            };
            let conn = client.get_connection_with_timeout(REDIS_TIMEOUT)?;
            conn.set_read_timeout(Some(REDIS_TIMEOUT))?;
            conn.set_write_timeout(Some(REDIS_TIMEOUT))?;
            io.redis = Some(conn);
        }
        let Some(conn) = io.redis.as_mut() else {
            return Err(redis::RedisError::from(io::Error::other("not connected")));
        };
        let mut pipe = redis::pipe();
        pipe.atomic();
        for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            pipe.cmd("XADD")
                .arg(key)
                .arg("MAXLEN")
                .arg("~")
                .arg(max_len)
                .arg("*")
                .arg("r")
                .arg(line)
                .ignore();
        }
        let result = pipe.query::<()>(conn);
        if result.is_err() {
            io.redis = None;
        }
        result
    }

    /// Write `data` to the current segment; on failure, how many bytes were written.
    fn append_segment(
        &self,
        directory: &Path,
        io: &mut Io,
        data: &[u8],
    ) -> Result<(), (usize, io::Error)> {
        if io.file.is_some() && io.segment_bytes >= self.config.max_segment_bytes {
            io.file = None;
        }
        if io.file.is_none() {
            self.open_segment(directory, io).map_err(|e| (0, e))?;
        }
        let Some(file) = io.file.as_mut() else {
            return Err((0, io::Error::other("no segment open")));
        };
        let mut done = 0;
        while done < data.len() {
            match file.write(&data[done..]) {
                Ok(0) => return Err((done, io::Error::from(io::ErrorKind::WriteZero))),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err((done, e)),
            }
        }
        if self.config.fsync {
            file.sync_data().map_err(|e| (done, e))?;
        }
        Ok(())
    }
}

/// One prediction, as logged (see [`push_prediction`]).
pub struct PredictionLine<'a> {
    pub request_id: &'a str,
    pub applicant_id: &'a str,
    /// The model's `,"model_name":..,"variant":..,"model_version":..,"predictor":..` part
    /// ([`model_fields`]).
    pub model: &'a [u8],
    pub pd: f64,
    /// The caller got this answer (false: a shadow scoring).
    pub served: bool,
    pub score: i32,
    /// The decision's name (`approve`, `review`, `decline`).
    pub decision: &'a str,
    /// The feature store failed and an optional lookup went on without it.
    pub degraded: bool,
    /// The model's input vector as served (after enrichment and the spec's transforms), in the
    /// model's feature order; NaN (missing) is written `null`.
    pub features: &'a [f32],
}

/// One prediction's line: `{"ts":..,"request_id":..,"applicant_id":..,"model_name":..,
/// "variant":..,"model_version":..,"predictor":..,"pd":..,"served":..,"score":..,"decision":..,"reasons":[..],
/// "degraded":..,"imputed":[..],"features":[..]}`. `ts` is the time already written by
/// [`push_py_float`] (once per call); `reasons`: the reason codes (empty unless the request
/// asked for an explanation); `imputed`: the entity inputs the feature store lacked, filled by
/// the spec's missing-value policy.
pub fn push_prediction<'s>(
    out: &mut Vec<u8>,
    ts: &[u8],
    p: &PredictionLine<'_>,
    reasons: impl IntoIterator<Item = &'s str>,
    imputed: impl IntoIterator<Item = &'s str>,
) {
    out.extend_from_slice(b"{\"ts\":");
    out.extend_from_slice(ts);
    out.extend_from_slice(b",\"request_id\":");
    push_json_str(out, p.request_id);
    out.extend_from_slice(b",\"applicant_id\":");
    push_json_str(out, p.applicant_id);
    out.extend_from_slice(p.model);
    out.extend_from_slice(b",\"pd\":");
    push_py_float(out, p.pd);
    out.extend_from_slice(if p.served {
        b",\"served\":true,\"score\":"
    } else {
        b",\"served\":false,\"score\":"
    });
    out.extend_from_slice(itoa::Buffer::new().format(p.score).as_bytes());
    out.extend_from_slice(b",\"decision\":");
    push_json_str(out, p.decision);
    out.extend_from_slice(b",\"reasons\":");
    push_str_list(out, reasons);
    out.extend_from_slice(if p.degraded {
        b",\"degraded\":true,\"imputed\":"
    } else {
        b",\"degraded\":false,\"imputed\":"
    });
    push_str_list(out, imputed);
    out.extend_from_slice(b",\"features\":[");
    let mut buffer = ryu::Buffer::new();
    for (i, x) in p.features.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if x.is_finite() {
            out.extend_from_slice(buffer.format_finite(*x).as_bytes());
        } else {
            out.extend_from_slice(b"null"); // missing (the kernels never make an infinity)
        }
    }
    out.extend_from_slice(b"]}\n");
}

fn push_str_list<'s>(out: &mut Vec<u8>, items: impl IntoIterator<Item = &'s str>) {
    out.push(b'[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_str(out, item);
    }
    out.push(b']');
}

/// The model part of a prediction line: which model answered and which of its predictors
/// (`native`, `tl2cgen`) computed the PD (a replay uses the same one).
#[must_use]
pub fn model_fields(
    model_name: &str,
    variant: &str,
    model_version: &str,
    predictor: &str,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b",\"model_name\":");
    push_json_str(&mut out, model_name);
    out.extend_from_slice(b",\"variant\":");
    push_json_str(&mut out, variant);
    out.extend_from_slice(b",\"model_version\":");
    push_json_str(&mut out, model_version);
    out.extend_from_slice(b",\"predictor\":");
    push_json_str(&mut out, predictor);
    out
}

/// One outcome's line: `{"ts":..,"request_id":..,"applicant_id":..,"defaulted":..,
/// "observed_at":..|null,"correction":..,"reporter":..}`.
pub fn push_outcome(out: &mut Vec<u8>, o: &OutcomeLine<'_>) {
    out.extend_from_slice(b"{\"ts\":");
    push_py_float(out, o.ts);
    out.extend_from_slice(b",\"request_id\":");
    push_json_str(out, o.request_id);
    out.extend_from_slice(b",\"applicant_id\":");
    push_json_str(out, o.applicant_id);
    out.extend_from_slice(if o.defaulted {
        b",\"defaulted\":true"
    } else {
        b",\"defaulted\":false"
    });
    out.extend_from_slice(b",\"observed_at\":");
    match o.observed_at {
        Some(t) => push_py_float(out, t),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(if o.correction {
        b",\"correction\":true"
    } else {
        b",\"correction\":false"
    });
    out.extend_from_slice(b",\"reporter\":");
    push_json_str(out, o.reporter);
    out.extend_from_slice(b"}\n");
}

/// The fields of one outcome record.
#[derive(Debug, Clone, Copy)]
pub struct OutcomeLine<'a> {
    /// When it was reported (Unix seconds).
    pub ts: f64,
    pub request_id: &'a str,
    pub applicant_id: &'a str,
    pub defaulted: bool,
    /// When it was observed (Unix seconds), if known.
    pub observed_at: Option<f64>,
    /// It replaces the outcome recorded before for its request.
    pub correction: bool,
    /// Who reported it (certificate name, token name, `loopback`, or the importing tool).
    pub reporter: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(request_id: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut ts = Vec::new();
        push_py_float(&mut ts, 1.5);
        let model = model_fields("m", "champion", "1", "native");
        let p = PredictionLine {
            request_id,
            applicant_id: "",
            model: &model,
            pd: 0.25,
            served: true,
            score: 612,
            decision: "approve",
            degraded: false,
            features: &[1.5, f32::NAN, 0.1, 1e-7],
        };
        push_prediction(&mut out, &ts, &p, ["R1", "R\"2"], []);
        out
    }

    #[test]
    fn lines_are_json() {
        assert_eq!(
            String::from_utf8_lossy(&line("r\"1")),
            "{\"ts\":1.5,\"request_id\":\"r\\\"1\",\"applicant_id\":\"\",\"model_name\":\"m\",\
             \"variant\":\"champion\",\"model_version\":\"1\",\"predictor\":\"native\",\"pd\":0.25,\"served\":true,\
             \"score\":612,\"decision\":\"approve\",\"reasons\":[\"R1\",\"R\\\"2\"],\
             \"degraded\":false,\"imputed\":[],\"features\":[1.5,null,0.1,1e-7]}\n"
        );
        let mut out = Vec::new();
        push_outcome(
            &mut out,
            &OutcomeLine {
                ts: 2.0,
                request_id: "",
                applicant_id: "a",
                defaulted: false,
                observed_at: None,
                correction: true,
                reporter: "certificate x",
            },
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "{\"ts\":2.0,\"request_id\":\"\",\"applicant_id\":\"a\",\"defaulted\":false,\"observed_at\":null,\
             \"correction\":true,\"reporter\":\"certificate x\"}\n"
        );
    }

    #[test]
    fn writes_rotates_and_drops_when_full() -> Result<(), LogError> {
        let dir = std::env::temp_dir().join(format!("altscore-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // The background thread must not flush between the writes below (it did in CI with
        // `flush_records: 2`): nothing is due before 3 records wait or an hour passed.
        let config = LogConfig {
            flush_records: 3,
            flush_seconds: Duration::from_secs(3600),
            max_pending: 3,
            max_segment_bytes: 200,
            ..LogConfig::default()
        };
        let log = RecordLog::open(&dir, "predictions", config, None)?;
        let two = [line("a"), line("b")].concat();
        assert_eq!(log.write(&two, 2, true)?, 2);
        log.flush()?;
        assert_eq!(log.write(&two, 2, true)?, 2);
        assert_eq!(log.write(&two, 2, true)?, 0, "2 + 2 > 3: dropped whole");
        assert_eq!(log.write(&two, 2, false)?, 1, "partial: the first fits");
        assert_eq!(log.dropped(), 3);
        log.close()?;
        assert_eq!(log.written(), 5);
        let segments = std::fs::read_dir(&dir).map_or(0, Iterator::count);
        assert_eq!(segments, 2, "rotated by size");
        {
            use std::os::unix::fs::PermissionsExt;
            // Not world-readable: records carry applicant ids and features.
            let mode =
                |p: &Path| std::fs::metadata(p).map_or(0, |m| m.permissions().mode() & 0o777);
            assert_eq!(mode(&dir), 0o750);
            for entry in std::fs::read_dir(&dir).iter_mut().flatten().flatten() {
                assert_eq!(mode(&entry.path()), 0o640);
            }
        }
        assert!(matches!(
            log.write(&two, 2, true),
            Err(LogError::Closed { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn retention_deletes_the_oldest_segments_beyond_the_cap() -> Result<(), LogError> {
        let dir = std::env::temp_dir().join(format!("altscore-retention-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| LogError::Bad {
            kind: "t".into(),
            what: e.to_string(),
        })?;
        // another writer's old segment (3 records) and a file of another kind
        let old = dir.join("predictions-other-1-1-000000.jsonl");
        std::fs::write(&old, [line("x"), line("y"), line("z")].concat()).unwrap_or_default();
        let unrelated = dir.join("outcomes-other-1-1-000000.jsonl");
        std::fs::write(&unrelated, line("o")).unwrap_or_default();
        let one = line("a");
        let config = LogConfig {
            flush_records: 1,
            max_segment_bytes: one.len() as u64, // one record per segment
            max_total_bytes: Some(3 * one.len() as u64),
            ..LogConfig::default()
        };
        let log = RecordLog::open(&dir, "predictions", config, None)?;
        let seen = Arc::new(AtomicU64::new(0));
        let hook = seen.clone();
        log.on_expire(Box::new(move |n| {
            hook.fetch_add(n, Ordering::Relaxed);
        }));
        for _ in 0..6 {
            log.write(&one, 1, true)?;
            log.flush()?;
            std::thread::sleep(Duration::from_millis(5)); // distinct modification times
        }
        log.close()?;
        let left: Vec<_> = std::fs::read_dir(&dir)
            .iter_mut()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("predictions-"))
            .collect();
        // 6 one-record segments: the old file went first, then the oldest of ours; at most the
        // cap (3 records) besides the segment being written
        assert_eq!(left.len(), 4, "{left:?}");
        assert!(!old.exists());
        assert!(unrelated.exists(), "another kind is never touched");
        assert_eq!(log.expired(), 3 + 2);
        assert_eq!(seen.load(Ordering::Relaxed), 5);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn concurrent_writers_lose_nothing_and_close_cleanly() -> Result<(), LogError> {
        let dir = std::env::temp_dir().join(format!("altscore-log-threads-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = LogConfig {
            flush_records: 64,
            flush_seconds: Duration::from_millis(5),
            max_pending: 1_000_000,
            max_segment_bytes: 1 << 20,
            ..LogConfig::default()
        };
        let log = Arc::new(RecordLog::open(&dir, "predictions", config, None)?);
        let writers: Vec<_> = (0..6)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut taken = Vec::new();
                    for i in 0..1_000_000 {
                        let id = format!("t{t}-{i}");
                        match log.write(&line(&id), 1, true) {
                            Ok(1) => taken.push(id),
                            Ok(_) => return Err("dropped below max_pending".to_string()),
                            Err(LogError::Closed { .. }) => break,
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                    Ok(taken)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(30));
        log.close()?; // while the writers still write
        let mut taken = Vec::new();
        for w in writers {
            let ids = w.join().map_err(|_| LogError::Bad {
                kind: "test".into(),
                what: "a writer panicked".into(),
            })?;
            taken.extend(ids.map_err(|what| LogError::Bad {
                kind: "test".into(),
                what,
            })?);
        }
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| LogError::Bad {
            kind: "test".into(),
            what: e.to_string(),
        })? {
            let text = entry
                .and_then(|e| std::fs::read_to_string(e.path()))
                .unwrap_or_default();
            assert!(text.is_empty() || text.ends_with('\n'), "whole lines only");
            for l in text.lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                found.push(v["request_id"].as_str().unwrap_or("?").to_string());
            }
        }
        assert_eq!(log.written(), taken.len() as u64);
        assert!(
            taken.len() < 6_000_000,
            "the writers were still writing at close"
        );
        taken.sort();
        found.sort();
        assert_eq!(found, taken, "every record taken is written, once");
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    fn test_error(what: impl std::fmt::Display) -> LogError {
        LogError::Bad {
            kind: "test".into(),
            what: what.to_string(),
        }
    }

    /// A `redis-server` on a free loopback port (the Debian package `make test` installs),
    /// killed on drop.
    struct RedisProcess {
        child: std::process::Child,
        port: u16,
    }

    impl RedisProcess {
        fn start(port: u16) -> Result<Self, LogError> {
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .map_err(|e| test_error(format!("redis-server (`make redis` installs it): {e}")))?;
            let redis = Self { child, port };
            let started = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if started.elapsed() > Duration::from_secs(10) {
                    return Err(test_error("redis-server did not start"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(redis)
        }

        fn free_port() -> Result<u16, LogError> {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(test_error)
        }

        /// The `r` field of every entry of `key`, in order.
        fn entries(&self, key: &str) -> Result<Vec<String>, LogError> {
            let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
                .map_err(test_error)?;
            let mut conn = client.get_connection().map_err(test_error)?;
            let found: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                .arg(key)
                .arg("-")
                .arg("+")
                .query(&mut conn)
                .map_err(test_error)?;
            let mut lines = Vec::new();
            for (_, fields) in found {
                assert_eq!(fields.len(), 1, "one field per entry");
                assert_eq!(fields[0].0, "r");
                lines.push(fields[0].1.clone());
            }
            Ok(lines)
        }
    }

    impl Drop for RedisProcess {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn stream_target_adds_every_record_once_and_keeps_them_while_redis_is_down(
    ) -> Result<(), LogError> {
        let port = RedisProcess::free_port()?;
        let redis = RedisProcess::start(port)?;
        let config = LogConfig {
            flush_records: 1000,
            flush_seconds: Duration::from_secs(3600),
            ..LogConfig::default()
        };
        let target = Target::Stream {
            url: format!("redis://127.0.0.1:{port}/"),
            key: "test:predictions".into(),
            max_len: 1000,
        };
        let log = RecordLog::open_target(target, "predictions", config, None)?;
        let two = [line("a"), line("b")].concat();
        log.write(&two, 2, true)?;
        log.flush()?;
        let lines: Vec<String> = two
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        assert_eq!(
            redis.entries("test:predictions")?,
            lines,
            "one entry per line, no newline"
        );

        drop(redis); // Redis goes away: the records wait, nothing is lost or dropped
        log.write(&line("c"), 1, true)?;
        let failed = log.flush();
        assert!(
            matches!(&failed, Err(LogError::Write { target, written: 0, count: 1, .. })
                if target.contains("stream test:predictions")),
            "{failed:?}"
        );
        let redis = RedisProcess::start(port)?;
        log.write(&line("d"), 1, true)?;
        log.close()?;
        assert_eq!((log.written(), log.dropped()), (4, 0));
        let after: Vec<String> = redis.entries("test:predictions")?;
        let ids: Vec<String> = after
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                v["request_id"].as_str().unwrap_or("?").to_string()
            })
            .collect();
        assert_eq!(
            ids,
            ["c", "d"],
            "kept in order while Redis was down (a new, empty Redis)"
        );
        Ok(())
    }

    #[test]
    fn a_record_whose_flush_failed_is_retried_by_the_background_thread() -> Result<(), LogError> {
        // A Redis that accepts connections and never answers (as a frozen one does): the
        // caller's flush waits out its timeout, and the background thread, woken meanwhile,
        // finds the buffer empty. Once the flush fails and puts the record back, the thread
        // must learn of it (it slept for an hour: a ReportOutcome answered "queued, retried"
        // was never written).
        let port = RedisProcess::free_port()?;
        let silent = std::net::TcpListener::bind(("127.0.0.1", port)).map_err(test_error)?;
        let config = LogConfig {
            flush_records: 1000,
            flush_seconds: Duration::from_millis(300),
            ..LogConfig::default()
        };
        let target = Target::Stream {
            url: format!("redis://127.0.0.1:{port}/"),
            key: "test:outcomes".into(),
            max_len: 1000,
        };
        let log = RecordLog::open_target(target, "outcomes", config, None)?;
        log.write(&line("late"), 1, true)?;
        let started = Instant::now();
        assert!(log.flush().is_err(), "nobody answers");
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "the thread woke meanwhile"
        );
        drop(silent);
        let redis = RedisProcess::start(port)?;
        let waiting = Instant::now();
        while redis.entries("test:outcomes")?.is_empty() {
            if waiting.elapsed() > Duration::from_secs(10) {
                return Err(test_error("the record put back was never retried"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        log.close()?;
        assert_eq!((log.written(), log.dropped()), (1, 0));
        Ok(())
    }

    #[test]
    fn stream_urls_are_checked_at_open_and_passwords_never_shown() {
        let bad = RecordLog::open_target(
            Target::Stream {
                url: "http://x".into(),
                key: "k".into(),
                max_len: 1,
            },
            "predictions",
            LogConfig::default(),
            None,
        );
        assert!(matches!(bad, Err(LogError::Bad { .. })));
        assert_eq!(
            redact("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact("rediss://:secret@host"), "rediss://:***@host");
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }
}
