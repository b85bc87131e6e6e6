//! A tree ensemble read from an `XGBoost` JSON model: margins (a blocked, branch-free evaluator)
//! and exact path-dependent `TreeSHAP` contributions (coefficients computed once, at load).

pub mod parse;
pub mod predict;
pub mod shap;

use crate::error::KernelError;

pub use parse::{RawModel, RawTree};

#[derive(Debug, Clone)]
pub struct TreeEnsemble {
    n_features: usize,
    n_trees: usize,
    max_depth: usize,
    base_score: f32,
    base_margin: f32,
    forest: predict::Forest,
    explainer: shap::Explainer,
}

impl TreeEnsemble {
    /// Parse an `XGBoost` JSON model and build both evaluators.
    pub fn from_json(text: &str) -> Result<Self, KernelError> {
        Ok(Self::from_raw(&parse::parse(text)?))
    }

    #[must_use]
    pub fn from_raw(model: &RawModel) -> Self {
        Self {
            n_features: model.n_features,
            n_trees: model.trees.len(),
            max_depth: model.trees.iter().map(RawTree::depth).max().unwrap_or(0),
            base_score: model.base_score,
            base_margin: model.base_margin,
            forest: predict::Forest::new(&model.trees, model.base_margin, model.n_features),
            explainer: shap::Explainer::new(&model.trees, model.base_margin, model.n_features),
        }
    }

    #[must_use]
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    #[must_use]
    pub fn n_trees(&self) -> usize {
        self.n_trees
    }

    #[must_use]
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// The model's base score (a probability, as `XGBoost` stores it for `binary:logistic`).
    #[must_use]
    pub fn base_score(&self) -> f32 {
        self.base_score
    }

    /// `logit(base_score)`: the margin of an ensemble with no trees.
    #[must_use]
    pub fn base_margin(&self) -> f32 {
        self.base_margin
    }

    /// The expected margin over the training cover: the bias column of `pred_contribs`.
    #[must_use]
    pub fn expected_margin(&self) -> f64 {
        self.explainer.base_value()
    }

    /// Bytes held by the margin evaluator and by the `TreeSHAP` coefficients.
    #[must_use]
    pub fn bytes(&self) -> (usize, usize) {
        (self.forest.bytes(), self.explainer.bytes())
    }

    /// Trees explained through the quadrature and through the recursive algorithm.
    #[must_use]
    pub fn shap_method_counts(&self) -> (usize, usize) {
        self.explainer.method_counts()
    }

    fn check_shape(&self, x: &[f32], n_rows: usize, n_cols: usize) -> Result<(), KernelError> {
        if n_cols != self.n_features {
            return Err(KernelError::Shape(format!(
                "x has {n_cols} columns, the model has {} features",
                self.n_features
            )));
        }
        if x.len() != n_rows * n_cols {
            return Err(KernelError::Shape(format!(
                "x has {} values, expected {n_rows} x {n_cols}",
                x.len()
            )));
        }
        Ok(())
    }

    /// Margins (log-odds) of `n_rows` rows of `x` (row-major float32, NaN = missing).
    pub fn predict_margin(
        &self,
        x: &[f32],
        n_rows: usize,
        n_cols: usize,
    ) -> Result<Vec<f64>, KernelError> {
        self.check_shape(x, n_rows, n_cols)?;
        let mut out = vec![0.0f32; n_rows];
        self.forest.predict(x, &mut out);
        Ok(out.into_iter().map(f64::from).collect())
    }

    /// `TreeSHAP` contributions, row-major `[n_rows, n_features]`; with
    /// [`Self::expected_margin`] they add up to each row's margin.
    pub fn shap(&self, x: &[f32], n_rows: usize, n_cols: usize) -> Result<Vec<f64>, KernelError> {
        self.check_shape(x, n_rows, n_cols)?;
        let mut phi = vec![0.0f64; n_rows * n_cols];
        self.explainer.shap(x, &mut phi)?;
        Ok(phi)
    }
}

#[cfg(test)]
mod tests;
