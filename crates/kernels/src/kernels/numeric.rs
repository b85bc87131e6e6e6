//! Numeric operations. NaN means "missing" everywhere and propagates unless said otherwise.

/// Clamp to `[lo, hi]` (either bound optional). NaN stays NaN.
#[must_use]
pub fn clip(x: f64, lo: Option<f64>, hi: Option<f64>) -> f64 {
    if x.is_nan() {
        return x;
    }
    let mut y = x;
    if let Some(lo) = lo {
        if y < lo {
            y = lo;
        }
    }
    if let Some(hi) = hi {
        if y > hi {
            y = hi;
        }
    }
    y
}

/// `ln(1 + max(x, 0))`: negative values are floored at 0 so the result is always defined.
#[must_use]
pub fn log1p(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    x.max(0.0).ln_1p()
}

/// `numerator / denominator`; a zero denominator gives `on_zero` (NaN = missing when `None`).
/// A missing operand gives NaN.
#[must_use]
pub fn ratio(numerator: f64, denominator: f64, on_zero: Option<f64>) -> f64 {
    if numerator.is_nan() || denominator.is_nan() {
        return f64::NAN;
    }
    if denominator == 0.0 {
        return on_zero.unwrap_or(f64::NAN);
    }
    numerator / denominator
}

/// Bucket index: the number of (sorted) boundaries `b` with `b <= x`. NaN stays NaN.
#[must_use]
pub fn bucketize(x: f64, boundaries: &[f64]) -> f64 {
    if x.is_nan() {
        return x;
    }
    boundaries.partition_point(|b| *b <= x) as f64
}

/// `(left - right) * scale` (e.g. days between two day numbers, in years). NaN if either is NaN.
#[must_use]
pub fn difference(left: f64, right: f64, scale: f64) -> f64 {
    (left - right) * scale
}

/// 1 when the value is missing, else 0.
#[must_use]
pub fn missing_indicator(x: f64) -> f64 {
    if x.is_nan() {
        1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_bounds_and_nan() {
        assert_eq!(clip(5.0, Some(0.0), Some(2.0)), 2.0);
        assert_eq!(clip(-1.0, Some(0.0), None), 0.0);
        assert!(clip(f64::NAN, Some(0.0), Some(1.0)).is_nan());
    }

    #[test]
    fn log1p_floors_negative() {
        assert_eq!(log1p(-3.0), 0.0);
        assert!((log1p(1.0) - 2f64.ln()).abs() < 1e-15);
    }

    #[test]
    fn ratio_zero_and_missing() {
        assert!(ratio(1.0, 0.0, None).is_nan());
        assert_eq!(ratio(1.0, 0.0, Some(-1.0)), -1.0);
        assert_eq!(ratio(3.0, 2.0, None), 1.5);
        assert!(ratio(f64::NAN, 2.0, Some(0.0)).is_nan());
    }

    #[test]
    fn difference_scales_and_propagates_missing() {
        assert_eq!(difference(10.0, 4.0, 0.5), 3.0);
        assert!(difference(f64::NAN, 4.0, 1.0).is_nan());
    }

    #[test]
    fn bucketize_edges() {
        let b = [1.0, 2.0, 5.0];
        assert_eq!(bucketize(0.5, &b), 0.0);
        assert_eq!(bucketize(1.0, &b), 1.0);
        assert_eq!(bucketize(4.9, &b), 2.0);
        assert_eq!(bucketize(5.0, &b), 3.0);
        assert!(bucketize(f64::NAN, &b).is_nan());
    }
}
