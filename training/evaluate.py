"""Discrimination and calibration metrics for probability-of-default models.

Everything in this module is a pure function of its inputs: no I/O, no
plotting, no global state. The conventions are those of credit scoring:
``y_true`` is 1 for a default ("bad") and 0 for a non-default ("good"), and
``pd`` is the model's predicted probability of default, so a higher ``pd``
means a riskier applicant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    brier_score_loss,
    log_loss,
    roc_auc_score,
    roc_curve,
)

__all__ = ["CalibrationBin", "Evaluation", "evaluate"]


@dataclass(frozen=True)
class CalibrationBin:
    """One equal-count bin of predicted PDs.

    The first bin covers the closed interval ``[lower, upper]``; every later
    bin covers the half-open interval ``(lower, upper]``.

    Attributes:
        lower: Lower PD edge of the bin.
        upper: Upper PD edge of the bin.
        count: Number of observations in the bin.
        mean_pd: Mean predicted PD of the observations in the bin.
        observed_rate: Observed default rate (mean of ``y_true``) in the bin.
    """

    lower: float
    upper: float
    count: int
    mean_pd: float
    observed_rate: float

    @property
    def gap(self) -> float:
        """Absolute difference between mean predicted PD and observed rate."""
        return abs(self.mean_pd - self.observed_rate)


@dataclass(frozen=True)
class Evaluation:
    """Result of :func:`evaluate`.

    Attributes:
        n: Number of observations.
        n_positive: Number of defaults (``y_true == 1``).
        auc: Area under the ROC curve.
        gini: Gini coefficient, ``2 * auc - 1``.
        ks: Kolmogorov-Smirnov statistic, ``max |TPR - FPR|`` over thresholds.
        ks_threshold: The PD threshold (classify as bad when
            ``pd >= ks_threshold``) at which ``ks`` is reached; the highest
            such PD when there are ties.
        brier: Brier score (mean squared error of ``pd``).
        log_loss: Binary cross-entropy of ``pd``.
        calibration: Equal-count calibration bins, ordered by PD.
    """

    n: int
    n_positive: int
    auc: float
    gini: float
    ks: float
    ks_threshold: float
    brier: float
    log_loss: float
    calibration: list[CalibrationBin]

    @property
    def base_rate(self) -> float:
        """Observed default rate over the whole sample."""
        return self.n_positive / self.n

    @property
    def calibration_max_gap(self) -> float:
        """Largest ``|mean_pd - observed_rate|`` over the calibration bins."""
        return max((b.gap for b in self.calibration), default=0.0)

    def metrics(self) -> dict[str, float]:
        """Return the scalar metrics as a flat mapping.

        Returns:
            A dict with keys ``n``, ``n_positive``, ``base_rate``, ``auc``,
            ``gini``, ``ks``, ``brier``, ``log_loss`` and
            ``calibration_max_gap``, suitable for logging to a tracker.
        """
        return {
            "n": float(self.n),
            "n_positive": float(self.n_positive),
            "base_rate": self.base_rate,
            "auc": self.auc,
            "gini": self.gini,
            "ks": self.ks,
            "brier": self.brier,
            "log_loss": self.log_loss,
            "calibration_max_gap": self.calibration_max_gap,
        }


def _validate(
    y_true: npt.NDArray[np.integer] | npt.NDArray[np.floating],
    pd: npt.NDArray[np.floating],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Check the inputs of :func:`evaluate` and convert them to canonical dtypes.

    Args:
        y_true: Observed outcomes, 0/1.
        pd: Predicted probabilities of default.

    Returns:
        ``(y, p)`` as 1-D ``int64`` and ``float64`` arrays.

    Raises:
        ValueError: If the inputs are not usable (see :func:`evaluate`).
    """
    y_arr = np.asarray(y_true)
    p_arr = np.asarray(pd, dtype=np.float64)
    if y_arr.ndim != 1 or p_arr.ndim != 1:
        raise ValueError(
            f"y_true and pd must be 1-D arrays, got shapes {y_arr.shape} and {p_arr.shape}"
        )
    if y_arr.shape[0] != p_arr.shape[0]:
        raise ValueError(
            f"y_true and pd must have the same length, got {y_arr.shape[0]} and {p_arr.shape[0]}"
        )
    if y_arr.shape[0] == 0:
        raise ValueError("y_true and pd must not be empty")
    if not np.isin(y_arr, (0, 1)).all():
        raise ValueError("y_true must contain only 0 (good) and 1 (bad)")
    y = y_arr.astype(np.int64)
    n_positive = int(y.sum())
    if n_positive in (0, y.shape[0]):
        raise ValueError(
            "y_true contains only one class "
            f"({'all bad' if n_positive else 'all good'}); "
            "AUC, KS and calibration need both goods and bads"
        )
    if np.isnan(p_arr).any():
        raise ValueError(f"pd contains {int(np.isnan(p_arr).sum())} NaN value(s)")
    out_of_range = (p_arr < 0.0) | (p_arr > 1.0)
    if out_of_range.any():
        raise ValueError(
            f"pd must lie in [0, 1], found {int(out_of_range.sum())} value(s) outside "
            f"(min={float(p_arr.min())!r}, max={float(p_arr.max())!r})"
        )
    return y, p_arr


def _ks(y: npt.NDArray[np.int64], p: npt.NDArray[np.float64]) -> tuple[float, float]:
    """Kolmogorov-Smirnov statistic and the threshold where it is reached.

    Args:
        y: Validated 0/1 outcomes.
        p: Validated PDs.

    Returns:
        ``(ks, threshold)`` where ``ks = max |TPR - FPR|`` over all distinct PD
        thresholds and ``threshold`` is an observed PD value. When several
        thresholds reach the maximum, the highest PD is returned.
    """
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    # Index 0 is sklearn's artificial ``inf`` threshold (TPR = FPR = 0); it can
    # never beat a real threshold, so drop it to keep the threshold a real PD.
    gap = np.abs(np.asarray(tpr[1:]) - np.asarray(fpr[1:]))
    best = int(np.argmax(gap))
    return float(gap[best]), float(thresholds[1:][best])


def _calibration(
    y: npt.NDArray[np.int64], p: npt.NDArray[np.float64], n_bins: int
) -> list[CalibrationBin]:
    """Equal-count calibration bins from PD quantiles.

    Bin upper edges are the ``k / n_bins`` quantiles (``k = 1..n_bins``) of
    ``p`` taken with the inverted-CDF method, so every edge is an observed PD
    and, once duplicate edges are collapsed, every bin is non-empty.

    Args:
        y: Validated 0/1 outcomes.
        p: Validated PDs.
        n_bins: Requested number of bins (fewer are returned when PDs tie).

    Returns:
        Non-empty bins ordered by PD whose counts sum to ``len(p)``.
    """
    probs = np.arange(1, n_bins + 1) / n_bins
    uppers = np.unique(np.quantile(p, probs, method="inverted_cdf"))
    # Bin i holds uppers[i-1] < p <= uppers[i]; the last upper edge is max(p).
    idx = np.searchsorted(uppers, p, side="left")
    lowers = np.concatenate(([p.min()], uppers[:-1]))
    bins: list[CalibrationBin] = []
    for i, (lo, hi) in enumerate(zip(lowers, uppers, strict=True)):
        mask = idx == i
        count = int(mask.sum())
        if count == 0:  # cannot happen with observed-value edges; be safe anyway
            continue
        bins.append(
            CalibrationBin(
                lower=float(lo),
                upper=float(hi),
                count=count,
                mean_pd=float(p[mask].mean()),
                observed_rate=float(y[mask].mean()),
            )
        )
    return bins


def evaluate(
    y_true: npt.NDArray[np.integer] | npt.NDArray[np.floating],
    pd: npt.NDArray[np.floating],
    n_bins: int = 10,
) -> Evaluation:
    """Evaluate predicted probabilities of default against observed outcomes.

    Args:
        y_true: 1-D array of observed outcomes, 1 = default (bad), 0 = good.
        pd: 1-D array of predicted probabilities of default, in ``[0, 1]``.
        n_bins: Number of equal-count calibration bins (deciles by default).
            Fewer bins are produced when tied PDs make quantile edges collapse.

    Returns:
        The discrimination (AUC, Gini, KS), accuracy (Brier, log-loss) and
        calibration results.

    Raises:
        ValueError: If the arrays are not 1-D, differ in length, are empty,
            ``y_true`` is not 0/1 or has only one class, ``pd`` contains NaN or
            values outside ``[0, 1]``, or ``n_bins`` is less than 1.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    y, p = _validate(y_true, pd)
    auc = float(roc_auc_score(y, p))
    ks, ks_threshold = _ks(y, p)
    return Evaluation(
        n=int(y.shape[0]),
        n_positive=int(y.sum()),
        auc=auc,
        gini=2.0 * auc - 1.0,
        ks=ks,
        ks_threshold=ks_threshold,
        brier=float(brier_score_loss(y, p)),
        log_loss=float(log_loss(y, p, labels=[0, 1])),
        calibration=_calibration(y, p, n_bins),
    )
