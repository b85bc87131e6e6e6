"""The model runtime: an XGBoost booster compiled to a shared library with TL2cgen, and the
same booster in ``feature_kernels``' native evaluator.

Compiled libraries are cached by model hash (sha256 of the booster JSON) and TL2cgen version, so
a restart reuses them. Only this module imports ``treelite`` and ``tl2cgen``.

Three paths compute the same PDs: ``feature_kernels.TreeEnsemble``, a blocked, branch-free
evaluator of the whole matrix (``predict_batch``); the compiled ``predict()`` called directly
through ctypes, once per row (``predict_rows``); and TL2cgen's ``Predictor``
(``predict_predictor``). ``predict`` takes the fastest for the batch size. Measured (one thread,
``benchmarks/inprocess.py`` reports all three on every run), the native evaluator wins at every
size on the served GMSC model and on a 400-tree depth-6 one: on GMSC, 1 row ~4-5 µs against ~13
µs for the direct call (its per-call NaN recoding and ctypes dispatch cost more than the compiled
trees themselves, ~2 µs) and ~55-95 µs for the Predictor; 4096 rows ~7.6 ms against ~13.6 ms for
the Predictor. So every batch goes to ``predict_batch``; the compiled library stays built and
loaded, and the loader's parity gate checks both ``predict_batch`` and ``predict_rows`` against
XGBoost (the Predictor is never chosen).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tl2cgen
import treelite
from scipy.special import expit

from credit_core import ModelBundle, ModelRejectedError
from feature_kernels import TreeEnsemble

__all__ = ["CompiledModel"]

log = logging.getLogger(__name__)


@dataclass
class CompiledModel:
    """``load`` / ``predict`` / ``unload`` over a TL2cgen library and the native evaluator."""

    library: Path
    n_features: int
    cache_hit: bool
    compile_seconds: float
    booster_json: Path | None = None
    """The XGBoost model the library was compiled from (the native evaluator reads it)."""
    _predictor: tl2cgen.Predictor | None = None
    _row_fn: Any = None
    """The library's own ``predict(union Entry*, int pred_margin, float*)``, called through ctypes
    (no DMatrix, no per-call allocation beyond the output)."""
    _ensemble: TreeEnsemble | None = None

    @classmethod
    def build(cls, bundle: ModelBundle, cache_dir: Path, parallel_units: int) -> CompiledModel:
        """Compile ``bundle``'s booster (or reuse the cached library) and load it."""
        cache_dir.mkdir(parents=True, exist_ok=True)
        key = f"{bundle.model_hash}-tl2cgen{tl2cgen.__version__}"
        library = cache_dir / f"{key}.so"
        sidecar = cache_dir / f"{key}.json"
        if library.is_file():
            recorded = _read_compile_seconds(sidecar)
            log.info(
                "compiled library cache hit: %s (compile skipped, saved ~%.1f s)",
                library,
                recorded,
            )
            model = cls(library, len(bundle.feature_names), True, recorded, bundle.booster_path)
        else:
            t0 = time.perf_counter()
            try:
                tl_model = treelite.frontend.load_xgboost_model(str(bundle.booster_path))
                # Compile into a temp name, then rename: concurrent servers never see half a file.
                fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache_dir)
                os.close(fd)
                tl2cgen.export_lib(
                    tl_model,
                    toolchain="gcc",
                    libpath=tmp,
                    params={"parallel_comp": parallel_units},
                    nthread=os.cpu_count() or 1,
                )
                os.replace(tmp, library)
            except Exception as e:
                raise ModelRejectedError(f"compilation failed: {type(e).__name__}: {e}") from e
            seconds = time.perf_counter() - t0
            sidecar.write_text(json.dumps({"compile_seconds": seconds}))
            log.info("compiled %s in %.1f s -> %s", bundle.booster_path.name, seconds, library)
            model = cls(library, len(bundle.feature_names), False, seconds, bundle.booster_path)
        model.load()
        return model

    def load(self) -> None:
        try:
            self._predictor = tl2cgen.Predictor(str(self.library), nthread=1)
        except Exception as e:
            raise ModelRejectedError(f"cannot load {self.library}: {e}") from e
        if self._predictor.num_feature != self.n_features:
            raise ModelRejectedError(
                f"compiled model expects {self._predictor.num_feature} features, "
                f"the spec gives {self.n_features}"
            )
        lib = ctypes.CDLL(str(self.library))
        lib.get_num_target.restype = ctypes.c_int32
        n_class = ctypes.c_int32(0)
        lib.get_num_class(ctypes.byref(n_class))
        if lib.get_num_target() != 1 or n_class.value != 1:
            raise ModelRejectedError("only single-output (binary PD) models are served")
        fn = lib.predict
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        fn.restype = None
        self._row_fn = fn
        if self.booster_json is not None:
            try:
                ensemble = TreeEnsemble.from_json(self.booster_json.read_text())
            except (OSError, ValueError) as e:
                raise ModelRejectedError(f"native evaluator: {e}") from e
            if ensemble.n_features != self.n_features:
                raise ModelRejectedError(
                    f"the booster has {ensemble.n_features} features, "
                    f"the spec gives {self.n_features}"
                )
            self._ensemble = ensemble

    @property
    def ready(self) -> bool:
        return self._predictor is not None

    @property
    def ensemble(self) -> TreeEnsemble | None:
        """The native evaluator (margins and TreeSHAP), when built from a booster."""
        return self._ensemble

    def predict(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """PD for each row of ``x`` (float32 [n, k], NaN = missing), through the path measured
        fastest for the batch size: ``predict_batch`` at every size (see the module docstring);
        the direct compiled call when no booster was given. Both pass the parity gate."""
        if self._predictor is None:
            raise RuntimeError("model not loaded")
        if self._ensemble is not None:
            return self.predict_batch(x)
        return self.predict_rows(x)

    def predict_batch(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """The whole matrix through ``feature_kernels.TreeEnsemble`` (blocked, GIL released):
        XGBoost's margins bit for bit, then the logistic function."""
        if self._ensemble is None:
            raise RuntimeError("model not loaded")
        margin = self._ensemble.predict_margin(np.ascontiguousarray(x, dtype=np.float32))
        return np.asarray(expit(margin), dtype=np.float64)

    def predict_rows(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """One direct call of the compiled ``predict`` per row."""
        fn = self._row_fn
        if fn is None:
            raise RuntimeError("model not loaded")
        entries = np.array(x, dtype=np.float32, order="C").view(np.int32)
        entries[np.isnan(x)] = -1  # TL2cgen's Entry: missing == -1
        n, k = entries.shape
        out = np.zeros(n, dtype=np.float32)  # the generated code adds into it
        base, step = entries.ctypes.data, k * 4
        result = out.ctypes.data
        for i in range(n):
            fn(base + i * step, 0, result + i * 4)
        return out.astype(np.float64)

    def predict_predictor(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """TL2cgen's Predictor over a DMatrix (slower than both other paths at every size)."""
        if self._predictor is None:
            raise RuntimeError("model not loaded")
        dmat = tl2cgen.DMatrix(x, dtype="float32", missing=np.nan)
        out = self._predictor.predict(dmat, pred_margin=False)
        return np.asarray(out, dtype=np.float64).reshape(x.shape[0])

    def unload(self) -> None:
        self._predictor = None
        self._row_fn = None
        self._ensemble = None


def _read_compile_seconds(sidecar: Path) -> float:
    try:
        return float(json.loads(sidecar.read_text())["compile_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return float("nan")
