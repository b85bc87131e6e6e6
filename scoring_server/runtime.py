"""The model runtime: an XGBoost booster compiled to a shared library with TL2cgen.

Compiled libraries are cached by model hash (sha256 of the booster JSON) and TL2cgen version, so
a restart reuses them. Only this module imports ``treelite`` and ``tl2cgen``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import tl2cgen
import treelite

from credit_core import ModelBundle, ModelRejectedError

__all__ = ["CompiledModel"]

log = logging.getLogger(__name__)


@dataclass
class CompiledModel:
    """``load`` / ``predict`` / ``unload`` over a TL2cgen library."""

    library: Path
    n_features: int
    cache_hit: bool
    compile_seconds: float
    _predictor: tl2cgen.Predictor | None = None

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
            model = cls(library, len(bundle.feature_names), True, recorded)
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
            model = cls(library, len(bundle.feature_names), False, seconds)
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

    @property
    def ready(self) -> bool:
        return self._predictor is not None

    def predict(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """PD for each row of ``x`` (float32 [n, k], NaN = missing)."""
        if self._predictor is None:
            raise RuntimeError("model not loaded")
        dmat = tl2cgen.DMatrix(x, dtype="float32", missing=np.nan)
        out = self._predictor.predict(dmat, pred_margin=False)
        return np.asarray(out, dtype=np.float64).reshape(x.shape[0])

    def unload(self) -> None:
        self._predictor = None


def _read_compile_seconds(sidecar: Path) -> float:
    try:
        return float(json.loads(sidecar.read_text())["compile_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return float("nan")
