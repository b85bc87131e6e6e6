"""Model loading gates against the real MLflow store: compile cache, parity and schema checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from credit_core import ModelRejectedError, SchemaMismatch
from credit_core.registry import MlflowRegistry, local_tracking_uri
from scoring_server.loader import ModelLoader
from tests.conftest import MODEL_NAME, TrainedModel


def _loader(state: Path) -> ModelLoader:
    registry = MlflowRegistry(local_tracking_uri(state / "mlflow"))
    return ModelLoader(
        registry, model_name=MODEL_NAME, state_dir=state, parity_tolerance=1e-5, parallel_units=4
    )


def _register_tampered(trained: TrainedModel, tmp: Path, alias: str, tamper: str) -> None:
    """Register a copy of the champion's bundle with one part altered, under ``alias``."""
    loader = _loader(trained.state_dir)
    source = loader.resolve("champion")
    original = loader.registry.download(source, tmp / "orig")
    bundle = tmp / "tampered"
    shutil.copytree(original, bundle)
    if tamper == "reference":
        with np.load(bundle / "reference.npz") as z:
            features, margin = z["features"], z["margin"].copy()
        margin[:5] += 0.01  # XGBoost "said" something else than the compiled library will
        np.savez_compressed(bundle / "reference.npz", features=features, margin=margin)
    elif tamper == "schema":
        meta = json.loads((bundle / "metadata.json").read_text())
        meta["schema_hash"] = "0" * 64
        (bundle / "metadata.json").write_text(json.dumps(meta))
    registry = MlflowRegistry(
        local_tracking_uri(trained.state_dir / "mlflow"), trained.state_dir / "mlflow" / "artifacts"
    )
    run_id = registry.log_run(
        "tampered",
        run_name=tamper,
        params={},
        metrics={},
        artifacts={"model": bundle},
        tags={},
    )
    version = registry.register(MODEL_NAME, run_id, "model", tags={"tampered": tamper})
    registry.set_alias(MODEL_NAME, alias, version.version)


def test_second_load_reuses_compiled_library(trained: TrainedModel) -> None:
    loader = _loader(trained.state_dir)
    first = loader.load("champion")
    second = loader.load("champion")
    assert second.runtime.cache_hit
    assert second.runtime.library == first.runtime.library
    assert second.runtime.compile_seconds == first.runtime.compile_seconds
    assert second.parity_max_abs_diff <= 1e-5


def test_parity_gate_refuses_model(trained: TrainedModel, tmp_path: Path) -> None:
    _register_tampered(trained, tmp_path, "bad-parity", "reference")
    with pytest.raises(ModelRejectedError, match="differ from XGBoost's"):
        _loader(trained.state_dir).load("bad-parity")


def test_schema_gate_refuses_model(trained: TrainedModel, tmp_path: Path) -> None:
    _register_tampered(trained, tmp_path, "bad-schema", "schema")
    with pytest.raises(SchemaMismatch, match="schema hash"):
        _loader(trained.state_dir).load("bad-schema")
