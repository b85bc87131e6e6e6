//! `FeaturePlan`: a feature spec compiled to the kernels' plan, with its column path (training,
//! drift) and row path (tests, and the parity of the serving decoder with protobuf).

use std::collections::HashMap;
use std::sync::Arc;

use altscore_kernels::plan::{InputSlot, Plan, RowInputs};
use altscore_kernels::row::{RowBuilder, RowInput};
use altscore_kernels::{BadRows, KernelError, Violation, ViolationKind};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString, PyTuple};

use crate::errors::{to_py_err, MAX_COLUMN_VIOLATIONS};

pub fn violations_to_py<'py>(py: Python<'py>, v: &[Violation]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for x in v {
        list.append(PyTuple::new(py, [x.field.as_str(), &*x.description])?)?;
    }
    Ok(list)
}

/// A request row as two Python dicts (`numeric`, `categorical`).
struct DictRow<'a, 'py> {
    numeric: &'a Bound<'py, PyDict>,
    categorical: &'a Bound<'py, PyDict>,
}

impl RowInput for DictRow<'_, '_> {
    type Error = PyErr;

    fn read_into(self, row: &mut RowBuilder<'_>) -> PyResult<()> {
        for (k, v) in self.numeric.iter() {
            let key: String = k.extract()?;
            match v.extract::<f64>() {
                Ok(x) if !v.is_instance_of::<PyBool>() => row.numeric(&key, x),
                _ => row.numeric_not_a_number(&key),
            }
        }
        for (k, v) in self.categorical.iter() {
            let key: String = k.extract()?;
            if let Ok(s) = v.cast::<PyString>() {
                row.categorical(&key, s.to_str()?);
            } else {
                row.categorical_not_a_string(&key);
            }
        }
        Ok(())
    }
}

/// A compiled feature plan. Build it from the normalised spec JSON
/// (`feature_kernels.FeatureSpec.plan_json()`).
#[pyclass(module = "feature_kernels._core", name = "FeaturePlan", frozen)]
pub struct FeaturePlan {
    pub plan: Arc<Plan>,
}

#[pymethods]
impl FeaturePlan {
    #[new]
    fn new(plan_json: &str) -> PyResult<Self> {
        Plan::from_json(plan_json)
            .map(|plan| Self {
                plan: Arc::new(plan),
            })
            .map_err(to_py_err)
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
        let raw = self.plan.read(DictRow {
            numeric,
            categorical,
        })?;
        let mut scratch = vec![0.0; self.plan.n_slots()];
        let mut out = vec![0.0f32; self.plan.n_outputs()];
        let violations = self.plan.evaluate(raw, &mut scratch, &mut out);
        Ok((out.into_pyarray(py), violations_to_py(py, &violations)?))
    }

    /// Row path over several rows: `rows` is a list of `(numeric, categorical)` dict pairs.
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
            parsed.push(self.plan.read(DictRow {
                numeric: &numeric,
                categorical: &categorical,
            })?);
        }
        let n = parsed.len();
        let k = self.plan.n_outputs();
        let plan = &self.plan;
        let (out, all_violations) = py.detach(move || {
            let mut out = vec![0.0f32; n * k];
            let mut scratch = vec![0.0; plan.n_slots()];
            let mut all = Vec::with_capacity(n);
            for (raw, dst) in parsed.into_iter().zip(out.chunks_mut(k.max(1))) {
                all.push(plan.evaluate(raw, &mut scratch, dst));
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

    /// The serving decoder (`altscore-wire`) on the protobuf bytes of a `ScoreBatchRequest`
    /// (`batch`) or one `ScoreRequest`: `(request_ids, applicant_ids, explain, matrix,
    /// violations)`, the last two as `transform_rows` gives them for the applicants' maps.
    /// Malformed bytes raise `ValueError`. (Tests tie the hand-written decoder to protobuf
    /// through it.)
    #[allow(clippy::type_complexity)]
    fn decode_score_requests<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
        batch: bool,
    ) -> PyResult<(
        Vec<String>,
        Vec<String>,
        Vec<bool>,
        Bound<'py, PyArray2<f32>>,
        Bound<'py, PyList>,
    )> {
        let what = if batch {
            "ScoreBatchRequest"
        } else {
            "ScoreRequest"
        };
        let plan = &self.plan;
        let decoded = py.detach(|| {
            let views = if batch {
                altscore_wire::parse_batch(data, usize::MAX).map_err(|e| match e {
                    Ok(n) => format!("{n} requests"),
                    Err(w) => w.to_string(),
                })?
            } else {
                vec![altscore_wire::parse_request(data).map_err(|e| e.to_string())?]
            };
            let k = plan.n_outputs();
            let mut matrix = vec![0.0f32; views.len() * k];
            let mut scratch = vec![0.0; plan.n_slots()];
            let mut violations = Vec::with_capacity(views.len());
            for (view, dst) in views.iter().zip(matrix.chunks_mut(k.max(1))) {
                let Ok(raw) = plan.read(&view.applicant);
                violations.push(plan.evaluate(raw, &mut scratch, dst));
            }
            let ids = views
                .iter()
                .map(|v| v.request_id.to_string())
                .collect::<Vec<_>>();
            let applicants = views
                .iter()
                .map(|v| v.applicant.applicant_id.to_string())
                .collect::<Vec<_>>();
            let explain = views.iter().map(|v| v.explain).collect::<Vec<_>>();
            Ok::<_, String>((ids, applicants, explain, matrix, violations))
        });
        let (ids, applicants, explain, matrix, violations) =
            decoded.map_err(|e| PyValueError::new_err(format!("malformed {what}: {e}")))?;
        let n = ids.len();
        let matrix = Array2::from_shape_vec((n, plan.n_outputs()), matrix)
            .map_err(|e| PyValueError::new_err(e.to_string()))?
            .into_pyarray(py);
        let lists = PyList::empty(py);
        for v in &violations {
            lists.append(violations_to_py(py, v)?)?;
        }
        Ok((ids, applicants, explain, matrix, lists))
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
                    return Err(to_py_err(KernelError::Shape(format!(
                        "column {:?} has {} rows, expected {n_rows}",
                        input.name,
                        s.len()
                    ))));
                }
                num_cols.push(Some(s));
            } else {
                if input.required {
                    missing_cols.push(Violation::new(
                        &input.name,
                        ViolationKind::BadColumn,
                        "required column is missing",
                    ));
                }
                num_cols.push(None);
            }
        }
        let mut cat_cols: Vec<Option<&Vec<Option<String>>>> = Vec::new();
        for idx in &plan.categorical_inputs {
            let input = &plan.def.inputs[*idx];
            match categorical.get(&input.name) {
                Some(col) if col.len() != n_rows => {
                    return Err(to_py_err(KernelError::Shape(format!(
                        "column {:?} has {} rows, expected {n_rows}",
                        input.name,
                        col.len()
                    ))));
                }
                Some(col) => cat_cols.push(Some(col)),
                None => {
                    if input.required {
                        missing_cols.push(Violation::new(
                            &input.name,
                            ViolationKind::BadColumn,
                            "required column is missing",
                        ));
                    }
                    cat_cols.push(None);
                }
            }
        }
        for name in numeric.keys().chain(categorical.keys()) {
            match (plan.by_name.get(name), numeric.contains_key(name)) {
                (None, _) => missing_cols.push(Violation::new(
                    name,
                    ViolationKind::BadColumn,
                    "not an input of this spec",
                )),
                (Some(InputSlot::Numeric(_)), false) | (Some(InputSlot::Categorical(_)), true) => {
                    missing_cols.push(Violation::new(
                        name,
                        ViolationKind::BadColumn,
                        "wrong type for this input",
                    ));
                }
                _ => {}
            }
        }
        if !missing_cols.is_empty() {
            return Err(to_py_err(KernelError::Invalid(missing_cols)));
        }
        let k = plan.n_outputs();
        let result = py.detach(|| columns_eval(plan, &num_cols, &cat_cols, n_rows, k));
        match result {
            Ok(out) => Ok(Array2::from_shape_vec((n_rows, k), out)
                .map_err(|e| PyValueError::new_err(e.to_string()))?
                .into_pyarray(py)),
            Err(e) => Err(to_py_err(e)),
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
    let mut listed: Vec<(usize, Violation)> = Vec::new();
    let mut per_column: HashMap<String, usize> = HashMap::new();
    let mut bad_rows = 0usize;
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
        if row_violations.is_empty() {
            continue;
        }
        bad_rows += 1;
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
                listed.push((r, Violation::new(column, v.kind, v.description)));
            }
        }
    }
    if bad_rows == 0 {
        return Ok(out);
    }
    let mut per_column: Vec<(String, usize)> = per_column.into_iter().collect();
    per_column.sort();
    Err(KernelError::InvalidRows(BadRows {
        listed,
        per_column,
        bad_rows,
        n_rows,
    }))
}
