//! The Open Inference Protocol v2 (`inference.GRPCInferenceService`, what tritonclient and
//! KServe's clients speak), served beside `Scoring` on the same port. Only an adapter: a
//! `ModelInfer` call's tensors become the `ScoreBatchRequest` they stand for, which goes through
//! the batch path ([`Plane::score_batch_with`]: the same validation, routing, prediction, policy,
//! prediction log, shadow scoring and counters as `ScoreBatch`); its answers become tensors.
//!
//! Inputs (`N` rows; every tensor's first dimension is `N`):
//! - `numeric`: FP64 or FP32, shape `[N, k]`: row `i` is applicant `i`'s `numeric_values`, the
//!   model's `k` numeric inputs in `GetModelInfo` order (NaN = not given). The call parameter
//!   `numeric_values_layout` (string) is each applicant's `numeric_values_layout`.
//! - one BYTES tensor per categorical input, named by the input, shape `[N]` or `[N, 1]`, UTF-8;
//!   an empty element is not given (the input's missing policy).
//! - `applicant_id`, BYTES `[N]` (optional): each applicant's `applicant_id` (routing, the
//!   feature store, the log); an empty element is none.
//! - `request_id`, BYTES `[N]` (optional): each row's request id; without it row `i`'s is
//!   `<id>/<i>`, `<id>` being the call's `id`, or when that is empty one the server makes
//!   (`oip-…`, unique) and answers in the response's `id`.
//!
//! Outputs, in `raw_output_contents` (all four unless the call names some): `pd` FP64 `[N]`,
//! `score` INT32 `[N]`, `decision` BYTES `[N]` (`approve`, `review`, `decline`),
//! `model_version` BYTES `[N]` (the version that answered the row). The response's
//! `model_version` is the version that answered every row (empty when champion and challenger
//! shared the call).
//!
//! A bad tensor, parameter or output name is `INVALID_ARGUMENT` naming `inputs[<name>]...`,
//! `raw_input_contents[<i>]`, `parameters[<name>]` or `outputs[<name>]`; a bad row is
//! `ScoreBatch`'s answer for it (`requests[<row>].applicant...`); a model or version not
//! served is `NOT_FOUND`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use altscore_kernels::fmt::echo;
use altscore_kernels::plan::Plan;
use altscore_kernels::{Violation, ViolationKind};
use bytes::Bytes;
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::errors::Failure;
use crate::plane::{Plane, Scored, Variants};
use crate::proto;
use crate::proto::inference::infer_parameter::ParameterChoice;
use crate::proto::inference::model_infer_request::InferInputTensor;
use crate::proto::inference::model_infer_response::InferOutputTensor;
use crate::proto::inference::model_metadata_response::TensorMetadata;
use crate::proto::inference::{
    GRPCInferenceService, InferTensorContents, ModelInferRequest, ModelInferResponse,
    ModelMetadataRequest, ModelMetadataResponse, ModelReadyRequest, ModelReadyResponse,
    ServerLiveRequest, ServerLiveResponse, ServerMetadataRequest, ServerMetadataResponse,
    ServerReadyRequest, ServerReadyResponse,
};
use crate::service::{deadline_of, finish, within};

/// The service name health reports for.
pub const INFERENCE_SERVICE: &str = "inference.GRPCInferenceService";
/// `ServerMetadata`'s name, and every model's platform.
pub const SERVER_NAME: &str = "altscore";
/// The numeric input tensor.
pub const NUMERIC: &str = "numeric";
/// The optional applicant id tensor.
pub const APPLICANT_ID: &str = "applicant_id";
/// The optional request id tensor.
pub const REQUEST_ID: &str = "request_id";
/// The call parameter carrying `numeric_values_layout`.
pub const LAYOUT_PARAMETER: &str = "numeric_values_layout";

/// The output tensors, in their default order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Pd,
    Score,
    Decision,
    ModelVersion,
}

impl Output {
    pub const ALL: [Output; 4] = [
        Output::Pd,
        Output::Score,
        Output::Decision,
        Output::ModelVersion,
    ];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Output::Pd => "pd",
            Output::Score => "score",
            Output::Decision => "decision",
            Output::ModelVersion => "model_version",
        }
    }

    #[must_use]
    pub fn datatype(self) -> &'static str {
        match self {
            Output::Pd => "FP64",
            Output::Score => "INT32",
            Output::Decision | Output::ModelVersion => "BYTES",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.name() == name)
    }
}

/// What the served models take, as tensors: the widths a `numeric` tensor may have and the
/// names of the categorical inputs (of the champion, and of the challenger when one serves; the
/// row each applicant is routed to decides the rest, as in `ScoreBatch`).
#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub widths: Vec<usize>,
    pub categorical: Vec<String>,
}

/// The names of `plan`'s categorical inputs, in spec order.
fn categorical_names(plan: &Plan) -> impl Iterator<Item = &str> {
    plan.categorical_inputs
        .iter()
        .map(|i| plan.def.inputs[*i].name.as_str())
}

impl Schema {
    #[must_use]
    pub fn of(variants: &Variants) -> Self {
        let mut schema = Self::default();
        for model in variants.models() {
            let plan = &model.plan;
            if !schema.widths.contains(&plan.numeric_inputs.len()) {
                schema.widths.push(plan.numeric_inputs.len());
            }
            for name in categorical_names(plan) {
                if !schema.categorical.iter().any(|c| c == name) {
                    schema.categorical.push(name.to_string());
                }
            }
        }
        schema
    }
}

/// The model a call names: its name must be a served model's, its version empty or a served
/// version of it; else `NOT_FOUND`.
pub fn check_model(variants: &Variants, name: &str, version: &str) -> Result<(), Failure> {
    let named: Vec<&str> = variants
        .models()
        .filter(|m| m.name == name)
        .map(|m| m.version.as_str())
        .collect();
    if named.is_empty() {
        return Err(Failure::NotFound(format!(
            "model '{}' is not served; this server serves '{}'",
            echo(name),
            variants.champion.name
        )));
    }
    if !version.is_empty() && !named.contains(&version) {
        return Err(Failure::NotFound(format!(
            "version '{}' of model '{}' is not served; served: {}",
            echo(version),
            echo(name),
            named.join(", ")
        )));
    }
    Ok(())
}

/// One decoded input tensor's elements.
#[derive(Debug, Clone, PartialEq)]
enum Elements {
    /// Row-major `[rows, width]`.
    Numbers {
        values: Vec<f64>,
        width: usize,
    },
    Texts(Vec<String>),
}

/// The inputs of a call, decoded and checked as tensors (not yet as rows).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    pub rows: usize,
    /// Row-major `[rows, width]`, and the width.
    pub numeric: Option<(Vec<f64>, usize)>,
    pub applicant_ids: Option<Vec<String>>,
    pub request_ids: Option<Vec<String>>,
    /// Per categorical tensor: its input name and one element per row.
    pub categorical: Vec<(String, Vec<String>)>,
}

/// What a tensor of a given name must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Numeric,
    Text,
}

fn bad(field: String, kind: ViolationKind, description: impl Into<String>) -> Violation {
    Violation::new(field, kind, description.into())
}

/// The non-empty typed fields of `contents`.
fn filled(c: &InferTensorContents) -> Vec<&'static str> {
    [
        ("bool_contents", c.bool_contents.is_empty()),
        ("int_contents", c.int_contents.is_empty()),
        ("int64_contents", c.int64_contents.is_empty()),
        ("uint_contents", c.uint_contents.is_empty()),
        ("uint64_contents", c.uint64_contents.is_empty()),
        ("fp32_contents", c.fp32_contents.is_empty()),
        ("fp64_contents", c.fp64_contents.is_empty()),
        ("bytes_contents", c.bytes_contents.is_empty()),
    ]
    .into_iter()
    .filter(|(_, empty)| !empty)
    .map(|(name, _)| name)
    .collect()
}

/// `count` little-endian numbers of `size` bytes (8: FP64, 4: FP32) from raw contents.
pub fn raw_numbers(raw: &[u8], size: usize, count: usize) -> Result<Vec<f64>, String> {
    let want = count.checked_mul(size).ok_or("too many elements")?;
    if raw.len() != want {
        return Err(format!(
            "{} bytes for {count} elements of {size} bytes: expected {want}",
            raw.len()
        ));
    }
    Ok(if size == 8 {
        raw.chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect()
    } else {
        raw.chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect()
    })
}

/// `count` BYTES elements from raw contents: each a 4-byte little-endian length and then that
/// many bytes, nothing after the last.
pub fn raw_texts(raw: &[u8], count: usize) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::with_capacity(count.min(raw.len() / 4));
    let mut rest = raw;
    for i in 0..count {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(format!(
                "{} bytes hold {i} of {count} elements (each a 4-byte length and its bytes)",
                raw.len()
            ));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(format!(
                "element {i} claims {len} bytes, {} are left",
                tail.len()
            ));
        }
        let (element, tail) = tail.split_at(len);
        out.push(element);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes after the last of {count} elements",
            rest.len()
        ));
    }
    Ok(out)
}

/// The number of elements of `shape`, if its dimensions are valid.
fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, d| {
        usize::try_from(*d).ok().and_then(|d| n.checked_mul(d))
    })
}

/// Decode one tensor (`raw`: its raw contents, when the call uses them). Returns its rows and
/// elements, or adds its violations to `bad` and returns None.
fn decode_tensor(
    tensor: &InferInputTensor,
    raw: Option<&[u8]>,
    raw_index: usize,
    role: Role,
    schema: &Schema,
    out: &mut Vec<Violation>,
) -> Option<(usize, Elements)> {
    let name = echo(&tensor.name);
    let at = |what: &str| format!("inputs[{name}]{what}");
    let before = out.len();
    for p in tensor.parameters.keys() {
        out.push(bad(
            at(&format!(".parameters[{}]", echo(p))),
            ViolationKind::UnknownFeature,
            "unknown tensor parameter",
        ));
    }
    let datatype = tensor.datatype.as_str();
    let size = match (role, datatype) {
        (Role::Numeric, "FP64") => 8,
        (Role::Numeric, "FP32") => 4,
        (Role::Text, "BYTES") => 0,
        (Role::Numeric, _) => {
            out.push(bad(
                at(".datatype"),
                ViolationKind::WrongType,
                format!("'{}': must be FP64 or FP32", echo(datatype)),
            ));
            return None;
        }
        (Role::Text, _) => {
            out.push(bad(
                at(".datatype"),
                ViolationKind::WrongType,
                format!("'{}': must be BYTES (UTF-8 text)", echo(datatype)),
            ));
            return None;
        }
    };
    let shape = &tensor.shape;
    let shape_text = format!("{shape:?}");
    let ok_shape = match role {
        Role::Numeric => {
            shape.len() == 2
                && shape[0] >= 0
                && usize::try_from(shape[1]).is_ok_and(|k| schema.widths.contains(&k))
        }
        Role::Text => shape.len() == 1 || (shape.len() == 2 && shape[1] == 1),
    };
    let count = element_count(shape);
    let (true, Some(count)) = (ok_shape, count) else {
        let want = match role {
            Role::Numeric => format!(
                "[N, k] with k the number of the model's numeric inputs ({})",
                schema
                    .widths
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
            Role::Text => "[N] or [N, 1]".to_string(),
        };
        out.push(bad(
            at(".shape"),
            ViolationKind::BadTensor,
            format!("{}: must be {want}", echo(&shape_text)),
        ));
        return None;
    };
    let rows = usize::try_from(shape[0]).unwrap_or(0);
    let contents = tensor.contents.as_ref();
    let elements = if let Some(raw) = raw {
        if contents.is_some_and(|c| !filled(c).is_empty()) {
            out.push(bad(
                at(".contents"),
                ViolationKind::BadTensor,
                "set together with raw_input_contents: send one or the other",
            ));
            return None;
        }
        let field = format!("raw_input_contents[{raw_index}]");
        if size == 0 {
            match raw_texts(raw, count) {
                Ok(texts) => texts_of(texts.into_iter(), &at(""), out),
                Err(e) => {
                    out.push(bad(field, ViolationKind::BadTensor, e));
                    return None;
                }
            }
        } else {
            match raw_numbers(raw, size, count) {
                Ok(values) => Some(values_of(values, shape)),
                Err(e) => {
                    out.push(bad(field, ViolationKind::BadTensor, e));
                    return None;
                }
            }
        }
    } else {
        let empty = InferTensorContents::default();
        let c = contents.unwrap_or(&empty);
        let want = match size {
            8 => "fp64_contents",
            4 => "fp32_contents",
            _ => "bytes_contents",
        };
        let others: Vec<&str> = filled(c).into_iter().filter(|f| *f != want).collect();
        if !others.is_empty() {
            out.push(bad(
                at(".contents"),
                ViolationKind::BadTensor,
                format!(
                    "holds {}; a {datatype} tensor's elements go in {want}",
                    others.join(", ")
                ),
            ));
            return None;
        }
        let n = match size {
            8 => c.fp64_contents.len(),
            4 => c.fp32_contents.len(),
            _ => c.bytes_contents.len(),
        };
        if n != count {
            out.push(bad(
                at(".contents"),
                ViolationKind::BadTensor,
                format!(
                    "{want} holds {n} elements, the shape {} needs {count}",
                    echo(&shape_text)
                ),
            ));
            return None;
        }
        match size {
            8 => Some(values_of(c.fp64_contents.clone(), shape)),
            4 => Some(values_of(
                c.fp32_contents.iter().map(|x| f64::from(*x)).collect(),
                shape,
            )),
            _ => texts_of(c.bytes_contents.iter().map(Vec::as_slice), &at(""), out),
        }
    };
    if out.len() > before {
        return None;
    }
    elements.map(|e| (rows, e))
}

fn values_of(values: Vec<f64>, shape: &[i64]) -> Elements {
    Elements::Numbers {
        values,
        width: usize::try_from(shape[1]).unwrap_or(0),
    }
}

/// BYTES elements as UTF-8 text; the first that is not is a violation of `field`.
fn texts_of<'a>(
    elements: impl Iterator<Item = &'a [u8]>,
    field: &str,
    out: &mut Vec<Violation>,
) -> Option<Elements> {
    let mut texts = Vec::new();
    for (i, e) in elements.enumerate() {
        let Ok(t) = std::str::from_utf8(e) else {
            out.push(bad(
                field.to_string(),
                ViolationKind::WrongType,
                format!("element {i} is not UTF-8 text"),
            ));
            return None;
        };
        texts.push(t.to_string());
    }
    Some(Elements::Texts(texts))
}

/// Decode and check a call's input tensors against `schema` (see the module docs).
pub fn decode_inputs(request: &ModelInferRequest, schema: &Schema) -> Result<Columns, Failure> {
    let mut out = Vec::new();
    let raw = &request.raw_input_contents;
    let use_raw = !raw.is_empty();
    if use_raw && raw.len() != request.inputs.len() {
        out.push(bad(
            "raw_input_contents".into(),
            ViolationKind::BadTensor,
            format!(
                "{} entries for {} inputs: one per input, in the order of `inputs`",
                raw.len(),
                request.inputs.len()
            ),
        ));
        return Err(Failure::Invalid(out));
    }
    if request.inputs.is_empty() {
        out.push(bad(
            "inputs".into(),
            ViolationKind::BadTensor,
            "no input tensors",
        ));
        return Err(Failure::Invalid(out));
    }
    let mut columns = Columns::default();
    let mut seen: Vec<&str> = Vec::with_capacity(request.inputs.len());
    let mut rows: Option<(usize, &str)> = None;
    for (i, tensor) in request.inputs.iter().enumerate() {
        let name = tensor.name.as_str();
        if seen.contains(&name) {
            out.push(bad(
                format!("inputs[{}]", echo(name)),
                ViolationKind::BadTensor,
                "sent twice",
            ));
            continue;
        }
        seen.push(name);
        let role = if name == NUMERIC {
            Role::Numeric
        } else if name == APPLICANT_ID
            || name == REQUEST_ID
            || schema.categorical.iter().any(|c| c == name)
        {
            Role::Text
        } else {
            out.push(bad(
                format!("inputs[{}]", echo(name)),
                ViolationKind::UnknownFeature,
                format!(
                    "not an input: the inputs are '{NUMERIC}', '{APPLICANT_ID}', \
                     '{REQUEST_ID}' and the categorical inputs ({})",
                    schema.categorical.join(", ")
                ),
            ));
            continue;
        };
        let raw = use_raw.then(|| raw[i].as_slice());
        let Some((n, elements)) = decode_tensor(tensor, raw, i, role, schema, &mut out) else {
            continue;
        };
        match rows {
            None => rows = Some((n, name)),
            Some((m, first)) if m != n => {
                out.push(bad(
                    format!("inputs[{}].shape", echo(name)),
                    ViolationKind::BadTensor,
                    format!(
                        "{n} rows, but '{}' has {m}: every input has one element (row) per \
                         applicant",
                        echo(first)
                    ),
                ));
                continue;
            }
            Some(_) => {}
        }
        match elements {
            Elements::Numbers { values, width } => columns.numeric = Some((values, width)),
            Elements::Texts(texts) => match name {
                APPLICANT_ID => columns.applicant_ids = Some(texts),
                REQUEST_ID => columns.request_ids = Some(texts),
                _ => columns.categorical.push((name.to_string(), texts)),
            },
        }
    }
    if !out.is_empty() {
        return Err(Failure::Invalid(out));
    }
    columns.rows = rows.map_or(0, |(n, _)| n);
    Ok(columns)
}

/// The call's parameters: only `numeric_values_layout` (a string) is known.
pub fn layout_parameter(request: &ModelInferRequest, out: &mut Vec<Violation>) -> String {
    let mut layout = String::new();
    for (name, value) in &request.parameters {
        let field = format!("parameters[{}]", echo(name));
        if name != LAYOUT_PARAMETER {
            out.push(bad(
                field,
                ViolationKind::UnknownFeature,
                format!("unknown parameter: the only one is '{LAYOUT_PARAMETER}'"),
            ));
            continue;
        }
        match &value.parameter_choice {
            Some(ParameterChoice::StringParam(s)) => layout.clone_from(s),
            _ => out.push(bad(
                field,
                ViolationKind::WrongType,
                "must be a string (GetModelInfo's numeric_values_layout)",
            )),
        }
    }
    layout
}

/// The outputs the call asks for, in its order (all, in the default order, when none).
pub fn requested_outputs(request: &ModelInferRequest, out: &mut Vec<Violation>) -> Vec<Output> {
    if request.outputs.is_empty() {
        return Output::ALL.to_vec();
    }
    let mut wanted = Vec::with_capacity(request.outputs.len());
    for o in &request.outputs {
        let field = format!("outputs[{}]", echo(&o.name));
        for p in o.parameters.keys() {
            out.push(bad(
                format!("{field}.parameters[{}]", echo(p)),
                ViolationKind::UnknownFeature,
                "unknown output parameter",
            ));
        }
        match Output::parse(&o.name) {
            Some(x) if wanted.contains(&x) => {
                out.push(bad(field, ViolationKind::BadTensor, "asked for twice"));
            }
            Some(x) => wanted.push(x),
            None => out.push(bad(
                field,
                ViolationKind::UnknownFeature,
                "not an output: the outputs are pd, score, decision and model_version",
            )),
        }
    }
    wanted
}

/// A unique id for a call that has none: the process's start time and id, and a counter.
fn generated_id() -> String {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("oip-{nanos:x}-{:x}", std::process::id())
    });
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

impl Columns {
    /// The `ScoreBatchRequest` these columns stand for: row `i` is `requests[i]`, its request
    /// id the `request_id` element or `<call_id>/<i>`.
    #[must_use]
    pub fn to_batch(&self, call_id: &str, layout: &str) -> proto::ScoreBatchRequest {
        let requests = (0..self.rows)
            .map(|i| {
                let numeric_values = self.numeric.as_ref().map_or_else(Vec::new, |(v, k)| {
                    v.get(i * k..(i + 1) * k).unwrap_or_default().to_vec()
                });
                let has_numeric = !numeric_values.is_empty();
                let categorical: HashMap<String, String> = self
                    .categorical
                    .iter()
                    .filter(|(_, texts)| !texts[i].is_empty())
                    .map(|(name, texts)| (name.clone(), texts[i].clone()))
                    .collect();
                proto::ScoreRequest {
                    request_id: self
                        .request_ids
                        .as_ref()
                        .map_or_else(|| format!("{call_id}/{i}"), |ids| ids[i].clone()),
                    applicant: Some(proto::Applicant {
                        applicant_id: self
                            .applicant_ids
                            .as_ref()
                            .map(|ids| ids[i].clone())
                            .unwrap_or_default(),
                        numeric: HashMap::new(),
                        categorical,
                        numeric_values,
                        numeric_values_layout: if has_numeric {
                            layout.to_string()
                        } else {
                            String::new()
                        },
                    }),
                    explain: false,
                }
            })
            .collect();
        proto::ScoreBatchRequest { requests }
    }
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// The output tensors of `answers` (one per row), and their raw contents.
#[must_use]
pub fn encode_outputs(
    wanted: &[Output],
    answers: &[&Scored],
) -> (Vec<InferOutputTensor>, Vec<Vec<u8>>) {
    let n = i64::try_from(answers.len()).unwrap_or(i64::MAX);
    let mut tensors = Vec::with_capacity(wanted.len());
    let mut raw = Vec::with_capacity(wanted.len());
    for output in wanted {
        let mut bytes = Vec::with_capacity(answers.len() * 8);
        for a in answers {
            match output {
                Output::Pd => bytes.extend_from_slice(&a.pd.to_le_bytes()),
                Output::Score => bytes.extend_from_slice(&a.score.to_le_bytes()),
                Output::Decision => put_text(&mut bytes, a.decision.name()),
                Output::ModelVersion => put_text(&mut bytes, &a.model.version),
            }
        }
        tensors.push(InferOutputTensor {
            name: output.name().into(),
            datatype: output.datatype().into(),
            shape: vec![n],
            parameters: HashMap::new(),
            contents: None,
        });
        raw.push(bytes);
    }
    (tensors, raw)
}

/// `inference.GRPCInferenceService`: converts and delegates to the [`Plane`], and counts.
pub struct InferenceService {
    plane: Arc<Plane>,
}

impl InferenceService {
    #[must_use]
    pub fn new(plane: Arc<Plane>) -> Self {
        Self { plane }
    }

    async fn infer(
        &self,
        request: ModelInferRequest,
        deadline: Option<Instant>,
    ) -> Result<ModelInferResponse, Failure> {
        let variants = self.plane.current()?;
        check_model(&variants, &request.model_name, &request.model_version)?;
        let mut bad = Vec::new();
        let layout = layout_parameter(&request, &mut bad);
        let wanted = requested_outputs(&request, &mut bad);
        let columns = match decode_inputs(&request, &Schema::of(&variants)) {
            Ok(c) => Some(c),
            Err(Failure::Invalid(v)) => {
                bad.extend(v);
                None
            }
            Err(f) => return Err(f),
        };
        drop(variants);
        let columns = match columns {
            Some(c) if bad.is_empty() => c,
            _ => return Err(Failure::Invalid(bad)),
        };
        let id = if request.id.is_empty() {
            generated_id()
        } else {
            request.id
        };
        let batch = Bytes::from(columns.to_batch(&id, &layout).encode_to_vec());
        drop(columns);
        let ((outputs, raw_output_contents), model_name, model_version) = self
            .plane
            .score_batch_with(batch, deadline, |_, answers| {
                let first = answers.first().map(|a| &a.model);
                let same = first.filter(|m| answers.iter().all(|a| Arc::ptr_eq(&a.model, m)));
                (
                    encode_outputs(&wanted, answers),
                    first.map(|m| m.name.clone()).unwrap_or_default(),
                    same.map(|m| m.version.clone()).unwrap_or_default(),
                )
            })
            .await?;
        Ok(ModelInferResponse {
            model_name,
            model_version,
            id,
            parameters: HashMap::new(),
            outputs,
            raw_output_contents,
        })
    }

    fn metadata(&self, request: &ModelMetadataRequest) -> Result<ModelMetadataResponse, Failure> {
        let variants = self.plane.current()?;
        check_model(&variants, &request.name, &request.version)?;
        let model = variants
            .models()
            .find(|m| {
                m.name == request.name
                    && (request.version.is_empty() || m.version == request.version)
            })
            .unwrap_or(&variants.champion);
        let plan = &model.plan;
        let k = i64::try_from(plan.numeric_inputs.len()).unwrap_or(i64::MAX);
        let tensor = |name: &str, datatype: &str, shape: Vec<i64>| TensorMetadata {
            name: name.into(),
            datatype: datatype.into(),
            shape,
        };
        let mut inputs = Vec::new();
        if k > 0 {
            inputs.push(tensor(NUMERIC, "FP64", vec![-1, k]));
        }
        inputs.extend(categorical_names(plan).map(|name| tensor(name, "BYTES", vec![-1])));
        inputs.push(tensor(APPLICANT_ID, "BYTES", vec![-1]));
        inputs.push(tensor(REQUEST_ID, "BYTES", vec![-1]));
        let outputs = Output::ALL
            .iter()
            .map(|o| tensor(o.name(), o.datatype(), vec![-1]))
            .collect();
        Ok(ModelMetadataResponse {
            name: model.name.clone(),
            versions: variants
                .models()
                .filter(|m| m.name == model.name)
                .map(|m| m.version.clone())
                .collect(),
            platform: SERVER_NAME.into(),
            inputs,
            outputs,
        })
    }
}

#[tonic::async_trait]
impl GRPCInferenceService for InferenceService {
    async fn server_live(
        &self,
        _request: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _request: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let ready = self.plane.variants().is_some();
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = request.into_inner();
        let ready = self
            .plane
            .variants()
            .is_some_and(|v| check_model(&v, &r.name, &r.version).is_ok());
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _request: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: Vec::new(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let started = Instant::now();
        let deadline = deadline_of(&request, started);
        let request = request.into_inner();
        let result = within(deadline, async { self.metadata(&request) }).await;
        finish(&self.plane.metrics, "ModelMetadata", started, result)
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let started = Instant::now();
        let deadline = deadline_of(&request, started);
        let work = self.infer(request.into_inner(), deadline);
        let result = within(deadline, work).await;
        finish(&self.plane.metrics, "ModelInfer", started, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::inference::model_infer_request::InferRequestedOutputTensor;
    use crate::proto::inference::InferParameter;

    fn schema() -> Schema {
        Schema {
            widths: vec![2],
            categorical: vec!["segment".into()],
        }
    }

    fn tensor(name: &str, datatype: &str, shape: &[i64]) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            parameters: HashMap::new(),
            contents: None,
        }
    }

    fn texts_raw(texts: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for t in texts {
            put_text(&mut out, t);
        }
        out
    }

    fn f64_raw(values: &[f64]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn call(inputs: Vec<InferInputTensor>, raw: Vec<Vec<u8>>) -> ModelInferRequest {
        ModelInferRequest {
            model_name: "m".into(),
            inputs,
            raw_input_contents: raw,
            ..ModelInferRequest::default()
        }
    }

    /// (field, reason) of each violation of a failed decode.
    fn violations(result: Result<Columns, Failure>) -> Vec<(String, &'static str)> {
        match result {
            Err(Failure::Invalid(v)) => v.into_iter().map(|v| (v.field, v.kind.reason())).collect(),
            other => unreachable!("not INVALID_ARGUMENT: {other:?}"),
        }
    }

    #[test]
    fn raw_numbers_are_little_endian_and_sized() {
        assert_eq!(
            raw_numbers(&f64_raw(&[1.5, -2.0]), 8, 2),
            Ok(vec![1.5, -2.0])
        );
        let f32s: Vec<u8> = [0.1f32, f32::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let got = raw_numbers(&f32s, 4, 2).unwrap_or_default();
        assert_eq!(got[0], f64::from(0.1f32), "FP32 widens exactly");
        assert!(got[1].is_nan());
        assert_eq!(
            raw_numbers(&f64_raw(&[1.0]), 8, 2),
            Err("8 bytes for 2 elements of 8 bytes: expected 16".into())
        );
        assert!(raw_numbers(&[0; 7], 8, 1).is_err());
        assert!(
            raw_numbers(&[], 8, usize::MAX).is_err(),
            "overflow is an error"
        );
    }

    #[test]
    fn raw_texts_are_length_prefixed() {
        let raw = texts_raw(&["gold", "", "é"]);
        let got = raw_texts(&raw, 3).unwrap_or_default();
        assert_eq!(got, [b"gold".as_slice(), b"", "é".as_bytes()]);
        assert_eq!(
            raw_texts(&raw, 4),
            Err(format!(
                "{} bytes hold 3 of 4 elements (each a 4-byte length and its bytes)",
                raw.len()
            ))
        );
        assert_eq!(
            raw_texts(&raw, 2),
            Err("6 bytes after the last of 2 elements".into())
        );
        let mut cut = texts_raw(&["gold"]);
        cut.pop();
        assert_eq!(
            raw_texts(&cut, 1),
            Err("element 0 claims 4 bytes, 3 are left".into())
        );
        assert!(raw_texts(&[1, 0], 1).is_err(), "a truncated length");
        assert_eq!(raw_texts(&[], 0), Ok(vec![]));
    }

    #[test]
    fn raw_and_typed_contents_decode_alike() {
        let raw = call(
            vec![
                tensor(NUMERIC, "FP64", &[2, 2]),
                tensor("segment", "BYTES", &[2, 1]),
                tensor(APPLICANT_ID, "BYTES", &[2]),
            ],
            vec![
                f64_raw(&[1.0, f64::NAN, 3.0, 4.0]),
                texts_raw(&["gold", ""]),
                texts_raw(&["a1", "a2"]),
            ],
        );
        let got = decode_inputs(&raw, &schema());
        let Ok(columns) = got else {
            unreachable!("{got:?}")
        };
        assert_eq!(columns.rows, 2);
        assert_eq!(columns.applicant_ids, Some(vec!["a1".into(), "a2".into()]));
        assert_eq!(
            columns.categorical,
            [(
                "segment".to_string(),
                vec!["gold".to_string(), String::new()]
            )]
        );
        let mut typed = raw.clone();
        typed.raw_input_contents.clear();
        typed.inputs[0].contents = Some(InferTensorContents {
            fp64_contents: vec![1.0, f64::NAN, 3.0, 4.0],
            ..InferTensorContents::default()
        });
        typed.inputs[1].contents = Some(InferTensorContents {
            bytes_contents: vec![b"gold".to_vec(), Vec::new()],
            ..InferTensorContents::default()
        });
        typed.inputs[2].contents = Some(InferTensorContents {
            bytes_contents: vec![b"a1".to_vec(), b"a2".to_vec()],
            ..InferTensorContents::default()
        });
        let again = decode_inputs(&typed, &schema());
        let Ok(again) = again else {
            unreachable!("{again:?}")
        };
        // NaN != NaN: compare the bits.
        let bits = |c: &Columns| {
            c.numeric
                .as_ref()
                .map(|(v, k)| (v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), *k))
        };
        assert_eq!(bits(&again), bits(&columns));
        assert_eq!(again.categorical, columns.categorical);
        assert_eq!(again.applicant_ids, columns.applicant_ids);
    }

    #[test]
    fn columns_become_the_batch_they_stand_for() {
        let columns = Columns {
            rows: 2,
            numeric: Some((vec![1.0, f64::NAN, 3.0, 4.0], 2)),
            applicant_ids: Some(vec!["a1".into(), String::new()]),
            request_ids: None,
            categorical: vec![("segment".into(), vec!["gold".into(), String::new()])],
        };
        let batch = columns.to_batch("call-7", "abcd");
        let ids: Vec<_> = batch
            .requests
            .iter()
            .map(|r| r.request_id.as_str())
            .collect();
        assert_eq!(ids, ["call-7/0", "call-7/1"]);
        let a0 = batch.requests[0].applicant.clone().unwrap_or_default();
        assert_eq!(a0.applicant_id, "a1");
        assert_eq!(a0.numeric_values[0], 1.0);
        assert!(
            a0.numeric_values[1].is_nan(),
            "NaN = not given, passed as is"
        );
        assert_eq!(a0.numeric_values_layout, "abcd");
        assert_eq!(
            a0.categorical.get("segment").map(String::as_str),
            Some("gold")
        );
        let a1 = batch.requests[1].applicant.clone().unwrap_or_default();
        assert_eq!(a1.numeric_values, [3.0, 4.0]);
        assert!(a1.categorical.is_empty(), "an empty element is not given");
        assert!(a1.applicant_id.is_empty());
        let named = Columns {
            request_ids: Some(vec!["r0".into(), "r1".into()]),
            ..columns
        };
        let ids: Vec<_> = named
            .to_batch("call-7", "")
            .requests
            .into_iter()
            .map(|r| r.request_id)
            .collect();
        assert_eq!(ids, ["r0", "r1"]);
    }

    #[test]
    fn bad_tensors_are_named() {
        let s = schema();
        // Wrong width, wrong rank, wrong datatype, unknown and repeated names.
        let got = decode_inputs(
            &call(
                vec![
                    tensor(NUMERIC, "FP64", &[1, 3]),
                    tensor("segment", "BYTES", &[1, 2]),
                    tensor(APPLICANT_ID, "INT64", &[1]),
                    tensor("colour", "BYTES", &[1]),
                    tensor("colour", "BYTES", &[1]),
                ],
                vec![
                    f64_raw(&[1.0, 2.0, 3.0]),
                    texts_raw(&["a", "b"]),
                    vec![0; 8],
                    texts_raw(&["x"]),
                    texts_raw(&["x"]),
                ],
            ),
            &s,
        );
        assert_eq!(
            violations(got),
            [
                ("inputs[numeric].shape".to_string(), "BAD_TENSOR"),
                ("inputs[segment].shape".to_string(), "BAD_TENSOR"),
                ("inputs[applicant_id].datatype".to_string(), "WRONG_TYPE"),
                ("inputs[colour]".to_string(), "UNKNOWN_FEATURE"),
                ("inputs[colour]".to_string(), "BAD_TENSOR"),
            ]
        );
        // Raw contents of the wrong length, and one raw entry short.
        let got = decode_inputs(
            &call(vec![tensor(NUMERIC, "FP32", &[2, 2])], vec![vec![0; 12]]),
            &s,
        );
        assert_eq!(
            violations(got),
            [("raw_input_contents[0]".to_string(), "BAD_TENSOR")]
        );
        let got = decode_inputs(
            &call(
                vec![
                    tensor(NUMERIC, "FP64", &[1, 2]),
                    tensor("segment", "BYTES", &[1]),
                ],
                vec![f64_raw(&[1.0, 2.0])],
            ),
            &s,
        );
        assert_eq!(
            violations(got),
            [("raw_input_contents".to_string(), "BAD_TENSOR")]
        );
        // Row counts that disagree; contents of another type; not UTF-8; negative dimensions.
        let got = decode_inputs(
            &call(
                vec![
                    tensor(NUMERIC, "FP64", &[2, 2]),
                    tensor("segment", "BYTES", &[1]),
                ],
                vec![f64_raw(&[1.0, 2.0, 3.0, 4.0]), texts_raw(&["a"])],
            ),
            &s,
        );
        assert_eq!(
            violations(got),
            [("inputs[segment].shape".to_string(), "BAD_TENSOR")]
        );
        let mut typed = tensor(NUMERIC, "FP64", &[1, 2]);
        typed.contents = Some(InferTensorContents {
            fp32_contents: vec![1.0, 2.0],
            ..InferTensorContents::default()
        });
        let mut latin1 = tensor("segment", "BYTES", &[1]);
        latin1.contents = Some(InferTensorContents {
            bytes_contents: vec![vec![0xe9]],
            ..InferTensorContents::default()
        });
        let got = decode_inputs(
            &call(
                vec![typed, latin1, tensor(REQUEST_ID, "BYTES", &[-1])],
                vec![],
            ),
            &s,
        );
        assert_eq!(
            violations(got),
            [
                ("inputs[numeric].contents".to_string(), "BAD_TENSOR"),
                ("inputs[segment]".to_string(), "WRONG_TYPE"),
                ("inputs[request_id].shape".to_string(), "BAD_TENSOR"),
            ]
        );
        // Too few typed elements; contents beside raw; no inputs at all.
        let mut short = tensor(NUMERIC, "FP64", &[2, 2]);
        short.contents = Some(InferTensorContents {
            fp64_contents: vec![1.0],
            ..InferTensorContents::default()
        });
        let got = decode_inputs(&call(vec![short.clone()], vec![]), &s);
        assert_eq!(
            violations(got),
            [("inputs[numeric].contents".to_string(), "BAD_TENSOR")]
        );
        let got = decode_inputs(&call(vec![short], vec![f64_raw(&[1.0; 4])]), &s);
        assert_eq!(
            violations(got),
            [("inputs[numeric].contents".to_string(), "BAD_TENSOR")]
        );
        let got = decode_inputs(&call(vec![], vec![]), &s);
        assert_eq!(violations(got), [("inputs".to_string(), "BAD_TENSOR")]);
    }

    #[test]
    fn parameters_and_outputs() {
        let mut request = call(vec![], vec![]);
        let mut bad = Vec::new();
        assert_eq!(requested_outputs(&request, &mut bad), Output::ALL);
        assert_eq!(layout_parameter(&request, &mut bad), "");
        assert!(bad.is_empty());
        let string = |s: &str| InferParameter {
            parameter_choice: Some(ParameterChoice::StringParam(s.into())),
        };
        request
            .parameters
            .insert(LAYOUT_PARAMETER.into(), string("0123abcd"));
        assert_eq!(layout_parameter(&request, &mut bad), "0123abcd");
        request.parameters.insert("priority".into(), string("1"));
        request.parameters.insert(
            LAYOUT_PARAMETER.into(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::Int64Param(1)),
            },
        );
        layout_parameter(&request, &mut bad);
        let mut got: Vec<_> = bad
            .iter()
            .map(|v| (v.field.as_str(), v.kind.reason()))
            .collect();
        got.sort_unstable();
        assert_eq!(
            got,
            [
                ("parameters[numeric_values_layout]", "WRONG_TYPE"),
                ("parameters[priority]", "UNKNOWN_FEATURE"),
            ]
        );
        bad.clear();
        let output = |name: &str| InferRequestedOutputTensor {
            name: name.into(),
            parameters: HashMap::new(),
        };
        request.outputs = vec![output("score"), output("pd"), output("pd"), output("shap")];
        assert_eq!(
            requested_outputs(&request, &mut bad),
            [Output::Score, Output::Pd]
        );
        let got: Vec<_> = bad
            .iter()
            .map(|v| (v.field.as_str(), v.kind.reason()))
            .collect();
        assert_eq!(
            got,
            [
                ("outputs[pd]", "BAD_TENSOR"),
                ("outputs[shap]", "UNKNOWN_FEATURE")
            ]
        );
    }

    #[test]
    fn generated_ids_are_unique() {
        let a = generated_id();
        let b = generated_id();
        assert_ne!(a, b);
        assert!(a.starts_with("oip-"));
    }

    #[test]
    fn unknown_models_are_not_found() {
        assert_eq!(
            Failure::NotFound("x".into()).to_status().code(),
            tonic::Code::NotFound
        );
        assert_eq!(Failure::NotFound("x".into()).reason(), "MODEL_NOT_FOUND");
    }
}
