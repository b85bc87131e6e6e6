//! Text the crate writes: floats as Python's `repr` writes them, JSON string literals as Python's
//! `json` writes them, and echoed client values cut to a bounded length.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// Most characters of a client's value (a key, an id, a category) echoed in an error message.
pub const MAX_ECHO_CHARS: usize = 64;

/// A fixed buffer to format one float into, without allocating.
struct Stack {
    buf: [u8; 40],
    len: usize,
}

impl fmt::Write for Stack {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// `repr(x)` of a finite Python float: the shortest digits that round-trip, in fixed notation
/// when the decimal exponent is in [-4, 16), else `d.ddde±XX`.
pub fn push_py_float(out: &mut Vec<u8>, x: f64) {
    if !x.is_finite() {
        // What `json.dumps` writes for them (never written by the server: its numbers are
        // finite), so a caller never gets a panic or a broken line.
        out.extend_from_slice(if x.is_nan() {
            b"NaN"
        } else if x > 0.0 {
            b"Infinity"
        } else {
            b"-Infinity"
        });
        return;
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-5", "0e0".
    let mut s = Stack {
        buf: [0; 40],
        len: 0,
    };
    let _ = write!(s, "{x:e}");
    let text = &s.buf[..s.len];
    let e_at = text.iter().position(|b| *b == b'e').unwrap_or(text.len());
    let exp: i32 = std::str::from_utf8(text.get(e_at + 1..).unwrap_or_default())
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let mut mantissa = &text[..e_at];
    if let Some(rest) = mantissa.strip_prefix(b"-") {
        out.push(b'-');
        mantissa = rest;
    }
    let mut digits = [0u8; 40];
    let mut n = 0;
    for b in mantissa.iter().filter(|b| b.is_ascii_digit()) {
        digits[n] = *b;
        n += 1;
    }
    let digits = &digits[..n];
    let decpt = exp + 1; // the point goes after `decpt` digits
    if !(-4 < decpt && decpt <= 16) {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.extend_from_slice(if exp < 0 { b"e-" } else { b"e+" });
        let e = exp.unsigned_abs();
        if e < 10 {
            out.push(b'0');
        }
        let mut s = Stack {
            buf: [0; 40],
            len: 0,
        };
        let _ = write!(s, "{e}");
        out.extend_from_slice(&s.buf[..s.len]);
        return;
    }
    let count = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    if decpt <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', decpt.unsigned_abs() as usize));
        out.extend_from_slice(digits);
    } else if decpt >= count {
        out.extend_from_slice(digits);
        out.extend(std::iter::repeat_n(
            b'0',
            (decpt - count).unsigned_abs() as usize,
        ));
        out.extend_from_slice(b".0");
    } else {
        let (head, tail) = digits.split_at(decpt.unsigned_abs() as usize);
        out.extend_from_slice(head);
        out.push(b'.');
        out.extend_from_slice(tail);
    }
}

/// A JSON string literal as Python's `json.encoder.encode_basestring_ascii` writes it: printable
/// ASCII as is, `"` and `\` escaped, `\b \f \n \r \t` short, everything else as `\u` and four
/// lowercase hex digits (UTF-16 surrogate pairs above the BMP).
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{08}' => out.extend_from_slice(b"\\b"),
            '\u{0c}' => out.extend_from_slice(b"\\f"),
            ' '..='~' => out.push(c as u8),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.extend_from_slice(b"\\u");
                    for shift in [12, 8, 4, 0] {
                        out.push(HEX[usize::from((*u >> shift) & 0xf)]);
                    }
                }
            }
        }
    }
    out.push(b'"');
}

/// A number as an error message shows it: Rust's plain notation when it is short (`7`, `0.35`,
/// `-1`), else the shortest round-trip scientific form (`5e-324`, `1e300`): never hundreds of
/// digits.
#[must_use]
pub fn fmt_value(x: f64) -> String {
    let plain = x.to_string();
    if plain.len() <= 24 {
        plain
    } else {
        format!("{x:e}")
    }
}

/// A client's text as an error message echoes it: at most [`MAX_ECHO_CHARS`] characters, then
/// `…(N chars)` saying how long it was.
#[must_use]
pub fn echo(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(MAX_ECHO_CHARS) {
        None => Cow::Borrowed(s),
        Some((cut, _)) => Cow::Owned(format!("{}…({} chars)", &s[..cut], s.chars().count())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(x: f64) -> String {
        let mut out = Vec::new();
        push_py_float(&mut out, x);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn quoted(s: &str) -> String {
        let mut out = Vec::new();
        push_json_str(&mut out, s);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn values_and_echoes_are_bounded() {
        assert_eq!(fmt_value(7.0), "7");
        assert_eq!(fmt_value(-0.35), "-0.35");
        assert_eq!(fmt_value(5e-324), "5e-324");
        assert_eq!(fmt_value(1e300), "1e300");
        assert_eq!(fmt_value(f64::NAN), "NaN");
        assert_eq!(echo("abc"), "abc");
        let long = "x".repeat(20_000);
        let shown = echo(&long);
        assert!(shown.len() < 100, "{shown}");
        assert!(shown.ends_with("…(20000 chars)"));
        assert_eq!(echo(&"é".repeat(64)), "é".repeat(64));
    }

    #[test]
    fn floats_as_python_repr() {
        for (x, want) in [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123.456, "123.456"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.234_567_890_123_456_7e16, "1.2345678901234568e+16"),
            (1e100, "1e+100"),
            (1_764_208_514.123_456_7, "1764208514.1234567"),
            (5e-324, "5e-324"),
            (0.430_596_709_251_403_8, "0.4305967092514038"),
        ] {
            assert_eq!(float(x), want, "{x:e}");
        }
    }

    #[test]
    fn strings_as_encode_basestring_ascii() {
        assert_eq!(quoted("abc"), r#""abc""#);
        assert_eq!(quoted("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quoted("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(quoted("\u{1}\u{7f}é"), r#""\u0001\u007f\u00e9""#);
        assert_eq!(quoted("😀"), r#""\ud83d\ude00""#);
    }
}
