//! altscore feature kernels: the one implementation of every feature transform.
//!
//! Two call paths share [`plan::Plan::eval_row`]: the column path (training, drift, bulk scoring:
//! numpy columns in, a float32 matrix out) and the row path (serving: request maps in, the model's
//! float32 vector out, with every bad field listed).
//!
//! [`ensemble`] evaluates the trained model itself: margins and `TreeSHAP` contributions of an
//! `XGBoost` tree ensemble, natively.

pub mod ensemble;
pub mod error;
mod front;
pub mod kernels;
pub mod plan;
mod wire;

use std::collections::HashMap;
use std::sync::Arc;

use numpy::ndarray::Array2;
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString, PyTuple};

use crate::ensemble::TreeEnsemble;
use crate::error::{KernelError, Violation};
use crate::plan::{InputKind, InputSlot, Plan, RowInputs};

create_exception!(
    _core,
    FeatureError,
    PyValueError,
    "Input data broke the feature spec. args: (message, [(field, description), ...])."
);
create_exception!(
    _core,
    PlanError,
    PyValueError,
    "The feature plan is inconsistent."
);
create_exception!(
    _core,
    ModelFormatError,
    PyValueError,
    "A tree-ensemble model is malformed or uses something the native evaluator does not support."
);

/// Most violations reported per column by the column path.
const MAX_COLUMN_VIOLATIONS: usize = 20;

fn to_py_err(py: Python<'_>, err: KernelError) -> PyErr {
    match err {
        KernelError::Plan(msg) => PlanError::new_err(msg),
        KernelError::Shape(msg) => PyValueError::new_err(msg),
        KernelError::Model(_) => ModelFormatError::new_err(err.to_string()),
        KernelError::Invalid(ref v) => {
            let pairs: Vec<(String, String)> = v
                .iter()
                .map(|x| (x.field.clone(), x.description.clone()))
                .collect();
            match pairs.into_pyobject(py) {
                Ok(list) => FeatureError::new_err((err.to_string(), list.unbind())),
                Err(e) => e,
            }
        }
    }
}

fn violations_to_py<'py>(py: Python<'py>, v: &[Violation]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for x in v {
        list.append(PyTuple::new(
            py,
            [x.field.as_str(), x.description.as_str()],
        )?)?;
    }
    Ok(list)
}

/// One request row read from its two maps: raw numeric values per numeric input (None = absent)
/// and owned categorical strings per categorical input.
struct RawRow {
    numeric: Vec<Option<f64>>,
    categorical: Vec<Option<String>>,
    /// Inputs already reported (wrong map or wrong value type): not reported again as missing.
    misplaced: Vec<String>,
    violations: Vec<Violation>,
}

fn read_row(
    plan: &Plan,
    numeric: &Bound<'_, PyDict>,
    categorical: &Bound<'_, PyDict>,
) -> PyResult<RawRow> {
    let mut row = RawRow {
        numeric: vec![None; plan.numeric_inputs.len()],
        categorical: vec![None; plan.categorical_inputs.len()],
        misplaced: Vec::new(),
        violations: Vec::new(),
    };
    for (k, v) in numeric.iter() {
        let key: String = k.extract()?;
        let field = format!("numeric.{key}");
        match plan.by_name.get(&key) {
            None => row
                .violations
                .push(Violation::new(field, "unknown feature")),
            Some(InputSlot::Categorical(_)) => {
                row.violations.push(Violation::new(
                    field,
                    format!("wrong type: {key:?} is categorical; send it in the categorical map"),
                ));
                row.misplaced.push(key);
            }
            Some(InputSlot::Numeric(i)) => match v.extract::<f64>() {
                Ok(x) if !v.is_instance_of::<PyBool>() => row.numeric[*i] = Some(x),
                _ => {
                    row.violations
                        .push(Violation::new(field, "wrong type: must be a number"));
                    row.misplaced.push(key);
                }
            },
        }
    }
    for (k, v) in categorical.iter() {
        let key: String = k.extract()?;
        let field = format!("categorical.{key}");
        match plan.by_name.get(&key) {
            None => row
                .violations
                .push(Violation::new(field, "unknown feature")),
            Some(InputSlot::Numeric(_)) => {
                row.violations.push(Violation::new(
                    field,
                    format!("wrong type: {key:?} is numeric; send it in the numeric map"),
                ));
                row.misplaced.push(key);
            }
            Some(InputSlot::Categorical(i)) => {
                if let Ok(s) = v.cast::<PyString>() {
                    row.categorical[*i] = Some(s.to_str()?.to_owned());
                } else {
                    row.violations
                        .push(Violation::new(field, "wrong type: must be a string"));
                    row.misplaced.push(key);
                }
            }
        }
    }
    Ok(row)
}

/// Validate a raw row and evaluate it into `out`. Returns the row's violations (empty = good).
fn eval_raw(plan: &Plan, raw: RawRow, scratch: &mut [f64], out: &mut [f32]) -> Vec<Violation> {
    let RawRow {
        numeric,
        categorical,
        misplaced,
        mut violations,
    } = raw;
    let mut values = Vec::with_capacity(numeric.len());
    for (slot, input_idx) in plan.numeric_inputs.iter().enumerate() {
        let input = &plan.def.inputs[*input_idx];
        let field = plan.field_of(*input_idx);
        if numeric[slot].is_none() && misplaced.contains(&input.name) {
            values.push(f64::NAN);
            continue;
        }
        values.push(plan.prepare_numeric(input, numeric[slot], field, &mut violations));
    }
    let mut cats = Vec::with_capacity(categorical.len());
    for (slot, input_idx) in plan.categorical_inputs.iter().enumerate() {
        let input = &plan.def.inputs[*input_idx];
        let field = plan.field_of(*input_idx);
        if categorical[slot].is_none() && misplaced.contains(&input.name) {
            cats.push(None);
            continue;
        }
        cats.push(plan.prepare_categorical(
            input,
            categorical[slot].as_deref(),
            field,
            &mut violations,
        ));
    }
    let row = RowInputs {
        numeric: values,
        categorical: cats,
    };
    plan.eval_row(&row, scratch, out, &mut violations);
    if !violations.is_empty() {
        out.fill(f32::NAN);
    }
    violations
}

/// A compiled feature plan. Build it from the normalised spec JSON
/// (`feature_kernels.FeatureSpec.plan_json()`).
#[pyclass(module = "feature_kernels._core", name = "FeaturePlan", frozen)]
struct FeaturePlan {
    plan: Arc<Plan>,
}

#[pymethods]
impl FeaturePlan {
    #[new]
    fn new(py: Python<'_>, plan_json: &str) -> PyResult<Self> {
        Plan::from_json(plan_json)
            .map(|plan| Self {
                plan: Arc::new(plan),
            })
            .map_err(|e| to_py_err(py, e))
    }

    #[getter]
    fn name(&self) -> &str {
        &self.plan.def.name
    }

    #[getter]
    fn version(&self) -> u32 {
        self.plan.def.version
    }

    /// sha256 of the canonical plan: any change to inputs, operations or order changes it.
    #[getter]
    fn schema_hash(&self) -> &str {
        &self.plan.schema_hash
    }

    /// Names of the model's input columns, in vector order.
    #[getter]
    fn output_names(&self) -> Vec<String> {
        self.plan.output_names.clone()
    }

    #[getter]
    fn n_outputs(&self) -> usize {
        self.plan.n_outputs()
    }

    /// Names of the raw inputs, numeric ones first, each in spec order.
    #[getter]
    fn input_names(&self) -> (Vec<String>, Vec<String>) {
        let names = |idx: &Vec<usize>| -> Vec<String> {
            idx.iter()
                .map(|i| self.plan.def.inputs[*i].name.clone())
                .collect()
        };
        (
            names(&self.plan.numeric_inputs),
            names(&self.plan.categorical_inputs),
        )
    }

    /// Row path: one request's maps to the model vector (float32, NaN = missing) and the list of
    /// violations `[(field, description)]`. When the list is not empty the vector is all NaN.
    fn transform_row<'py>(
        &self,
        py: Python<'py>,
        numeric: &Bound<'py, PyDict>,
        categorical: &Bound<'py, PyDict>,
    ) -> PyResult<(Bound<'py, PyArray1<f32>>, Bound<'py, PyList>)> {
        let raw = read_row(&self.plan, numeric, categorical)?;
        let mut scratch = vec![0.0; self.plan.n_slots()];
        let mut out = vec![0.0f32; self.plan.n_outputs()];
        let violations = eval_raw(&self.plan, raw, &mut scratch, &mut out);
        Ok((out.into_pyarray(py), violations_to_py(py, &violations)?))
    }

    /// Row path over a micro-batch: `rows` is a list of `(numeric, categorical)` dict pairs.
    /// Returns the `[n, k]` float32 matrix and one violation list per row (bad rows are all NaN).
    fn transform_rows<'py>(
        &self,
        py: Python<'py>,
        rows: &Bound<'py, PyList>,
    ) -> PyResult<(Bound<'py, PyArray2<f32>>, Bound<'py, PyList>)> {
        let mut parsed = Vec::with_capacity(rows.len());
        for item in rows.iter() {
            let (numeric, categorical): (Bound<'py, PyDict>, Bound<'py, PyDict>) =
                item.extract()?;
            parsed.push(read_row(&self.plan, &numeric, &categorical)?);
        }
        let n = parsed.len();
        let k = self.plan.n_outputs();
        let plan = &self.plan;
        let (out, all_violations) = py.detach(move || {
            let mut out = vec![0.0f32; n * k];
            let mut scratch = vec![0.0; plan.n_slots()];
            let mut all = Vec::with_capacity(n);
            for (raw, dst) in parsed.into_iter().zip(out.chunks_mut(k.max(1))) {
                all.push(eval_raw(plan, raw, &mut scratch, dst));
            }
            (out, all)
        });
        let matrix = Array2::from_shape_vec((n, k), out)
            .map_err(|e| PyValueError::new_err(e.to_string()))?
            .into_pyarray(py);
        let lists = PyList::empty(py);
        for v in &all_violations {
            lists.append(violations_to_py(py, v)?)?;
        }
        Ok((matrix, lists))
    }

    /// Wire fast path: the protobuf bytes of a `ScoreBatchRequest` (`batch`) or of one
    /// `ScoreRequest`, decoded natively (GIL released) to `(request_ids, applicant_ids, explain,
    /// matrix, violations)`, the last two exactly as `transform_rows` builds them from the
    /// applicants' maps. Malformed bytes raise `ValueError`.
    fn decode_score_requests<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
        batch: bool,
    ) -> PyResult<wire::DecodedPy<'py>> {
        wire::decode_score_requests(py, &self.plan, data, batch)
    }

    /// Column path: whole columns (numeric as float64 arrays with NaN = missing, categorical as
    /// lists of `str | None`) to the `[n_rows, k]` float32 matrix. Raises `FeatureError` listing
    /// the bad cells (up to 20 per column) when any value breaks the spec.
    fn transform_columns<'py>(
        &self,
        py: Python<'py>,
        numeric: HashMap<String, PyReadonlyArray1<'py, f64>>,
        categorical: HashMap<String, Vec<Option<String>>>,
        n_rows: usize,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let plan = &self.plan;
        let mut num_cols: Vec<Option<&[f64]>> = Vec::with_capacity(plan.numeric_inputs.len());
        let mut missing_cols = Vec::new();
        for idx in &plan.numeric_inputs {
            let input = &plan.def.inputs[*idx];
            if let Some(arr) = numeric.get(&input.name) {
                let s = arr.as_slice()?;
                if s.len() != n_rows {
                    return Err(to_py_err(
                        py,
                        KernelError::Shape(format!(
                            "column {:?} has {} rows, expected {n_rows}",
                            input.name,
                            s.len()
                        )),
                    ));
                }
                num_cols.push(Some(s));
            } else {
                if input.required {
                    missing_cols.push(Violation::new(&input.name, "required column is missing"));
                }
                num_cols.push(None);
            }
        }
        let mut cat_cols: Vec<Option<&Vec<Option<String>>>> = Vec::new();
        for idx in &plan.categorical_inputs {
            let input = &plan.def.inputs[*idx];
            match categorical.get(&input.name) {
                Some(col) if col.len() != n_rows => {
                    return Err(to_py_err(
                        py,
                        KernelError::Shape(format!(
                            "column {:?} has {} rows, expected {n_rows}",
                            input.name,
                            col.len()
                        )),
                    ));
                }
                Some(col) => cat_cols.push(Some(col)),
                None => {
                    if input.required {
                        missing_cols
                            .push(Violation::new(&input.name, "required column is missing"));
                    }
                    cat_cols.push(None);
                }
            }
        }
        for name in numeric.keys().chain(categorical.keys()) {
            match (plan.by_name.get(name), numeric.contains_key(name)) {
                (None, _) => missing_cols.push(Violation::new(name, "not an input of this spec")),
                (Some(InputSlot::Numeric(_)), false) | (Some(InputSlot::Categorical(_)), true) => {
                    missing_cols.push(Violation::new(name, "wrong type for this input"));
                }
                _ => {}
            }
        }
        if !missing_cols.is_empty() {
            return Err(to_py_err(py, KernelError::Invalid(missing_cols)));
        }
        let k = plan.n_outputs();
        let result = py.detach(|| columns_eval(plan, &num_cols, &cat_cols, n_rows, k));
        match result {
            Ok(out) => Ok(Array2::from_shape_vec((n_rows, k), out)
                .map_err(|e| PyValueError::new_err(e.to_string()))?
                .into_pyarray(py)),
            Err(e) => Err(to_py_err(py, e)),
        }
    }
}

fn columns_eval(
    plan: &Plan,
    num_cols: &[Option<&[f64]>],
    cat_cols: &[Option<&Vec<Option<String>>>],
    n_rows: usize,
    k: usize,
) -> Result<Vec<f32>, KernelError> {
    let mut out = vec![0.0f32; n_rows * k];
    let mut scratch = vec![0.0; plan.n_slots()];
    let mut bad: Vec<Violation> = Vec::new();
    let mut per_column: HashMap<String, usize> = HashMap::new();
    let mut row_violations = Vec::new();
    for (r, dst) in out.chunks_mut(k.max(1)).enumerate().take(n_rows) {
        row_violations.clear();
        let mut values = Vec::with_capacity(num_cols.len());
        for (slot, col) in num_cols.iter().enumerate() {
            let input = &plan.def.inputs[plan.numeric_inputs[slot]];
            let raw = col.map(|c| c[r]).filter(|x| !x.is_nan());
            values.push(plan.prepare_numeric(input, raw, &input.name, &mut row_violations));
        }
        let mut cats = Vec::with_capacity(cat_cols.len());
        for (slot, col) in cat_cols.iter().enumerate() {
            let input = &plan.def.inputs[plan.categorical_inputs[slot]];
            let raw = col.and_then(|c| c[r].as_deref());
            cats.push(plan.prepare_categorical(input, raw, &input.name, &mut row_violations));
        }
        let row = RowInputs {
            numeric: values,
            categorical: cats,
        };
        plan.eval_row(&row, &mut scratch, dst, &mut row_violations);
        for v in row_violations.drain(..) {
            // Row path fields are "numeric.x"/"categorical.x"; columns are named by the input.
            let column = v
                .field
                .strip_prefix("numeric.")
                .or_else(|| v.field.strip_prefix("categorical."))
                .unwrap_or(v.field.as_str())
                .to_string();
            let seen = per_column.entry(column.clone()).or_insert(0);
            *seen += 1;
            if *seen <= MAX_COLUMN_VIOLATIONS {
                bad.push(Violation::new(
                    column,
                    format!("row {r}: {}", v.description),
                ));
            }
        }
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        for (column, count) in &per_column {
            if *count > MAX_COLUMN_VIOLATIONS {
                bad.push(Violation::new(
                    column,
                    format!("{count} bad rows in all (first {MAX_COLUMN_VIOLATIONS} listed)"),
                ));
            }
        }
        Err(KernelError::Invalid(bad))
    }
}

/// An `XGBoost` tree ensemble (`binary:logistic`, `gbtree`, numeric splits) evaluated natively:
/// margins through a blocked, branch-free evaluator and exact path-dependent `TreeSHAP` through
/// coefficients computed once, here. Both release the GIL.
#[pyclass(module = "feature_kernels._core", name = "TreeEnsemble", frozen)]
struct PyTreeEnsemble {
    inner: Arc<TreeEnsemble>,
}

/// The rows of a C-contiguous float32 `[n, m]` array, as one slice.
fn rows<'a>(x: &'a PyReadonlyArray2<'_, f32>) -> PyResult<(&'a [f32], usize, usize)> {
    if !x.is_c_contiguous() {
        return Err(PyValueError::new_err(
            "x must be a C-contiguous float32 array",
        ));
    }
    let [n, m] = [x.shape()[0], x.shape()[1]];
    Ok((x.as_slice()?, n, m))
}

#[pymethods]
impl PyTreeEnsemble {
    /// Parse the JSON text of an `XGBoost` model (`booster.save_model("model.json")`). Raises
    /// `ModelFormatError` naming what is malformed or unsupported.
    #[staticmethod]
    fn from_json(py: Python<'_>, text: &str) -> PyResult<Self> {
        py.detach(|| TreeEnsemble::from_json(text))
            .map(|inner| Self {
                inner: Arc::new(inner),
            })
            .map_err(|e| to_py_err(py, e))
    }

    #[getter]
    fn n_features(&self) -> usize {
        self.inner.n_features()
    }

    #[getter]
    fn n_trees(&self) -> usize {
        self.inner.n_trees()
    }

    #[getter]
    fn max_depth(&self) -> usize {
        self.inner.max_depth()
    }

    /// The base score as the model stores it (a probability).
    #[getter]
    fn base_score(&self) -> f32 {
        self.inner.base_score()
    }

    /// Bytes held by the margin evaluator and by the `TreeSHAP` coefficients.
    #[getter]
    fn memory_bytes(&self) -> (usize, usize) {
        self.inner.bytes()
    }

    /// Trees explained through the quadrature, and through the recursive algorithm.
    #[getter]
    fn shap_method_counts(&self) -> (usize, usize) {
        self.inner.shap_method_counts()
    }

    /// Margins (log-odds) of the rows of `x` (float32, C-contiguous `[n, n_features]`, NaN =
    /// missing), equal to `XGBoost`'s `output_margin` predictions.
    fn predict_margin<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let (data, n, m) = rows(&x)?;
        let model = &self.inner;
        py.detach(|| model.predict_margin(data, n, m))
            .map(|out| out.into_pyarray(py))
            .map_err(|e| to_py_err(py, e))
    }

    /// Exact path-dependent `TreeSHAP`: `(base_value, contributions [n, n_features])` with
    /// `base_value + contributions.sum(axis=1)` equal to the margins (`XGBoost`'s
    /// `pred_contribs=True`, whose last column is `base_value`).
    fn shap<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<(f64, Bound<'py, PyArray2<f64>>)> {
        let (data, n, m) = rows(&x)?;
        let model = &self.inner;
        let phi = py
            .detach(|| model.shap(data, n, m))
            .map_err(|e| to_py_err(py, e))?;
        let matrix = Array2::from_shape_vec((n, m), phi)
            .map_err(|e| PyValueError::new_err(e.to_string()))?
            .into_pyarray(py);
        Ok((model.expected_margin(), matrix))
    }
}

/// Kinds of inputs, as the spec names them (for the Python side's checks).
#[pyfunction]
fn input_kinds() -> Vec<&'static str> {
    [
        InputKind::Number,
        InputKind::Integer,
        InputKind::Categorical,
    ]
    .iter()
    .map(|k| match k {
        InputKind::Number => "number",
        InputKind::Integer => "integer",
        InputKind::Categorical => "categorical",
    })
    .collect()
}

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<FeaturePlan>()?;
    m.add_class::<PyTreeEnsemble>()?;
    m.add_function(wrap_pyfunction!(input_kinds, m)?)?;
    m.add_function(wrap_pyfunction!(wire::encode_score_responses, m)?)?;
    m.add_function(wrap_pyfunction!(front::prediction_log_line, m)?)?;
    m.add_class::<front::FrontEnd>()?;
    m.add("FeatureError", m.py().get_type::<FeatureError>())?;
    m.add("PlanError", m.py().get_type::<PlanError>())?;
    m.add("ModelFormatError", m.py().get_type::<ModelFormatError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "build_profile",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )?;
    Ok(())
}
