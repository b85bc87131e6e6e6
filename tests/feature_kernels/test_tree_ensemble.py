"""The native tree ensemble against XGBoost itself: margins (bit for bit), exact TreeSHAP
(``pred_contribs``) and additivity, on small real models trained here; and refused models."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest
import xgboost as xgb

from feature_kernels import ModelFormatError, TreeEnsemble

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("ALTSCORE_DATA_DIR", ROOT.parent / "shared" / "data"))
GMSC_CSV = DATA / "give_me_some_credit" / "cs-training.csv"
TOL = 1e-5

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Trained:
    booster: xgb.Booster
    ensemble: TreeEnsemble
    x: F32
    """Rows to evaluate (some held out, with NaNs)."""


def _train(x: F32, y: npt.NDArray[np.float32], rounds: int, **params: object) -> xgb.Booster:
    base = {"objective": "binary:logistic", "nthread": 1, "seed": 0, "eta": 0.3}
    return xgb.train({**base, **params}, xgb.DMatrix(x, label=y), num_boost_round=rounds)


def _ensemble(booster: xgb.Booster) -> TreeEnsemble:
    return TreeEnsemble.from_json(bytes(booster.save_raw("json")).decode())


@pytest.fixture(scope="module")
def gmsc() -> Trained:
    """Depth 4 on 3,000 GMSC rows (MonthlyIncome and NumberOfDependents have nulls)."""
    if not GMSC_CSV.is_file():
        pytest.skip(f"data file {GMSC_CSV} is not available")
    frame = pl.read_csv(GMSC_CSV, n_rows=4000, null_values="NA").drop("")
    y = frame.get_column("SeriousDlqin2yrs").to_numpy().astype(np.float32)
    x = np.ascontiguousarray(
        frame.drop("SeriousDlqin2yrs").to_numpy().astype(np.float32)  # nulls become NaN
    )
    assert np.isnan(x).any()
    booster = _train(x[:3000], y[:3000], 40, max_depth=4)
    return Trained(booster, _ensemble(booster), x[3000:])


def _synthetic_rows(n: int, seed: int) -> F32:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 40)).astype(np.float32)
    x[rng.random(x.shape) < 0.08] = np.nan
    return x


@pytest.fixture(scope="module")
def synthetic() -> Trained:
    """40 features, depth 6, a target on few features: paths split on the same feature again."""
    x = _synthetic_rows(3000, 1)
    z = np.nan_to_num(x)
    logit = 2 * np.sin(2 * z[:, 0]) + z[:, 1] * z[:, 2] + np.abs(z[:, 3]) - 0.5 * z[:, 4:8].sum(1)
    y = (np.random.default_rng(2).random(3000) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    booster = _train(x, y, 30, max_depth=6, min_child_weight=0.5)
    return Trained(booster, _ensemble(booster), _synthetic_rows(400, 3))


def _repeated_feature_paths(booster: xgb.Booster) -> int:
    """Leaves whose path splits on some feature more than once."""
    count = 0
    model = json.loads(bytes(booster.save_raw("json")))["learner"]["gradient_booster"]["model"]
    for tree in model["trees"]:
        left, right, feat = tree["left_children"], tree["right_children"], tree["split_indices"]
        stack: list[tuple[int, tuple[int, ...]]] = [(0, ())]
        while stack:
            node, path = stack.pop()
            if left[node] == -1:
                count += len(set(path)) < len(path)
                continue
            stack += [(left[node], (*path, feat[node])), (right[node], (*path, feat[node]))]
    return count


@pytest.fixture(params=["gmsc", "synthetic"])
def model(request: pytest.FixtureRequest) -> Trained:
    trained: Trained = request.getfixturevalue(request.param)
    return trained


def test_margins_equal_xgboost_bit_for_bit(model: Trained) -> None:
    expected = model.booster.inplace_predict(model.x, predict_type="margin").astype(np.float64)
    got = model.ensemble.predict_margin(model.x)
    assert got.dtype == np.float64
    assert got.shape == (len(model.x),)
    assert np.max(np.abs(got - expected)) <= TOL
    assert np.array_equal(got, expected)  # same float32 sum, in the same order
    # One row, and batch sizes around the evaluator's lanes and blocks.
    for n in (1, 7, 8, 9, 129, len(model.x)):
        assert np.array_equal(model.ensemble.predict_margin(model.x[:n]), expected[:n])
    for i in range(5):
        assert model.ensemble.predict_margin(model.x[i : i + 1])[0] == expected[i]


def test_missing_values_take_the_default_branch(model: Trained) -> None:
    x = model.x[:50].copy()
    x[:, ::2] = np.nan
    expected = model.booster.inplace_predict(x, predict_type="margin").astype(np.float64)
    assert np.array_equal(model.ensemble.predict_margin(x), expected)


def test_shap_is_xgboost_pred_contribs(model: Trained) -> None:
    x = model.x[:300]
    contribs = model.booster.predict(xgb.DMatrix(x), pred_contribs=True).astype(np.float64)
    base, phi = model.ensemble.shap(x)
    assert phi.dtype == np.float64
    assert phi.shape == x.shape
    assert np.max(np.abs(phi - contribs[:, :-1])) <= TOL
    assert np.max(np.abs(base - contribs[:, -1])) <= TOL
    margin = model.ensemble.predict_margin(x)
    assert np.max(np.abs(base + phi.sum(axis=1) - margin)) <= TOL
    assert model.ensemble.shap_method_counts == (model.ensemble.n_trees, 0)
    # Rows one at a time give the same contributions as the batch.
    for i in (0, 17):
        assert np.allclose(model.ensemble.shap(x[i : i + 1])[1][0], phi[i], rtol=0, atol=1e-12)


def test_synthetic_model_repeats_features_on_paths(synthetic: Trained) -> None:
    """The SHAP parity above covers duplicate features on a path only if there are some."""
    assert _repeated_feature_paths(synthetic.booster) > 50
    assert synthetic.ensemble.max_depth == 6
    assert synthetic.ensemble.n_features == 40


def test_model_metadata(gmsc: Trained) -> None:
    config = json.loads(gmsc.booster.save_config())
    base_score = float(config["learner"]["learner_model_param"]["base_score"].strip("[]"))
    assert gmsc.ensemble.base_score == pytest.approx(base_score, rel=1e-6)
    assert gmsc.ensemble.n_trees == 40
    forest_bytes, shap_bytes = gmsc.ensemble.memory_bytes
    assert 0 < forest_bytes < 1_000_000
    assert 0 < shap_bytes < 10_000_000


def _refusal(booster: xgb.Booster) -> str:
    with pytest.raises(ModelFormatError) as info:
        _ensemble(booster)
    return str(info.value)


def test_unsupported_models_are_refused_by_name() -> None:
    x = _synthetic_rows(300, 4)[:, :5]
    z = np.nan_to_num(x)
    y = (z[:, 0] > 0).astype(np.float32)
    three = (np.digitize(z[:, 0], [-0.5, 0.5])).astype(np.float32)
    multi = _train(x, three, 2, objective="multi:softprob", num_class=3, max_depth=2)
    assert "multi-class" in _refusal(multi)
    assert "dart" in _refusal(_train(x, y, 2, booster="dart", max_depth=2))
    assert "gblinear" in _refusal(_train(x, y, 2, booster="gblinear"))
    regression = _train(x, z[:, 1], 2, objective="reg:squarederror", max_depth=2)
    assert '"reg:squarederror"' in _refusal(regression)
    cats = np.floor(np.abs(z[:, :2]) * 3).astype(np.float32)
    dmat = xgb.DMatrix(
        cats, label=(cats[:, 0] == 1), feature_types=["c", "c"], enable_categorical=True
    )
    categorical = xgb.train(
        {"objective": "binary:logistic", "max_depth": 2, "max_cat_to_onehot": 1, "nthread": 1},
        dmat,
        num_boost_round=2,
    )
    assert "categorical splits" in _refusal(categorical)


def test_malformed_json_is_refused() -> None:
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        TreeEnsemble.from_json("{")
    with pytest.raises(ModelFormatError, match=r"learner\.gradient_booster is missing"):
        TreeEnsemble.from_json('{"learner": {}}')


def test_bad_inputs(gmsc: Trained) -> None:
    x = gmsc.x[:4]
    with pytest.raises(ValueError, match="columns"):
        gmsc.ensemble.predict_margin(np.ascontiguousarray(x[:, :5]))
    with pytest.raises(ValueError, match="C-contiguous"):
        gmsc.ensemble.shap(np.asfortranarray(x))
    with pytest.raises(TypeError):
        gmsc.ensemble.predict_margin(x.astype(np.float64))  # type: ignore[arg-type]
    empty = np.zeros((0, x.shape[1]), dtype=np.float32)
    assert gmsc.ensemble.predict_margin(empty).shape == (0,)
    assert gmsc.ensemble.shap(empty)[1].shape == (0, x.shape[1])
