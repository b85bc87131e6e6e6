//! The protobuf wire format of `credit.scoring.v1`'s scoring messages, written by hand for the
//! serving hot path: `ScoreRequest` / `ScoreBatchRequest` bytes are decoded straight into
//! [`RawRow`]s, which [`eval_raw`] validates and evaluates exactly as it does rows read from
//! Python dicts; `ScoreResponse` / `ScoreBatchResponse` bytes are encoded straight from arrays.
//!
//! Decoding follows proto3: absent fields take their defaults, the last occurrence of a singular
//! field wins, a message field that occurs twice is merged, the last entry of a repeated map key
//! wins, unknown fields are skipped, strings must be UTF-8. As in upb (Python's protobuf), a map
//! entry that carries an unknown field is no map entry at all (upb keeps it as an unknown field
//! of the applicant): it is dropped. It is stricter than protobuf in one way: a known field sent
//! with the wrong wire type, and any group, is an error here (protobuf would keep them as
//! unknown fields); no conforming client of this API sends either.
//!
//! Encoding omits proto3 defaults as upb does (a double is left out only when its bits are all
//! zero, so -0.0 is written) and writes fields in field-number order, as upb does.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};

use crate::error::Violation;
use crate::plan::{InputSlot, Plan};
use crate::{eval_raw, violations_to_py, RawRow};

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

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
    fn new(at: usize, what: impl Into<Cow<'static, str>>) -> Box<Self> {
        Box::new(Self {
            at,
            what: what.into(),
            path: Vec::new(),
        })
    }

    fn within(mut self: Box<Self>, field: impl Into<Cow<'static, str>>) -> Box<Self> {
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
type WireResult<T> = Result<T, Box<WireError>>;

/// A cursor over one message: `buf[pos..end]`, offsets absolute in the whole input.
#[derive(Debug, Clone, Copy)]
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            end: buf.len(),
        }
    }

    fn done(&self) -> bool {
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

    fn varint(&mut self) -> WireResult<u64> {
        self.varint_max(10, "varint")
    }

    /// A field tag: `(field number, wire type)`.
    #[inline]
    fn tag(&mut self) -> WireResult<(u32, u8)> {
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

    fn expect(&self, field: u32, wire_type: u8, want: u8) -> WireResult<()> {
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
    fn fixed(&mut self, n: usize) -> WireResult<&'a [u8]> {
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

    fn double(&mut self) -> WireResult<f64> {
        let b = self.fixed(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    /// The body of a length-delimited field, as a reader of its own.
    #[inline]
    fn delimited(&mut self) -> WireResult<Reader<'a>> {
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
    fn string(&mut self) -> WireResult<&'a str> {
        let sub = self.delimited()?;
        std::str::from_utf8(&sub.buf[sub.pos..sub.end])
            .map_err(|e| WireError::new(sub.pos + e.valid_up_to(), "string is not valid UTF-8"))
    }

    fn skip(&mut self, wire_type: u8) -> WireResult<()> {
        match wire_type {
            VARINT => self.varint().map(|_| ()),
            I64 => self.fixed(8).map(|_| ()),
            I32 => self.fixed(4).map(|_| ()),
            _ => self.delimited().map(|_| ()),
        }
    }
}

/// FNV-1a: the input names are few and short, and `SipHash` was a fifth of the decoding time.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// The plan's inputs by name, for one decoding call.
struct Inputs<'p> {
    plan: &'p Plan,
    by_name: HashMap<&'p str, InputSlot, BuildHasherDefault<Fnv>>,
}

impl<'p> Inputs<'p> {
    fn new(plan: &'p Plan) -> Self {
        let by_name = plan.by_name.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        Self { plan, by_name }
    }
}

/// One decoded `ScoreRequest`: its ids and flag, and its applicant's maps resolved against the
/// plan (not yet validated).
pub struct DecodedRequest<'a> {
    pub request_id: &'a str,
    pub applicant_id: &'a str,
    pub explain: bool,
    row: RawRow,
}

/// The two maps of one applicant being read. Map-level problems (unknown name, name sent in the
/// other map) are kept per map, once per key, in first-occurrence order: the order a Python dict
/// built from the same entries has, numeric map first, as `read_row` reports them.
struct RowBuilder {
    row: RawRow,
    numeric_bad: Vec<Violation>,
    categorical_bad: Vec<Violation>,
    /// Whether the numeric map had any entry (known or not).
    numeric_sent: bool,
    /// `numeric_values`, every occurrence appended (repeated fields concatenate on merge).
    dense: Vec<f64>,
}

impl RowBuilder {
    fn new(plan: &Plan) -> Self {
        Self {
            row: RawRow {
                numeric: vec![None; plan.numeric_inputs.len()],
                categorical: vec![None; plan.categorical_inputs.len()],
                misplaced: Vec::new(),
                violations: Vec::new(),
            },
            numeric_bad: Vec::new(),
            categorical_bad: Vec::new(),
            numeric_sent: false,
            dense: Vec::new(),
        }
    }

    fn numeric(&mut self, inputs: &Inputs<'_>, key: &str, value: f64) {
        self.numeric_sent = true;
        match inputs.by_name.get(key) {
            Some(InputSlot::Numeric(i)) => self.row.numeric[*i] = Some(value),
            slot => {
                if reported(&self.numeric_bad, "numeric.", key) {
                    return;
                }
                let field = format!("numeric.{key}");
                if slot.is_none() {
                    self.numeric_bad
                        .push(Violation::new(field, "unknown feature"));
                } else {
                    self.numeric_bad.push(Violation::new(
                        field,
                        format!(
                            "wrong type: {key:?} is categorical; send it in the categorical map"
                        ),
                    ));
                    self.row.misplaced.push(key.to_owned());
                }
            }
        }
    }

    fn categorical(&mut self, inputs: &Inputs<'_>, key: &str, value: &str) {
        match inputs.by_name.get(key) {
            Some(InputSlot::Categorical(i)) => match &mut self.row.categorical[*i] {
                Some(s) => value.clone_into(s),
                none => *none = Some(value.to_owned()),
            },
            slot => {
                if reported(&self.categorical_bad, "categorical.", key) {
                    return;
                }
                let field = format!("categorical.{key}");
                if slot.is_none() {
                    self.categorical_bad
                        .push(Violation::new(field, "unknown feature"));
                } else {
                    self.categorical_bad.push(Violation::new(
                        field,
                        format!("wrong type: {key:?} is numeric; send it in the numeric map"),
                    ));
                    self.row.misplaced.push(key.to_owned());
                }
            }
        }
    }

    fn finish(self) -> RawRow {
        let Self {
            mut row,
            numeric_bad,
            categorical_bad,
            numeric_sent,
            dense,
        } = self;
        let mut violations = Vec::new();
        if !dense.is_empty() {
            match dense_violation(numeric_sent, dense.len(), row.numeric.len()) {
                Some(v) => violations.push(v),
                None => {
                    for (slot, v) in row.numeric.iter_mut().zip(dense) {
                        *slot = (!v.is_nan()).then_some(v);
                    }
                }
            }
        }
        violations.extend(numeric_bad);
        violations.extend(categorical_bad);
        row.violations = violations;
        row
    }
}

/// What is wrong with an applicant's `numeric_values` (`n` of them, `expected` wanted), if
/// anything; the same rule as `scoring_server.service`'s for requests read by protobuf.
fn dense_violation(numeric_sent: bool, n: usize, expected: usize) -> Option<Violation> {
    if numeric_sent {
        Some(Violation::new(
            "numeric_values",
            "send the numeric inputs in `numeric` or in `numeric_values`, not both",
        ))
    } else if n != expected {
        Some(Violation::new(
            "numeric_values",
            format!(
                "expected {expected} values (the numeric inputs in GetModelInfo order), got {n}"
            ),
        ))
    } else {
        None
    }
}

fn reported(bad: &[Violation], prefix: &str, key: &str) -> bool {
    bad.iter()
        .any(|v| v.field.strip_prefix(prefix) == Some(key))
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

/// `Applicant`, merged into `applicant_id` and `row` (an occurrence merges into earlier ones).
fn applicant<'a>(
    inputs: &Inputs<'_>,
    r: &mut Reader<'a>,
    applicant_id: &mut &'a str,
    row: &mut RowBuilder,
) -> WireResult<()> {
    while !r.done() {
        match r.tag()? {
            (1, wt) => {
                r.expect(1, wt, LEN)?;
                *applicant_id = r.string().map_err(|e| e.within("applicant_id"))?;
            }
            (2, wt) => {
                r.expect(2, wt, LEN)?;
                let entry = r
                    .delimited()
                    .and_then(|mut e| numeric_entry(&mut e))
                    .map_err(|e| e.within("numeric"))?;
                if let Some((k, v)) = entry {
                    row.numeric(inputs, k, v);
                }
            }
            (3, wt) => {
                r.expect(3, wt, LEN)?;
                let entry = r
                    .delimited()
                    .and_then(|mut e| categorical_entry(&mut e))
                    .map_err(|e| e.within("categorical"))?;
                if let Some((k, v)) = entry {
                    row.categorical(inputs, k, v);
                }
            }
            (4, I64) => row.dense.push(r.double()?),
            (4, wt) => {
                r.expect(4, wt, LEN)?;
                packed_doubles(r, &mut row.dense).map_err(|e| e.within("numeric_values"))?;
            }
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok(())
}

/// `ScoreRequest`.
fn request<'a>(inputs: &Inputs<'_>, r: &mut Reader<'a>) -> WireResult<DecodedRequest<'a>> {
    let (mut request_id, mut applicant_id, mut explain) = ("", "", false);
    let mut row = RowBuilder::new(inputs.plan);
    while !r.done() {
        match r.tag()? {
            (1, wt) => {
                r.expect(1, wt, LEN)?;
                request_id = r.string().map_err(|e| e.within("request_id"))?;
            }
            (2, wt) => {
                r.expect(2, wt, LEN)?;
                r.delimited()
                    .and_then(|mut a| applicant(inputs, &mut a, &mut applicant_id, &mut row))
                    .map_err(|e| e.within("applicant"))?;
            }
            (3, wt) => {
                r.expect(3, wt, VARINT)?;
                explain = r.varint()? != 0;
            }
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok(DecodedRequest {
        request_id,
        applicant_id,
        explain,
        row: row.finish(),
    })
}

/// Decode a `ScoreBatchRequest` (`batch`) or one `ScoreRequest`.
pub fn decode<'a>(plan: &Plan, data: &'a [u8], batch: bool) -> WireResult<Vec<DecodedRequest<'a>>> {
    let inputs = Inputs::new(plan);
    let mut r = Reader::new(data);
    if !batch {
        return Ok(vec![request(&inputs, &mut r)?]);
    }
    let mut out = Vec::new();
    while !r.done() {
        match r.tag()? {
            (1, wt) => {
                r.expect(1, wt, LEN)?;
                let i = out.len();
                let req = r
                    .delimited()
                    .and_then(|mut q| request(&inputs, &mut q))
                    .map_err(|e| e.within(format!("requests[{i}]")))?;
                out.push(req);
            }
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok(out)
}

/// Decoded requests with their `[n, n_outputs]` matrix (row-major) and violations per row.
pub struct Evaluated<'a> {
    pub request_ids: Vec<&'a str>,
    pub applicant_ids: Vec<&'a str>,
    pub explain: Vec<bool>,
    pub matrix: Vec<f32>,
    pub violations: Vec<Vec<Violation>>,
}

/// Decode and evaluate: every row goes through [`eval_raw`], as `transform_rows` does.
pub fn decode_and_eval<'a>(plan: &Plan, data: &'a [u8], batch: bool) -> WireResult<Evaluated<'a>> {
    let requests = decode(plan, data, batch)?;
    let n = requests.len();
    let k = plan.n_outputs();
    let mut ev = Evaluated {
        request_ids: Vec::with_capacity(n),
        applicant_ids: Vec::with_capacity(n),
        explain: Vec::with_capacity(n),
        matrix: vec![0.0f32; n * k],
        violations: Vec::with_capacity(n),
    };
    let mut scratch = vec![0.0; plan.n_slots()];
    for (i, req) in requests.into_iter().enumerate() {
        ev.request_ids.push(req.request_id);
        ev.applicant_ids.push(req.applicant_id);
        ev.explain.push(req.explain);
        let dst = &mut ev.matrix[i * k..(i + 1) * k];
        ev.violations
            .push(eval_raw(plan, req.row, &mut scratch, dst));
    }
    Ok(ev)
}

/// What `FeaturePlan.decode_score_requests` returns.
pub type DecodedPy<'py> = (
    Bound<'py, PyList>,
    Bound<'py, PyList>,
    Bound<'py, PyList>,
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyList>,
);

/// `FeaturePlan.decode_score_requests`: decoding and evaluation run without the GIL.
pub fn decode_score_requests<'py>(
    py: Python<'py>,
    plan: &Plan,
    data: &[u8],
    batch: bool,
) -> PyResult<DecodedPy<'py>> {
    let ev = py
        .detach(|| decode_and_eval(plan, data, batch))
        .map_err(|e| {
            let what = if batch {
                "ScoreBatchRequest"
            } else {
                "ScoreRequest"
            };
            PyValueError::new_err(format!("malformed {what}: {e}"))
        })?;
    let n = ev.request_ids.len();
    let matrix = Array2::from_shape_vec((n, plan.n_outputs()), ev.matrix)
        .map_err(|e| PyValueError::new_err(e.to_string()))?
        .into_pyarray(py);
    let lists = PyList::empty(py);
    for v in &ev.violations {
        lists.append(violations_to_py(py, v)?)?;
    }
    Ok((
        PyList::new(py, ev.request_ids)?,
        PyList::new(py, ev.applicant_ids)?,
        PyList::new(py, ev.explain)?,
        matrix,
        lists,
    ))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// An `int32` / enum field: negative values are sign-extended to 64 bits (10 bytes).
#[allow(clippy::cast_sign_loss)] // the two's-complement bits are what goes on the wire
fn put_int32(out: &mut Vec<u8>, field: u8, v: i32) {
    if v != 0 {
        out.push(field << 3);
        put_varint(out, i64::from(v) as u64);
    }
}

fn put_str(out: &mut Vec<u8>, field: u8, s: &str) {
    if !s.is_empty() {
        out.push((field << 3) | LEN);
        put_varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
}

fn put_double(out: &mut Vec<u8>, field: u8, v: f64) {
    // proto3 implicit presence: left out only when the bits are all zero (-0.0 is written).
    if v.to_bits() != 0 {
        out.push((field << 3) | I64);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// A length-delimited field: tag, length, `body`.
pub fn put_len_field(out: &mut Vec<u8>, field: u8, body: &[u8]) {
    out.push((field << 3) | LEN);
    put_varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// One `ScoreResponse` (fields 1..5) appended to `out`; `model` is the encoded `ModelRef` body.
pub fn encode_response(
    out: &mut Vec<u8>,
    request_id: &str,
    pd: f64,
    score: i32,
    decision: i32,
    model: &[u8],
) {
    put_str(out, 1, request_id);
    put_double(out, 2, pd);
    put_int32(out, 3, score);
    put_int32(out, 4, decision);
    // The model is always set (the server always names it), so it is written even when empty.
    put_len_field(out, 5, model);
}

/// The body of a `ModelRef`.
#[must_use]
pub fn encode_model_ref(name: &str, version: &str, variant: i32) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, 1, name);
    put_str(&mut out, 2, version);
    put_int32(&mut out, 3, variant);
    out
}

/// The wire bytes of a `ScoreBatchResponse` (`batch`: one result per row, in order) or of one
/// `ScoreResponse` (exactly one row). `decision` and `variant` are the proto enum numbers.
/// Every response names the same model.
#[pyfunction]
#[pyo3(signature = (request_ids, pd, score, decision, model_name, model_version, variant, batch))]
#[allow(clippy::too_many_arguments)]
pub fn encode_score_responses<'py>(
    py: Python<'py>,
    request_ids: Vec<Bound<'py, PyString>>,
    pd: PyReadonlyArray1<'py, f64>,
    score: PyReadonlyArray1<'py, i32>,
    decision: PyReadonlyArray1<'py, i32>,
    model_name: &str,
    model_version: &str,
    variant: i32,
    batch: bool,
) -> PyResult<Bound<'py, PyBytes>> {
    let (pd, score, decision) = (pd.as_array(), score.as_array(), decision.as_array());
    let n = request_ids.len();
    if pd.len() != n || score.len() != n || decision.len() != n {
        return Err(PyValueError::new_err(format!(
            "lengths differ: {n} request ids, {} pd, {} score, {} decision",
            pd.len(),
            score.len(),
            decision.len()
        )));
    }
    if !batch && n != 1 {
        return Err(PyValueError::new_err(format!(
            "a ScoreResponse encodes exactly one row, got {n}"
        )));
    }
    let model = encode_model_ref(model_name, model_version, variant);
    let mut out = Vec::with_capacity(n * (32 + model.len()));
    let mut one = Vec::with_capacity(64 + model.len());
    for (i, id) in request_ids.iter().enumerate() {
        let id = id.to_str()?;
        if batch {
            one.clear();
            encode_response(&mut one, id, pd[i], score[i], decision[i], &model);
            put_len_field(&mut out, 1, &one);
        } else {
            encode_response(&mut out, id, pd[i], score[i], decision[i], &model);
        }
    }
    Ok(PyBytes::new(py, &out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(b: &[u8]) -> WireResult<u64> {
        Reader::new(b).varint()
    }

    fn enc_varint(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        out
    }

    fn plan() -> Plan {
        let json = r#"{"name":"t","version":1,"inputs":[
            {"name":"x","kind":"number","required":true,"min":0.0,"max":null,"missing":{"strategy":"nan"}},
            {"name":"c","kind":"categorical","required":false,"min":null,"max":null,"missing":{"strategy":"nan"}}],
            "features":[
            {"name":"x","op":{"kind":"value","input":"x"},"output":true},
            {"name":"c","op":{"kind":"one_hot","input":"c","categories":["a","b"],"unknown":"error"},"output":true}]}"#;
        match Plan::from_json(json) {
            Ok(p) => p,
            Err(e) => unreachable!("test plan: {e}"),
        }
    }

    /// `tag` + length-delimited `body`.
    fn ld(field: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![(field << 3) | LEN];
        put_varint(&mut out, body.len() as u64);
        out.extend_from_slice(body);
        out
    }

    fn num_entry(key: &str, value: f64) -> Vec<u8> {
        let mut e = ld(1, key.as_bytes());
        e.push((2 << 3) | I64);
        e.extend_from_slice(&value.to_le_bytes());
        ld(2, &e)
    }

    fn cat_entry(key: &str, value: &str) -> Vec<u8> {
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
    fn decodes_merges_and_reports_like_the_dict_path() {
        let p = plan();
        let mut app = ld(1, b"app-1");
        app.extend(num_entry("x", 5.0));
        app.extend(num_entry("zz", 1.0));
        app.extend(num_entry("c", 1.0)); // categorical input in the numeric map
        app.extend(num_entry("zz", 2.0)); // reported once
        app.extend(num_entry("x", 2.0)); // last wins
        let mut req = ld(1, b"r-0");
        req.extend(ld(2, &app));
        req.extend([0x18, 0x01]);
        req.extend(ld(2, &cat_entry("x", "oops"))); // a second applicant merges in
        req.extend([0x25, 0, 0, 0, 0]); // unknown fixed32 field 4
        let mut dropped = ld(1, b"zz");
        dropped.extend([0x18, 0x01]); // unknown field in the entry: upb drops the entry
        req.extend(ld(2, &ld(2, &dropped)));
        let batch = ld(1, &req);
        let ev = match decode_and_eval(&p, &batch, true) {
            Ok(ev) => ev,
            Err(e) => unreachable!("{e}"),
        };
        assert_eq!(ev.request_ids, ["r-0"]);
        assert_eq!(ev.applicant_ids, ["app-1"]);
        assert_eq!(ev.explain, [true]);
        let fields: Vec<_> = ev.violations[0].iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["numeric.zz", "numeric.c", "categorical.x"]);

        let mut good = num_entry("x", 2.0);
        good.extend(cat_entry("c", "b"));
        let req = ld(2, &good);
        let ev = match decode_and_eval(&p, &req, false) {
            Ok(ev) => ev,
            Err(e) => unreachable!("{e}"),
        };
        assert!(ev.violations[0].is_empty());
        assert_eq!(ev.matrix, [2.0, 0.0, 1.0]);
        assert_eq!(ev.request_ids, [""]);
    }

    #[test]
    fn malformed_bytes_name_the_field() {
        let p = plan();
        let mut entry = ld(1, b"x");
        entry.push((2 << 3) | I64);
        entry.extend([0, 0]); // truncated double
        let bad = ld(1, &ld(2, &ld(2, &entry)));
        let err = decode(&p, &bad, true).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("requests[0].applicant.numeric: truncated 8-byte fixed value (byte 10)")
        );
        // Known field, wrong wire type.
        assert!(decode(&p, &[0x08, 0x01], false).is_err());
        assert!(decode(&p, &[0x1a, 0x00], false).is_err());
        // Empty input: no requests, or one request of defaults.
        assert_eq!(decode(&p, &[], true).map(|v| v.len()), Ok(0));
        assert_eq!(decode(&p, &[], false).map(|v| v.len()), Ok(1));
    }

    #[test]
    fn encodes_like_upb() {
        let model = encode_model_ref("m", "", 2);
        assert_eq!(model, [0x0a, 1, b'm', 0x18, 2]);
        let mut out = Vec::new();
        encode_response(&mut out, "", 0.0, -1, 0, &[]);
        let mut want = vec![0x18];
        want.extend([0xff; 9]);
        want.push(0x01);
        want.extend([0x2a, 0x00]);
        assert_eq!(out, want);
        out.clear();
        encode_response(&mut out, "", -0.0, 0, 3, &[]);
        assert_eq!(out, [0x11, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x20, 3, 0x2a, 0x00]);
    }
}
