"""Model loading gates against the real MLflow store: compile cache, parity and schema checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from credit_core import ModelRejectedError, SchemaMismatch
from credit_core.registry import MlflowRegistry, local_tracking_uri
from scoring_server.loader import ModelLoader
from tests.conftest import MODEL_NAME, TrainedModel, register_tampered


def _loader(state: Path) -> ModelLoader:
    registry = MlflowRegistry(local_tracking_uri(state / "mlflow"))
    return ModelLoader(
        registry, model_name=MODEL_NAME, state_dir=state, parity_tolerance=1e-5, parallel_units=4
    )


def test_second_load_reuses_compiled_library(trained: TrainedModel) -> None:
    loader = _loader(trained.state_dir)
    first = loader.load("champion")
    second = loader.load("champion")
    assert second.runtime.cache_hit
    assert second.runtime.library == first.runtime.library
    assert second.runtime.compile_seconds == first.runtime.compile_seconds
    assert second.parity_max_abs_diff <= 1e-5


def test_parity_gate_refuses_model(trained: TrainedModel, tmp_path: Path) -> None:
    register_tampered(trained.state_dir, tmp_path, "bad-parity", "reference")
    with pytest.raises(ModelRejectedError, match="differ from XGBoost's"):
        _loader(trained.state_dir).load("bad-parity")


def test_schema_gate_refuses_model(trained: TrainedModel, tmp_path: Path) -> None:
    register_tampered(trained.state_dir, tmp_path, "bad-schema", "schema")
    with pytest.raises(SchemaMismatch, match="schema hash"):
        _loader(trained.state_dir).load("bad-schema")


def test_relative_state_dir(trained: TrainedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make serve` runs with the default relative state dir `var`."""
    monkeypatch.chdir(trained.state_dir.parent)
    relative = Path(trained.state_dir.name)
    shutil.rmtree(trained.state_dir / "models", ignore_errors=True)  # force a fresh download
    model = _loader(relative).load("champion")
    assert model.ref.version == trained.version


GATED = ("predict_batch", "predict_rows")
"""The paths ``CompiledModel.predict`` can take: the native evaluator and the direct compiled
call."""


def test_every_predict_path_matches_xgboost(trained: TrainedModel) -> None:
    import numpy as np

    model = _loader(trained.state_dir).load("champion")
    ref = model.bundle.reference()
    expected = 1.0 / (1.0 + np.exp(-ref.margin))
    paths = (*GATED, "predict_predictor")
    results = {path: getattr(model.runtime, path)(ref.features) for path in paths}
    for path, pd in results.items():
        assert np.max(np.abs(pd - expected)) <= 1e-5, path
    assert model.runtime.ensemble is not None
    assert np.array_equal(  # the same margins as XGBoost, bit for bit
        model.runtime.ensemble.predict_margin(ref.features), ref.margin
    )
    for n in (1, 2, 32, 33, len(expected)):  # the measured-fastest path at every size
        chosen = model.runtime.predict(ref.features[:n])
        assert np.array_equal(chosen, results["predict_batch"][:n])
    with_missing = ref.features[:5].copy()
    with_missing[:, 0] = np.nan  # missing goes down the default branch on every path
    native, rows, predictor = (getattr(model.runtime, p)(with_missing) for p in paths)
    assert np.array_equal(rows, predictor)
    assert np.max(np.abs(native - rows)) <= 1e-6


@pytest.mark.parametrize("path", GATED)
def test_parity_gate_checks_every_path(
    trained: TrainedModel, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One choosable path off by 1e-3 on the reference rows is enough to refuse the model."""
    from scoring_server.runtime import CompiledModel

    original = getattr(CompiledModel, path)
    monkeypatch.setattr(CompiledModel, path, lambda self, x: original(self, x) + 1e-3)
    with pytest.raises(ModelRejectedError, match="differ from XGBoost's"):
        _loader(trained.state_dir).load("champion")
