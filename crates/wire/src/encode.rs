//! Encoding the hot response messages straight from the values, as upb (Python's protobuf)
//! encodes them: fields in field-number order, proto3 defaults left out (a double only when its
//! bits are all zero, so -0.0 is written), a set message field always written. Every length is
//! computed first, so a message is written in one pass into one buffer.

use crate::decode::{I64, LEN};

/// Bytes of `v` as a varint.
#[must_use]
pub fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn int32_len(v: i32) -> usize {
    if v == 0 {
        0
    } else {
        1 + varint_len(i64::from(v) as u64)
    }
}

/// An `int32` / enum field: negative values are sign-extended to 64 bits (10 bytes).
fn put_int32(out: &mut Vec<u8>, field: u8, v: i32) {
    if v != 0 {
        out.push(field << 3);
        put_varint(out, i64::from(v) as u64);
    }
}

fn str_len(s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        1 + varint_len(s.len() as u64) + s.len()
    }
}

fn put_str(out: &mut Vec<u8>, field: u8, s: &str) {
    if !s.is_empty() {
        out.push((field << 3) | LEN);
        put_varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
}

fn double_len(v: f64) -> usize {
    if v.to_bits() == 0 {
        0
    } else {
        9
    }
}

fn put_double(out: &mut Vec<u8>, field: u8, v: f64) {
    if v.to_bits() != 0 {
        out.push((field << 3) | I64);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// A message field of `body_len` bytes, with its tag and length.
fn message_len(body_len: usize) -> usize {
    1 + varint_len(body_len as u64) + body_len
}

fn put_message_head(out: &mut Vec<u8>, field: u8, body_len: usize) {
    out.push((field << 3) | LEN);
    put_varint(out, body_len as u64);
}

/// A length-delimited field: tag, length, `body`.
pub fn put_len_field(out: &mut Vec<u8>, field: u8, body: &[u8]) {
    put_message_head(out, field, body.len());
    out.extend_from_slice(body);
}

/// The body of a `ModelRef` (every answer of a model carries the same one: encode it once).
#[must_use]
pub fn model_ref(name: &str, version: &str, variant: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(str_len(name) + str_len(version) + int32_len(variant));
    put_str(&mut out, 1, name);
    put_str(&mut out, 2, version);
    put_int32(&mut out, 3, variant);
    out
}

/// One reason code of an explanation.
#[derive(Debug, Clone, Copy)]
pub struct ReasonOut<'a> {
    pub code: &'a str,
    pub text: &'a str,
    pub contribution: f64,
}

/// An `Explanation`: one contribution per model feature, in feature order.
#[derive(Debug, Clone, Copy)]
pub struct ExplanationOut<'a> {
    pub base_value: f64,
    pub features: &'a [String],
    pub contributions: &'a [f64],
    pub reasons: &'a [ReasonOut<'a>],
}

impl ExplanationOut<'_> {
    fn contribution_len(feature: &str, c: f64) -> usize {
        str_len(feature) + double_len(c)
    }

    fn reason_len(r: &ReasonOut<'_>) -> usize {
        str_len(r.code) + str_len(r.text) + double_len(r.contribution)
    }

    fn body_len(&self) -> usize {
        let mut n = double_len(self.base_value);
        for (f, c) in self.features.iter().zip(self.contributions) {
            n += message_len(Self::contribution_len(f, *c));
        }
        for r in self.reasons {
            n += message_len(Self::reason_len(r));
        }
        n
    }

    fn put(&self, out: &mut Vec<u8>) {
        put_double(out, 1, self.base_value);
        for (f, c) in self.features.iter().zip(self.contributions) {
            put_message_head(out, 2, Self::contribution_len(f, *c));
            put_str(out, 1, f);
            put_double(out, 2, *c);
        }
        for r in self.reasons {
            put_message_head(out, 3, Self::reason_len(r));
            put_str(out, 1, r.code);
            put_str(out, 2, r.text);
            put_double(out, 3, r.contribution);
        }
    }
}

/// One `ScoreResponse`.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub request_id: &'a str,
    pub pd: f64,
    pub score: i32,
    /// `credit.scoring.v1.Decision` number.
    pub decision: i32,
    /// The encoded `ModelRef` body ([`model_ref`]).
    pub model: &'a [u8],
    pub defaulted: &'a [&'a str],
    pub degraded: bool,
    pub explanation: Option<ExplanationOut<'a>>,
}

impl Answer<'_> {
    /// Bytes of the `ScoreResponse` body.
    #[must_use]
    pub fn body_len(&self) -> usize {
        let mut n = str_len(self.request_id)
            + double_len(self.pd)
            + int32_len(self.score)
            + int32_len(self.decision)
            + message_len(self.model.len());
        for d in self.defaulted {
            n += 1 + varint_len(d.len() as u64) + d.len(); // repeated: empty strings written
        }
        if self.degraded {
            n += 2;
        }
        if let Some(e) = &self.explanation {
            n += message_len(e.body_len());
        }
        n
    }

    /// Append the `ScoreResponse` body.
    pub fn put(&self, out: &mut Vec<u8>) {
        put_str(out, 1, self.request_id);
        put_double(out, 2, self.pd);
        put_int32(out, 3, self.score);
        put_int32(out, 4, self.decision);
        put_len_field(out, 5, self.model);
        for d in self.defaulted {
            put_len_field(out, 6, d.as_bytes());
        }
        if self.degraded {
            out.extend_from_slice(&[7 << 3, 1]);
        }
        if let Some(e) = &self.explanation {
            put_message_head(out, 8, e.body_len());
            e.put(out);
        }
    }
}

/// A `ScoreBatchResponse`: one result per answer, in order.
pub fn put_batch(out: &mut Vec<u8>, answers: &[Answer<'_>]) {
    for a in answers {
        put_batch_item(out, a);
    }
}

/// One result of a `ScoreBatchResponse` (results are appended in order).
pub fn put_batch_item(out: &mut Vec<u8>, answer: &Answer<'_>) {
    put_message_head(out, 1, answer.body_len());
    answer.put(out);
}

/// A `ScoreStreamResponse` carrying an answer.
pub fn put_stream_answer(out: &mut Vec<u8>, request_id: &str, answer: &Answer<'_>) {
    put_str(out, 1, request_id);
    put_message_head(out, 2, answer.body_len());
    answer.put(out);
}

/// A `ScoreStreamResponse` carrying an error (`status`: an encoded `google.rpc.Status`).
pub fn put_stream_error(out: &mut Vec<u8>, request_id: &str, status: &[u8]) {
    put_str(out, 1, request_id);
    put_len_field(out, 3, status);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths() {
        for v in [
            0u64,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
    }

    fn answer<'a>(model: &'a [u8], e: Option<ExplanationOut<'a>>) -> Answer<'a> {
        Answer {
            request_id: "",
            pd: 0.0,
            score: -1,
            decision: 0,
            model,
            defaulted: &[],
            degraded: false,
            explanation: e,
        }
    }

    #[test]
    fn encodes_like_upb() {
        let model = model_ref("m", "", 2);
        assert_eq!(model, [0x0a, 1, b'm', 0x18, 2]);
        let mut out = Vec::new();
        let a = answer(&[], None);
        a.put(&mut out);
        let mut want = vec![0x18];
        want.extend([0xff; 9]);
        want.push(0x01);
        want.extend([0x2a, 0x00]);
        assert_eq!(out, want);
        assert_eq!(a.body_len(), out.len());
        let mut a = answer(&model, None);
        a.pd = -0.0;
        a.score = 0;
        a.decision = 3;
        out.clear();
        a.put(&mut out);
        assert_eq!(
            out,
            [0x11, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x20, 3, 0x2a, 5, 0x0a, 1, b'm', 0x18, 2]
        );
    }

    #[test]
    fn lengths_match_what_is_written() {
        let features = vec!["a".to_string(), "bb".to_string()];
        let reasons = [ReasonOut {
            code: "a",
            text: "A is high",
            contribution: 0.5,
        }];
        let e = ExplanationOut {
            base_value: -1.5,
            features: &features,
            contributions: &[0.5, 0.0],
            reasons: &reasons,
        };
        let model = model_ref("name", "7", 1);
        let mut a = answer(&model, Some(e));
        a.request_id = "r-1";
        a.defaulted = &["x", ""];
        a.degraded = true;
        let mut out = Vec::new();
        a.put(&mut out);
        assert_eq!(out.len(), a.body_len());
        let mut batch = Vec::new();
        put_batch(&mut batch, &[a, a]);
        assert_eq!(batch.len(), 2 * message_len(a.body_len()));
    }
}
