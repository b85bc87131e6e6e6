//! Reason codes for adverse-action notices, from exact `TreeSHAP` contributions.
//!
//! A code is a spec feature's name and its text is the spec's `reason`. The model columns of one
//! spec feature (the one-hot columns of a category) are summed into one reason. Only features
//! whose total raised the risk (a positive contribution in log-odds) can be reasons, largest
//! first, ties in spec order, at most `top_k`: a feature that lowered the risk is never named.

use crate::error::KernelError;

/// One spec feature: its code, its text and the model columns it owns.
#[derive(Debug, Clone, PartialEq)]
pub struct ReasonGroup {
    pub code: String,
    pub text: String,
    pub columns: Vec<usize>,
}

/// One reason of one answer: the group (index into [`Reasons::groups`]) and its contribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reason {
    pub group: usize,
    pub contribution: f64,
}

#[derive(Debug, Clone)]
pub struct Reasons {
    groups: Vec<ReasonGroup>,
    top_k: usize,
}

impl Reasons {
    /// `groups` in spec order; every column below `n_features`, each in one group.
    pub fn new(
        groups: Vec<ReasonGroup>,
        top_k: usize,
        n_features: usize,
    ) -> Result<Self, KernelError> {
        let mut seen = vec![false; n_features];
        for g in &groups {
            if g.columns.is_empty() {
                return Err(KernelError::Plan(format!(
                    "reason {:?} has no column",
                    g.code
                )));
            }
            for c in &g.columns {
                match seen.get_mut(*c) {
                    Some(s) if !*s => *s = true,
                    _ => {
                        return Err(KernelError::Plan(format!(
                            "reason {:?}: column {c} is out of range or in two groups",
                            g.code
                        )))
                    }
                }
            }
        }
        Ok(Self { groups, top_k })
    }

    #[must_use]
    pub fn groups(&self) -> &[ReasonGroup] {
        &self.groups
    }

    #[must_use]
    pub fn top_k(&self) -> usize {
        self.top_k
    }

    /// The reasons of one row's contributions (`phi`, one per model column).
    #[must_use]
    pub fn reasons(&self, phi: &[f64]) -> Vec<Reason> {
        let mut raised: Vec<Reason> = self
            .groups
            .iter()
            .enumerate()
            .filter_map(|(group, g)| {
                let total = match g.columns.as_slice() {
                    [one] => phi[*one],
                    many => many.iter().map(|c| phi[*c]).sum(),
                };
                (total > 0.0).then_some(Reason {
                    group,
                    contribution: total,
                })
            })
            .collect();
        // Stable: equal contributions keep spec order.
        raised.sort_by(|a, b| b.contribution.total_cmp(&a.contribution));
        raised.truncate(self.top_k);
        raised
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(code: &str, columns: &[usize]) -> ReasonGroup {
        ReasonGroup {
            code: code.into(),
            text: format!("{code} text"),
            columns: columns.to_vec(),
        }
    }

    #[test]
    fn only_risk_raising_largest_first_ties_in_spec_order() {
        let r = match Reasons::new(
            vec![
                group("a", &[0]),
                group("b", &[1, 2]),
                group("c", &[3]),
                group("d", &[4]),
            ],
            2,
            5,
        ) {
            Ok(r) => r,
            Err(e) => unreachable!("{e}"),
        };
        let got = r.reasons(&[0.5, 0.3, 0.2, -1.0, 0.5]);
        assert_eq!(
            got.iter().map(|x| x.group).collect::<Vec<_>>(),
            [0, 1],
            "a (0.5) and b (0.5) tie before d (0.5): spec order"
        );
        assert!(r.reasons(&[-0.5, 0.0, 0.0, -1.0, -0.1]).is_empty());
        assert!(Reasons::new(vec![group("a", &[0]), group("b", &[0])], 2, 1).is_err());
        assert!(Reasons::new(vec![group("a", &[3])], 2, 1).is_err());
    }
}
