//! Pure feature operations. No Python types, no I/O: both call paths use these.

pub mod categorical;
pub mod numeric;

/// Bring a computed value into the model's float32 domain: NaN stays NaN (missing), finite values
/// beyond the float32 range saturate at `±f32::MAX`, infinities too. Every output is NaN or finite.
#[must_use]
pub fn to_output(x: f64) -> f32 {
    if x.is_nan() {
        f32::NAN
    } else if x >= f64::from(f32::MAX) {
        f32::MAX
    } else if x <= -f64::from(f32::MAX) {
        -f32::MAX
    } else {
        x as f32
    }
}
