"""Model loading gates against the real MLflow store: compile cache, parity of every predictor,
schema checks."""

from __future__ import annotations

import gc
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from credit_core import ModelBundle, ModelRef, ModelRejectedError, SchemaMismatch
from credit_core.registry import MlflowRegistry, local_tracking_uri
from feature_kernels import TreeEnsemble, logistic
from scoring_server.compile import SHIPPED, library_key
from scoring_server.loader import PREDICTORS, LoadedModel, ModelLoader
from tests.conftest import MODEL_NAME, ROOT, TrainedModel, register_tampered


def _loader(state: Path) -> ModelLoader:
    registry = MlflowRegistry(local_tracking_uri(state / "mlflow"))
    return ModelLoader(
        registry, model_name=MODEL_NAME, state_dir=state, parity_tolerance=1e-5, parallel_units=4
    )


def test_second_load_reuses_compiled_library(trained: TrainedModel) -> None:
    loader = _loader(trained.state_dir)
    first = loader.load("champion")
    second = loader.load("champion")
    assert second.compiled.cache_hit
    assert second.compiled.library == first.compiled.library
    assert second.compiled.compile_seconds == first.compiled.compile_seconds
    assert second.parity_max_abs_diff <= 1e-5


def _bundle_copy(trained: TrainedModel, tmp: Path) -> tuple[Path, Path]:
    """A copy of the champion's bundle and the path of the library it ships."""
    _, source = _loader(trained.state_dir).fetch("champion")
    bundle = tmp / "bundle"
    shutil.copytree(source, bundle)
    (library,) = (bundle / SHIPPED).glob("*.so")
    assert library.name == f"{library_key(ModelBundle.read(bundle))}.so"
    return bundle, library


def _without_compiler(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    """A host like the runtime image: no gcc on PATH (the compiler child finds none)."""
    empty = tmp / "no-compiler"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def _load(bundle: Path, state: Path) -> LoadedModel:
    loader = ModelLoader(
        None, model_name=MODEL_NAME, state_dir=state, parity_tolerance=1e-5, parallel_units=4
    )
    return loader.load_bundle(bundle, ModelRef(MODEL_NAME, "1", "champion"))


def test_a_host_without_a_compiler_serves_the_library_the_bundle_ships(
    trained: TrainedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle, library = _bundle_copy(trained, tmp_path)
    record = json.loads(library.with_suffix(".json").read_text())
    assert record["sha256"] == hashlib.sha256(library.read_bytes()).hexdigest()
    _without_compiler(monkeypatch, tmp_path)
    model = _load(bundle, tmp_path / "state")
    assert model.compiled.source == "bundle"
    assert model.compiled.compile_seconds == record["compile_seconds"]
    assert model.parity_max_abs_diff <= 1e-5  # both predictors checked, TL2cgen included
    again = _load(bundle, tmp_path / "state")
    assert again.compiled.source == "cache"

    # a shipped library that differs from its recorded hash is never loaded: with no
    # compiler the version is refused, saying why
    data = bytearray(library.read_bytes())
    data[len(data) // 2] ^= 0xFF
    library.write_bytes(bytes(data))
    with pytest.raises(ModelRejectedError, match="ships no library for"):
        _load(bundle, tmp_path / "state-2")


def test_a_shipped_library_that_does_not_load_here_is_compiled_again(
    trained: TrainedModel, tmp_path: Path
) -> None:
    bundle, library = _bundle_copy(trained, tmp_path)
    library.write_bytes(b"not an ELF file")  # stands for another C library's build
    library.with_suffix(".json").write_text(
        json.dumps({"sha256": hashlib.sha256(b"not an ELF file").hexdigest()})
    )
    model = _load(bundle, tmp_path / "state")
    assert model.compiled.source == "compiled"
    assert model.parity_max_abs_diff <= 1e-5


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


def test_every_predictor_matches_xgboost(trained: TrainedModel) -> None:
    model = _loader(trained.state_dir).load("champion")
    ref = model.bundle.reference()
    expected = logistic(ref.margin)
    results = {p: model.serving.predict(ref.features, p) for p in PREDICTORS}
    for predictor, pd in results.items():
        assert np.max(np.abs(pd - expected)) <= 1e-5, predictor
    ensemble = TreeEnsemble.from_json(model.bundle.booster_path.read_text())
    assert np.array_equal(ensemble.predict_margin(ref.features), ref.margin)  # bit for bit
    assert np.array_equal(model.serving.predict(ref.features), results["native"])  # the default
    with_missing = np.ascontiguousarray(ref.features[:5].copy())
    with_missing[:, 0] = np.nan  # missing goes down the default branch on every path
    native, compiled = (model.serving.predict(with_missing, p) for p in PREDICTORS)
    assert np.max(np.abs(native - compiled)) <= 1e-6


def test_parity_gate_checks_the_compiled_library_too(trained: TrainedModel, tmp_path: Path) -> None:
    """A cached library that does not compute the model (a corrupt cache) is refused, though
    the native evaluator alone would pass."""
    state = tmp_path / "state"
    shutil.copytree(trained.state_dir / "mlflow", state / "mlflow")
    first = _loader(state).load("champion")
    booster = json.loads(first.bundle.booster_path.read_text())
    trees = booster["learner"]["gradient_booster"]["model"]["trees"]
    trees[0]["base_weights"] = [w + 1.0 for w in trees[0]["base_weights"]]
    leaves = trees[0]["split_conditions"]
    left = trees[0]["left_children"]
    trees[0]["split_conditions"] = [c + 1.0 if left[i] == -1 else c for i, c in enumerate(leaves)]
    other = tmp_path / "other.json"
    other.write_text(json.dumps(booster))
    library = first.compiled.library
    del first  # unloads the library (a loaded library's name is reused as is by dlopen)
    gc.collect()
    subprocess.run(
        [sys.executable, "-m", "scoring_server.compile", "--booster", str(other), "--out",
         str(library), "--parallel-units", "2"],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    with pytest.raises(ModelRejectedError, match="tl2cgen predictions differ"):
        _loader(state).load("champion")
