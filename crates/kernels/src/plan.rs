//! The feature plan: a normalised feature spec (built and validated by the Python side from the
//! YAML file), resolved to slots once, then evaluated per row. Both call paths evaluate rows with
//! [`Plan::eval_row`], so they agree bit for bit.

use std::borrow::Cow;
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
        /// Match categories case-insensitively ([`categorical::fold_case`]). Left out of the
        /// canonical form when false, so specs without it keep their schema hash.
        #[serde(default, skip_serializing_if = "is_false")]
        case_fold: bool,
    },
    OneHot {
        input: String,
        categories: Vec<String>,
        unknown: UnknownPolicy,
        /// As for `Ordinal`; the output columns keep the categories as written.
        #[serde(default, skip_serializing_if = "is_false")]
        case_fold: bool,
    },
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_false(b: &bool) -> bool {
    !*b
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
    /// Categorical index, mapping (keys folded when the bool is set), policy, `case_fold`.
    Ordinal(usize, BTreeMap<String, f64>, UnknownPolicy, bool),
    /// Categorical index, categories (folded when the bool is set), policy, `case_fold`.
    OneHot(usize, Vec<String>, UnknownPolicy, bool),
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
    /// What a `numeric_values` list must be built for: the first 16 hex digits of the SHA-256
    /// of the numeric input names in their order, one per line. A model that reorders, adds or
    /// drops numeric inputs has another.
    pub numeric_layout: String,
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
                    case_fold,
                } => {
                    let mapping = if *case_fold {
                        folded_mapping(&f.name, mapping)?
                    } else {
                        mapping.clone()
                    };
                    (Step::Ordinal(cat(input)?, mapping, *unknown, *case_fold), 1)
                }
                Op::OneHot {
                    input,
                    categories,
                    unknown,
                    case_fold,
                } => {
                    if categories.is_empty() {
                        return Err(KernelError::Plan(format!(
                            "feature {:?}: one_hot needs at least one category",
                            f.name
                        )));
                    }
                    let matched = if *case_fold {
                        folded_categories(&f.name, categories)?
                    } else {
                        categories.clone()
                    };
                    (
                        Step::OneHot(cat(input)?, matched, *unknown, *case_fold),
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
        let numeric_names = numeric_inputs
            .iter()
            .map(|i| def.inputs[*i].name.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let numeric_layout =
            format!("{:x}", Sha256::digest(numeric_names.as_bytes()))[..16].to_string();
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
            numeric_layout,
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
                Step::Ordinal(c, mapping, unknown, fold) => {
                    let value = row.categorical[*c];
                    let key = value.map(|v| fold_if(v, *fold));
                    if let Some(v) = categorical::ordinal(key.as_deref(), mapping) {
                        v
                    } else {
                        self.unknown_category(*c, value, *unknown, violations);
                        f64::NAN
                    }
                }
                Step::OneHot(c, cats, unknown, fold) => {
                    let value = row.categorical[*c];
                    let key = value.map(|v| fold_if(v, *fold));
                    let dst = &mut scratch[first..first + cats.len()];
                    if !categorical::one_hot(key.as_deref(), cats, dst) {
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

fn fold_if(value: &str, fold: bool) -> Cow<'_, str> {
    if fold {
        categorical::fold_case(value)
    } else {
        Cow::Borrowed(value)
    }
}

/// An ordinal mapping with its keys case-folded; keys that fold alike must agree on the code.
fn folded_mapping(
    feature: &str,
    mapping: &BTreeMap<String, f64>,
) -> Result<BTreeMap<String, f64>, KernelError> {
    let mut out = BTreeMap::new();
    for (k, v) in mapping {
        let key = categorical::fold_case(k).into_owned();
        if let Some(prev) = out.insert(key, *v) {
            if prev.to_bits() != v.to_bits() {
                return Err(KernelError::Plan(format!(
                    "feature {feature:?}: with case_fold, {k:?} and another key fold to the same \
                     category but map to {v} and {prev}"
                )));
            }
        }
    }
    Ok(out)
}

/// One-hot categories case-folded (same order); two that fold alike are an error.
fn folded_categories(feature: &str, categories: &[String]) -> Result<Vec<String>, KernelError> {
    let mut out: Vec<String> = Vec::with_capacity(categories.len());
    for c in categories {
        let key = categorical::fold_case(c).into_owned();
        if out.contains(&key) {
            return Err(KernelError::Plan(format!(
                "feature {feature:?}: with case_fold, categories {c:?} and another fold to the \
                 same category"
            )));
        }
        out.push(key);
    }
    Ok(out)
}

fn fmt_bound(b: Option<f64>) -> String {
    b.map_or_else(|| "unbounded".to_string(), fmt_value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(case_fold: Option<bool>) -> Result<Plan, KernelError> {
        let fold = case_fold.map_or(String::new(), |b| format!(r#","case_fold":{b}"#));
        Plan::from_json(&format!(
            r#"{{"name":"t","version":1,"inputs":[
            {{"name":"city","kind":"categorical","required":false,"min":null,"max":null,"missing":{{"strategy":"nan"}}}}],
            "features":[
            {{"name":"rank","op":{{"kind":"ordinal","input":"city","mapping":{{"FORTALEZA":1.0,"São Paulo":2.0}},"unknown":"error"{fold}}},"output":true}},
            {{"name":"big","op":{{"kind":"one_hot","input":"city","categories":["Fortaleza","SÃO PAULO"],"unknown":"missing"{fold}}},"output":true}}]}}"#
        ))
    }

    fn eval(p: &Plan, city: Option<&str>) -> (Vec<f32>, Vec<String>) {
        let row = RowInputs {
            numeric: vec![],
            categorical: vec![city],
        };
        let mut scratch = vec![0.0; p.n_slots()];
        let mut out = vec![0.0f32; p.n_outputs()];
        let mut v = Vec::new();
        p.eval_row(&row, &mut scratch, &mut out, &mut v);
        (
            out,
            v.into_iter().map(|v| v.description.into_owned()).collect(),
        )
    }

    #[test]
    fn case_fold_matches_any_case_and_keeps_output_names() {
        let p = plan(Some(true)).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(p.output_names, ["rank", "big=Fortaleza", "big=SÃO PAULO"]);
        for city in ["FORTALEZA", "Fortaleza", "fortaleza", "fOrTaLeZa"] {
            assert_eq!(
                eval(&p, Some(city)),
                (vec![1.0, 1.0, 0.0], vec![]),
                "{city}"
            );
        }
        for city in ["SÃO PAULO", "São Paulo", "são paulo"] {
            assert_eq!(
                eval(&p, Some(city)),
                (vec![2.0, 0.0, 1.0], vec![]),
                "{city}"
            );
        }
        // an unknown category is still unknown, reported as sent
        let (out, v) = eval(&p, Some("Recife"));
        assert!(out[0].is_nan());
        assert_eq!(v, [r#"unknown category "Recife""#]);
        let (out, v) = eval(&p, None);
        assert!(out[0].is_nan() && out[1..] == [0.0, 0.0] && v.is_empty());
    }

    #[test]
    fn without_case_fold_case_matters_and_the_schema_hash_is_unchanged() {
        let exact = plan(None).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(eval(&exact, Some("FORTALEZA")).0, [1.0, 0.0, 0.0]);
        let (out, v) = eval(&exact, Some("Fortaleza"));
        assert!(out[0].is_nan() && out[1..] == [1.0, 0.0]);
        assert_eq!(v, [r#"unknown category "Fortaleza""#]);
        // `case_fold: false` written out is the same plan as none at all (same hash), so specs
        // that predate the key keep the hash their models recorded
        let explicit = plan(Some(false)).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(explicit.schema_hash, exact.schema_hash);
        let folded = plan(Some(true)).unwrap_or_else(|e| unreachable!("{e}"));
        assert_ne!(folded.schema_hash, exact.schema_hash);
    }

    #[test]
    fn keys_that_fold_alike_must_agree() {
        let json = |mapping: &str, cats: &str| {
            format!(
                r#"{{"name":"t","version":1,"inputs":[
                {{"name":"c","kind":"categorical","required":true,"min":null,"max":null,"missing":{{"strategy":"nan"}}}}],
                "features":[
                {{"name":"o","op":{{"kind":"ordinal","input":"c","mapping":{mapping},"unknown":"error","case_fold":true}},"output":true}},
                {{"name":"h","op":{{"kind":"one_hot","input":"c","categories":{cats},"unknown":"error","case_fold":true}},"output":true}}]}}"#
            )
        };
        // the same code under two spellings is fine
        assert!(Plan::from_json(&json(r#"{"Y":1.0,"y":1.0}"#, r#"["a"]"#)).is_ok());
        let err = Plan::from_json(&json(r#"{"Y":1.0,"y":0.0}"#, r#"["a"]"#)).err();
        assert!(err.is_some_and(|e| e.to_string().contains("fold to the same")));
        let err = Plan::from_json(&json(r#"{"Y":1.0}"#, r#"["a","A"]"#)).err();
        assert!(err.is_some_and(|e| e.to_string().contains("fold to the same")));
    }
}
