//! The outcome recorded for each request, so that a report contradicting it is refused.
//!
//! Outcomes decide champion/challenger promotion, so the first outcome recorded for a request id
//! stands: the same outcome again (a client retrying) is accepted and not written twice, a
//! different one is refused (`FAILED_PRECONDITION`) unless the report says it is a correction,
//! which is written with its sender. `credit_core.evaluation.matched` reads the log by the same
//! rule (the first outcome of a request, or its latest correction), so outcomes written around
//! this check (two servers racing, a file imported with `training outcomes`) count the same way.
//! Outcomes given by applicant id only are matched to a request when read, and left to that rule.
//!
//! Where the recorded outcomes are kept follows the log:
//! - segment files: in memory, read at start from the outcome segments already in the folder;
//! - the shared Redis Streams log: the hash `<prefix>:outcome-index` (request id -> `0` / `1`)
//!   in the same Redis, so every replica checks against the same outcomes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Deserialize;

/// What to do with one reported outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New (or a correction, or given by applicant id only): write it.
    Write,
    /// The outcome already recorded for its request: accept, do not write again.
    Unchanged,
    /// Contradicts the outcome recorded for its request (`recorded`) and is not a correction.
    Conflict { recorded: bool },
}

/// One reported outcome, as the check sees it.
#[derive(Debug, Clone, Copy)]
pub struct Reported<'a> {
    pub request_id: &'a str,
    pub defaulted: bool,
    pub correction: bool,
}

/// The verdict on each of `reported` given what is `recorded` for each (same order), outcomes
/// earlier in the same call included.
#[must_use]
pub fn judge(reported: &[Reported<'_>], recorded: &[Option<bool>]) -> Vec<Verdict> {
    let mut now: HashMap<&str, bool> = HashMap::new();
    reported
        .iter()
        .zip(recorded)
        .map(|(r, before)| {
            if r.request_id.is_empty() {
                return Verdict::Write;
            }
            let current = now.get(r.request_id).copied().or(*before);
            let verdict = match current {
                Some(v) if v == r.defaulted => Verdict::Unchanged,
                Some(v) if !r.correction => Verdict::Conflict { recorded: v },
                _ => Verdict::Write,
            };
            if verdict == Verdict::Write {
                now.insert(r.request_id, r.defaulted);
            }
            verdict
        })
        .collect()
}

/// Where the recorded outcomes are kept.
pub enum Ledger {
    Memory(Mutex<HashMap<String, bool>>),
    Redis {
        client: redis::Client,
        conn: Mutex<Option<redis::Connection>>,
        key: String,
        timeout: Duration,
    },
}

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    ts: f64,
    #[serde(default)]
    request_id: String,
    defaulted: bool,
    #[serde(default)]
    correction: bool,
}

impl Ledger {
    /// The outcomes recorded in the outcome segments of `directory` (none when it does not exist
    /// yet); unreadable files and lines that are not outcome records (a torn tail) are skipped.
    pub fn from_segments(directory: &Path) -> std::io::Result<Self> {
        let mut lines: Vec<Line> = Vec::new();
        let entries = match std::fs::read_dir(directory) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::Memory(Mutex::new(HashMap::new())))
            }
            Err(e) => return Err(e),
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !(name.starts_with("outcomes-") && name.ends_with(".jsonl")) {
                continue;
            }
            let Ok(data) = std::fs::read(entry.path()) else {
                log::warn!("outcome segment {name} not readable: skipped by the outcome check");
                continue;
            };
            lines.extend(
                data.split(|b| *b == b'\n')
                    .filter_map(|l| serde_json::from_slice::<Line>(l).ok()),
            );
        }
        lines.sort_by(|a, b| a.ts.total_cmp(&b.ts));
        let mut map = HashMap::new();
        for l in lines {
            if l.request_id.is_empty() {
                continue;
            }
            if l.correction {
                map.insert(l.request_id, l.defaulted);
            } else {
                map.entry(l.request_id).or_insert(l.defaulted);
            }
        }
        Ok(Self::Memory(Mutex::new(map)))
    }

    /// The hash `key` in the Redis at `url` (connected on first use).
    pub fn redis(url: &str, key: String, timeout: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("outcome index: {e}"))?;
        Ok(Self::Redis {
            client,
            conn: Mutex::new(None),
            key,
            timeout,
        })
    }

    /// The outcome recorded for each id (None: none yet).
    pub fn recorded(&self, ids: &[&str]) -> Result<Vec<Option<bool>>, String> {
        match self {
            Self::Memory(map) => {
                let map = map.lock().unwrap_or_else(PoisonError::into_inner);
                Ok(ids.iter().map(|id| map.get(*id).copied()).collect())
            }
            Self::Redis { key, .. } => {
                let named: Vec<&str> = ids.iter().copied().filter(|id| !id.is_empty()).collect();
                let mut values: Vec<Option<String>> = Vec::new();
                if !named.is_empty() {
                    values =
                        self.with_redis(|c| redis::cmd("HMGET").arg(key).arg(&named).query(c))?;
                }
                let mut values = values.into_iter();
                Ok(ids
                    .iter()
                    .map(|id| {
                        if id.is_empty() {
                            None
                        } else {
                            values.next().flatten().map(|v| v == "1")
                        }
                    })
                    .collect())
            }
        }
    }

    /// Remember outcomes just written.
    pub fn remember(&self, written: &[(&str, bool)]) -> Result<(), String> {
        let written: Vec<(&str, bool)> = written
            .iter()
            .copied()
            .filter(|(id, _)| !id.is_empty())
            .collect();
        if written.is_empty() {
            return Ok(());
        }
        match self {
            Self::Memory(map) => {
                let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
                for (id, v) in written {
                    map.insert(id.to_string(), v);
                }
                Ok(())
            }
            Self::Redis { key, .. } => {
                let mut cmd = redis::cmd("HSET");
                cmd.arg(key);
                for (id, v) in &written {
                    cmd.arg(*id).arg(if *v { "1" } else { "0" });
                }
                self.with_redis(|c| cmd.query::<i64>(c)).map(|_| ())
            }
        }
    }

    fn with_redis<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, String> {
        let Self::Redis {
            client,
            conn,
            timeout,
            ..
        } = self
        else {
            return Err("not a Redis ledger".into());
        };
        let mut guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            let c = client
                .get_connection_with_timeout(*timeout)
                .map_err(|e| format!("outcome index: {e}"))?;
            c.set_read_timeout(Some(*timeout))
                .and_then(|()| c.set_write_timeout(Some(*timeout)))
                .map_err(|e| format!("outcome index: {e}"))?;
            *guard = Some(c);
        }
        let Some(c) = guard.as_mut() else {
            return Err("outcome index: not connected".into());
        };
        f(c).map_err(|e| {
            *guard = None; // reconnect next time
            format!("outcome index: {e}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: &str, defaulted: bool, correction: bool) -> Reported<'_> {
        Reported {
            request_id: id,
            defaulted,
            correction,
        }
    }

    #[test]
    fn first_outcome_stands_unless_corrected() {
        let reported = [
            r("a", true, false),  // new
            r("b", true, false),  // recorded true: a retry
            r("c", false, false), // recorded true: conflict
            r("d", false, true),  // recorded true: correction
            r("a", false, false), // contradicts this call's first "a"
            r("", true, false),   // by applicant id: not checked here
            r("e", true, true),   // a correction of nothing is a new outcome
        ];
        let recorded = [None, Some(true), Some(true), Some(true), None, None, None];
        assert_eq!(
            judge(&reported, &recorded),
            [
                Verdict::Write,
                Verdict::Unchanged,
                Verdict::Conflict { recorded: true },
                Verdict::Write,
                Verdict::Conflict { recorded: true },
                Verdict::Write,
                Verdict::Write,
            ]
        );
    }

    #[test]
    fn segments_are_read_by_the_same_rule() -> std::io::Result<()> {
        let dir = std::env::temp_dir().join(format!("altscore-ledger-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("outcomes-h-1-1-000000.jsonl"),
            concat!(
                "{\"ts\":3,\"request_id\":\"a\",\"defaulted\":false}\n",
                "{\"ts\":5,\"request_id\":\"b\",\"defaulted\":false,\"correction\":true}\n",
                "{\"ts\":1,\"request_id\":\"b\",\"defa"
            ),
        )?;
        std::fs::write(
            dir.join("outcomes-h-2-1-000000.jsonl"),
            "{\"ts\":1,\"request_id\":\"a\",\"defaulted\":true}\n\
             {\"ts\":2,\"request_id\":\"b\",\"defaulted\":true}\n",
        )?;
        std::fs::write(dir.join("predictions-h-2-1-000000.jsonl"), "not read\n")?;
        let ledger = Ledger::from_segments(&dir)?;
        assert_eq!(
            ledger.recorded(&["a", "b", "c"]),
            Ok(vec![Some(true), Some(false), None])
        );
        ledger
            .remember(&[("c", true)])
            .map_err(std::io::Error::other)?;
        assert_eq!(ledger.recorded(&["c"]), Ok(vec![Some(true)]));
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
