"""Label-free performance: the AUC a window of predictions should have, estimated from the
calibrated PDs alone (confidence-based performance estimation, CBPE: Kamulete et al.; NannyML's
``CBPE``), for the months before default labels arrive.

If applicant ``i`` defaults with probability ``p_i``, then ranking the window by the model's PD
(most risky first, as the realised AUC does), the expected true positives among the top ``k``
are the sum of their ``p``, the expected false positives the sum of their ``1 - p``;
normalising by the expected totals gives the expected ROC curve, whose area is the estimate.
Applicants with equal PDs are one step of the curve, so the estimate does not depend on row
order.

The estimate rests on calibration, and a model's PDs are rarely calibrated everywhere: GMSC's
gives 0.0078 where 0.47 % default, which alone puts the estimate 0.02-0.03 under the truth on
low-risk windows. As NannyML does, :class:`Calibration` maps PDs to observed default rates with
an isotonic fit on labelled data the model did not train on (the holdout); the ranking stays
the model's own PD, only the expectations use the calibrated ``p``. Once outcomes arrive, the
realised AUC (:func:`realised_auc`) is computed beside the estimate, so a calibration that
drifts shows up as a gap between the two. Training fits the calibration on the holdout and
stores it in the model bundle (:meth:`credit_core.bundle.ModelBundle.calibration`); the drift
worker estimates with it.

NannyML itself is not a dependency: its pins (pandas, numpy < 2) do not fit the lock, and the
method is these few lines; ``tests/drift/test_performance.py`` checks them against the realised
AUC of GMSC holdout windows, with and without a shift in the score distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Calibration", "estimated_auc", "realised_auc"]


def _probabilities(values: npt.ArrayLike, what: str) -> npt.NDArray[np.float64]:
    p = np.asarray(values, dtype=np.float64).ravel()
    if not np.all((p >= 0.0) & (p <= 1.0)):  # NaN fails too
        raise ValueError(f"{what} must be probabilities in [0, 1]")
    return p


@dataclass(frozen=True)
class Calibration:
    """A monotone map from the model's PD to the default rate observed at that PD: the
    isotonic regression's knots, applied by linear interpolation (flat beyond the ends)."""

    knots_pd: npt.NDArray[np.float64]
    knots_rate: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        if (
            self.knots_pd.ndim != 1
            or self.knots_pd.shape != self.knots_rate.shape
            or self.knots_pd.size == 0
            or np.any(np.diff(self.knots_pd) < 0)
            or np.any(np.diff(self.knots_rate) < 0)
        ):
            raise ValueError("calibration knots must be two equal, non-empty, sorted arrays")
        _probabilities(self.knots_pd, "calibration knots")
        _probabilities(self.knots_rate, "calibration rates")

    @classmethod
    def fit(cls, pd: npt.ArrayLike, defaulted: npt.ArrayLike) -> Calibration:
        """Fit on labelled PDs the model did not train on (sklearn's IsotonicRegression)."""
        from sklearn.isotonic import IsotonicRegression

        p = _probabilities(pd, "PDs")
        y = np.asarray(defaulted, dtype=bool).ravel()
        if p.size != y.size or y.all() or not y.any():
            raise ValueError("calibration needs one outcome per PD, and both outcomes present")
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        return cls(
            np.asarray(iso.X_thresholds_, dtype=np.float64),
            np.asarray(iso.y_thresholds_, dtype=np.float64),
        )

    def __call__(self, pd: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return np.interp(_probabilities(pd, "PDs"), self.knots_pd, self.knots_rate)


def estimated_auc(pd: npt.ArrayLike, p_default: npt.ArrayLike | None = None) -> float:
    """The expected ROC AUC of ranking by ``pd`` (each in [0, 1]) when applicant ``i`` defaults
    with probability ``p_default[i]`` (``pd`` itself when not given; usually
    ``calibration(pd)``). NaN when the window is empty or no default (or no non-default) is
    expected."""
    score = _probabilities(pd, "PDs")
    p = score if p_default is None else _probabilities(p_default, "default probabilities")
    if p.shape != score.shape:
        raise ValueError("one default probability per PD")
    if p.size == 0:
        return float("nan")
    order = np.argsort(-score, kind="stable")
    ranked = score[order]
    expected = p[order]
    # one ROC step per distinct PD (ties together), most risky first
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    tp = np.add.reduceat(expected, starts)
    fp = np.add.reduceat(1.0 - expected, starts)
    tpr = np.r_[0.0, np.cumsum(tp)]
    fpr = np.r_[0.0, np.cumsum(fp)]
    if tpr[-1] <= 0.0 or fpr[-1] <= 0.0:
        return float("nan")
    return float(np.trapezoid(tpr / tpr[-1], fpr / fpr[-1]))


def realised_auc(pd: npt.ArrayLike, defaulted: npt.ArrayLike) -> float:
    """The ROC AUC of the PDs against the observed outcomes (NaN without both classes)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(defaulted, dtype=bool).ravel()
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, np.asarray(pd, dtype=np.float64).ravel()))
