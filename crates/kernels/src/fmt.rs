//! Text the crate writes: floats as Python's `repr` writes them, JSON string literals as Python's
//! `json` writes them, and echoed client values cut to a bounded length.

use std::borrow::Cow;

/// Most characters of a client's value (a key, an id, a category) echoed in an error message.
pub const MAX_ECHO_CHARS: usize = 64;

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
    // ryu gives the shortest round-trip digits ("-1.5e-7", "0.001234", "1e30", "1234.0"); only
    // where the point goes and how the exponent is written differ from Python.
    let mut buffer = ryu::Buffer::new();
    let mut text = buffer.format_finite(x).as_bytes();
    if let Some(rest) = text.strip_prefix(b"-") {
        out.push(b'-');
        text = rest;
    }
    let (mantissa, exp) = match text.iter().position(|b| *b == b'e') {
        Some(at) => (
            &text[..at],
            std::str::from_utf8(&text[at + 1..])
                .ok()
                .and_then(|t| t.parse::<i32>().ok())
                .unwrap_or(0),
        ),
        None => (text, 0),
    };
    // The value is 0.DIGITS x 10^decpt.
    let mut digits = [0u8; 32];
    let mut n = 0;
    let mut decpt = exp;
    let mut in_fraction = false;
    for &b in mantissa {
        if b == b'.' {
            in_fraction = true;
        } else if n == 0 && b == b'0' {
            if in_fraction {
                decpt -= 1; // a leading zero after the point
            }
        } else if n < digits.len() {
            digits[n] = b;
            n += 1;
            if !in_fraction {
                decpt += 1;
            }
        }
    }
    while n > 0 && digits[n - 1] == b'0' {
        n -= 1;
    }
    if n == 0 {
        digits[0] = b'0'; // zero: Python writes "0.0"
        n = 1;
        decpt = 1;
    }
    let digits = &digits[..n];
    if !(-4 < decpt && decpt <= 16) {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        let e = decpt - 1;
        out.extend_from_slice(if e < 0 { b"e-" } else { b"e+" });
        let e = e.unsigned_abs();
        if e >= 100 {
            out.push(b'0' + u8::try_from(e / 100).unwrap_or(9));
        }
        out.push(b'0' + u8::try_from(e / 10 % 10).unwrap_or(9));
        out.push(b'0' + u8::try_from(e % 10).unwrap_or(9));
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
            (0.000_123_4, "0.0001234"),
            (0.000_012_34, "1.234e-05"),
            (1e-100, "1e-100"),
            (-2.5e-300, "-2.5e-300"),
            (1.797_693_134_862_315_7e308, "1.7976931348623157e+308"),
            (1_234_000.0, "1234000.0"),
            (-1e22, "-1e+22"),
            (9_007_199_254_740_993.0, "9007199254740992.0"),
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
