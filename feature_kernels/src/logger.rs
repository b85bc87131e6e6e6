//! The Rust side's log lines, on stderr in the control plane's format, written without the GIL:
//! text (`<time> <LEVEL> data-plane[<pid>] <module> <message>`), or one JSON object per line
//! with the same keys as the control plane's (`scoring_server.__main__`): `time` (ISO 8601,
//! UTC), `level`, `logger`, `process`, `pid`, `message`, and the record's key-values
//! (`model_name`, `model_version`, `request_id`, ... where the call site knows them).

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

struct Stderr;

/// Lines as JSON objects (else text).
static JSON: AtomicBool = AtomicBool::new(false);

/// `YYYY-MM-DD HH:MM:SS,mmm` (UTC) of a Unix time in milliseconds.
fn timestamp(ms: u64) -> String {
    let (date, (h, m, sec)) = civil(ms / 1000);
    format!("{date} {h:02}:{m:02}:{sec:02},{:03}", ms % 1000)
}

/// `YYYY-MM-DDTHH:MM:SS.uuuuuu+00:00` of a Unix time in microseconds: what Python's
/// `datetime.isoformat()` writes for a UTC time (the control plane's JSON lines).
fn iso_timestamp(us: u64) -> String {
    let (date, (h, m, sec)) = civil(us / 1_000_000);
    format!("{date}T{h:02}:{m:02}:{sec:02}.{:06}+00:00", us % 1_000_000)
}

/// (`YYYY-MM-DD`, (hour, minute, second)) of a Unix time in seconds.
fn civil(secs: u64) -> (String, (u64, u64, u64)) {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        (rem / 3600, (rem % 3600) / 60, rem % 60),
    )
}

/// Collects a record's key-values into a JSON object.
struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl<'kvs> log::kv::VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        let v = if let Some(n) = value.to_i64() {
            serde_json::Value::from(n)
        } else if let Some(x) = value.to_f64() {
            serde_json::Value::from(x)
        } else if let Some(b) = value.to_bool() {
            serde_json::Value::from(b)
        } else {
            serde_json::Value::from(value.to_string())
        };
        self.0.insert(key.as_str().to_string(), v);
        Ok(())
    }
}

/// One record as a JSON line (`us`: its time in microseconds).
fn json_line(record: &log::Record<'_>, level: &str, us: u64) -> String {
    let mut map = serde_json::Map::new();
    map.insert("time".into(), iso_timestamp(us).into());
    map.insert("level".into(), level.into());
    map.insert("logger".into(), record.target().into());
    map.insert("process".into(), "data-plane".into());
    map.insert("pid".into(), std::process::id().into());
    map.insert("message".into(), record.args().to_string().into());
    let _ = record.key_values().visit(&mut Fields(&mut map));
    let mut line = serde_json::Value::Object(map).to_string();
    line.push('\n');
    line
}

impl log::Log for Stderr {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let level = match record.level() {
            log::Level::Error => "ERROR",
            log::Level::Warn => "WARNING",
            log::Level::Info => "INFO",
            log::Level::Debug => "DEBUG",
            log::Level::Trace => "TRACE",
        };
        let line = if JSON.load(Ordering::Relaxed) {
            json_line(record, level, us)
        } else {
            format!(
                "{} {level} data-plane[{}] {} {}\n",
                timestamp(us / 1000),
                std::process::id(),
                record.target(),
                record.args()
            )
        };
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

static LOGGER: Stderr = Stderr;

/// Install the logger (once per process); `level`: error, warning, info or debug; `json`: one
/// JSON object per line instead of text.
pub fn install(level: &str, json: bool) {
    JSON.store(json, Ordering::Relaxed);
    let filter = match level.to_ascii_lowercase().as_str() {
        "error" => log::LevelFilter::Error,
        "warning" | "warn" => log::LevelFilter::Warn,
        "debug" => log::LevelFilter::Debug,
        _ => log::LevelFilter::Info,
    };
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(filter);
}

#[cfg(test)]
mod tests {
    use super::{iso_timestamp, json_line, timestamp};

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00,000");
        assert_eq!(timestamp(1_796_232_805_123), "2026-12-02 17:33:25,123");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29 00:00:00,000");
        assert_eq!(
            iso_timestamp(1_796_232_805_123_456),
            "2026-12-02T17:33:25.123456+00:00"
        );
    }

    #[test]
    fn json_lines_carry_the_record_and_its_key_values() -> Result<(), serde_json::Error> {
        let kvs: [(&str, log::kv::Value<'_>); 3] = [
            ("model_version", log::kv::Value::from("7")),
            ("rows", log::kv::Value::from(64_i64)),
            ("request_id", log::kv::Value::from("r\"1")),
        ];
        let record = log::Record::builder()
            .args(format_args!("prediction failed: \"x\""))
            .level(log::Level::Error)
            .target("altscore_server::plane")
            .key_values(&kvs)
            .build();
        let line = json_line(&record, "ERROR", 1_796_232_805_123_456);
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line)?;
        assert_eq!(v["time"], "2026-12-02T17:33:25.123456+00:00");
        assert_eq!(v["level"], "ERROR");
        assert_eq!(v["logger"], "altscore_server::plane");
        assert_eq!(v["process"], "data-plane");
        assert_eq!(v["pid"], std::process::id());
        assert_eq!(v["message"], "prediction failed: \"x\"");
        assert_eq!(v["model_version"], "7");
        assert_eq!(v["rows"], 64);
        assert_eq!(v["request_id"], "r\"1");
        Ok(())
    }
}
