//! The score policy: a probability of default (PD) to points and a decision, and the logistic
//! function that turns a model's margin into a PD. The one implementation; Python reads it
//! through the binding (`credit_core.ScoringPolicy`).

use crate::error::KernelError;

/// `credit.scoring.v1.Decision`: its numbers are the wire enum's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Decision {
    Approve = 1,
    Review = 2,
    Decline = 3,
}

impl Decision {
    #[must_use]
    pub fn code(self) -> i32 {
        self as i32
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Review => "review",
            Decision::Decline => "decline",
        }
    }
}

/// Points use the standard points-to-double-odds scaling on the odds of *good*:
/// `score = offset + factor * ln((1 - pd) / pd)`, `factor = pdo / ln 2`,
/// `offset = base_score - factor * ln(base_odds)`. PD is clamped to `[1e-9, 1 - 1e-9]` so the
/// score is always finite, then rounded half to even. Decision: `pd < approve_below` approves,
/// `pd >= decline_from` declines, anything between is reviewed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub base_score: f64,
    pub base_odds: f64,
    pub pdo: f64,
    pub approve_below: f64,
    pub decline_from: f64,
    factor: f64,
    offset: f64,
}

impl Policy {
    pub fn new(
        base_score: f64,
        base_odds: f64,
        pdo: f64,
        approve_below: f64,
        decline_from: f64,
    ) -> Result<Self, KernelError> {
        let finite = [base_score, base_odds, pdo, approve_below, decline_from]
            .iter()
            .all(|x| x.is_finite());
        if !finite {
            return Err(KernelError::Policy("every parameter must be finite".into()));
        }
        if pdo <= 0.0 || base_odds <= 0.0 {
            return Err(KernelError::Policy(
                "pdo and base_odds must be positive".into(),
            ));
        }
        if !(0.0 < approve_below && approve_below <= decline_from && decline_from < 1.0) {
            return Err(KernelError::Policy(
                "need 0 < approve_below <= decline_from < 1".into(),
            ));
        }
        let factor = pdo / std::f64::consts::LN_2;
        Ok(Self {
            base_score,
            base_odds,
            pdo,
            approve_below,
            decline_from,
            factor,
            offset: base_score - factor * base_odds.ln(),
        })
    }

    /// 600 points at 50:1 odds of good, 20 points to double the odds; approve below 8 % PD,
    /// decline from 20 %.
    #[must_use]
    pub fn standard() -> Self {
        let factor = 20.0 / std::f64::consts::LN_2;
        Self {
            base_score: 600.0,
            base_odds: 50.0,
            pdo: 20.0,
            approve_below: 0.08,
            decline_from: 0.20,
            factor,
            offset: 600.0 - factor * 50f64.ln(),
        }
    }

    #[must_use]
    pub fn factor(&self) -> f64 {
        self.factor
    }

    #[must_use]
    pub fn offset(&self) -> f64 {
        self.offset
    }

    /// Points for a PD.
    #[must_use]
    pub fn score(&self, pd: f64) -> i32 {
        let p = pd.clamp(1e-9, 1.0 - 1e-9);
        (self.offset + self.factor * ((1.0 - p) / p).ln()).round_ties_even() as i32
    }

    /// The decision for a PD.
    #[must_use]
    pub fn decision(&self, pd: f64) -> Decision {
        if pd < self.approve_below {
            Decision::Approve
        } else if pd >= self.decline_from {
            Decision::Decline
        } else {
            Decision::Review
        }
    }
}

/// The logistic function: a margin (log-odds) to a probability.
#[must_use]
pub fn logistic(margin: f64) -> f64 {
    1.0 / (1.0 + (-margin).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_and_decisions() {
        let p = Policy::standard();
        assert_eq!(
            Policy::new(600.0, 50.0, 20.0, 0.08, 0.2).ok(),
            Some(p),
            "new and standard agree"
        );
        assert_eq!(p.score(0.0196), 600);
        assert_eq!(p.score(0.0385), 580);
        assert_eq!(p.score(0.5), 487);
        assert_eq!(p.score(0.0), p.score(1e-9));
        assert_eq!(p.score(1.0), p.score(1.0 - 1e-9));
        assert_eq!(
            [0.0, 0.0799, 0.08, 0.1999, 0.2, 1.0].map(|pd| p.decision(pd).code()),
            [1, 1, 2, 2, 3, 3]
        );
        assert!(Policy::new(600.0, 50.0, 0.0, 0.08, 0.2).is_err());
        assert!(Policy::new(600.0, 50.0, 20.0, 0.3, 0.2).is_err());
        assert!(Policy::new(600.0, f64::NAN, 20.0, 0.08, 0.2).is_err());
    }

    #[test]
    fn logistic_is_the_logistic_function() {
        assert_eq!(logistic(0.0), 0.5);
        assert!((logistic(2.0) - 0.880_797_077_977_882_3).abs() < 1e-15);
        assert_eq!(logistic(-1000.0), 0.0);
        assert_eq!(logistic(1000.0), 1.0);
    }
}
