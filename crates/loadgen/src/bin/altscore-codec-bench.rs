//! The hot-message codec against prost, on one thread: decoding a `ScoreRequest` (and a batch of
//! 64) into something the row builder can read, and encoding a `ScoreResponse` (and a batch of
//! 64 answers). `altscore_wire` borrows names and ids from the request bytes and writes answers
//! straight from values; prost builds owned messages (a `String` per id and map key, a
//! `HashMap` per map) and encodes from them. Prints one JSON object per line:
//! `{"what", "ours_ns", "prost_ns"}`, each the median of `--rounds` rounds.
//!
//!     altscore-codec-bench --rounds 7 --seconds 0.2

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use altscore_loadgen::{example_answer, EXAMPLE_PD};
use altscore_server::proto;
use altscore_wire::encode::{model_ref, put_batch_item};
use altscore_wire::{parse_batch, parse_request};
use prost::Message as _;

const FEATURES: [(&str, f64); 10] = [
    ("revolving_utilization", 0.766_127),
    ("age", 45.0),
    ("past_due_30_59", 2.0),
    ("debt_ratio", 0.802_982),
    ("monthly_income", 9120.0),
    ("open_credit_lines", 13.0),
    ("times_90_days_late", 0.0),
    ("real_estate_loans", 6.0),
    ("past_due_60_89", 0.0),
    ("dependents", 2.0),
];

fn request(i: usize) -> proto::ScoreRequest {
    proto::ScoreRequest {
        request_id: format!("req-{i:08}"),
        applicant: Some(proto::Applicant {
            applicant_id: format!("applicant-{i:08}"),
            numeric: FEATURES
                .iter()
                .map(|(k, v)| ((*k).to_string(), v + i as f64))
                .collect::<HashMap<_, _>>(),
            categorical: HashMap::new(),
            numeric_values: Vec::new(),
            numeric_values_layout: String::new(),
        }),
        explain: false,
    }
}

/// Median nanoseconds per call of `f` over `rounds` rounds of at least `min` each.
fn time(rounds: usize, min: Duration, mut f: impl FnMut() -> usize) -> f64 {
    let mut per_call = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        let mut calls = 0u64;
        while started.elapsed() < min {
            for _ in 0..64 {
                black_box(f());
            }
            calls += 64;
        }
        per_call.push(started.elapsed().as_nanos() as f64 / calls as f64);
    }
    per_call.sort_by(f64::total_cmp);
    per_call[per_call.len() / 2]
}

fn report(what: &str, ours: f64, prost: f64) {
    println!("{{\"what\":\"{what}\",\"ours_ns\":{ours:.1},\"prost_ns\":{prost:.1}}}");
}

/// Sum of what a row builder reads, so neither decoder's work can be skipped.
fn wire_sum(r: &altscore_wire::RequestView<'_>) -> usize {
    r.request_id.len()
        + r.applicant.applicant_id.len()
        + r.applicant
            .numeric
            .iter()
            .map(|(k, v)| k.len() + (*v as usize))
            .sum::<usize>()
}

fn prost_sum(r: &proto::ScoreRequest) -> usize {
    r.request_id.len()
        + r.applicant.as_ref().map_or(0, |a| {
            a.applicant_id.len()
                + a.numeric
                    .iter()
                    .map(|(k, v)| k.len() + (*v as usize))
                    .sum::<usize>()
        })
}

fn prost_answer(request_id: &str, pd: f64) -> proto::ScoreResponse {
    proto::ScoreResponse {
        request_id: request_id.to_string(),
        pd,
        score: 612,
        decision: 1,
        model: Some(proto::ModelRef {
            name: "altscore-gmsc".to_string(),
            version: "1".to_string(),
            variant: 1,
        }),
        defaulted_features: Vec::new(),
        degraded: false,
        explanation: None,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = altscore_loadgen::arg(&args, "--rounds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let min = altscore_loadgen::seconds(
        altscore_loadgen::arg(&args, "--seconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.2),
    );

    let one = request(1).encode_to_vec();
    let batch = proto::ScoreBatchRequest {
        requests: (0..64).map(request).collect(),
    }
    .encode_to_vec();
    let ours = time(rounds, min, || {
        parse_request(&one).map_or(0, |r| wire_sum(&r))
    });
    let theirs = time(rounds, min, || {
        proto::ScoreRequest::decode(one.as_slice()).map_or(0, |r| prost_sum(&r))
    });
    report("decode ScoreRequest (10 numeric features)", ours, theirs);
    let ours = time(rounds, min, || {
        parse_batch(&batch, 64).map_or(0, |rs| rs.iter().map(wire_sum).sum())
    });
    let theirs = time(rounds, min, || {
        proto::ScoreBatchRequest::decode(batch.as_slice())
            .map_or(0, |b| b.requests.iter().map(prost_sum).sum())
    });
    report("decode ScoreBatchRequest (64 x 10 features)", ours, theirs);

    let model = model_ref("altscore-gmsc", "1", 1);
    let ids: Vec<String> = (0..64).map(|i| format!("req-{i:08}")).collect();
    let ours = time(rounds, min, || {
        let mut out = Vec::with_capacity(128);
        example_answer("req-00000001", &model).put(&mut out);
        out.len()
    });
    let theirs = time(rounds, min, || {
        prost_answer("req-00000001", EXAMPLE_PD)
            .encode_to_vec()
            .len()
    });
    report("encode ScoreResponse", ours, theirs);
    let ours = time(rounds, min, || {
        let mut out = Vec::with_capacity(64 * 64);
        for id in &ids {
            put_batch_item(&mut out, &example_answer(id, &model));
        }
        out.len()
    });
    let theirs = time(rounds, min, || {
        proto::ScoreBatchResponse {
            results: ids.iter().map(|id| prost_answer(id, EXAMPLE_PD)).collect(),
        }
        .encode_to_vec()
        .len()
    });
    report("encode ScoreBatchResponse (64 answers)", ours, theirs);
}
