//! The data plane's one scoring path. `Score`, `ScoreBatch` and every `ScoreStream` micro-batch
//! go through [`Plane::score`]:
//!
//! 1. take the served models once (a swap never changes a call half-way);
//! 2. route each request (the sticky hash of its applicant id, or request id) to the champion or
//!    the challenger;
//! 3. per model: one feature-store round trip for the group's applicants (when the model has
//!    entity inputs), the request's values merged with the stored ones, every row read and
//!    validated by the kernels into one feature matrix;
//! 4. all or nothing (unary, batch) or per item (stream): the violations, or the answers: PD by
//!    the model's predictor, score and decision by the policy, exact `TreeSHAP` and reason codes
//!    for requests that asked;
//! 5. the served predictions go to the prediction log; in shadow mode the challenger scores the
//!    same requests off the request path and its predictions are logged as not served.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use altscore_kernels::fmt::{echo, push_py_float};
use altscore_kernels::plan::InputSlot;
use altscore_kernels::policy::Decision;
use altscore_kernels::routing::{Mode, Routing};
use altscore_kernels::row::RawRow;
use altscore_kernels::{Violation, ViolationKind};
use altscore_wire::encode::{
    put_batch_item, put_stream_answer, put_stream_error, Answer, ExplanationOut, ReasonOut,
};
use altscore_wire::{parse_batch, parse_request, RequestView};
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use prost::Message as _;
use tokio::sync::Semaphore;

use crate::auth::Caller;
use crate::config::Config;
use crate::errors::Failure;
use crate::log::{
    push_outcome, push_prediction, unix_now, OutcomeLine, PredictionLine, PredictionSink, RecordLog,
};
use crate::metrics::Metrics;
use crate::model::{EntityLookup, Explanation, ServingModel};
use crate::outcomes::{judge, Ledger, Reported, Verdict};
use crate::proto;
pub use crate::recent_ids::RecentIds;
use crate::store::{FeatureStore, StoredRow, StoredValue};

/// What is served, swapped as one value.
pub struct Variants {
    pub champion: Arc<ServingModel>,
    pub challenger: Option<Arc<ServingModel>>,
    pub routing: Routing,
}

impl Variants {
    /// The model whose answer the caller gets for `key` (applicant id, else request id).
    #[must_use]
    pub fn answering(&self, key: &str) -> &Arc<ServingModel> {
        match &self.challenger {
            Some(c) if self.routing.challenger_answers(key) => c,
            _ => &self.champion,
        }
    }

    /// In shadow mode, the model that scores every request beside the champion.
    #[must_use]
    pub fn shadow(&self) -> Option<&Arc<ServingModel>> {
        self.challenger
            .as_ref()
            .filter(|_| self.routing.mode == Mode::Shadow)
    }

    pub fn models(&self) -> impl Iterator<Item = &Arc<ServingModel>> {
        std::iter::once(&self.champion).chain(self.challenger.iter())
    }
}

/// One applicant's answer.
pub struct Scored {
    pub model: Arc<ServingModel>,
    pub pd: f64,
    pub score: i32,
    pub decision: Decision,
    /// The group's feature matrix (row-major, the model's `n_outputs` columns) and this
    /// answer's row in it: the input vector as served, for the log.
    pub features: Arc<Vec<f32>>,
    pub row: usize,
    /// Entity inputs that took the missing policy (indexes into the model's entity inputs).
    pub defaulted: Vec<usize>,
    pub degraded: bool,
    pub explanation: Option<Explanation>,
}

/// How an answer is written.
#[derive(Clone, Copy)]
pub enum Shape {
    /// A `ScoreResponse`.
    Response,
    /// One result of a `ScoreBatchResponse`.
    BatchItem,
    /// A `ScoreStreamResponse`.
    Stream,
}

impl Scored {
    /// Append this answer to `out` for `request_id`.
    pub fn put(&self, out: &mut Vec<u8>, request_id: &str, shape: Shape) {
        let model = &self.model;
        let names: Vec<&str> = match &model.entity {
            Some(e) => self
                .defaulted
                .iter()
                .map(|j| e.inputs[*j].name.as_str())
                .collect(),
            None => Vec::new(),
        };
        let groups = model.reasons.groups();
        let reasons: Vec<ReasonOut<'_>> = self
            .explanation
            .as_ref()
            .map(|e| {
                e.reasons
                    .iter()
                    .map(|r| ReasonOut {
                        code: &groups[r.group].code,
                        text: &groups[r.group].text,
                        contribution: r.contribution,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let answer = Answer {
            request_id,
            pd: self.pd,
            score: self.score,
            decision: self.decision.code(),
            model: &model.model_ref,
            defaulted: &names,
            degraded: self.degraded,
            explanation: self.explanation.as_ref().map(|e| ExplanationOut {
                base_value: e.base_value,
                features: model.feature_names(),
                contributions: &e.contributions,
                reasons: &reasons,
            }),
        };
        match shape {
            Shape::Response => answer.put(out),
            Shape::BatchItem => put_batch_item(out, &answer),
            Shape::Stream => put_stream_answer(out, request_id, &answer),
        }
    }
}

impl Scored {
    /// This answer's prediction-log line (see [`push_prediction`]); `ts`: the call's time,
    /// already formatted.
    fn push_log_line(&self, out: &mut Vec<u8>, ts: &[u8], view: &RequestView<'_>, served: bool) {
        let model = &self.model;
        let k = model.plan.n_outputs();
        let line = PredictionLine {
            request_id: view.request_id,
            applicant_id: view.applicant.applicant_id,
            model: &model.log_fields,
            pd: self.pd,
            served,
            score: self.score,
            decision: self.decision.name(),
            degraded: self.degraded,
            features: self
                .features
                .get(self.row * k..(self.row + 1) * k)
                .unwrap_or_default(),
        };
        let reasons = self.explanation.iter().flat_map(|e| model.reason_codes(e));
        let imputed = model.entity.iter().flat_map(|e| {
            self.defaulted
                .iter()
                .filter_map(|j| e.inputs.get(*j).map(|i| i.name.as_str()))
        });
        push_prediction(out, ts, &line, reasons, imputed);
    }
}

/// `DEADLINE_EXCEEDED` once `deadline` has passed.
pub fn check_deadline(deadline: Option<Instant>) -> Result<(), Failure> {
    match deadline {
        Some(d) if Instant::now() >= d => Err(Failure::DeadlineExceeded(
            "the call's deadline passed before its answer was ready".into(),
        )),
        _ => Ok(()),
    }
}

/// Longest request or applicant id accepted, in bytes (UTF-8). Ids are logged with every
/// prediction, so they are bounded like everything else a client can make the server store.
pub const MAX_ID_BYTES: usize = 256;

fn too_long(field: &str, id: &str) -> Option<Violation> {
    (id.len() > MAX_ID_BYTES).then(|| {
        Violation::new(
            field,
            ViolationKind::IdTooLong,
            format!("{} bytes exceed the limit of {MAX_ID_BYTES}", id.len()),
        )
    })
}

/// The id violation of one request, if any (`seen`: ids already used in the batch or stream):
/// an empty or overlong request id, an overlong applicant id, or a repeated request id.
#[must_use]
pub fn id_violation(
    request_id: &str,
    applicant_id: &str,
    seen: Option<&mut RecentIds>,
) -> Option<Violation> {
    if request_id.is_empty() {
        return Some(Violation::new(
            "request_id",
            ViolationKind::EmptyId,
            "must not be empty",
        ));
    }
    if let Some(v) = too_long("request_id", request_id)
        .or_else(|| too_long("applicant.applicant_id", applicant_id))
    {
        return Some(v);
    }
    let repeated = seen.is_some_and(|seen| !seen.insert(request_id));
    repeated.then(|| {
        Violation::new(
            "request_id",
            ViolationKind::DuplicateId,
            format!("duplicate request id '{}'", echo(request_id)),
        )
    })
}

/// The requests of one model: their feature matrix and what went wrong per request.
struct Prepared {
    /// Row-major, `k` columns; rows with violations are all NaN.
    matrix: Vec<f32>,
    violations: Vec<Vec<Violation>>,
    defaulted: Vec<Vec<usize>>,
    degraded: bool,
}

/// How [`Plane::score`] treats bad requests.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode2 {
    /// Any bad request fails the call; fields named as in a `ScoreRequest`.
    One,
    /// Any bad request fails the call; fields named `requests[i].<field>`.
    Batch,
    /// Each request gets its own answer or error.
    Each,
}

/// The request messages a shadow scoring re-reads (the call's bytes outlive the call).
pub enum ShadowInput {
    One(Bytes),
    Batch(Bytes),
    Stream(Vec<Bytes>),
}

/// A model that failed on rows it had accepted: logged with the model's identity and the first
/// row's request id; the caller gets INTERNAL.
fn model_failure(
    model: &ServingModel,
    what: &str,
    error: &dyn std::fmt::Display,
    request_id: &str,
    rows: usize,
) -> Failure {
    log::error!(
        model_name = model.name.as_str(),
        model_version = model.version.as_str(),
        variant = model.variant.name(),
        request_id,
        rows;
        "{what} failed ({} v{}): {error}", model.name, model.version
    );
    Failure::Internal
}

thread_local! {
    /// Each runtime thread's buffers for the log lines of one call (time, lines): reused, so
    /// logging a prediction allocates nothing.
    static LOG_LINES: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// The largest line buffer a thread keeps between calls (a 64-row batch needs about 13 KB).
const MAX_KEPT_LOG_BYTES: usize = 64 << 10;

pub struct Plane {
    pub config: Config,
    variants: ArcSwapOption<Variants>,
    pub store: FeatureStore,
    pub predictions: Option<Arc<dyn PredictionSink>>,
    pub outcomes: RecordLog,
    /// The outcome recorded for each request (the conflict check of `ReportOutcome`).
    pub ledger: Ledger,
    /// Held from the check to the write of one `ReportOutcome` (this process).
    outcome_lock: std::sync::Mutex<()>,
    pub metrics: Arc<Metrics>,
    shadow_permits: Arc<Semaphore>,
    /// `credit_scoring_applicants_scored_total` of each served model (keyed by its address),
    /// resolved at the swap rather than per call.
    applicants: std::sync::RwLock<HashMap<usize, prometheus::IntCounter>>,
}

fn model_key(model: &Arc<ServingModel>) -> usize {
    Arc::as_ptr(model) as usize
}

impl Plane {
    #[must_use]
    pub fn new(
        config: Config,
        store: FeatureStore,
        predictions: Option<Arc<dyn PredictionSink>>,
        outcomes: RecordLog,
        ledger: Ledger,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            shadow_permits: Arc::new(Semaphore::new(config.max_shadow_in_flight.max(1))),
            config,
            variants: ArcSwapOption::empty(),
            store,
            predictions,
            outcomes,
            ledger,
            outcome_lock: std::sync::Mutex::new(()),
            metrics,
            applicants: std::sync::RwLock::new(HashMap::new()),
        }
    }

    /// What is served now (None before the first champion).
    #[must_use]
    pub fn variants(&self) -> Option<Arc<Variants>> {
        self.variants.load_full()
    }

    /// Serve `variants` from now on: calls in flight finish on the models they started with.
    pub fn set_variants(&self, variants: Option<Variants>) {
        let old = self.variants.swap(variants.map(Arc::new));
        let m = &self.metrics;
        if let Some(old) = old {
            for model in old.models() {
                let _ = m.model_info.remove_label_values(&[
                    &model.name,
                    &model.version,
                    model.variant.name(),
                    &model.plan.schema_hash,
                ]);
            }
        }
        let mut counters = HashMap::new();
        if let Some(new) = self.variants() {
            for model in new.models() {
                counters.insert(
                    model_key(model),
                    m.applicants
                        .with_label_values(&[&model.version, model.variant.name()]),
                );
                m.model_info
                    .with_label_values(&[
                        &model.name,
                        &model.version,
                        model.variant.name(),
                        &model.plan.schema_hash,
                    ])
                    .set(1);
            }
        }
        *self
            .applicants
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = counters;
    }

    /// What is served now; `UNAVAILABLE` before the first champion.
    pub fn current(&self) -> Result<Arc<Variants>, Failure> {
        self.variants()
            .ok_or_else(|| Failure::Unavailable("no model is loaded yet".into()))
    }

    /// `GetModelInfo`: every model served and the score policy.
    #[must_use]
    pub fn model_info(&self) -> proto::GetModelInfoResponse {
        let p = &self.config.policy;
        proto::GetModelInfoResponse {
            models: self
                .variants()
                .map(|v| v.models().map(|m| m.info.clone()).collect())
                .unwrap_or_default(),
            policy: Some(proto::ScorePolicy {
                base_score: p.base_score,
                base_odds: p.base_odds,
                pdo: p.pdo,
                approve_below: p.approve_below,
                decline_from: p.decline_from,
            }),
        }
    }

    /// The one scoring path (see the module docs). `id_bad`: each request's id violation.
    /// Returns the served models and one result per request; in `One` / `Batch` mode a bad
    /// request, or a required feature store that failed, fails the whole call instead.
    pub async fn score(
        &self,
        views: &[RequestView<'_>],
        id_bad: Vec<Option<Violation>>,
        mode: Mode2,
    ) -> Result<(Arc<Variants>, Vec<Result<Scored, Failure>>), Failure> {
        let variants = self.current()?;
        let n = views.len();
        let mut groups: Vec<(Arc<ServingModel>, Vec<usize>)> = Vec::with_capacity(2);
        for (i, v) in views.iter().enumerate() {
            let key = if v.applicant.applicant_id.is_empty() {
                v.request_id
            } else {
                v.applicant.applicant_id
            };
            let model = variants.answering(key);
            match groups.iter_mut().find(|(m, _)| Arc::ptr_eq(m, model)) {
                Some((_, idx)) => idx.push(i),
                None => groups.push((model.clone(), vec![i])),
            }
        }
        let mut violations: Vec<Vec<Violation>> = id_bad
            .into_iter()
            .map(|v| v.into_iter().collect())
            .collect();
        violations.resize_with(n, Vec::new);
        let mut results: Vec<Option<Result<Scored, Failure>>> = (0..n).map(|_| None).collect();
        let mut prepared = Vec::with_capacity(groups.len());
        for (model, idx) in groups {
            match self.prepare(&model, views, &idx).await {
                Ok(p) => prepared.push((model, idx, p)),
                Err(failure) => {
                    if mode != Mode2::Each {
                        return Err(failure);
                    }
                    for i in idx {
                        results[i] = Some(Err(failure.clone()));
                    }
                }
            }
        }
        for (_, idx, p) in &mut prepared {
            for (j, i) in idx.iter().enumerate() {
                violations[*i].append(&mut p.violations[j]);
            }
        }
        if mode != Mode2::Each && violations.iter().any(|v| !v.is_empty()) {
            let all = violations
                .into_iter()
                .enumerate()
                .flat_map(|(i, v)| {
                    let prefix = if mode == Mode2::Batch {
                        format!("requests[{i}].")
                    } else {
                        String::new()
                    };
                    v.into_iter().map(move |x| x.prefixed(&prefix))
                })
                .collect();
            return Err(Failure::Invalid(all));
        }
        for (model, idx, p) in prepared {
            let good: Vec<usize> = (0..idx.len())
                .filter(|j| violations[idx[*j]].is_empty())
                .collect();
            for (j, i) in idx.iter().enumerate() {
                if !violations[*i].is_empty() {
                    results[*i] = Some(Err(Failure::Invalid(std::mem::take(&mut violations[*i]))));
                }
                let _ = j;
            }
            if good.is_empty() {
                continue;
            }
            match self.answer(&model, views, &idx, &good, p, true) {
                Ok(answers) => {
                    for (j, scored) in good.iter().zip(answers) {
                        results[idx[*j]] = Some(Ok(scored));
                    }
                }
                Err(failure) => {
                    if mode != Mode2::Each {
                        return Err(failure);
                    }
                    for j in &good {
                        results[idx[*j]] = Some(Err(failure.clone()));
                    }
                }
            }
        }
        let results = results
            .into_iter()
            .map(|r| r.unwrap_or(Err(Failure::Internal)))
            .collect();
        Ok((variants, results))
    }

    /// Look up, merge and validate the requests `idx` of `views` for `model`.
    async fn prepare(
        &self,
        model: &ServingModel,
        views: &[RequestView<'_>],
        idx: &[usize],
    ) -> Result<Prepared, Failure> {
        let mut stored: HashMap<&str, StoredRow> = HashMap::new();
        let mut degraded = false;
        if let Some(lookup) = &model.entity {
            let mut ids: Vec<&str> = Vec::with_capacity(idx.len());
            let mut unique = HashSet::with_capacity(idx.len());
            for i in idx {
                let id = views[*i].applicant.applicant_id;
                if !id.is_empty() && unique.insert(id) {
                    ids.push(id);
                }
            }
            if !ids.is_empty() {
                let started = Instant::now();
                let found = self
                    .store
                    .get_many(&lookup.namespace, &ids, self.config.store_timeout)
                    .await;
                self.metrics
                    .store_latency
                    .observe(started.elapsed().as_secs_f64());
                match found {
                    Ok(rows) => {
                        for (id, row) in ids.into_iter().zip(rows) {
                            if let Some(row) = row {
                                stored.insert(id, row);
                            }
                        }
                    }
                    Err(e) => {
                        self.metrics.store_failures.inc();
                        if !lookup.optional {
                            return Err(Failure::Unavailable(e.to_string()));
                        }
                        degraded = true;
                    }
                }
            }
        }
        let plan = &model.plan;
        let k = plan.n_outputs();
        let mut scratch = vec![0.0; plan.n_slots()];
        let mut matrix = vec![0.0f32; idx.len() * k];
        let mut violations = Vec::with_capacity(idx.len());
        let mut defaulted = Vec::with_capacity(idx.len());
        for (j, i) in idx.iter().enumerate() {
            let view = &views[*i];
            let Ok(mut raw) = plan.read(&view.applicant);
            let mut bad = Vec::new();
            let layout = view.applicant.numeric_values_layout;
            if view.applicant.has_numeric_values
                && !layout.is_empty()
                && layout != plan.numeric_layout
            {
                bad.push(Violation::new(
                    "applicant.numeric_values_layout",
                    ViolationKind::NumericLayoutMismatch,
                    format!(
                        "numeric_values were built for layout '{}'; {} v{} reads layout '{}' \
                         (GetModelInfo): rebuild them in its input order",
                        echo(layout),
                        model.name,
                        model.version,
                        plan.numeric_layout
                    ),
                ));
            }
            let mut missing = Vec::new();
            if let Some(lookup) = &model.entity {
                let id = view.applicant.applicant_id;
                missing = merge(lookup, &mut raw, id, stored.get(id), &mut bad);
            }
            let row = plan.evaluate(raw, &mut scratch, &mut matrix[j * k..(j + 1) * k]);
            bad.extend(row.into_iter().map(|v| v.prefixed("applicant.")));
            violations.push(bad);
            defaulted.push(missing);
        }
        Ok(Prepared {
            matrix,
            violations,
            defaulted,
            degraded,
        })
    }

    /// Answers of the good rows (`good`: positions in `idx`) of a prepared group; `served`:
    /// the caller gets them (counted), else a shadow scoring.
    fn answer(
        &self,
        model: &Arc<ServingModel>,
        views: &[RequestView<'_>],
        idx: &[usize],
        good: &[usize],
        mut p: Prepared,
        served: bool,
    ) -> Result<Vec<Scored>, Failure> {
        let k = model.plan.n_outputs();
        let x: Vec<f32> = if good.len() == idx.len() {
            std::mem::take(&mut p.matrix)
        } else {
            good.iter()
                .flat_map(|j| p.matrix[j * k..(j + 1) * k].iter().copied())
                .collect()
        };
        // The first row's request id, for the log lines below.
        let request_id = good.first().map_or("", |j| views[idx[*j]].request_id);
        let pds = model
            .predict(&x, good.len())
            .map_err(|e| model_failure(model, "prediction", &e, request_id, good.len()))?;
        let explain: Vec<usize> = (0..good.len())
            .filter(|g| views[idx[good[*g]]].explain)
            .collect();
        let mut explained: HashMap<usize, Explanation> = HashMap::new();
        if !explain.is_empty() {
            let rows: Vec<f32> = explain
                .iter()
                .flat_map(|g| x[g * k..(g + 1) * k].iter().copied())
                .collect();
            let explanations = model
                .explain(&rows, explain.len())
                .map_err(|e| model_failure(model, "explanation", &e, request_id, explain.len()))?;
            explained.extend(explain.iter().copied().zip(explanations));
        }
        let policy = &self.config.policy;
        let features = Arc::new(x);
        let out: Vec<Scored> = pds
            .into_iter()
            .enumerate()
            .map(|(g, pd)| Scored {
                model: model.clone(),
                pd,
                score: policy.score(pd),
                decision: policy.decision(pd),
                features: features.clone(),
                row: g,
                defaulted: std::mem::take(&mut p.defaulted[good[g]]),
                degraded: p.degraded,
                explanation: explained.remove(&g),
            })
            .collect();
        if !served {
            return Ok(out);
        }
        let counter = self
            .applicants
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&model_key(model))
            .cloned();
        match counter {
            Some(c) => c.inc_by(out.len() as u64),
            None => self
                .metrics
                .applicants
                .with_label_values(&[&model.version, model.variant.name()])
                .inc_by(out.len() as u64),
        }
        if p.degraded {
            self.metrics.degraded.inc_by(out.len() as u64);
        }
        Ok(out)
    }

    /// Log the answered requests (`served`: the caller got them; false for shadow scorings).
    pub fn log(
        &self,
        views: &[RequestView<'_>],
        results: &[Result<Scored, Failure>],
        served: bool,
    ) {
        let Some(sink) = &self.predictions else {
            return;
        };
        LOG_LINES.with_borrow_mut(|buffers| {
            let (ts, lines) = buffers;
            ts.clear();
            push_py_float(ts, unix_now());
            lines.clear();
            let mut count = 0;
            for (view, result) in views.iter().zip(results) {
                if let Ok(s) = result {
                    s.push_log_line(lines, ts, view, served);
                    count += 1;
                }
            }
            if count > 0 {
                sink.submit(lines, count);
            }
            if lines.capacity() > MAX_KEPT_LOG_BYTES {
                *lines = Vec::new(); // a big batch's buffer is not kept by the thread
            }
        });
    }

    /// In shadow mode, score what was answered (`answered`: indexes) with the challenger too,
    /// off the request path; its predictions are logged as not served, its failures counted.
    pub fn shadow(self: &Arc<Self>, variants: &Variants, input: ShadowInput, answered: Vec<usize>) {
        let Some(model) = variants.shadow() else {
            return;
        };
        if answered.is_empty() {
            return;
        }
        let Ok(permit) = self.shadow_permits.clone().try_acquire_owned() else {
            self.metrics.shadow_failures.inc_by(answered.len() as u64);
            return;
        };
        let plane = self.clone();
        let model = model.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let n = answered.len() as u64;
            let failed = plane.run_shadow(&model, &input, &answered).await;
            if failed > 0 {
                plane.metrics.shadow_failures.inc_by(failed.min(n));
            }
        });
    }

    /// The number of shadow scorings that failed.
    async fn run_shadow(
        &self,
        model: &Arc<ServingModel>,
        input: &ShadowInput,
        answered: &[usize],
    ) -> u64 {
        let parsed: Vec<RequestView<'_>> = match input {
            ShadowInput::One(b) => parse_request(b).into_iter().collect(),
            ShadowInput::Batch(b) => parse_batch(b, usize::MAX).unwrap_or_default(),
            ShadowInput::Stream(messages) => messages
                .iter()
                .filter_map(|m| parse_request(m).ok())
                .collect(),
        };
        let views: Vec<RequestView<'_>> = answered
            .iter()
            .filter_map(|i| parsed.get(*i).cloned())
            .collect();
        let idx: Vec<usize> = (0..views.len()).collect();
        let n = answered.len() as u64;
        let Ok(prepared) = self.prepare(model, &views, &idx).await else {
            return n;
        };
        let good: Vec<usize> = (0..idx.len())
            .filter(|j| prepared.violations[*j].is_empty())
            .collect();
        if good.is_empty() {
            return n;
        }
        let Ok(answers) = self.answer(model, &views, &idx, &good, prepared, false) else {
            return n;
        };
        let answered_views: Vec<RequestView<'_>> = good.iter().map(|j| views[*j].clone()).collect();
        let results: Vec<Result<Scored, Failure>> = answers.into_iter().map(Ok).collect();
        self.log(&answered_views, &results, false);
        n - good.len() as u64
    }

    /// `Score`: one request's bytes to the `ScoreResponse`'s.
    /// Past `deadline` (the call's), the answer is not given, so it is not logged as served
    /// either (nor shadowed).
    pub async fn score_one(
        self: &Arc<Self>,
        bytes: Bytes,
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>, Failure> {
        let view = parse_request(&bytes).map_err(|e| Failure::malformed("ScoreRequest", e))?;
        let id_bad = vec![id_violation(
            view.request_id,
            view.applicant.applicant_id,
            None,
        )];
        let views = [view];
        let (variants, results) = self.score(&views, id_bad, Mode2::One).await?;
        let mut out = Vec::with_capacity(128);
        let Some(Ok(scored)) = results.first() else {
            return Err(Failure::Internal);
        };
        scored.put(&mut out, views[0].request_id, Shape::Response);
        check_deadline(deadline)?;
        self.log(&views, &results, true);
        drop(results);
        self.shadow(&variants, ShadowInput::One(bytes.clone()), vec![0]);
        Ok(out)
    }

    /// `ScoreBatch`: all or nothing.
    pub async fn score_batch(
        self: &Arc<Self>,
        bytes: Bytes,
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>, Failure> {
        self.score_batch_with(bytes, deadline, |views, answers| {
            let mut out = Vec::with_capacity(views.len() * 96);
            for (view, scored) in views.iter().zip(answers) {
                scored.put(&mut out, view.request_id, Shape::BatchItem);
            }
            out
        })
        .await
    }

    /// The batch path: a `ScoreBatchRequest`'s bytes checked, scored, answered by `answer`
    /// (given every request and its answer, in order), logged and shadowed. `ScoreBatch` writes
    /// a `ScoreBatchResponse`; the Open Inference Protocol's `ModelInfer` encodes its tensors as
    /// such a request and writes tensors ([`crate::oip`]).
    pub async fn score_batch_with<T>(
        self: &Arc<Self>,
        bytes: Bytes,
        deadline: Option<Instant>,
        answer: impl FnOnce(&[RequestView<'_>], &[&Scored]) -> T,
    ) -> Result<T, Failure> {
        let max = self.config.max_batch;
        let views = parse_batch(&bytes, max).map_err(|e| match e {
            Ok(n) => Failure::Invalid(vec![Violation::new(
                "requests",
                ViolationKind::BadBatchSize,
                format!("{n} requests exceed the limit of {max}"),
            )]),
            Err(wire) => Failure::malformed("ScoreBatchRequest", wire),
        })?;
        if views.is_empty() {
            return Err(Failure::Invalid(vec![Violation::new(
                "requests",
                ViolationKind::BadBatchSize,
                "must hold at least one request",
            )]));
        }
        let mut seen = RecentIds::new(views.len());
        let id_bad = views
            .iter()
            .map(|v| id_violation(v.request_id, v.applicant.applicant_id, Some(&mut seen)))
            .collect();
        let (variants, results) = self.score(&views, id_bad, Mode2::Batch).await?;
        let answers: Vec<&Scored> = results
            .iter()
            .map(|r| r.as_ref().map_err(|_| Failure::Internal))
            .collect::<Result<_, _>>()?;
        let out = answer(&views, &answers);
        drop(answers);
        check_deadline(deadline)?;
        self.log(&views, &results, true);
        let n = results.len();
        drop(results);
        self.shadow(
            &variants,
            ShadowInput::Batch(bytes.clone()),
            (0..n).collect(),
        );
        Ok(out)
    }

    /// One `ScoreStream` micro-batch: one encoded `ScoreStreamResponse` per message, in order,
    /// each with its status code (for the metrics).
    pub async fn score_stream_batch(
        self: &Arc<Self>,
        messages: Vec<Bytes>,
        seen: &mut RecentIds,
    ) -> Vec<(Vec<u8>, tonic::Code)> {
        let parsed: Vec<Result<RequestView<'_>, Failure>> = messages
            .iter()
            .map(|m| parse_request(m).map_err(|e| Failure::malformed("ScoreRequest", e)))
            .collect();
        let ok: Vec<usize> = (0..parsed.len()).filter(|i| parsed[*i].is_ok()).collect();
        let views: Vec<RequestView<'_>> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().cloned())
            .collect();
        let id_bad = views
            .iter()
            .map(|v| id_violation(v.request_id, v.applicant.applicant_id, Some(seen)))
            .collect();
        let scored = self.score(&views, id_bad, Mode2::Each).await;
        let mut out = Vec::with_capacity(parsed.len());
        let mut results = match scored {
            Ok((variants, results)) => {
                self.log(&views, &results, true);
                let answered: Vec<usize> = results
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.is_ok())
                    .map(|(i, _)| ok[i])
                    .collect();
                self.shadow(&variants, ShadowInput::Stream(messages.clone()), answered);
                results
            }
            Err(failure) => views.iter().map(|_| Err(failure.clone())).collect(),
        }
        .into_iter();
        for p in &parsed {
            let mut buf = Vec::with_capacity(128);
            let (request_id, result) = match p {
                Ok(view) => (
                    view.request_id,
                    results.next().unwrap_or(Err(Failure::Internal)),
                ),
                Err(f) => ("", Err(f.clone())),
            };
            match result {
                Ok(s) => {
                    s.put(&mut buf, request_id, Shape::Stream);
                    out.push((buf, tonic::Code::Ok));
                }
                Err(f) => {
                    put_stream_error(&mut buf, request_id, &f.to_status_proto().encode_to_vec());
                    out.push((buf, f.code()));
                }
            }
        }
        out
    }

    /// `ReportOutcome`: all or nothing; OK means every outcome is in the log file.
    pub async fn record_outcomes(
        self: &Arc<Self>,
        request: proto::ReportOutcomeRequest,
        caller: &Caller,
    ) -> Result<proto::ReportOutcomeResponse, Failure> {
        let outcomes = request.outcomes;
        let max = self.config.max_batch;
        if outcomes.is_empty() {
            return Err(Failure::Invalid(vec![Violation::new(
                "outcomes",
                ViolationKind::BadBatchSize,
                "must hold at least one outcome",
            )]));
        }
        if outcomes.len() > max {
            return Err(Failure::Invalid(vec![Violation::new(
                "outcomes",
                ViolationKind::BadBatchSize,
                format!("{} outcomes exceed the limit of {max}", outcomes.len()),
            )]));
        }
        let mut bad = Vec::new();
        for (i, o) in outcomes.iter().enumerate() {
            if o.request_id.is_empty() && o.applicant_id.is_empty() {
                bad.push(Violation::new(
                    format!("outcomes[{i}]"),
                    ViolationKind::EmptyId,
                    "needs a request_id or an applicant_id",
                ));
            }
            bad.extend(too_long(
                &format!("outcomes[{i}].request_id"),
                &o.request_id,
            ));
            bad.extend(too_long(
                &format!("outcomes[{i}].applicant_id"),
                &o.applicant_id,
            ));
            if !(o.observed_at.is_finite() && o.observed_at >= 0.0) {
                bad.push(Violation::new(
                    format!("outcomes[{i}].observed_at"),
                    ViolationKind::BadTime,
                    "must be a Unix time in seconds (0: now)",
                ));
            }
        }
        if !bad.is_empty() {
            return Err(Failure::Invalid(bad));
        }
        let now = unix_now();
        let reporter = caller.to_string();
        let plane = self.clone();
        let done =
            tokio::task::spawn_blocking(move || plane.write_outcomes(&outcomes, now, &reporter))
                .await;
        match done {
            Ok(Ok((recorded, unchanged))) => {
                log::info!(
                    "{recorded} outcome(s) recorded ({unchanged} already were), reported by {caller}"
                );
                Ok(proto::ReportOutcomeResponse {
                    recorded: i32::try_from(recorded).unwrap_or(i32::MAX),
                    unchanged: i32::try_from(unchanged).unwrap_or(i32::MAX),
                })
            }
            Ok(Err(f)) => Err(f),
            Err(e) => {
                log::error!("outcome writer failed: {e}");
                Err(Failure::Internal)
            }
        }
    }

    /// Check `outcomes` against the recorded ones, write the new ones and corrections (with
    /// `reporter`), remember them. Returns (written, unchanged). Blocking.
    fn write_outcomes(
        &self,
        outcomes: &[proto::Outcome],
        now: f64,
        reporter: &str,
    ) -> Result<(usize, usize), Failure> {
        let _one_at_a_time = self
            .outcome_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ids: Vec<&str> = outcomes.iter().map(|o| o.request_id.as_str()).collect();
        let recorded = self.ledger.recorded(&ids).map_err(|e| {
            log::error!("outcomes not recorded: {e}");
            Failure::Unavailable(
                "the recorded outcomes cannot be checked now; nothing was recorded, and \
                 reporting these outcomes again is safe"
                    .into(),
            )
        })?;
        let claims: Vec<Reported<'_>> = outcomes
            .iter()
            .map(|o| Reported {
                request_id: &o.request_id,
                defaulted: o.defaulted,
                correction: o.correction,
            })
            .collect();
        let verdicts = judge(&claims, &recorded);
        let conflicts: Vec<(String, String)> = verdicts
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v {
                Verdict::Conflict { recorded } => Some((
                    format!("outcomes[{i}]"),
                    format!(
                        "request '{}' already has the outcome defaulted={recorded}; send it with \
                         correction=true to replace it",
                        echo(&outcomes[i].request_id)
                    ),
                )),
                _ => None,
            })
            .collect();
        if !conflicts.is_empty() {
            return Err(Failure::FailedPrecondition(conflicts));
        }
        let mut lines = Vec::with_capacity(outcomes.len() * 140);
        let mut written = Vec::new();
        for (o, v) in outcomes.iter().zip(&verdicts) {
            if *v != Verdict::Write {
                continue;
            }
            let observed = if o.observed_at == 0.0 {
                now
            } else {
                o.observed_at
            };
            push_outcome(
                &mut lines,
                &OutcomeLine {
                    ts: now,
                    request_id: &o.request_id,
                    applicant_id: &o.applicant_id,
                    defaulted: o.defaulted,
                    observed_at: Some(observed),
                    correction: o.correction,
                    reporter,
                },
            );
            written.push((o.request_id.as_str(), o.defaulted));
        }
        let n = written.len();
        let unchanged = outcomes.len() - n;
        if n == 0 {
            return Ok((0, unchanged));
        }
        let result = self.outcomes.write(&lines, n, true).and_then(|taken| {
            if taken < n {
                return Err(crate::log::LogError::Bad {
                    kind: "outcomes".into(),
                    what: "the log is full".into(),
                });
            }
            self.outcomes.flush()
        });
        match result {
            Ok(()) => {
                if let Err(e) = self.ledger.remember(&written) {
                    // Written: the log's reading rule still keeps the first outcome.
                    log::error!("outcomes recorded but not remembered for the conflict check: {e}");
                }
                Ok((n, unchanged))
            }
            Err(e @ crate::log::LogError::Write { .. }) => {
                log::error!("outcomes not recorded yet: {e}");
                Err(Failure::Unavailable(
                    "the evaluation log could not be written now; these outcomes stay queued \
                     and are retried, and reporting them again is safe (an outcome already \
                     recorded is not written twice)"
                        .into(),
                ))
            }
            Err(e) => {
                log::error!("outcomes not recorded: {e}");
                Err(Failure::Unavailable(
                    "the evaluation log is full or closed; nothing was recorded".into(),
                ))
            }
        }
    }
}

/// Stored values fill a model's entity inputs; a request may send one only where the spec
/// allows (then its value wins). Returns the entity inputs left to the missing policy.
fn merge(
    lookup: &EntityLookup,
    raw: &mut RawRow,
    applicant_id: &str,
    stored: Option<&StoredRow>,
    violations: &mut Vec<Violation>,
) -> Vec<usize> {
    if applicant_id.is_empty() {
        violations.push(Violation::new(
            "applicant.applicant_id",
            ViolationKind::MissingRequired,
            "required: this model looks up features by applicant id",
        ));
    }
    let mut defaulted = Vec::new();
    for (j, e) in lookup.inputs.iter().enumerate() {
        if raw.sent[e.input] {
            if !e.overridable {
                let map = match e.slot {
                    InputSlot::Numeric(_) => "numeric",
                    InputSlot::Categorical(_) => "categorical",
                };
                violations.push(Violation::new(
                    format!("applicant.{map}.{}", e.name),
                    ViolationKind::FromFeatureStore,
                    "comes from the feature store; a request may not set it",
                ));
            }
            continue;
        }
        let value = stored.and_then(|row| row.get(&e.name));
        let filled = match (e.slot, value) {
            (InputSlot::Numeric(s), Some(StoredValue::Number(x))) => {
                raw.numeric[s] = Some(*x);
                true
            }
            (InputSlot::Categorical(s), Some(StoredValue::Text(t))) => {
                raw.categorical[s] = Some(t.clone());
                true
            }
            (InputSlot::Categorical(s), Some(StoredValue::Number(x))) => {
                let mut text = Vec::new();
                push_py_float(&mut text, *x);
                raw.categorical[s] = Some(String::from_utf8_lossy(&text).into_owned());
                true
            }
            // A number stored as text (or nothing stored): the missing policy.
            _ => false,
        };
        if !filled {
            defaulted.push(j);
        }
    }
    defaulted
}

#[cfg(test)]
mod tests {
    use altscore_kernels::plan::Plan;
    use altscore_kernels::row::RowBuilder;

    use super::*;

    fn plan() -> Plan {
        let json = r#"{"name":"t","version":1,"inputs":[
            {"name":"amount","kind":"number","required":false,"min":null,"max":null,"missing":{"strategy":"nan"}},
            {"name":"visits","kind":"number","required":false,"min":null,"max":null,"missing":{"strategy":"nan"}},
            {"name":"limit","kind":"number","required":false,"min":null,"max":null,"missing":{"strategy":"nan"}},
            {"name":"segment","kind":"categorical","required":false,"min":null,"max":null,"missing":{"strategy":"nan"}}],
            "features":[{"name":"amount","op":{"kind":"value","input":"amount"},"output":true}]}"#;
        match Plan::from_json(json) {
            Ok(p) => p,
            Err(e) => unreachable!("{e}"),
        }
    }

    fn lookup(p: &Plan) -> EntityLookup {
        let inputs = [
            ("visits".to_string(), false),
            ("segment".to_string(), false),
            ("limit".to_string(), true),
        ];
        match EntityLookup::new(p, "demo.v1".into(), &inputs, true) {
            Ok(l) => l,
            Err(e) => unreachable!("{e}"),
        }
    }

    fn row(p: &Plan, numeric: &[(&str, f64)], categorical: &[(&str, &str)]) -> RawRow {
        let mut b = RowBuilder::new(p);
        for (k, v) in numeric {
            b.numeric(k, *v);
        }
        for (k, v) in categorical {
            b.categorical(k, v);
        }
        b.finish()
    }

    fn stored(values: &[(&str, StoredValue)]) -> StoredRow {
        values
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn stored_values_fill_entity_inputs() {
        let p = plan();
        let l = lookup(&p);
        let mut raw = row(&p, &[("amount", 5.0)], &[]);
        let s = stored(&[
            ("visits", StoredValue::Number(3.0)),
            ("segment", StoredValue::Text("gold".into())),
        ]);
        let mut bad = Vec::new();
        let defaulted = merge(&l, &mut raw, "a1", Some(&s), &mut bad);
        assert_eq!(raw.numeric, [Some(5.0), Some(3.0), None]);
        assert_eq!(raw.categorical, [Some("gold".to_string())]);
        assert_eq!(defaulted, [2], "limit was not found");
        assert!(bad.is_empty());
    }

    #[test]
    fn request_overrides_only_where_the_spec_allows() {
        let p = plan();
        let l = lookup(&p);
        let mut raw = row(
            &p,
            &[("limit", 250.0), ("visits", 9.0)],
            &[("segment", "x")],
        );
        let s = stored(&[("limit", StoredValue::Number(100.0))]);
        let mut bad = Vec::new();
        merge(&l, &mut raw, "a1", Some(&s), &mut bad);
        assert_eq!(raw.numeric[2], Some(250.0), "overridable: the request wins");
        let fields: Vec<_> = bad.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            ["applicant.numeric.visits", "applicant.categorical.segment"]
        );
        assert!(bad
            .iter()
            .all(|v| v.kind == ViolationKind::FromFeatureStore));
    }

    #[test]
    fn unknown_entity_and_missing_id() {
        let p = plan();
        let l = lookup(&p);
        let mut raw = row(&p, &[], &[]);
        let mut bad = Vec::new();
        assert_eq!(merge(&l, &mut raw, "", None, &mut bad), [0, 1, 2]);
        assert_eq!(bad[0].field, "applicant.applicant_id");
    }

    #[test]
    fn ids_must_be_new_and_non_empty() {
        let mut ids = RecentIds::new(2);
        assert!(id_violation("", "", None).is_some());
        assert!(id_violation("a", "", Some(&mut ids)).is_none());
        assert!(id_violation("a", "", Some(&mut ids)).is_some());
        let long = "x".repeat(MAX_ID_BYTES + 1);
        let bad = id_violation(&long, "", Some(&mut ids)).map(|v| (v.field, v.kind));
        assert_eq!(bad, Some(("request_id".into(), ViolationKind::IdTooLong)));
        let bad = id_violation("b", &long, None).map(|v| (v.field, v.kind));
        assert_eq!(
            bad,
            Some(("applicant.applicant_id".into(), ViolationKind::IdTooLong))
        );
        assert!(id_violation(&"x".repeat(MAX_ID_BYTES), "", None).is_none());
    }
}
