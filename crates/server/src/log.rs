//! The evaluation log: what each variant predicted, and the outcomes observed later, as JSON
//! lines in segment files (`credit_core.evaluation` reads them; its module docs give the layout
//! and the reading rules). One writer implementation: the data plane's sink, and Python's
//! `EvaluationWriter` through the binding.
//!
//! Several writers at once: every writer owns its segment files,
//! `<kind>-<host>-<pid>-<start_ns>-<seq>.jsonl`, created with `O_EXCL`; a writer only appends,
//! whole lines, and starts the next segment once the current one holds `max_segment_bytes`.
//! A failed write closes the segment (its tail may be torn; readers ignore a torn tail) and what
//! was not written goes back to the front of the buffer, so no record is written twice.
//!
//! Cost on the caller: [`SegmentLog::write`] appends bytes to a buffer under a mutex (no I/O). A
//! background thread appends the buffer to the file when `flush_records` records wait or
//! `flush_seconds` passed since the oldest; `flush` and `close` do it on the caller's thread.
//! When `max_pending` records already wait (the disk keeps failing), new ones are dropped,
//! counted and logged: a full or failing log never fails or blocks a request.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
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
    #[error("evaluation log {kind}: writing {directory} failed after {written} of {count} records: {error}")]
    Write {
        kind: String,
        directory: String,
        written: usize,
        count: usize,
        error: String,
    },
    #[error("evaluation log {kind}: {what}")]
    Bad { kind: String, what: String },
}

/// How a writer flushes and rotates.
#[derive(Debug, Clone, Copy)]
pub struct LogConfig {
    pub flush_records: usize,
    pub flush_seconds: Duration,
    pub max_segment_bytes: u64,
    pub max_pending: usize,
    pub fsync: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            flush_records: 512,
            flush_seconds: Duration::from_secs(1),
            max_segment_bytes: 64 << 20,
            max_pending: 200_000,
            fsync: false,
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
}

struct Inner {
    directory: PathBuf,
    kind: String,
    stem: String,
    config: LogConfig,
    state: Mutex<State>,
    cond: Condvar,
    io: Mutex<Io>,
    dropped: AtomicU64,
    written: AtomicU64,
    on_drop: Option<Box<dyn Fn(u64) + Send + Sync>>,
}

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
pub struct SegmentLog {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl SegmentLog {
    /// A writer of `kind` (`predictions`, `outcomes`) into `directory` (created on first write).
    /// `on_drop` is told how many records were dropped, each time some are.
    pub fn open(
        directory: &Path,
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
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let now = Instant::now();
        let inner = Arc::new(Inner {
            directory: directory.to_path_buf(),
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
            }),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            on_drop,
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

    /// The segment being appended to (None before the first write).
    #[must_use]
    pub fn segment(&self) -> Option<PathBuf> {
        lock(&self.inner.io).segment.clone()
    }
}

impl Drop for SegmentLog {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl PredictionSink for SegmentLog {
    fn submit(&self, lines: &[u8], count: usize) {
        if self.write(lines, count, true).is_err() {
            self.inner.dropped_records(count as u64, 0);
        }
    }

    fn close(&self) -> Result<(), LogError> {
        SegmentLog::close(self)
    }

    fn written(&self) -> u64 {
        SegmentLog::written(self)
    }

    fn dropped(&self) -> u64 {
        SegmentLog::dropped(self)
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
                let keep_from = data[..done]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |i| i + 1);
                let mut state = lock(&self.state);
                let mut rest = data[keep_from..].to_vec();
                rest.extend_from_slice(&state.pending);
                state.pending = rest;
                state.pending_count += count - lines;
                Err(LogError::Write {
                    kind: self.kind.clone(),
                    directory: self.directory.display().to_string(),
                    written: lines,
                    count,
                    error: error.to_string(),
                })
            }
        }
    }

    fn open_segment(&self, io: &mut Io) -> io::Result<()> {
        std::fs::create_dir_all(&self.directory)?;
        loop {
            let path = self
                .directory
                .join(format!("{}-{:06}.jsonl", self.stem, io.seq));
            io.seq += 1;
            match OpenOptions::new()
                .append(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)
            {
                Ok(f) => {
                    io.file = Some(f);
                    io.segment = Some(path);
                    io.segment_bytes = 0;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Write `data` to the current segment; on failure, how many bytes were written.
    fn append(&self, io: &mut Io, data: &[u8]) -> Result<(), (usize, io::Error)> {
        if io.file.is_some() && io.segment_bytes >= self.config.max_segment_bytes {
            io.file = None;
        }
        if io.file.is_none() {
            self.open_segment(io).map_err(|e| (0, e))?;
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

/// One prediction's line: `{"ts":..,"request_id":..,"applicant_id":..,"model_name":..,
/// "variant":..,"model_version":..,"pd":..,"served":..}` as `json.dumps` writes it. `ts` is the
/// time already written by [`push_py_float`] (once per call), `model` the model's
/// `,"model_name":..,"variant":..,"model_version":..` part.
pub fn push_prediction(
    out: &mut Vec<u8>,
    ts: &[u8],
    request_id: &str,
    applicant_id: &str,
    model: &[u8],
    pd: f64,
    served: bool,
) {
    out.extend_from_slice(b"{\"ts\":");
    out.extend_from_slice(ts);
    out.extend_from_slice(b",\"request_id\":");
    push_json_str(out, request_id);
    out.extend_from_slice(b",\"applicant_id\":");
    push_json_str(out, applicant_id);
    out.extend_from_slice(model);
    out.extend_from_slice(b",\"pd\":");
    push_py_float(out, pd);
    out.extend_from_slice(if served {
        b",\"served\":true}\n"
    } else {
        b",\"served\":false}\n"
    });
}

/// The model part of a prediction line.
#[must_use]
pub fn model_fields(model_name: &str, variant: &str, model_version: &str) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b",\"model_name\":");
    push_json_str(&mut out, model_name);
    out.extend_from_slice(b",\"variant\":");
    push_json_str(&mut out, variant);
    out.extend_from_slice(b",\"model_version\":");
    push_json_str(&mut out, model_version);
    out
}

/// One outcome's line: `{"ts":..,"request_id":..,"applicant_id":..,"defaulted":..,
/// "observed_at":..|null}`.
pub fn push_outcome(
    out: &mut Vec<u8>,
    ts: f64,
    request_id: &str,
    applicant_id: &str,
    defaulted: bool,
    observed_at: Option<f64>,
) {
    out.extend_from_slice(b"{\"ts\":");
    push_py_float(out, ts);
    out.extend_from_slice(b",\"request_id\":");
    push_json_str(out, request_id);
    out.extend_from_slice(b",\"applicant_id\":");
    push_json_str(out, applicant_id);
    out.extend_from_slice(if defaulted {
        b",\"defaulted\":true"
    } else {
        b",\"defaulted\":false"
    });
    out.extend_from_slice(b",\"observed_at\":");
    match observed_at {
        Some(t) => push_py_float(out, t),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(request_id: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut ts = Vec::new();
        push_py_float(&mut ts, 1.5);
        push_prediction(
            &mut out,
            &ts,
            request_id,
            "",
            &model_fields("m", "champion", "1"),
            0.25,
            true,
        );
        out
    }

    #[test]
    fn lines_are_json() {
        assert_eq!(
            String::from_utf8_lossy(&line("r\"1")),
            "{\"ts\":1.5,\"request_id\":\"r\\\"1\",\"applicant_id\":\"\",\"model_name\":\"m\",\
             \"variant\":\"champion\",\"model_version\":\"1\",\"pd\":0.25,\"served\":true}\n"
        );
        let mut out = Vec::new();
        push_outcome(&mut out, 2.0, "", "a", false, None);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "{\"ts\":2.0,\"request_id\":\"\",\"applicant_id\":\"a\",\"defaulted\":false,\"observed_at\":null}\n"
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
        let log = SegmentLog::open(&dir, "predictions", config, None)?;
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
        assert!(matches!(
            log.write(&two, 2, true),
            Err(LogError::Closed { .. })
        ));
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
        let log = Arc::new(SegmentLog::open(&dir, "predictions", config, None)?);
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
}
