//! `TreeEnsemble`: an `XGBoost` model evaluated natively (margins and exact `TreeSHAP`).

use std::sync::Arc;

use altscore_kernels::ensemble::TreeEnsemble;
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::to_py_err;

/// An `XGBoost` tree ensemble (`binary:logistic`, `gbtree`, numeric splits) evaluated natively:
/// margins through a blocked, branch-free evaluator and exact path-dependent `TreeSHAP` through
/// coefficients computed once, here. Both release the GIL.
#[pyclass(module = "feature_kernels._core", name = "TreeEnsemble", frozen)]
pub struct PyTreeEnsemble {
    pub inner: Arc<TreeEnsemble>,
}

/// The rows of a C-contiguous float32 `[n, m]` array, as one slice.
pub fn rows<'a>(x: &'a PyReadonlyArray2<'_, f32>) -> PyResult<(&'a [f32], usize, usize)> {
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
            .map_err(to_py_err)
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
            .map_err(to_py_err)
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
        let phi = py.detach(|| model.shap(data, n, m)).map_err(to_py_err)?;
        let matrix = Array2::from_shape_vec((n, m), phi)
            .map_err(|e| PyValueError::new_err(e.to_string()))?
            .into_pyarray(py);
        Ok((model.expected_margin(), matrix))
    }
}
