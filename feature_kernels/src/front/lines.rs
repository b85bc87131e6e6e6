//! Prediction-log lines written exactly as `credit_core.evaluation._encode` writes them: the
//! front end answers calls without Python, and its predictions still reach the same log, byte
//! for byte the same as the Python path's (a hypothesis test compares the two encoders).

use std::fmt::Write as _;

/// `repr(x)` of a finite Python float: the shortest digits that round-trip, in fixed notation
/// when the decimal exponent is in [-4, 16), else `d.ddde±XX`.
pub fn push_py_float(out: &mut Vec<u8>, x: f64) {
    let mut s = String::with_capacity(24);
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-5", "0e0".
    let _ = write!(s, "{x:e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((s.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if negative {
        out.push(b'-');
    }
    let decpt = exp + 1; // digits d1 d2 ... with the point after `decpt` of them
    if !(-4 < decpt && decpt <= 16) {
        out.push(digits.as_bytes()[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits.as_bytes()[1..]);
        }
        let sign = if exp < 0 { '-' } else { '+' };
        out.extend_from_slice(format!("e{sign}{:02}", exp.unsigned_abs()).as_bytes());
        return;
    }
    let n = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    if decpt <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', decpt.unsigned_abs() as usize));
        out.extend_from_slice(digits.as_bytes());
    } else if decpt >= n {
        out.extend_from_slice(digits.as_bytes());
        out.extend(std::iter::repeat_n(
            b'0',
            (decpt - n).unsigned_abs() as usize,
        ));
        out.extend_from_slice(b".0");
    } else {
        let (head, tail) = digits.as_bytes().split_at(decpt.unsigned_abs() as usize);
        out.extend_from_slice(head);
        out.push(b'.');
        out.extend_from_slice(tail);
    }
}

/// A JSON string literal as Python's `json.encoder.encode_basestring_ascii` writes it: printable
/// ASCII as is, `"` and `\` escaped, `\b \f \n \r \t` short, everything else `\uXXXX` (lowercase
/// hex, UTF-16 surrogate pairs above the BMP).
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

/// One served prediction's line (`PredictionRecord` with `served` true), newline included.
pub fn push_prediction(
    out: &mut Vec<u8>,
    ts: f64,
    request_id: &str,
    applicant_id: &str,
    model: &[u8],
    pd: f64,
) {
    out.extend_from_slice(b"{\"ts\":");
    push_py_float(out, ts);
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
