//! The hand-written hot-message codec (`altscore_wire`) against prost, the library it replaces on
//! the scoring path: random messages encoded by prost read the same through the wire decoder as
//! through prost's, and random answers written by the wire encoder decode with prost to the same
//! values.
//! (`tests/feature_kernels/test_wire.py` does the same against Python's upb, malformed bytes
//! included; `crates/wire/fuzz` fuzzes the decoder.)

use std::collections::HashMap;

use altscore_server::proto;
use altscore_wire::encode::{
    model_ref, put_batch_item, put_stream_answer, put_stream_error, Answer, ExplanationOut,
    ReasonOut,
};
use altscore_wire::{parse_batch, parse_request, RequestView};
use prost::Message as _;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn text(&mut self) -> String {
        const PIECES: [&str; 8] = ["a", "Z", "_", "7", "é", "€", "😀", "\u{0}"];
        (0..self.below(12))
            .map(|_| PIECES[self.below(PIECES.len() as u64) as usize])
            .collect()
    }

    fn double(&mut self) -> f64 {
        match self.below(6) {
            0 => 0.0,
            1 => -0.0,
            2 => f64::INFINITY,
            3 => f64::from_bits(self.below(1 << 52)), // subnormal
            4 => (self.below(1_000_000) as f64) / 7.0,
            _ => f64::from_bits(self.next()),
        }
    }

    fn int(&mut self) -> i32 {
        self.next() as i32
    }
}

fn random_request(rng: &mut Rng) -> proto::ScoreRequest {
    let applicant = (rng.below(8) > 0).then(|| proto::Applicant {
        applicant_id: rng.text(),
        numeric: (0..rng.below(12))
            .map(|_| (rng.text(), rng.double()))
            .collect(),
        categorical: (0..rng.below(4))
            .map(|_| (rng.text(), rng.text()))
            .collect(),
        numeric_values: (0..rng.below(3) * rng.below(6))
            .map(|_| rng.double())
            .collect(),
        numeric_values_layout: if rng.below(2) == 0 {
            String::new()
        } else {
            rng.text()
        },
    });
    proto::ScoreRequest {
        request_id: rng.text(),
        applicant,
        explain: rng.below(2) == 1,
    }
}

fn bits(values: impl IntoIterator<Item = f64>) -> Vec<u64> {
    values.into_iter().map(f64::to_bits).collect()
}

fn assert_same_request(view: &RequestView<'_>, msg: &proto::ScoreRequest) {
    assert_eq!(view.request_id, msg.request_id);
    assert_eq!(view.explain, msg.explain);
    let empty = proto::Applicant::default();
    let a = msg.applicant.as_ref().unwrap_or(&empty);
    let v = &view.applicant;
    assert_eq!(v.applicant_id, a.applicant_id);
    // maps: the last occurrence of a key wins, as in every protobuf runtime
    let numeric: HashMap<&str, u64> = v.numeric.iter().map(|(k, x)| (*k, x.to_bits())).collect();
    let expected: HashMap<&str, u64> = a
        .numeric
        .iter()
        .map(|(k, x)| (k.as_str(), x.to_bits()))
        .collect();
    assert_eq!(numeric, expected);
    let categorical: HashMap<&str, &str> = v.categorical.iter().copied().collect();
    let expected: HashMap<&str, &str> = a
        .categorical
        .iter()
        .map(|(k, x)| (k.as_str(), x.as_str()))
        .collect();
    assert_eq!(categorical, expected);
    assert_eq!(
        bits(v.numeric_values.iter().copied()),
        bits(a.numeric_values.iter().copied())
    );
    assert_eq!(v.numeric_values_layout, a.numeric_values_layout);
}

#[test]
fn requests_encoded_by_prost_decode_the_same() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        let bytes = random_request(&mut rng).encode_to_vec();
        // what prost reads back is the reference (prost writes a map value of -0.0 as absent)
        let msg = proto::ScoreRequest::decode(bytes.as_slice()).unwrap_or_default();
        let view = parse_request(&bytes);
        assert!(view.is_ok(), "{msg:?}: {view:?}");
        if let Ok(view) = view {
            assert_same_request(&view, &msg);
        }
    }
}

#[test]
fn batches_encoded_by_prost_decode_the_same() {
    let mut rng = Rng(7);
    for _ in 0..200 {
        let batch = proto::ScoreBatchRequest {
            requests: (0..rng.below(20))
                .map(|_| random_request(&mut rng))
                .collect(),
        };
        let bytes = batch.encode_to_vec();
        let batch = proto::ScoreBatchRequest::decode(bytes.as_slice()).unwrap_or_default();
        let views = parse_batch(&bytes, usize::MAX);
        assert!(views.is_ok());
        let views = views.unwrap_or_default();
        assert_eq!(views.len(), batch.requests.len());
        for (view, msg) in views.iter().zip(&batch.requests) {
            assert_same_request(view, msg);
        }
    }
}

/// (base value, features, contributions, reasons as (code, text, contribution)).
type Explained = (f64, Vec<String>, Vec<f64>, Vec<(String, String, f64)>);

/// Owned parts of a random answer (the encoder borrows them).
struct Parts {
    request_id: String,
    pd: f64,
    score: i32,
    decision: i32,
    name: String,
    version: String,
    variant: i32,
    defaulted: Vec<String>,
    degraded: bool,
    explanation: Option<Explained>,
}

fn random_parts(rng: &mut Rng) -> Parts {
    Parts {
        request_id: rng.text(),
        pd: rng.double(),
        score: rng.int(),
        decision: rng.below(4) as i32,
        name: rng.text(),
        version: rng.text(),
        variant: rng.below(3) as i32,
        defaulted: (0..rng.below(3)).map(|_| rng.text()).collect(),
        degraded: rng.below(2) == 1,
        explanation: (rng.below(2) == 1).then(|| {
            let n = rng.below(6) as usize;
            (
                rng.double(),
                (0..n).map(|_| rng.text()).collect(),
                (0..n).map(|_| rng.double()).collect(),
                (0..rng.below(4))
                    .map(|_| (rng.text(), rng.text(), rng.double()))
                    .collect(),
            )
        }),
    }
}

fn assert_same_answer(p: &Parts, r: &proto::ScoreResponse) {
    assert_eq!(r.request_id, p.request_id);
    assert_eq!(r.pd.to_bits(), p.pd.to_bits());
    assert_eq!((r.score, r.decision), (p.score, p.decision));
    let model = r.model.clone().unwrap_or_default();
    assert_eq!(
        (model.name.as_str(), model.version.as_str(), model.variant),
        (p.name.as_str(), p.version.as_str(), p.variant)
    );
    assert_eq!(r.defaulted_features, p.defaulted);
    assert_eq!(r.degraded, p.degraded);
    match (&r.explanation, &p.explanation) {
        (None, None) => {}
        (Some(e), Some((base, features, contributions, reasons))) => {
            assert_eq!(e.base_value.to_bits(), base.to_bits());
            let got: Vec<(&str, u64)> = e
                .contributions
                .iter()
                .map(|c| (c.feature.as_str(), c.contribution.to_bits()))
                .collect();
            let want: Vec<(&str, u64)> = features
                .iter()
                .map(String::as_str)
                .zip(contributions.iter().map(|c| c.to_bits()))
                .collect();
            assert_eq!(got, want);
            let got: Vec<(&str, &str, u64)> = e
                .reasons
                .iter()
                .map(|x| (x.code.as_str(), x.text.as_str(), x.contribution.to_bits()))
                .collect();
            let want: Vec<(&str, &str, u64)> = reasons
                .iter()
                .map(|(c, t, x)| (c.as_str(), t.as_str(), x.to_bits()))
                .collect();
            assert_eq!(got, want);
        }
        (got, want) => assert_eq!(got.is_some(), want.is_some(), "explanation"),
    }
}

/// Call `f` with the answer `p` describes.
fn with_answer<T>(p: &Parts, f: impl FnOnce(&Answer<'_>) -> T) -> T {
    let model = model_ref(&p.name, &p.version, p.variant);
    let defaulted: Vec<&str> = p.defaulted.iter().map(String::as_str).collect();
    let reasons: Vec<ReasonOut<'_>> = p
        .explanation
        .as_ref()
        .map(|(_, _, _, rs)| {
            rs.iter()
                .map(|(code, text, contribution)| ReasonOut {
                    code,
                    text,
                    contribution: *contribution,
                })
                .collect()
        })
        .unwrap_or_default();
    let explanation = p
        .explanation
        .as_ref()
        .map(|(base_value, features, contributions, _)| ExplanationOut {
            base_value: *base_value,
            features,
            contributions,
            reasons: &reasons,
        });
    f(&Answer {
        request_id: &p.request_id,
        pd: p.pd,
        score: p.score,
        decision: p.decision,
        model: &model,
        defaulted: &defaulted,
        degraded: p.degraded,
        explanation,
    })
}

#[test]
fn answers_written_by_the_wire_encoder_decode_with_prost() {
    let mut rng = Rng(42);
    for _ in 0..3000 {
        let p = random_parts(&mut rng);
        let mut out = Vec::new();
        with_answer(&p, |a| {
            assert_eq!(a.body_len(), {
                let mut probe = Vec::new();
                a.put(&mut probe);
                probe.len()
            });
            a.put(&mut out);
        });
        let decoded = proto::ScoreResponse::decode(out.as_slice());
        assert!(decoded.is_ok(), "{decoded:?}");
        assert_same_answer(&p, &decoded.unwrap_or_default());
    }
}

#[test]
fn batch_and_stream_answers_decode_with_prost() {
    let mut rng = Rng(1234);
    for _ in 0..200 {
        let parts: Vec<Parts> = (0..rng.below(10)).map(|_| random_parts(&mut rng)).collect();
        let mut batch = Vec::new();
        for p in &parts {
            with_answer(p, |a| put_batch_item(&mut batch, a));
        }
        let decoded = proto::ScoreBatchResponse::decode(batch.as_slice()).unwrap_or_default();
        assert_eq!(decoded.results.len(), parts.len());
        for (p, r) in parts.iter().zip(&decoded.results) {
            assert_same_answer(p, r);
        }
        for p in &parts {
            let mut message = Vec::new();
            with_answer(p, |a| put_stream_answer(&mut message, &p.request_id, a));
            let decoded =
                proto::ScoreStreamResponse::decode(message.as_slice()).unwrap_or_default();
            assert_eq!(decoded.request_id, p.request_id);
            let answer = match decoded.result {
                Some(proto::score_stream_response::Result::Response(r)) => Some(r),
                _ => None,
            };
            assert!(answer.is_some(), "not an answer");
            assert_same_answer(p, &answer.unwrap_or_default());
        }
    }
    let status = tonic_types::pb::Status {
        code: 3,
        message: "invalid request".into(),
        details: Vec::new(),
    };
    let mut message = Vec::new();
    put_stream_error(&mut message, "r-1", &status.encode_to_vec());
    let decoded = proto::ScoreStreamResponse::decode(message.as_slice()).unwrap_or_default();
    assert_eq!(decoded.request_id, "r-1");
    assert_eq!(
        decoded.result,
        Some(proto::score_stream_response::Result::Error(status))
    );
}
