//! The direct path: a `Score` / `ScoreBatch` message answered without Python, through the same
//! decoder, kernels, evaluator and encoder the Python servicer's native path calls. It answers
//! only what needs nothing but the request's own features and has nothing wrong with it; every
//! other message (a violation, an explanation, malformed bytes, an empty or repeated request id,
//! a batch size out of bounds) goes to the Python backend, the one place errors are written.

use std::collections::HashSet;
use std::sync::Arc;

use crate::ensemble::TreeEnsemble;
use crate::plan::Plan;
use crate::wire;

use super::lines;

/// The score policy (`credit_core.ScoringPolicy`): points and decision from a PD.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub offset: f64,
    pub factor: f64,
    pub approve_below: f64,
    pub decline_from: f64,
}

impl Policy {
    /// `ScoringPolicy.scores`: clamp, points, round half to even.
    #[must_use]
    pub fn score(&self, pd: f64) -> i32 {
        let p = pd.clamp(1e-9, 1.0 - 1e-9);
        (self.offset + self.factor * ((1.0 - p) / p).ln()).round_ties_even() as i32
    }

    /// The `credit.scoring.v1.Decision` number: APPROVE 1, REVIEW 2, DECLINE 3.
    #[must_use]
    pub fn decision(&self, pd: f64) -> i32 {
        if pd < self.approve_below {
            1
        } else if pd >= self.decline_from {
            3
        } else {
            2
        }
    }
}

/// The model that answers every request, when no answer needs more than the request itself.
pub struct Direct {
    pub plan: Arc<Plan>,
    pub ensemble: Arc<TreeEnsemble>,
    pub policy: Policy,
    pub max_batch: usize,
    pub model_version: String,
    pub variant: String,
    /// Encoded `ModelRef` body of every answer.
    pub model_ref: Vec<u8>,
    /// The model's fields of a prediction-log line.
    pub line_fields: Vec<u8>,
}

/// What one directly answered message produced.
pub struct Answer {
    /// The gRPC message (5-byte frame header included).
    pub framed: Vec<u8>,
    /// Applicants scored.
    pub rows: usize,
}

/// The logistic function as scipy's `expit` computes it (the Python path's PD).
fn expit(m: f64) -> f64 {
    1.0 / (1.0 + (-m).exp())
}

impl Direct {
    /// Answer `message` (a `ScoreBatchRequest` when `batch`, else a `ScoreRequest`), appending
    /// its prediction-log lines to `log` (when given, with time `ts`); `None` when Python must.
    pub fn answer(
        &self,
        message: &[u8],
        batch: bool,
        log: Option<(&mut Vec<u8>, f64)>,
    ) -> Option<Answer> {
        let ev = wire::decode_and_eval(&self.plan, message, batch).ok()?;
        let n = ev.request_ids.len();
        if batch && (n == 0 || n > self.max_batch) {
            return None;
        }
        if ev.explain.iter().any(|e| *e)
            || ev.violations.iter().any(|v| !v.is_empty())
            || ev.request_ids.iter().any(|id| id.is_empty())
        {
            return None;
        }
        if n > 1 {
            let mut seen = HashSet::with_capacity(n);
            if !ev.request_ids.iter().all(|id| seen.insert(*id)) {
                return None;
            }
        }
        let k = self.plan.n_outputs();
        let margins = self.ensemble.predict_margin(&ev.matrix, n, k).ok()?;
        let mut framed = Vec::with_capacity(5 + n * (40 + self.model_ref.len()));
        framed.extend_from_slice(&[0; 5]);
        let mut one = Vec::with_capacity(40 + self.model_ref.len());
        let mut pds = Vec::with_capacity(n);
        for (id, m) in ev.request_ids.iter().zip(&margins) {
            let pd = expit(*m);
            pds.push(pd);
            let (score, decision) = (self.policy.score(pd), self.policy.decision(pd));
            if batch {
                one.clear();
                wire::encode_response(&mut one, id, pd, score, decision, &self.model_ref);
                wire::put_len_field(&mut framed, 1, &one);
            } else {
                wire::encode_response(&mut framed, id, pd, score, decision, &self.model_ref);
            }
        }
        let len = u32::try_from(framed.len() - 5).ok()?;
        framed[1..5].copy_from_slice(&len.to_be_bytes());
        if let Some((out, ts)) = log {
            let mut time = Vec::with_capacity(24);
            lines::push_py_float(&mut time, ts);
            let ts = time.as_slice();
            for ((id, applicant), pd) in ev.request_ids.iter().zip(&ev.applicant_ids).zip(&pds) {
                lines::push_prediction(out, ts, id, applicant, &self.line_fields, *pd);
            }
        }
        Some(Answer { framed, rows: n })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `credit_core.ScoringPolicy()`'s defaults: 600 points at 50:1, 20 points to double.
    fn policy() -> Policy {
        let factor = 20.0 / 2f64.ln();
        Policy {
            offset: 600.0 - factor * 50f64.ln(),
            factor,
            approve_below: 0.08,
            decline_from: 0.20,
        }
    }

    #[test]
    fn scores_and_decisions_as_the_python_policy() {
        let p = policy();
        // The doctest values of `ScoringPolicy.scores`.
        assert_eq!(p.score(0.0196), 600);
        assert_eq!(p.score(0.0385), 580);
        assert_eq!(p.score(0.5), 487);
        // Clamped, so always finite.
        assert_eq!(p.score(0.0), p.score(1e-9));
        assert_eq!(p.score(1.0), p.score(1.0 - 1e-9));
        assert_eq!(
            [0.0, 0.0799, 0.08, 0.1999, 0.2, 1.0].map(|pd| p.decision(pd)),
            [1, 1, 2, 2, 3, 3]
        );
    }

    #[test]
    fn expit_is_the_logistic_function() {
        assert_eq!(expit(0.0), 0.5);
        assert!((expit(2.0) - 0.880_797_077_977_882_3).abs() < 1e-15);
        assert_eq!(expit(-1000.0), 0.0);
        assert_eq!(expit(1000.0), 1.0);
    }
}
