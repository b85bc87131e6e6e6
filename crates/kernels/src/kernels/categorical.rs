//! Categorical operations. `None` means "missing".

use std::borrow::Cow;
use std::collections::BTreeMap;

/// The case-folded form of a category (`case_fold: true` in a spec): Unicode lower case, as
/// Rust's `str::to_lowercase` defines it (so `FORTALEZA`, `Fortaleza` and `fortaleza` are one
/// category, and `SÃO PAULO` is `são paulo`). The one definition of the rule: the plan folds its
/// mappings and categories with it, every row's value is folded with it before the lookup, and
/// training fits `frequency_rank` counts on it (through the binding), so training and serving
/// cannot disagree. Borrowed when the value is already folded (no allocation).
#[must_use]
pub fn fold_case(value: &str) -> Cow<'_, str> {
    if value.is_ascii() {
        if value.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(value.to_ascii_lowercase())
        } else {
            Cow::Borrowed(value)
        }
    } else {
        let lower = value.to_lowercase();
        if lower == value {
            Cow::Borrowed(value)
        } else {
            Cow::Owned(lower)
        }
    }
}

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
    fn fold_case_lowers_ascii_and_unicode_and_borrows_when_folded() {
        assert_eq!(fold_case("FORTALEZA"), "fortaleza");
        assert_eq!(fold_case("Fortaleza"), "fortaleza");
        assert_eq!(fold_case("SÃO PAULO"), "são paulo");
        assert_eq!(fold_case("Spouse, partner"), "spouse, partner");
        assert!(matches!(fold_case("fortaleza"), Cow::Borrowed(_)));
        assert!(matches!(fold_case("são paulo"), Cow::Borrowed(_)));
        assert!(matches!(fold_case(""), Cow::Borrowed(_)));
        // the whole-string rule, not char by char: a final sigma is lowered as such
        assert_eq!(fold_case("ΟΔΟΣ"), "οδος");
        // idempotent
        for s in ["FORTALEZA", "SÃO PAULO", "ΟΔΟΣ", "İstanbul", "Straße"] {
            assert_eq!(fold_case(&fold_case(s)), fold_case(s), "{s}");
        }
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
