"""What a credit risk committee reads in a model report, computed (rendered by
:mod:`training.report`): gains / lift by PD decile, the decision bands of the configured policy,
population stability (PSI) of every feature and of the score from training to holdout, the AUC
with DeLong's interval, training vs holdout metrics, importance (gain), a SHAP summary from the
native TreeSHAP, and a check that the monotone constraints held."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from credit_core import ScoringPolicy
from credit_core.domain import DECISIONS
from training.compare import auc_delong, z_value
from training.evaluate import Evaluation

__all__ = [
    "Band",
    "Decile",
    "MonotoneCheck",
    "Quality",
    "auc_interval",
    "gains_table",
    "monotone_check",
    "policy_bands",
    "population_stability",
]

PSI_STABLE = 0.1
"""PSI below this: stable; up to ``PSI_SHIFT``: a moderate shift; above: a significant one."""
PSI_SHIFT = 0.25

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Decile:
    decile: int
    """1 = the riskiest tenth (highest PDs)."""
    rows: int
    bads: int
    min_pd: float
    max_pd: float
    bad_rate: float
    cum_rows_share: float
    cum_capture: float
    """Share of all bads in this decile and the riskier ones."""
    lift: float
    """This decile's bad rate over the base rate."""
    cum_lift: float


def gains_table(y: npt.NDArray[np.integer], pd: Floats, groups: int = 10) -> list[Decile]:
    """Rows ranked by PD, riskiest first, cut into ``groups`` equal-count groups (ties kept in a
    stable order)."""
    order = np.argsort(-pd, kind="stable")
    total_bads = int(y.sum())
    base = total_bads / len(y)
    out: list[Decile] = []
    rows_so_far = bads_so_far = 0
    for i, part in enumerate(np.array_split(order, groups), start=1):
        if len(part) == 0:
            continue
        bads = int(y[part].sum())
        rows_so_far += len(part)
        bads_so_far += bads
        rate = bads / len(part)
        out.append(
            Decile(
                decile=i,
                rows=len(part),
                bads=bads,
                min_pd=float(pd[part].min()),
                max_pd=float(pd[part].max()),
                bad_rate=rate,
                cum_rows_share=rows_so_far / len(y),
                cum_capture=bads_so_far / total_bads if total_bads else math.nan,
                lift=rate / base if base else math.nan,
                cum_lift=(bads_so_far / rows_so_far) / base if base else math.nan,
            )
        )
    return out


@dataclass(frozen=True)
class Band:
    decision: str
    rows: int
    share: float
    """Share of applicants (for ``approve``: the approval rate)."""
    bads: int
    bad_rate: float
    capture: float
    """Share of all bads that land in this band."""
    pd_range: str


def policy_bands(y: npt.NDArray[np.integer], pd: Floats, policy: ScoringPolicy) -> list[Band]:
    """Approve / review / decline under ``policy`` (the data plane's own rule)."""
    codes = policy.decision_codes(pd)
    total_bads = int(y.sum())
    ranges = {
        "approve": f"PD < {policy.approve_below:g}",
        "review": f"{policy.approve_below:g} <= PD < {policy.decline_from:g}",
        "decline": f"PD >= {policy.decline_from:g}",
    }
    out = []
    for code, decision in enumerate(DECISIONS):
        mask = codes == code
        rows = int(mask.sum())
        bads = int(y[mask].sum())
        name = decision.value.lower()
        out.append(
            Band(
                decision=name,
                rows=rows,
                share=rows / len(y),
                bads=bads,
                bad_rate=bads / rows if rows else math.nan,
                capture=bads / total_bads if total_bads else math.nan,
                pd_range=ranges.get(name, ""),
            )
        )
    return out


def population_stability(train: Floats, holdout: Floats, names: Sequence[str]) -> dict[str, float]:
    """PSI of each column (``names``) from ``train`` to ``holdout``: Evidently's PSI, the
    drift worker's implementation (:func:`credit_core.drift.value_drift`)."""
    import pandas as pd

    from credit_core.drift import value_drift

    reference = pd.DataFrame(train, columns=list(names))
    current = pd.DataFrame(holdout, columns=list(names))
    # a constant column has no distribution to compare: PSI 0 by definition
    varying = [n for n in names if reference[n].nunique(dropna=True) > 1]
    scores = (
        value_drift(reference, current, {n: ("psi", PSI_SHIFT) for n in varying}).scores
        if varying
        else {}
    )
    return {n: float(scores.get(n, 0.0)) for n in names}


def auc_interval(
    y: npt.NDArray[np.integer], pd: Floats, level: float = 0.95
) -> tuple[float, float, float]:
    """(AUC, low, high): DeLong's standard error (``training.compare``'s code), normal
    interval clipped to [0, 1]."""
    aucs, cov = auc_delong(y, pd)
    auc = float(aucs[0])
    se = math.sqrt(max(float(cov[0, 0]), 0.0))
    z = z_value(level)
    return auc, max(0.0, auc - z * se), min(1.0, auc + z * se)


@dataclass(frozen=True)
class MonotoneCheck:
    feature: str
    direction: int
    """+1: PD may only rise with the feature; -1: only fall."""
    rows: int
    grid: int
    violations: int
    """Steps along the grid where some row's PD moved against the direction (beyond 1e-9)."""
    worst: float
    """Largest move against the direction (0 when none)."""


def monotone_check(
    predict: object,
    x: npt.NDArray[np.float32],
    names: Sequence[str],
    monotone: Sequence[int],
    *,
    grid_points: int = 50,
    tolerance: float = 1e-9,
) -> list[MonotoneCheck]:
    """For each constrained feature: every row of ``x`` with that feature moved over a grid of
    ``grid_points`` values (its 0.5th to 99.5th percentile in ``x``, plus the extremes);
    ``predict`` maps a float32 matrix to PDs."""
    assert callable(predict)
    out = []
    for j, direction in enumerate(monotone):
        if direction == 0:
            continue
        column = x[:, j][np.isfinite(x[:, j])]
        if column.size == 0:
            out.append(MonotoneCheck(names[j], int(direction), len(x), 0, 0, 0.0))
            continue
        inner = np.quantile(column, np.linspace(0.005, 0.995, grid_points - 2))
        grid = np.unique(np.concatenate(([column.min()], inner, [column.max()]))).astype(np.float32)
        stacked = np.repeat(x[None, :, :], len(grid), axis=0)
        stacked[:, :, j] = grid[:, None]
        pds = np.asarray(predict(stacked.reshape(-1, x.shape[1])), dtype=np.float64)
        steps = np.diff(pds.reshape(len(grid), len(x)), axis=0) * direction
        against = steps < -tolerance
        out.append(
            MonotoneCheck(
                feature=names[j],
                direction=int(direction),
                rows=len(x),
                grid=len(grid),
                violations=int(against.any(axis=1).sum()),
                worst=float(max(0.0, -steps.min())) if steps.size else 0.0,
            )
        )
    return out


@dataclass(frozen=True)
class Quality:
    """Everything the report shows beyond the holdout metrics."""

    subject: str
    """Model and dataset, in every plot title."""
    auc_ci: tuple[float, float, float]
    train: Evaluation
    gains: list[Decile]
    bands: list[Band]
    psi: dict[str, float]
    """Per output feature, and ``score``."""
    importance: dict[str, float]
    """Share of the total gain per feature (features never split on are absent)."""
    shap_mean_abs: dict[str, float]
    shap_values: Floats
    """[rows, features] TreeSHAP values of the sample (log-odds)."""
    shap_features: npt.NDArray[np.float32]
    """The sample's feature values (for the summary plot's colours)."""
    monotone: list[MonotoneCheck]
    policy: ScoringPolicy
