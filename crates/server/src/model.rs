//! A model ready to serve, as the control plane hands it over: its feature plan, its trees, the
//! compiled library (when built), reason codes, what it needs from the feature store, and what
//! `GetModelInfo` says about it. Immutable once built; swapped as a whole.

use std::sync::Arc;

use crate::log::model_fields;
use altscore_kernels::ensemble::TreeEnsemble;
use altscore_kernels::plan::{InputSlot, Plan};
use altscore_kernels::policy::logistic;
use altscore_kernels::reasons::{Reason, Reasons};
use altscore_kernels::KernelError;
use altscore_wire::encode::model_ref;

use crate::proto;
use crate::tl2cgen::CompiledLibrary;

/// Which alias a model serves under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    Champion,
    Challenger,
}

impl Variant {
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "champion" => Some(Variant::Champion),
            "challenger" => Some(Variant::Challenger),
            _ => None,
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Variant::Champion => "champion",
            Variant::Challenger => "challenger",
        }
    }

    /// `credit.scoring.v1.Variant`.
    #[must_use]
    pub fn code(self) -> i32 {
        match self {
            Variant::Champion => proto::Variant::Champion as i32,
            Variant::Challenger => proto::Variant::Challenger as i32,
        }
    }
}

/// An explanation of one answer: the base value (the model's expected margin), one SHAP value
/// per feature, and the reason codes chosen from them.
pub struct Explanation {
    pub base_value: f64,
    pub contributions: Vec<f64>,
    pub reasons: Vec<Reason>,
}

/// Which implementation computes the PD (`ALTSCORE_PREDICTOR`). Both pass the parity gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Predictor {
    /// The native tree evaluator (`altscore-kernels`): margins equal to `XGBoost`'s.
    Native,
    /// The TL2cgen-compiled library.
    Tl2cgen,
}

impl Predictor {
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "native" => Some(Predictor::Native),
            "tl2cgen" => Some(Predictor::Tl2cgen),
            _ => None,
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Predictor::Native => "native",
            Predictor::Tl2cgen => "tl2cgen",
        }
    }
}

/// One entity input: looked up by applicant id in the feature store.
#[derive(Debug, Clone)]
pub struct EntityInput {
    /// Index into the spec's inputs.
    pub input: usize,
    pub name: String,
    pub slot: InputSlot,
    /// Whether a request may send it itself (then the request's value wins).
    pub overridable: bool,
}

/// What a model needs from the online feature store.
#[derive(Debug, Clone)]
pub struct EntityLookup {
    pub namespace: String,
    pub inputs: Vec<EntityInput>,
    /// Whether the model may score without the store (answers flagged degraded).
    pub optional: bool,
}

impl EntityLookup {
    /// Resolve entity input names against `plan`.
    pub fn new(
        plan: &Plan,
        namespace: String,
        inputs: &[(String, bool)],
        optional: bool,
    ) -> Result<Self, KernelError> {
        let mut resolved = Vec::with_capacity(inputs.len());
        for (name, overridable) in inputs {
            let slot = *plan.by_name.get(name).ok_or_else(|| {
                KernelError::Plan(format!("entity input {name:?} is not an input of the spec"))
            })?;
            let input = match slot {
                InputSlot::Numeric(i) => plan.numeric_inputs[i],
                InputSlot::Categorical(i) => plan.categorical_inputs[i],
            };
            resolved.push(EntityInput {
                input,
                name: name.clone(),
                slot,
                overridable: *overridable,
            });
        }
        if namespace.is_empty() || namespace.contains(':') {
            return Err(KernelError::Plan(format!(
                "feature store namespace {namespace:?} must be non-empty, without ':'"
            )));
        }
        Ok(Self {
            namespace,
            inputs: resolved,
            optional,
        })
    }
}

/// A model as the control plane describes it.
pub struct ModelParts {
    pub name: String,
    pub version: String,
    pub variant: Variant,
    pub plan: Arc<Plan>,
    pub ensemble: Arc<TreeEnsemble>,
    pub compiled: Option<Arc<CompiledLibrary>>,
    pub reasons: Reasons,
    pub entity: Option<EntityLookup>,
    /// What `GetModelInfo` says about it (its `model` field is set here).
    pub info: proto::ModelInfo,
}

/// A model being served.
pub struct ServingModel {
    pub name: String,
    pub version: String,
    pub variant: Variant,
    pub plan: Arc<Plan>,
    pub ensemble: Arc<TreeEnsemble>,
    pub compiled: Option<Arc<CompiledLibrary>>,
    pub predictor: Predictor,
    pub reasons: Reasons,
    pub entity: Option<EntityLookup>,
    pub info: proto::ModelInfo,
    /// The encoded `ModelRef` of every answer.
    pub model_ref: Vec<u8>,
    /// `,"model_name":..,"variant":..,"model_version":..,"predictor":..` of every
    /// prediction-log line ([`model_fields`]).
    pub log_fields: Vec<u8>,
}

impl ServingModel {
    pub fn new(parts: ModelParts, predictor: Predictor) -> Result<Self, KernelError> {
        let ModelParts {
            name,
            version,
            variant,
            plan,
            ensemble,
            compiled,
            reasons,
            entity,
            mut info,
        } = parts;
        if plan.n_outputs() != ensemble.n_features() {
            return Err(KernelError::Shape(format!(
                "the plan makes {} features, the model takes {}",
                plan.n_outputs(),
                ensemble.n_features()
            )));
        }
        if predictor == Predictor::Tl2cgen && compiled.is_none() {
            return Err(KernelError::Model(
                "the tl2cgen predictor needs the compiled library".into(),
            ));
        }
        info.model = Some(proto::ModelRef {
            name: name.clone(),
            version: version.clone(),
            variant: variant.code(),
        });
        let log_fields = model_fields(&name, variant.name(), &version, predictor.name());
        Ok(Self {
            model_ref: model_ref(&name, &version, variant.code()),
            log_fields,
            name,
            version,
            variant,
            plan,
            ensemble,
            compiled,
            predictor,
            reasons,
            entity,
            info,
        })
    }

    #[must_use]
    pub fn feature_names(&self) -> &[String] {
        &self.plan.output_names
    }

    /// Exact `TreeSHAP` of each row of `x` (row-major, NaN = missing) and its reason codes: what
    /// an answer with `explain` carries, and what a replay compares.
    pub fn explain(&self, x: &[f32], n_rows: usize) -> Result<Vec<Explanation>, KernelError> {
        let k = self.plan.n_outputs();
        let phi = self.ensemble.shap(x, n_rows, k)?;
        let base_value = self.ensemble.expected_margin();
        Ok(phi
            .chunks_exact(k.max(1))
            .map(|row| {
                let contributions = row.to_vec();
                let reasons = self.reasons.reasons(&contributions);
                Explanation {
                    base_value,
                    contributions,
                    reasons,
                }
            })
            .collect())
    }

    /// The reason codes of an explanation, most adverse first.
    pub fn reason_codes<'a>(&'a self, e: &'a Explanation) -> impl Iterator<Item = &'a str> + 'a {
        let groups = self.reasons.groups();
        e.reasons.iter().map(|r| groups[r.group].code.as_str())
    }

    /// PD of each row of `x` (row-major, NaN = missing) by this model's predictor.
    pub fn predict(&self, x: &[f32], n_rows: usize) -> Result<Vec<f64>, KernelError> {
        self.predict_with(self.predictor, x, n_rows)
    }

    /// PD of each row by a given predictor (the parity gate checks both).
    pub fn predict_with(
        &self,
        predictor: Predictor,
        x: &[f32],
        n_rows: usize,
    ) -> Result<Vec<f64>, KernelError> {
        let k = self.plan.n_outputs();
        match (predictor, &self.compiled) {
            (Predictor::Tl2cgen, Some(lib)) => {
                if x.len() != n_rows * k {
                    return Err(KernelError::Shape(format!(
                        "x has {} values, expected {n_rows} x {k}",
                        x.len()
                    )));
                }
                Ok(lib.predict(x, false))
            }
            (Predictor::Tl2cgen, None) => Err(KernelError::Model(
                "no compiled library for the tl2cgen predictor".into(),
            )),
            (Predictor::Native, _) => Ok(self
                .ensemble
                .predict_margin(x, n_rows, k)?
                .into_iter()
                .map(logistic)
                .collect()),
        }
    }
}
