"""The label-free AUC estimate (issue 11, item 3; acceptance 4): on GMSC holdout windows, with
and without a shift in the score distribution, the estimate from the PDs alone is within 0.02 of
the AUC the labels give."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import xgboost as xgb

from credit_core.bundle import ModelBundle
from credit_core.performance import Calibration, estimated_auc, realised_auc
from feature_kernels import FeaturePipeline, load_spec
from tests.conftest import GMSC_DATA, GMSC_SPEC, TrainedModel, champion_bundle
from training.dataset import labels, load_frame, stratified_split
from training.settings import TrainingSettings


@dataclass(frozen=True)
class Holdout:
    pd: np.ndarray
    defaulted: np.ndarray
    inputs: pl.DataFrame


@pytest.fixture(scope="module")
def holdout(trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Holdout:
    """The trained GMSC model's PDs, the labels and the raw inputs of its holdout (the
    training split)."""
    spec = load_spec(GMSC_SPEC)
    frame = load_frame(GMSC_DATA, spec)
    y = labels(frame, spec)
    fields = TrainingSettings.model_fields  # the defaults the session's model was trained with
    split = stratified_split(y, fields["test_size"].default, fields["seed"].default)
    x = FeaturePipeline(spec).transform_frame(frame)[split.test]
    bundle = ModelBundle.read(champion_bundle(trained, tmp_path_factory.mktemp("bundle")))
    pd = xgb.Booster(model_file=str(bundle.booster_path)).inplace_predict(x)
    return Holdout(
        np.asarray(pd, dtype=np.float64),
        y[split.test].astype(bool),
        frame[np.asarray(split.test)],
    )


def _windows(h: Holdout, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Windows of ``rows``: two plain halves, and the halves below and above the median of
    inputs that move the score distribution (young/old, low/high utilisation, income)."""
    half = len(rows) // 2
    out = {"as is, first half": rows[:half], "as is, second half": rows[half:]}
    for column in ("age", "RevolvingUtilizationOfUnsecuredLines", "MonthlyIncome"):
        values = h.inputs[column].to_numpy().astype(np.float64)[rows]
        median = np.nanmedian(values)
        out[f"{column} low"] = rows[values < median]
        out[f"{column} high"] = rows[values >= median]
    return out


def test_estimate_is_within_two_points_of_the_realised_auc(holdout: Holdout) -> None:
    """Calibration cross-fitted on the holdout (each half's PDs calibrated by the fit on the
    other half, so no row calibrates itself); windows of about 15,000 applicants."""
    h = holdout
    order = np.random.default_rng(7).permutation(len(h.pd))
    halves = order[: len(order) // 2], order[len(order) // 2 :]
    p_default = np.empty_like(h.pd)
    for this, other in (halves, halves[::-1]):
        p_default[this] = Calibration.fit(h.pd[other], h.defaulted[other])(h.pd[this])
    gaps, raw_gaps, mean_pd = {}, {}, {}
    for name, rows in _windows(h, np.arange(len(h.pd))).items():
        real = realised_auc(h.pd[rows], h.defaulted[rows])
        gaps[name] = abs(estimated_auc(h.pd[rows], p_default[rows]) - real)
        raw_gaps[name] = abs(estimated_auc(h.pd[rows]) - real)
        mean_pd[name] = float(h.pd[rows].mean())
    assert max(gaps.values()) <= 0.02, gaps
    # the windows really moved the score distribution (the mean PD by a factor of two and more)
    assert max(mean_pd.values()) > 2 * min(mean_pd.values()), mean_pd
    # and the calibration is what holds the low-risk windows: uncalibrated, the worst misses
    assert max(raw_gaps.values()) > 0.02, raw_gaps


def test_estimate_is_the_expected_auc_of_calibrated_scores() -> None:
    """Labels drawn from the PDs themselves: the realised AUC scatters around the estimate."""
    rng = np.random.default_rng(3)
    p = rng.beta(0.6, 6.0, 200_000)
    y = rng.random(p.size) < p
    assert abs(estimated_auc(p) - realised_auc(p, y)) < 0.005


def test_ties_order_and_edges() -> None:
    p = np.array([0.1, 0.1, 0.5, 0.9, 0.5])
    assert estimated_auc(p) == estimated_auc(p[::-1])  # row order does not matter
    assert estimated_auc(np.full(10, 0.3)) == pytest.approx(0.5)  # all tied: no ranking
    assert estimated_auc(np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert math.isnan(estimated_auc(np.array([])))
    assert math.isnan(estimated_auc(np.zeros(4)))  # no expected default
    assert math.isnan(realised_auc(np.array([0.2, 0.3]), np.array([False, False])))
    for bad in ([0.2, float("nan")], [1.5], [-0.1]):
        with pytest.raises(ValueError, match="probabilities"):
            estimated_auc(np.array(bad))
    with pytest.raises(ValueError, match="both outcomes"):
        Calibration.fit(np.array([0.1, 0.2]), np.array([True, True]))


def test_calibration_maps_pd_to_the_observed_rate_monotonically() -> None:
    rng = np.random.default_rng(5)
    pd = rng.uniform(0, 0.5, 50_000)
    y = rng.random(pd.size) < pd / 2  # the model overstates risk twofold
    cal = Calibration.fit(pd, y)
    grid = np.linspace(0, 0.45, 10)  # the top knot rests on the few PDs near 0.5
    mapped = cal(grid)
    assert np.all(np.diff(mapped) >= 0)
    assert np.allclose(mapped[2:], grid[2:] / 2, atol=0.02)
    top = cal(cal.knots_pd[-1:])[0]
    assert cal(np.array([0.9]))[0] == top  # flat beyond the ends


def test_the_registered_bundle_carries_the_holdout_calibration(
    trained: TrainedModel, holdout: Holdout, tmp_path: Path
) -> None:
    """Training stores the holdout's calibration with the model: the drift worker's estimate
    needs no labels, and a bundle from before it was stored reads as None."""
    bundle = ModelBundle.read(champion_bundle(trained, tmp_path / "bundle"))
    calibration = bundle.calibration()
    assert calibration is not None
    assert np.all(np.diff(calibration.knots_rate) >= 0)
    # an isotonic fit keeps the mean of what it was fitted on: the holdout's default rate
    assert float(calibration(holdout.pd).mean()) == pytest.approx(
        holdout.defaulted.mean(), abs=1e-6
    )
    metrics = bundle.metadata["metrics"]
    assert abs(metrics["estimated_auc_uncalibrated"] - metrics["auc"]) < 0.05
    (bundle.path / "calibration.npz").unlink()
    assert ModelBundle.read(bundle.path).calibration() is None
