//! Champion / challenger routing: which model answers an applicant. The sticky hash is the one
//! the Python servers used (blake2b, 8-byte digest, big-endian, over 2^64), so no applicant
//! changes variant across the upgrade; Python reads it through the binding.

use blake2::digest::{Update, VariableOutput};
use blake2::Blake2bVar;

/// How traffic meets the challenger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Champion only.
    Off,
    /// Applicants whose id hashes below the share are answered by the challenger.
    Split,
    /// Every request is scored by both; the caller gets the champion's answer.
    Shadow,
}

impl Mode {
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "off" => Some(Mode::Off),
            "split" => Some(Mode::Split),
            "shadow" => Some(Mode::Shadow),
            _ => None,
        }
    }
}

/// Routing of one model name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Routing {
    pub mode: Mode,
    pub challenger_share: f64,
}

impl Routing {
    pub const OFF: Routing = Routing {
        mode: Mode::Off,
        challenger_share: 0.0,
    };

    /// Whether the challenger answers this applicant (`key`: applicant id, or the request id
    /// when the applicant has none). Only in `split` mode.
    #[must_use]
    pub fn challenger_answers(&self, key: &str) -> bool {
        self.mode == Mode::Split && bucket(key) < self.challenger_share
    }
}

/// A stable point in [0, 1) for an id: the same on every process, host and restart.
#[must_use]
pub fn bucket(key: &str) -> f64 {
    let mut out = [0u8; 8];
    // An 8-byte output is always a valid size for blake2b: neither call can fail.
    if let Ok(mut hasher) = Blake2bVar::new(8) {
        hasher.update(key.as_bytes());
        let _ = hasher.finalize_variable(&mut out);
    }
    u64::from_be_bytes(out) as f64 / 18_446_744_073_709_551_616.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_is_pythons_blake2b() {
        // hashlib.blake2b(b"applicant-1", digest_size=8).digest(), big-endian / 2**64
        let want = [
            ("applicant-1", 0x731a_cd51_6b3e_6ae9_u64),
            ("", 0xe4a6_a057_7479_b2b4_u64),
        ];
        for (key, bits) in want {
            let expected = bits as f64 / 18_446_744_073_709_551_616.0;
            assert!(
                (bucket(key) - expected).abs() < 1e-18,
                "{key}: {}",
                bucket(key)
            );
        }
        let share = (0..20_000)
            .filter(|i| bucket(&format!("applicant-{i}")) < 0.10)
            .count() as f64
            / 20_000.0;
        assert!((0.09..=0.11).contains(&share), "{share}");
    }
}
