//! Categorical operations. `None` means "missing".

use std::collections::BTreeMap;

/// The code of a category, or `None` when it is not in the mapping (the caller applies the
/// spec's unknown-category policy). A missing category gives NaN.
#[must_use]
pub fn ordinal(value: Option<&str>, mapping: &BTreeMap<String, f64>) -> Option<f64> {
    match value {
        None => Some(f64::NAN),
        Some(v) => mapping.get(v).copied(),
    }
}

/// Write the one-hot encoding of `value` over `categories` into `out` (same length).
/// Returns `false` when the value is a known-unknown (not listed); `out` is then all zeros.
/// A missing value is all zeros too, and counts as known.
pub fn one_hot(value: Option<&str>, categories: &[String], out: &mut [f64]) -> bool {
    out.fill(0.0);
    match value {
        None => true,
        Some(v) => match categories.iter().position(|c| c == v) {
            Some(i) => {
                out[i] = 1.0;
                true
            }
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hot_known_unknown_missing() {
        let cats = vec!["a".to_string(), "b".to_string()];
        let mut out = [9.0; 2];
        assert!(one_hot(Some("b"), &cats, &mut out));
        assert_eq!(out, [0.0, 1.0]);
        assert!(!one_hot(Some("z"), &cats, &mut out));
        assert_eq!(out, [0.0, 0.0]);
        assert!(one_hot(None, &cats, &mut out));
        assert_eq!(out, [0.0, 0.0]);
    }

    #[test]
    fn ordinal_lookup() {
        let mut m = BTreeMap::new();
        m.insert("x".to_string(), 2.0);
        assert_eq!(ordinal(Some("x"), &m), Some(2.0));
        assert_eq!(ordinal(Some("y"), &m), None);
        assert!(ordinal(None, &m).is_some_and(f64::is_nan));
    }
}
