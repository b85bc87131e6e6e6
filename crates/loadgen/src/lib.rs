//! Benchmark tools (`benchmarks/grpc_load.py` runs them):
//!
//! - `altscore-floor`: a tonic server on altscore's own proto, transport and codec that does no
//!   work: every call gets fixed, pre-encoded answer bytes. What a Rust data plane cannot beat on
//!   this machine; the production scenarios are reported as a share of it.
//! - `altscore-stream-load`: a `ScoreStream` load generator that keeps each stream full (up to a
//!   window of messages in flight), where ghz's bidirectional client sends one message and waits
//!   for its answer.
//! - `altscore-codec-bench`: the hot-message codec against prost on the same messages.

use std::time::Duration;

use altscore_wire::encode::Answer;

/// PD of the benchmarks' fixed answer (prost's side of the codec bench uses it too).
pub const EXAMPLE_PD: f64 = 0.123_456_789;

/// The fixed answer the benchmark tools encode (`model`: an encoded `ModelRef`, from
/// [`altscore_wire::encode::model_ref`]).
#[must_use]
pub fn example_answer<'a>(request_id: &'a str, model: &'a [u8]) -> Answer<'a> {
    Answer {
        request_id,
        pd: EXAMPLE_PD,
        score: 612,
        decision: 1,
        model,
        defaulted: &[],
        degraded: false,
        explanation: None,
    }
}

/// Parse `--name value` pairs (no library: two tiny command lines).
#[must_use]
pub fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Latency percentiles (milliseconds) of sorted samples (microseconds).
#[must_use]
pub fn percentiles(sorted_us: &[u32], ps: &[f64]) -> Vec<f64> {
    ps.iter()
        .map(|p| {
            if sorted_us.is_empty() {
                return f64::NAN;
            }
            let i = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
            f64::from(sorted_us[i.min(sorted_us.len() - 1)]) / 1000.0
        })
        .collect()
}

/// Seconds as a duration (for command-line values).
#[must_use]
pub fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}
