//! Prediction-log lines written exactly as `credit_core.evaluation._encode` writes them: the
//! front end answers calls without Python, and its predictions still reach the same log, byte
//! for byte the same as the Python path's (a hypothesis test compares the two encoders).

use std::fmt::{self, Write as _};

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

/// The fields every line of one model shares: `,"model_name":..,"variant":..,"model_version":..`.
#[must_use]
pub fn model_fields(model_name: &str, variant: &str, model_version: &str) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b",\"model_name\":");
    push_json_str(&mut out, model_name);
    out.extend_from_slice(b",\"variant\":");
    push_json_str(&mut out, variant);
    out.extend_from_slice(b",\"model_version\":");
    push_json_str(&mut out, model_version);
    out
}

/// One served prediction's line (`PredictionRecord` with `served` true), newline included;
/// `ts` is the time already written by [`push_py_float`] (one per call, not per line).
pub fn push_prediction(
    out: &mut Vec<u8>,
    ts: &[u8],
    request_id: &str,
    applicant_id: &str,
    model: &[u8],
    pd: f64,
) {
    out.extend_from_slice(b"{\"ts\":");
    out.extend_from_slice(ts);
    out.extend_from_slice(b",\"request_id\":");
    push_json_str(out, request_id);
    out.extend_from_slice(b",\"applicant_id\":");
    push_json_str(out, applicant_id);
    out.extend_from_slice(model);
    out.extend_from_slice(b",\"pd\":");
    push_py_float(out, pd);
    out.extend_from_slice(b",\"served\":true}\n");
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
