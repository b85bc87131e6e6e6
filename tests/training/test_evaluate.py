"""Tests for training.evaluate against independently computed values."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import numpy.typing as npt
import pytest
from scipy.stats import ks_2samp

from training.evaluate import CalibrationBin, Evaluation, evaluate


def _pairwise_auc(y: npt.NDArray[np.int64], p: npt.NDArray[np.float64]) -> float:
    """AUC as P(pd_bad > pd_good) + 0.5 * P(tie), by brute force over all pairs."""
    bads, goods = p[y == 1], p[y == 0]
    diff = bads[:, None] - goods[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def _random_case(seed: int, n: int = 500) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int64)
    # Overlapping, informative PDs rounded to 2 decimals so that ties occur.
    p = np.clip(0.25 * y + rng.uniform(0.0, 0.75, n), 0.0, 1.0).round(2)
    return y, p


def test_perfect_separation() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.8, 0.9])
    ev = evaluate(y, p)
    assert ev.n == 4
    assert ev.n_positive == 2
    assert ev.auc == pytest.approx(1.0)
    assert ev.gini == pytest.approx(1.0)
    assert ev.ks == pytest.approx(1.0)
    assert ev.ks_threshold == pytest.approx(0.8)
    assert ev.brier == pytest.approx((0.01 + 0.04 + 0.04 + 0.01) / 4)
    expected_ll = -(2 * math.log(0.9) + 2 * math.log(0.8)) / 4
    assert ev.log_loss == pytest.approx(expected_ll)


def test_known_four_point_example() -> None:
    # goods at 0.1 and 0.4, bads at 0.35 and 0.8.
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    ev = evaluate(y, p)
    # Of the 4 (bad, good) pairs only (0.35, 0.4) is mis-ordered.
    assert ev.auc == pytest.approx(0.75)
    assert ev.gini == pytest.approx(0.5)
    # thresholds 0.8: TPR .5 FPR 0; 0.4: .5/.5; 0.35: 1/.5; 0.1: 1/1.
    assert ev.ks == pytest.approx(0.5)
    assert ev.ks_threshold == pytest.approx(0.8)  # highest of the tied maxima
    assert ev.brier == pytest.approx((0.1**2 + 0.4**2 + 0.65**2 + 0.2**2) / 4)
    expected_ll = -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    assert ev.log_loss == pytest.approx(expected_ll)


def test_inverted_model_has_negative_gini_and_ks_one() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.9, 0.8, 0.2, 0.1])
    ev = evaluate(y, p)
    assert ev.auc == pytest.approx(0.0)
    assert ev.gini == pytest.approx(-1.0)
    assert ev.ks == pytest.approx(1.0)


def test_constant_pd_has_no_discrimination() -> None:
    y = np.array([0, 1, 0, 1, 0])
    p = np.full(5, 0.4)
    ev = evaluate(y, p)
    assert ev.auc == pytest.approx(0.5)
    assert ev.ks == pytest.approx(0.0)
    assert ev.ks_threshold == pytest.approx(0.4)
    assert len(ev.calibration) == 1
    assert ev.calibration[0].count == 5
    assert ev.calibration[0].observed_rate == pytest.approx(0.4)
    assert ev.calibration_max_gap == pytest.approx(0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_independent_computation_on_random_data(seed: int) -> None:
    y, p = _random_case(seed)
    ev = evaluate(y, p)
    assert ev.n == y.size
    assert ev.n_positive == int(y.sum())
    assert ev.auc == pytest.approx(_pairwise_auc(y, p))
    assert ev.gini == pytest.approx(2 * _pairwise_auc(y, p) - 1)
    assert ev.ks == pytest.approx(ks_2samp(p[y == 1], p[y == 0]).statistic)
    assert ev.brier == pytest.approx(float(np.mean((p - y) ** 2)))
    eps = np.finfo(np.float64).eps
    pc = np.clip(p, eps, 1 - eps)
    expected_ll = float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc)))
    assert ev.log_loss == pytest.approx(expected_ll)
    # KS is reached at the reported threshold.
    t = ev.ks_threshold
    tpr = np.mean(p[y == 1] >= t)
    fpr = np.mean(p[y == 0] >= t)
    assert abs(tpr - fpr) == pytest.approx(ev.ks)
    assert t in set(p.tolist())


def test_accepts_float_labels() -> None:
    y, p = _random_case(3, n=50)
    assert evaluate(y.astype(np.float64), p) == evaluate(y, p)


def test_calibration_deciles_of_distinct_pds() -> None:
    rng = np.random.default_rng(7)
    p = rng.permutation(np.linspace(0.005, 0.995, 100))
    y = (rng.uniform(size=100) < p).astype(np.int64)
    y[:2] = [0, 1]
    ev = evaluate(y, p, n_bins=10)
    assert [b.count for b in ev.calibration] == [10] * 10
    order = np.argsort(p)
    for i, b in enumerate(ev.calibration):
        members = order[10 * i : 10 * (i + 1)]
        assert b.lower <= p[members].min()
        assert b.upper == pytest.approx(p[members].max())
        assert b.mean_pd == pytest.approx(float(p[members].mean()))
        assert b.observed_rate == pytest.approx(float(y[members].mean()))
    uppers = [b.upper for b in ev.calibration]
    assert uppers == sorted(uppers)
    expected_gap = max(abs(b.mean_pd - b.observed_rate) for b in ev.calibration)
    assert ev.calibration_max_gap == pytest.approx(expected_gap)


@pytest.mark.parametrize("n_bins", [1, 3, 10, 20])
@pytest.mark.parametrize("seed", [0, 4])
def test_calibration_counts_sum_to_n(seed: int, n_bins: int) -> None:
    y, p = _random_case(seed, n=237)
    ev = evaluate(y, p, n_bins=n_bins)
    assert 1 <= len(ev.calibration) <= n_bins
    assert sum(b.count for b in ev.calibration) == ev.n
    assert all(b.count > 0 for b in ev.calibration)
    weighted_pd = sum(b.count * b.mean_pd for b in ev.calibration) / ev.n
    weighted_rate = sum(b.count * b.observed_rate for b in ev.calibration) / ev.n
    assert weighted_pd == pytest.approx(float(p.mean()))
    assert weighted_rate == pytest.approx(ev.base_rate)


def test_calibration_collapses_duplicate_edges() -> None:
    y = np.array([0, 0, 0, 1, 0, 1, 1, 0, 1, 1])
    p = np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.5, 0.5, 0.9, 0.9])
    ev = evaluate(y, p, n_bins=10)
    assert [(b.upper, b.count) for b in ev.calibration] == [
        (0.1, 6),
        (0.5, 2),
        (0.9, 2),
    ]
    assert [b.observed_rate for b in ev.calibration] == pytest.approx([2 / 6, 0.5, 1.0])


def test_single_bin_is_whole_sample() -> None:
    y, p = _random_case(5, n=80)
    (only,) = evaluate(y, p, n_bins=1).calibration
    assert only.count == 80
    assert only.lower == pytest.approx(float(p.min()))
    assert only.upper == pytest.approx(float(p.max()))
    assert only.mean_pd == pytest.approx(float(p.mean()))
    assert only.observed_rate == pytest.approx(float(y.mean()))


def test_metrics_is_flat_and_consistent() -> None:
    y, p = _random_case(6, n=120)
    ev = evaluate(y, p)
    m = ev.metrics()
    assert set(m) == {
        "n",
        "n_positive",
        "base_rate",
        "auc",
        "gini",
        "ks",
        "brier",
        "log_loss",
        "calibration_max_gap",
    }
    assert all(isinstance(v, float) for v in m.values())
    assert m["n"] == 120
    assert m["n_positive"] == int(y.sum())
    assert m["base_rate"] == pytest.approx(float(y.mean()))
    assert m["auc"] == ev.auc
    assert m["gini"] == ev.gini
    assert m["ks"] == ev.ks
    assert m["brier"] == ev.brier
    assert m["log_loss"] == ev.log_loss
    gaps = [abs(b.mean_pd - b.observed_rate) for b in ev.calibration]
    assert m["calibration_max_gap"] == pytest.approx(max(gaps))


def test_results_are_frozen() -> None:
    ev = evaluate(np.array([0, 1]), np.array([0.2, 0.7]))
    assert isinstance(ev, Evaluation)
    assert isinstance(ev.calibration[0], CalibrationBin)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.auc = 0.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.calibration[0].count = 0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [
        pytest.param([0, 1, 0], [0.1, 0.2], "same length", id="length-mismatch"),
        pytest.param([], [], "empty", id="empty"),
        pytest.param([0, 0, 0], [0.1, 0.2, 0.3], "only one class", id="all-good"),
        pytest.param([1, 1], [0.1, 0.2], "only one class", id="all-bad"),
        pytest.param([0, 1, 0], [0.1, float("nan"), 0.3], "NaN", id="nan"),
        pytest.param([0, 1, 0], [0.1, -0.01, 0.3], r"\[0, 1\]", id="negative"),
        pytest.param([0, 1, 0], [0.1, 1.01, 0.3], r"\[0, 1\]", id="above-one"),
        pytest.param([0, 1, 0], [0.1, float("inf"), 0.3], r"\[0, 1\]", id="inf"),
        pytest.param([0, 2, 1], [0.1, 0.2, 0.3], "0 .good. and 1 .bad.", id="label-2"),
        pytest.param([0, 1], [[0.1, 0.2]], "1-D", id="2d"),
    ],
)
def test_invalid_inputs_raise(y: list[int], p: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate(np.asarray(y), np.asarray(p, dtype=np.float64))


@pytest.mark.parametrize("n_bins", [0, -3])
def test_invalid_n_bins_raise(n_bins: int) -> None:
    with pytest.raises(ValueError, match="n_bins"):
        evaluate(np.array([0, 1]), np.array([0.2, 0.7]), n_bins=n_bins)
