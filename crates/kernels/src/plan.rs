//! The feature plan: a normalised feature spec (built and validated by the Python side from the
//! YAML file), resolved to slots once, then evaluated per row. Both call paths evaluate rows with
//! [`Plan::eval_row`], so they agree bit for bit.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{KernelError, Violation, ViolationKind};
use crate::fmt::{echo, fmt_value};
use crate::kernels::{categorical, numeric, to_output};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    Number,
    Integer,
    Categorical,
}

/// What a missing (absent, null or missing-coded) value becomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case")]
pub enum MissingPolicy {
    /// Left missing: NaN for the model (`XGBoost` learns a default direction).
    Nan,
    /// Imputed with a number.
    Constant { value: f64 },
    /// Imputed with a category.
    Category { value: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputDef {
    pub name: String,
    pub kind: InputKind,
    pub required: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
    #[serde(default)]
    pub missing_codes: Vec<f64>,
    pub missing: MissingPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownPolicy {
    /// An unknown category is a bad input.
    Error,
    /// An unknown category becomes missing (ordinal) or all zeros (one-hot).
    Missing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Op {
    Value {
        input: String,
    },
    Clip {
        input: String,
        min: Option<f64>,
        max: Option<f64>,
    },
    Log1p {
        input: String,
    },
    Ratio {
        numerator: String,
        denominator: String,
        on_zero: Option<f64>,
    },
    Bucketize {
        input: String,
        boundaries: Vec<f64>,
    },
    MissingIndicator {
        input: String,
    },
    Difference {
        left: String,
        right: String,
        scale: f64,
    },
    Ordinal {
        input: String,
        mapping: BTreeMap<String, f64>,
        unknown: UnknownPolicy,
    },
    OneHot {
        input: String,
        categories: Vec<String>,
        unknown: UnknownPolicy,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDef {
    pub name: String,
    pub op: Op,
    pub output: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanDef {
    pub name: String,
    pub version: u32,
    pub inputs: Vec<InputDef>,
    pub features: Vec<FeatureDef>,
    /// How entity inputs are aggregated offline: not evaluated here, but part of the schema hash.
    /// Left out of the canonical form when absent, so specs without entities keep their hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<serde_json::Value>,
}

/// A numeric operand: a numeric input or an earlier derived feature, as a slot index.
#[derive(Debug, Clone, Copy)]
struct Slot(usize);

#[derive(Debug, Clone)]
enum Step {
    Value(Slot),
    Clip(Slot, Option<f64>, Option<f64>),
    Log1p(Slot),
    Ratio(Slot, Slot, Option<f64>),
    Bucketize(Slot, Vec<f64>),
    MissingIndicator(Slot),
    CategoryMissing(usize),
    Difference(Slot, Slot, f64),
    Ordinal(usize, BTreeMap<String, f64>, UnknownPolicy),
    OneHot(usize, Vec<String>, UnknownPolicy),
}

/// Input name -> where it lives. `FxHash` (rustc-hash 2: eight bytes per step): every request
/// looks up each of its keys here, `SipHash` was a fifth of the decoding time and FNV-1a (a
/// byte per step) still a tenth of a call's handler time. The table is the spec's (fixed,
/// small), so a client's names cannot grow it.
pub type NameIndex = HashMap<String, InputSlot, rustc_hash::FxBuildHasher>;

/// Where an input lives once resolved: a numeric slot or a categorical index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputSlot {
    Numeric(usize),
    Categorical(usize),
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub def: PlanDef,
    steps: Vec<(Step, usize)>, // (step, first slot it writes)
    n_slots: usize,
    /// Numeric input `i` lives in slot `numeric_inputs[i]` (= i).
    pub numeric_inputs: Vec<usize>,
    pub categorical_inputs: Vec<usize>,
    /// Input name -> where it lives.
    pub by_name: NameIndex,
    output_slots: Vec<usize>,
    pub output_names: Vec<String>,
    pub schema_hash: String,
    /// Row-path field name of each input (`numeric.<name>` / `categorical.<name>`), made once:
    /// the row path names a field only when it reports it, but must not format it per row.
    fields: Vec<String>,
}

/// Validated input values of one row, ready for [`Plan::eval_row`].
pub struct RowInputs<'a> {
    pub numeric: Vec<f64>,
    pub categorical: Vec<Option<&'a str>>,
}

impl Plan {
    pub fn from_json(json: &str) -> Result<Self, KernelError> {
        let def: PlanDef =
            serde_json::from_str(json).map_err(|e| KernelError::Plan(e.to_string()))?;
        Self::new(def)
    }

    #[allow(clippy::too_many_lines)]
    pub fn new(def: PlanDef) -> Result<Self, KernelError> {
        let mut by_name = NameIndex::default();
        let mut numeric_inputs = Vec::new();
        let mut categorical_inputs = Vec::new();
        for (i, input) in def.inputs.iter().enumerate() {
            let slot = if input.kind == InputKind::Categorical {
                categorical_inputs.push(i);
                InputSlot::Categorical(categorical_inputs.len() - 1)
            } else {
                numeric_inputs.push(i);
                InputSlot::Numeric(numeric_inputs.len() - 1)
            };
            if by_name.insert(input.name.clone(), slot).is_some() {
                return Err(KernelError::Plan(format!(
                    "duplicate input {:?}",
                    input.name
                )));
            }
            if let (Some(lo), Some(hi)) = (input.min, input.max) {
                if lo > hi {
                    return Err(KernelError::Plan(format!(
                        "input {:?}: min {lo} > max {hi}",
                        input.name
                    )));
                }
            }
        }
        // Derived features are numeric and named; they may feed later features.
        let mut derived: HashMap<String, usize> = HashMap::new();
        let mut derived_names = std::collections::HashSet::new();
        let mut n_slots = numeric_inputs.len();
        let mut steps = Vec::with_capacity(def.features.len());
        let mut output_slots = Vec::new();
        let mut output_names = Vec::new();
        for f in &def.features {
            // Operands name inputs first; a derived feature is reached only by a name no input has.
            let num = |name: &str| -> Result<Slot, KernelError> {
                match by_name.get(name) {
                    Some(InputSlot::Numeric(i)) => Ok(Slot(*i)),
                    Some(InputSlot::Categorical(_)) => Err(KernelError::Plan(format!(
                        "feature {:?}: input {name:?} is categorical, a numeric operand is needed",
                        f.name
                    ))),
                    None => derived.get(name).map(|s| Slot(*s)).ok_or_else(|| {
                        KernelError::Plan(format!("feature {:?}: unknown operand {name:?}", f.name))
                    }),
                }
            };
            let cat = |name: &str| -> Result<usize, KernelError> {
                match by_name.get(name) {
                    Some(InputSlot::Categorical(i)) => Ok(*i),
                    _ => Err(KernelError::Plan(format!(
                        "feature {:?}: operand {name:?} is not a categorical input",
                        f.name
                    ))),
                }
            };
            let (step, width) = match &f.op {
                Op::Value { input } => (Step::Value(num(input)?), 1),
                Op::Clip { input, min, max } => (Step::Clip(num(input)?, *min, *max), 1),
                Op::Log1p { input } => (Step::Log1p(num(input)?), 1),
                Op::Ratio {
                    numerator,
                    denominator,
                    on_zero,
                } => (Step::Ratio(num(numerator)?, num(denominator)?, *on_zero), 1),
                Op::Bucketize { input, boundaries } => {
                    if boundaries.windows(2).any(|w| w[0] >= w[1])
                        || boundaries.iter().any(|b| !b.is_finite())
                    {
                        return Err(KernelError::Plan(format!(
                            "feature {:?}: boundaries must be finite and strictly increasing",
                            f.name
                        )));
                    }
                    (Step::Bucketize(num(input)?, boundaries.clone()), 1)
                }
                Op::MissingIndicator { input } => match by_name.get(input.as_str()) {
                    Some(InputSlot::Categorical(c)) => (Step::CategoryMissing(*c), 1),
                    _ => (Step::MissingIndicator(num(input)?), 1),
                },
                Op::Difference { left, right, scale } => {
                    if !scale.is_finite() {
                        return Err(KernelError::Plan(format!(
                            "feature {:?}: scale must be finite",
                            f.name
                        )));
                    }
                    (Step::Difference(num(left)?, num(right)?, *scale), 1)
                }
                Op::Ordinal {
                    input,
                    mapping,
                    unknown,
                } => (Step::Ordinal(cat(input)?, mapping.clone(), *unknown), 1),
                Op::OneHot {
                    input,
                    categories,
                    unknown,
                } => {
                    if categories.is_empty() {
                        return Err(KernelError::Plan(format!(
                            "feature {:?}: one_hot needs at least one category",
                            f.name
                        )));
                    }
                    (
                        Step::OneHot(cat(input)?, categories.clone(), *unknown),
                        categories.len(),
                    )
                }
            };
            let first = n_slots;
            n_slots += width;
            let listed = if let Op::OneHot { .. } = f.op {
                !derived_names.insert(f.name.clone())
            } else {
                !derived_names.insert(f.name.clone())
                    || derived.insert(f.name.clone(), first).is_some()
            };
            if listed {
                return Err(KernelError::Plan(format!(
                    "duplicate feature name {:?}",
                    f.name
                )));
            }
            if f.output {
                if let Op::OneHot { categories, .. } = &f.op {
                    for (j, c) in categories.iter().enumerate() {
                        output_slots.push(first + j);
                        output_names.push(format!("{}={}", f.name, c));
                    }
                } else {
                    output_slots.push(first);
                    output_names.push(f.name.clone());
                }
            }
            steps.push((step, first));
        }
        if output_slots.is_empty() {
            return Err(KernelError::Plan("no output features".into()));
        }
        let canonical =
            serde_json::to_string(&def).map_err(|e| KernelError::Plan(e.to_string()))?;
        let schema_hash = format!("{:x}", Sha256::digest(canonical.as_bytes()));
        let fields = def
            .inputs
            .iter()
            .map(|input| match input.kind {
                InputKind::Categorical => format!("categorical.{}", input.name),
                _ => format!("numeric.{}", input.name),
            })
            .collect();
        Ok(Self {
            def,
            steps,
            n_slots,
            numeric_inputs,
            categorical_inputs,
            by_name,
            output_slots,
            output_names,
            schema_hash,
            fields,
        })
    }

    #[must_use]
    pub fn n_outputs(&self) -> usize {
        self.output_slots.len()
    }

    #[must_use]
    pub fn n_slots(&self) -> usize {
        self.n_slots
    }

    /// Field path of input `input_idx` (an index into `def.inputs`), as the row path reports it.
    #[must_use]
    pub fn field_of(&self, input_idx: usize) -> &str {
        &self.fields[input_idx]
    }

    /// Check one numeric value against its input definition and apply the missing policy.
    /// `raw == None` is an absent or null value.
    pub fn prepare_numeric(
        &self,
        input: &InputDef,
        raw: Option<f64>,
        field: &str,
        out: &mut Vec<Violation>,
    ) -> f64 {
        let value = match raw {
            None => {
                if input.required {
                    out.push(Violation::new(
                        field,
                        ViolationKind::MissingRequired,
                        "required feature is missing",
                    ));
                    return f64::NAN;
                }
                None
            }
            Some(x) if !x.is_finite() => {
                out.push(Violation::new(
                    field,
                    ViolationKind::NotFinite,
                    format!("must be a finite number, got {}", fmt_value(x)),
                ));
                return f64::NAN;
            }
            Some(x) if input.missing_codes.contains(&x) => None,
            Some(x) => {
                if input.kind == InputKind::Integer && x.fract() != 0.0 {
                    out.push(Violation::new(
                        field,
                        ViolationKind::NotInteger,
                        format!("must be an integer, got {}", fmt_value(x)),
                    ));
                    return f64::NAN;
                }
                if input.min.is_some_and(|lo| x < lo) || input.max.is_some_and(|hi| x > hi) {
                    out.push(Violation::new(
                        field,
                        ViolationKind::OutOfRange,
                        format!(
                            "value {} is outside the allowed range [{}, {}]",
                            fmt_value(x),
                            fmt_bound(input.min),
                            fmt_bound(input.max)
                        ),
                    ));
                    return f64::NAN;
                }
                Some(x)
            }
        };
        match (value, &input.missing) {
            (Some(x), _) => x,
            (None, MissingPolicy::Constant { value }) => *value,
            (None, _) => f64::NAN,
        }
    }

    /// Check one categorical value and apply the missing policy (empty string = missing).
    pub fn prepare_categorical<'a>(
        &'a self,
        input: &'a InputDef,
        raw: Option<&'a str>,
        field: &str,
        out: &mut Vec<Violation>,
    ) -> Option<&'a str> {
        match raw {
            Some(s) if !s.is_empty() => Some(s),
            _ => {
                if input.required {
                    out.push(Violation::new(
                        field,
                        ViolationKind::MissingRequired,
                        "required feature is missing",
                    ));
                    return None;
                }
                match &input.missing {
                    MissingPolicy::Category { value } => Some(value.as_str()),
                    _ => None,
                }
            }
        }
    }

    /// Evaluate every step of one row into `scratch` (len `n_slots`) and write the model vector
    /// into `out` (len `n_outputs`). Unknown categories under an `error` policy are violations.
    pub fn eval_row(
        &self,
        row: &RowInputs<'_>,
        scratch: &mut [f64],
        out: &mut [f32],
        violations: &mut Vec<Violation>,
    ) {
        scratch[..row.numeric.len()].copy_from_slice(&row.numeric);
        for (step, first) in &self.steps {
            let first = *first;
            let v = match step {
                Step::Value(s) => scratch[s.0],
                Step::Clip(s, lo, hi) => numeric::clip(scratch[s.0], *lo, *hi),
                Step::Log1p(s) => numeric::log1p(scratch[s.0]),
                Step::Ratio(a, b, z) => numeric::ratio(scratch[a.0], scratch[b.0], *z),
                Step::Bucketize(s, b) => numeric::bucketize(scratch[s.0], b),
                Step::MissingIndicator(s) => numeric::missing_indicator(scratch[s.0]),
                Step::CategoryMissing(c) => {
                    if row.categorical[*c].is_none() {
                        1.0
                    } else {
                        0.0
                    }
                }
                Step::Difference(a, b, k) => numeric::difference(scratch[a.0], scratch[b.0], *k),
                Step::Ordinal(c, mapping, unknown) => {
                    if let Some(v) = categorical::ordinal(row.categorical[*c], mapping) {
                        v
                    } else {
                        self.unknown_category(*c, row.categorical[*c], *unknown, violations);
                        f64::NAN
                    }
                }
                Step::OneHot(c, cats, unknown) => {
                    let value = row.categorical[*c];
                    let dst = &mut scratch[first..first + cats.len()];
                    if !categorical::one_hot(value, cats, dst) {
                        self.unknown_category(*c, value, *unknown, violations);
                    }
                    continue;
                }
            };
            scratch[first] = v;
        }
        for (o, s) in out.iter_mut().zip(&self.output_slots) {
            *o = to_output(scratch[*s]);
        }
    }

    fn unknown_category(
        &self,
        c: usize,
        value: Option<&str>,
        policy: UnknownPolicy,
        violations: &mut Vec<Violation>,
    ) {
        if policy == UnknownPolicy::Error {
            let field = self.field_of(self.categorical_inputs[c]);
            if !violations.iter().any(|v| v.field == field) {
                violations.push(Violation::new(
                    field,
                    ViolationKind::UnknownCategory,
                    format!("unknown category {:?}", echo(value.unwrap_or_default())),
                ));
            }
        }
    }
}

fn fmt_bound(b: Option<f64>) -> String {
    b.map_or_else(|| "unbounded".to_string(), fmt_value)
}
