"""The report's committee sections (training.quality) and the report a training run writes:
gains, policy bands, PSI, the AUC interval, the monotonicity check (a property test against
constrained and unconstrained XGBoost models), and the HTML + PNGs of a real run."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import xgboost as xgb
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from credit_core import ScoringPolicy
from credit_core.registry import MlflowRegistry, local_tracking_uri
from tests.training.test_run import GERMAN_DATA, GERMAN_SPEC
from training.compare import auc_delong
from training.quality import (
    auc_interval,
    gains_table,
    monotone_check,
    policy_bands,
    population_stability,
)
from training.run import train_and_register
from training.settings import TrainingSettings
from training.train import TrainParams


def _case(n: int = 2000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.2).astype(np.int64)
    pd = 1.0 / (1.0 + np.exp(-(-1.6 + 1.5 * y + rng.normal(0.0, 1.0, n))))
    return y, pd


def test_gains_table_ranks_riskiest_first_and_adds_up() -> None:
    y, pd = _case()
    gains = gains_table(y, pd)
    assert [g.decile for g in gains] == list(range(1, 11))
    assert sum(g.rows for g in gains) == len(y)
    assert sum(g.bads for g in gains) == y.sum()
    assert all(a.min_pd >= b.max_pd for a, b in itertools.pairwise(gains))
    assert gains[-1].cum_capture == pytest.approx(1.0)
    assert gains[-1].cum_lift == pytest.approx(1.0)
    assert gains[0].lift > 1.5 > gains[-1].lift  # an informative model


def test_policy_bands_are_the_served_decisions() -> None:
    y, pd = _case()
    policy = ScoringPolicy(approve_below=0.1, decline_from=0.3)
    bands = policy_bands(y, pd, policy)
    assert [b.decision for b in bands] == ["approve", "review", "decline"]
    assert sum(b.share for b in bands) == pytest.approx(1.0)
    assert sum(b.capture for b in bands) == pytest.approx(1.0)
    served = [policy.decide(float(p)).value for p in pd]
    for b in bands:
        assert b.rows == served.count(b.decision)
    assert bands[0].bad_rate < bands[2].bad_rate


def test_population_stability_uses_the_drift_workers_psi() -> None:
    rng = np.random.default_rng(5)
    a = rng.normal(size=(5000, 2))
    b = np.column_stack([rng.normal(size=5000), rng.normal(1.0, 1.0, 5000)])
    psi = population_stability(a, b, ["same", "shifted"])
    assert psi["same"] < 0.02
    assert psi["shifted"] > 0.25
    constant = population_stability(np.ones((100, 1)), np.ones((100, 1)), ["c"])
    assert constant == {"c": 0.0}


def test_auc_interval_is_delongs() -> None:
    y, pd = _case()
    auc, low, high = auc_interval(y, pd)
    aucs, cov = auc_delong(y, pd)
    se = math.sqrt(cov[0, 0])
    assert auc == pytest.approx(float(aucs[0]))
    assert (low, high) == pytest.approx((auc - 1.959964 * se, auc + 1.959964 * se), abs=1e-6)


def _model(x: np.ndarray, y: np.ndarray, monotone: tuple[int, ...]) -> xgb.Booster:
    params = {
        "objective": "binary:logistic",
        "max_depth": 4,
        "eta": 0.3,
        "monotone_constraints": "(" + ",".join(map(str, monotone)) + ")",
        "nthread": 1,
        "verbosity": 0,
    }
    return xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=30)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), direction=st.sampled_from([1, -1]))
def test_a_constrained_model_never_moves_against_its_constraint(seed: int, direction: int) -> None:
    """Property: for any data (a noisy, non-monotone relation included), XGBoost's monotone
    constraint holds on the grid, and the check reports no violation."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(600, 3)).astype(np.float32)
    signal = np.sin(3 * x[:, 0]) + 0.5 * x[:, 1]  # not monotone in x0
    y = (rng.uniform(size=600) < 1 / (1 + np.exp(-signal))).astype(np.float32)
    booster = _model(x, y, (direction, 0, 0))
    names, constraint = ["x0", "x1", "x2"], (direction, 0, 0)
    (check,) = monotone_check(booster.inplace_predict, x[:50], names, constraint)
    assert check.feature == "x0"
    assert check.violations == 0
    assert check.worst == 0.0
    # the same data without the constraint breaks it: the check can fail
    free = _model(x, y, (0, 0, 0))
    (broken,) = monotone_check(free.inplace_predict, x[:50], names, constraint)
    assert broken.violations > 0
    assert broken.worst > 1e-6


def test_a_training_run_reports_every_section(tmp_path: Path) -> None:
    settings_ = TrainingSettings(state_dir=tmp_path, model_name="german-report")
    outcome = train_and_register(
        settings_,
        spec_path=GERMAN_SPEC,
        data_path=GERMAN_DATA,
        params=TrainParams(max_rounds=300, early_stopping_rounds=30),
        console=Console(stderr=True, quiet=True),
    )
    registry = MlflowRegistry(local_tracking_uri(tmp_path / "mlflow"))
    report = Path(registry.artifact_uri(outcome.run_id).removeprefix("file://")) / "report"
    page = (report / "report.html").read_text()
    for section in (
        "Discrimination", "95 % DeLong interval", "Training part vs holdout",
        "Gains and lift by PD decile", "Decision bands under the configured policy",
        "Population stability", "Importance and explanations", "Monotone constraints",
    ):  # fmt: skip
        assert section in page, section
    assert "BROKEN" not in page  # the spec's constraints held
    # German credit (30 % bad) under the default thresholds: the page says they do not fit
    assert "set the thresholds for this portfolio before serving it" in page
    for name in ("checking_account", "duration_months", "duration_band"):  # constrained ones
        assert f"<td>{name}</td>" in page
    for png in ("roc", "ks", "calibration", "score_distribution", "gains", "psi", "importance",
                "shap_summary"):  # fmt: skip
        image = mpimg.imread(report / f"{png}.png")
        assert image.shape[0] > 100, png
        assert f'src="{png}.png"' in page
    metrics = registry.client.get_run(outcome.run_id).data.metrics
    assert metrics["auc_ci_low"] < metrics["holdout_auc"] < metrics["auc_ci_high"]
    assert metrics["monotone_violations"] == 0
    assert metrics["train_auc"] >= metrics["holdout_auc"]
