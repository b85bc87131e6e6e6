//! Decoding the hot request messages straight from their bytes, without protobuf objects.
//!
//! A `ScoreRequest` (alone, in a `ScoreBatchRequest`, or one message of a stream) is parsed once
//! into a [`RequestView`]: its ids and flag, and its applicant's map entries as slices of the
//! input. The view is then read into a row of whichever model the request is routed to
//! ([`RowInput`]), so routing can depend on the applicant id before any feature is resolved.
//!
//! Decoding follows proto3 as upb (Python's protobuf) does: absent fields take their defaults,
//! the last occurrence of a singular field wins, a message field that occurs twice is merged, a
//! repeated field's occurrences concatenate, the last entry of a repeated map key wins, unknown
//! fields are skipped, strings must be UTF-8, and a map entry that carries an unknown field is
//! dropped (upb keeps it as an unknown field of the applicant). It is stricter than protobuf in one
//! way: a known field sent with the wrong wire type, and any group, is an error here; no
//! conforming client of this API sends either. Work is linear in the input; nothing is allocated
//! per entry beyond the view's vectors.

use std::borrow::Cow;
use std::fmt;

use altscore_kernels::row::{RowBuilder, RowInput};

pub(crate) const VARINT: u8 = 0;
pub(crate) const I64: u8 = 1;
pub(crate) const LEN: u8 = 2;
pub(crate) const I32: u8 = 5;

/// Most bytes of a tag or a length prefix (upb's limit: a longer one is corrupt).
const MAX_SHORT_VARINT: usize = 5;

/// Malformed wire bytes: what is wrong, where (byte offset) and in which field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    at: usize,
    what: Cow<'static, str>,
    /// Field path, innermost first (reversed when shown).
    path: Vec<Cow<'static, str>>,
}

// The box keeps `WireResult` two words wide, so the hot path stays in registers.
#[allow(clippy::unnecessary_box_returns)]
impl WireError {
    #[cold]
    pub(crate) fn new(at: usize, what: impl Into<Cow<'static, str>>) -> Box<Self> {
        Box::new(Self {
            at,
            what: what.into(),
            path: Vec::new(),
        })
    }

    pub(crate) fn within(mut self: Box<Self>, field: impl Into<Cow<'static, str>>) -> Box<Self> {
        self.path.push(field.into());
        self
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.path.iter().rev().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            f.write_str(p)?;
        }
        if !self.path.is_empty() {
            f.write_str(": ")?;
        }
        write!(f, "{} (byte {})", self.what, self.at)
    }
}

/// Boxed: the error path is cold, and a small `Result` keeps the hot path in registers.
pub type WireResult<T> = Result<T, Box<WireError>>;

/// A cursor over one message: `buf[pos..end]`, offsets absolute in the whole input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            end: buf.len(),
        }
    }

    pub(crate) fn done(&self) -> bool {
        self.pos >= self.end
    }

    /// A varint of at most `max_len` bytes; bits beyond 64 are dropped (as protobuf does).
    #[inline]
    fn varint_max(&mut self, max_len: usize, what: &'static str) -> WireResult<u64> {
        // Fast path: tags, lengths and small values take one byte.
        if self.pos < self.end && self.buf[self.pos] < 0x80 {
            self.pos += 1;
            return Ok(u64::from(self.buf[self.pos - 1]));
        }
        self.varint_long(max_len, what)
    }

    #[inline(never)]
    fn varint_long(&mut self, max_len: usize, what: &'static str) -> WireResult<u64> {
        let start = self.pos;
        let mut value = 0u64;
        for i in 0..max_len {
            if self.pos >= self.end {
                return Err(WireError::new(start, format!("truncated {what}")));
            }
            let b = self.buf[self.pos];
            self.pos += 1;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::new(
            start,
            format!("{what} longer than {max_len} bytes"),
        ))
    }

    pub(crate) fn varint(&mut self) -> WireResult<u64> {
        self.varint_max(10, "varint")
    }

    /// A field tag: `(field number, wire type)`.
    #[inline]
    pub(crate) fn tag(&mut self) -> WireResult<(u32, u8)> {
        let at = self.pos;
        let raw = self.varint_max(MAX_SHORT_VARINT, "tag")?;
        let tag = u32::try_from(raw).map_err(|_| WireError::new(at, "tag out of range"))?;
        let (field, wire_type) = (tag >> 3, (tag & 7) as u8);
        if field == 0 {
            return Err(WireError::new(at, "field number 0"));
        }
        match wire_type {
            VARINT | I64 | LEN | I32 => Ok((field, wire_type)),
            3 | 4 => Err(WireError::new(
                at,
                format!(
                    "group wire type {wire_type} (field {field}); groups are not used by this API"
                ),
            )),
            _ => Err(WireError::new(
                at,
                format!("invalid wire type {wire_type} (field {field})"),
            )),
        }
    }

    pub(crate) fn expect(&self, field: u32, wire_type: u8, want: u8) -> WireResult<()> {
        if wire_type == want {
            Ok(())
        } else {
            Err(WireError::new(
                self.pos,
                format!("field {field} has wire type {wire_type}, expected {want}"),
            ))
        }
    }

    #[inline]
    pub(crate) fn fixed(&mut self, n: usize) -> WireResult<&'a [u8]> {
        if self.end - self.pos < n {
            return Err(WireError::new(
                self.pos,
                format!("truncated {n}-byte fixed value"),
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn double(&mut self) -> WireResult<f64> {
        let b = self.fixed(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    /// The body of a length-delimited field, as a reader of its own.
    #[inline]
    pub(crate) fn delimited(&mut self) -> WireResult<Reader<'a>> {
        let at = self.pos;
        let len = self.varint_max(MAX_SHORT_VARINT, "length")?;
        let available = self.end - self.pos;
        match usize::try_from(len) {
            Ok(n) if n <= available => {
                let sub = Reader {
                    buf: self.buf,
                    pos: self.pos,
                    end: self.pos + n,
                };
                self.pos += n;
                Ok(sub)
            }
            _ => Err(WireError::new(
                at,
                format!("length {len} runs past the end of the message ({available} bytes left)"),
            )),
        }
    }

    #[inline]
    pub(crate) fn string(&mut self) -> WireResult<&'a str> {
        let sub = self.delimited()?;
        std::str::from_utf8(&sub.buf[sub.pos..sub.end])
            .map_err(|e| WireError::new(sub.pos + e.valid_up_to(), "string is not valid UTF-8"))
    }

    pub(crate) fn skip(&mut self, wire_type: u8) -> WireResult<()> {
        match wire_type {
            VARINT => self.varint().map(|_| ()),
            I64 => self.fixed(8).map(|_| ()),
            I32 => self.fixed(4).map(|_| ()),
            _ => self.delimited().map(|_| ()),
        }
    }
}

/// `map<string, double>` entry: `(key, value)`, defaults `""` and `0.0`; `None` when the entry
/// carries an unknown field (upb then keeps the whole entry as an unknown field of the applicant,
/// out of the map; we drop it the same way).
fn numeric_entry<'a>(r: &mut Reader<'a>) -> WireResult<Option<(&'a str, f64)>> {
    let (mut key, mut value, mut unknown) = ("", 0.0, false);
    while !r.done() {
        match r.tag()? {
            (1, wt) => {
                r.expect(1, wt, LEN)?;
                key = r.string()?;
            }
            (2, wt) => {
                r.expect(2, wt, I64)?;
                value = r.double()?;
            }
            (_, wt) => {
                r.skip(wt)?;
                unknown = true;
            }
        }
    }
    Ok((!unknown).then_some((key, value)))
}

/// `map<string, string>` entry: `(key, value)`, defaults `""`; `None` when the entry carries an
/// unknown field (as [`numeric_entry`]).
fn categorical_entry<'a>(r: &mut Reader<'a>) -> WireResult<Option<(&'a str, &'a str)>> {
    let (mut key, mut value, mut unknown) = ("", "", false);
    while !r.done() {
        match r.tag()? {
            (field @ (1 | 2), wt) => {
                r.expect(field, wt, LEN)?;
                let s = r.string()?;
                if field == 1 {
                    key = s;
                } else {
                    value = s;
                }
            }
            (_, wt) => {
                r.skip(wt)?;
                unknown = true;
            }
        }
    }
    Ok((!unknown).then_some((key, value)))
}

/// A packed `repeated double`, appended to `out`.
fn packed_doubles(r: &mut Reader<'_>, out: &mut Vec<f64>) -> WireResult<()> {
    let mut body = r.delimited()?;
    let len = body.end - body.pos;
    if len % 8 != 0 {
        return Err(WireError::new(
            body.pos,
            format!("packed doubles: {len} bytes is not a multiple of 8"),
        ));
    }
    out.reserve(len / 8);
    while !body.done() {
        out.push(body.double()?);
    }
    Ok(())
}

/// One applicant as sent: entries in the order they came, not yet resolved against a plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplicantView<'a> {
    pub applicant_id: &'a str,
    pub numeric: Vec<(&'a str, f64)>,
    pub categorical: Vec<(&'a str, &'a str)>,
    /// `numeric_values`, every occurrence appended (packed or not).
    pub numeric_values: Vec<f64>,
    /// Whether `numeric_values` occurred at all (an empty packed field counts as absent).
    pub has_numeric_values: bool,
    /// The layout `numeric_values` was built for (GetModelInfo), if sent.
    pub numeric_values_layout: &'a str,
}

impl RowInput for &ApplicantView<'_> {
    type Error = std::convert::Infallible;

    fn read_into(self, row: &mut RowBuilder<'_>) -> Result<(), Self::Error> {
        for (k, v) in &self.numeric {
            row.numeric(k, *v);
        }
        for (k, v) in &self.categorical {
            row.categorical(k, v);
        }
        if !self.numeric_values.is_empty() {
            row.numeric_values(self.numeric_values.iter().copied());
        }
        Ok(())
    }
}

/// One `ScoreRequest` as sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestView<'a> {
    pub request_id: &'a str,
    pub applicant: ApplicantView<'a>,
    pub explain: bool,
}

/// `Applicant`, merged into `view` (an occurrence merges into earlier ones).
fn applicant<'a>(r: &mut Reader<'a>, view: &mut ApplicantView<'a>) -> WireResult<()> {
    while !r.done() {
        match r.tag()? {
            (1, wt) => {
                r.expect(1, wt, LEN)?;
                view.applicant_id = r.string().map_err(|e| e.within("applicant_id"))?;
            }
            (2, wt) => {
                r.expect(2, wt, LEN)?;
                let entry = r
                    .delimited()
                    .and_then(|mut e| numeric_entry(&mut e))
                    .map_err(|e| e.within("numeric"))?;
                if let Some(kv) = entry {
                    view.numeric.push(kv);
                }
            }
            (3, wt) => {
                r.expect(3, wt, LEN)?;
                let entry = r
                    .delimited()
                    .and_then(|mut e| categorical_entry(&mut e))
                    .map_err(|e| e.within("categorical"))?;
                if let Some(kv) = entry {
                    view.categorical.push(kv);
                }
            }
            (4, I64) => {
                view.has_numeric_values = true;
                view.numeric_values.push(r.double()?);
            }
            (4, wt) => {
                r.expect(4, wt, LEN)?;
                view.has_numeric_values = true;
                packed_doubles(r, &mut view.numeric_values)
                    .map_err(|e| e.within("numeric_values"))?;
            }
            (5, wt) => {
                r.expect(5, wt, LEN)?;
                view.numeric_values_layout =
                    r.string().map_err(|e| e.within("numeric_values_layout"))?;
            }
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok(())
}

fn request_into<'a>(r: &mut Reader<'a>, view: &mut RequestView<'a>) -> WireResult<()> {
    while !r.done() {
        match r.tag()? {
            (1, wt) => {
                r.expect(1, wt, LEN)?;
                view.request_id = r.string().map_err(|e| e.within("request_id"))?;
            }
            (2, wt) => {
                r.expect(2, wt, LEN)?;
                r.delimited()
                    .and_then(|mut a| applicant(&mut a, &mut view.applicant))
                    .map_err(|e| e.within("applicant"))?;
            }
            (3, wt) => {
                r.expect(3, wt, VARINT)?;
                view.explain = r.varint()? != 0;
            }
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok(())
}

/// One `ScoreRequest` (a unary call, or one stream message).
pub fn parse_request(data: &[u8]) -> WireResult<RequestView<'_>> {
    let mut view = RequestView::default();
    request_into(&mut Reader::new(data), &mut view)?;
    Ok(view)
}

/// The requests of a `ScoreBatchRequest`, or `Err(Ok(n))` when it holds `n > max` of them (they
/// are counted, not parsed: memory stays bounded by `max`).
pub fn parse_batch(
    data: &[u8],
    max: usize,
) -> Result<Vec<RequestView<'_>>, Result<usize, Box<WireError>>> {
    let mut count = 0usize;
    let mut r = Reader::new(data);
    while !r.done() {
        match r.tag().map_err(Err)? {
            (1, wt) => {
                r.expect(1, wt, LEN).map_err(Err)?;
                r.delimited()
                    .map_err(|e| Err(e.within(format!("requests[{count}]"))))?;
                count += 1;
            }
            (_, wt) => r.skip(wt).map_err(Err)?,
        }
    }
    if count > max {
        return Err(Ok(count));
    }
    let mut out = Vec::with_capacity(count);
    let mut r = Reader::new(data);
    while !r.done() {
        match r.tag().map_err(Err)? {
            (1, _) => {
                let i = out.len();
                let mut view = RequestView::default();
                r.delimited()
                    .and_then(|mut q| request_into(&mut q, &mut view))
                    .map_err(|e| Err(e.within(format!("requests[{i}]"))))?;
                out.push(view);
            }
            (_, wt) => r.skip(wt).map_err(Err)?,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::put_varint;

    fn varint(b: &[u8]) -> WireResult<u64> {
        Reader::new(b).varint()
    }

    fn enc_varint(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        out
    }

    /// `tag` + length-delimited `body`.
    pub(crate) fn ld(field: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![(field << 3) | LEN];
        put_varint(&mut out, body.len() as u64);
        out.extend_from_slice(body);
        out
    }

    pub(crate) fn num_entry(key: &str, value: f64) -> Vec<u8> {
        let mut e = ld(1, key.as_bytes());
        e.push((2 << 3) | I64);
        e.extend_from_slice(&value.to_le_bytes());
        ld(2, &e)
    }

    pub(crate) fn cat_entry(key: &str, value: &str) -> Vec<u8> {
        let mut e = ld(1, key.as_bytes());
        e.extend(ld(2, value.as_bytes()));
        ld(3, &e)
    }

    #[test]
    fn varints() {
        assert_eq!(varint(&[0]), Ok(0));
        assert_eq!(varint(&[0x96, 0x01]), Ok(150));
        assert_eq!(varint(&enc_varint(u64::MAX)), Ok(u64::MAX));
        assert_eq!(enc_varint(u64::MAX).len(), 10);
        // Overlong encodings are accepted; bits past 64 dropped (protobuf does the same).
        assert_eq!(varint(&[0x81, 0x80, 0x00]), Ok(1));
        assert_eq!(
            varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Ok(u64::MAX)
        );
        assert!(varint(&[0xff; 10]).is_err()); // 11th byte needed
        assert!(varint(&[]).is_err());
        assert!(varint(&[0x80]).is_err());
        assert!(varint(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn tags() {
        assert_eq!(Reader::new(&[0x0a]).tag(), Ok((1, LEN)));
        assert!(Reader::new(&[0x00]).tag().is_err()); // field 0
        assert!(Reader::new(&[0x0b]).tag().is_err()); // start group
        assert!(Reader::new(&[0x0c]).tag().is_err()); // end group
        assert!(Reader::new(&[0x0e]).tag().is_err()); // wire type 6
        assert!(Reader::new(&[0x0f]).tag().is_err()); // wire type 7
        assert_eq!(
            Reader::new(&[0xf8, 0xff, 0xff, 0xff, 0x0f]).tag(),
            Ok(((1 << 29) - 1, VARINT))
        );
        assert!(Reader::new(&[0xf8, 0xff, 0xff, 0xff, 0x1f]).tag().is_err()); // > u32
        assert_eq!(
            Reader::new(&[0x88, 0x80, 0x80, 0x80, 0x00]).tag(),
            Ok((1, VARINT))
        );
        assert!(Reader::new(&[0x88, 0x80, 0x80, 0x80, 0x80, 0x00])
            .tag()
            .is_err()); // 6 bytes
    }

    #[test]
    fn lengths() {
        let mut r = Reader::new(&[0x03, b'a', b'b', b'c', 0x01]);
        assert_eq!(r.string(), Ok("abc"));
        assert!(r.string().is_err()); // length 1, nothing left
        assert!(Reader::new(&[0x04, b'a', b'b', b'c']).delimited().is_err());
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x0f])
            .delimited()
            .is_err());
        assert!(Reader::new(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00])
            .delimited()
            .is_err());
        assert_eq!(Reader::new(&[0x80, 0x80, 0x00]).string(), Ok(""));
        assert!(Reader::new(&[0x02, 0xc3, 0x28]).string().is_err());
        // A sub-reader never reads past its own end.
        let data = [0x02, 0x08, 0x96, 0x01];
        let mut outer = Reader::new(&data);
        let mut inner = outer.delimited().unwrap_or(Reader::new(&[]));
        assert_eq!(inner.tag(), Ok((1, VARINT)));
        assert!(inner.varint().is_err());
        assert!(Reader::new(&[0x01, 0x02]).skip(I64).is_err());
        assert!(Reader::new(&[0x01, 0x02, 0x03]).skip(I32).is_err());
    }

    #[test]
    fn views_merge_as_protobuf_does() {
        let mut app = ld(1, b"app-1");
        app.extend(num_entry("x", 5.0));
        app.extend(num_entry("zz", 1.0));
        let mut req = ld(1, b"r-0");
        req.extend(ld(2, &app));
        req.extend([0x18, 0x01]);
        req.extend(ld(2, &cat_entry("c", "b"))); // a second applicant merges in
        req.extend([0x25, 0, 0, 0, 0]); // unknown fixed32 field 4
        let mut dropped = ld(1, b"zz");
        dropped.extend([0x18, 0x01]); // unknown field in the entry: upb drops the entry
        req.extend(ld(2, &ld(2, &dropped)));
        req.extend(ld(2, &[0x21, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f])); // numeric_values 1.0, unpacked
        let batch = ld(1, &req);
        let views = match parse_batch(&batch, 10) {
            Ok(v) => v,
            Err(e) => unreachable!("{e:?}"),
        };
        let v = &views[0];
        assert_eq!(v.request_id, "r-0");
        assert!(v.explain);
        assert_eq!(v.applicant.applicant_id, "app-1");
        assert_eq!(v.applicant.numeric, [("x", 5.0), ("zz", 1.0)]);
        assert_eq!(v.applicant.categorical, [("c", "b")]);
        assert_eq!(v.applicant.numeric_values, [1.0]);
        assert!(matches!(
            parse_batch(&[batch.clone(), batch].concat(), 1),
            Err(Ok(2))
        ));
    }

    #[test]
    fn malformed_bytes_name_the_field() {
        let mut entry = ld(1, b"x");
        entry.push((2 << 3) | I64);
        entry.extend([0, 0]); // truncated double
        let bad = ld(1, &ld(2, &ld(2, &entry)));
        let err = parse_batch(&bad, 10)
            .err()
            .and_then(Result::err)
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("requests[0].applicant.numeric: truncated 8-byte fixed value (byte 10)")
        );
        assert!(parse_request(&[0x08, 0x01]).is_err()); // known field, wrong wire type
        assert!(parse_request(&[0x1a, 0x00]).is_err());
        assert_eq!(parse_batch(&[], 10).map(|v| v.len()), Ok(0));
        assert_eq!(parse_request(&[]), Ok(RequestView::default()));
    }
}
