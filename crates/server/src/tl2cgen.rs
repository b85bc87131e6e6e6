//! A TL2cgen-compiled model library, called directly (`ALTSCORE_PREDICTOR=tl2cgen`).
//!
//! The control plane compiles the booster with `tl2cgen.export_lib` (cached by model hash) and
//! gates it; the data plane opens the shared library here and calls its generated
//! `predict(union Entry*, int pred_margin, float*)` once per row. Each row is handed over as
//! TL2cgen's `Entry` union: the feature's float bits, or the int `-1` for a missing value.
//!
//! The only `unsafe` of the data plane: loading a library and calling into it. Its contract is
//! TL2cgen's generated C: `get_num_feature()` entries are read from `data`, one float is added
//! into `result`; the library is checked (feature count, a single binary target) when opened.
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::path::{Path, PathBuf};

use libloading::{Library, Symbol};

type PredictFn = unsafe extern "C" fn(*const u32, c_int, *mut f32);

/// TL2cgen's "missing" entry: the int -1.
const MISSING: u32 = u32::MAX;

pub struct CompiledLibrary {
    path: PathBuf,
    predict: PredictFn,
    n_features: usize,
    // Last: dropped after the function pointer is no longer reachable.
    _library: Library,
}

impl std::fmt::Debug for CompiledLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledLibrary")
            .field("path", &self.path)
            .field("n_features", &self.n_features)
            .finish_non_exhaustive()
    }
}

impl CompiledLibrary {
    /// Open the library at `path`, built for a model of `n_features` features.
    pub fn open(path: &Path, n_features: usize) -> Result<Self, String> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            format!("compiled library {}: {what}: {e}", path.display())
        };
        // SAFETY: loading runs the library's initialisers; TL2cgen's generated code has none
        // beyond the C runtime's. The path is the control plane's own compile output, or a
        // training run's, shipped in the bundle and checked against its recorded sha256.
        let library = unsafe { Library::new(path) }.map_err(|e| fail("cannot open", &e))?;
        // SAFETY: the symbols are TL2cgen's generated functions with these C signatures.
        let (features, targets, predict) = unsafe {
            let features: Symbol<unsafe extern "C" fn() -> c_int> = library
                .get(b"get_num_feature")
                .map_err(|e| fail("no get_num_feature", &e))?;
            let targets: Symbol<unsafe extern "C" fn() -> i32> = library
                .get(b"get_num_target")
                .map_err(|e| fail("no get_num_target", &e))?;
            let predict: Symbol<PredictFn> = library
                .get(b"predict")
                .map_err(|e| fail("no predict", &e))?;
            (features(), targets(), *predict)
        };
        if usize::try_from(features).ok() != Some(n_features) {
            return Err(format!(
                "compiled library {} takes {features} features, the model {n_features}",
                path.display()
            ));
        }
        if targets != 1 {
            return Err(format!(
                "compiled library {} has {targets} targets: only binary PD models are served",
                path.display()
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            predict,
            n_features,
            _library: library,
        })
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One value per row of `x` (row-major, `n_features` columns, NaN = missing): the PD, or
    /// the margin when `margin`.
    #[must_use]
    pub fn predict(&self, x: &[f32], margin: bool) -> Vec<f64> {
        let k = self.n_features;
        let mut entries = vec![MISSING; k];
        x.chunks_exact(k.max(1))
            .map(|row| {
                for (e, v) in entries.iter_mut().zip(row) {
                    *e = if v.is_nan() { MISSING } else { v.to_bits() };
                }
                let mut out = 0.0f32;
                // SAFETY: `entries` holds exactly the `get_num_feature()` entries the generated
                // code reads, and `out` is the one float it adds into.
                unsafe { (self.predict)(entries.as_ptr(), c_int::from(margin), &raw mut out) };
                f64::from(out)
            })
            .collect()
    }
}
