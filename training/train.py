"""XGBoost fitting as a pure function of (features, labels, params)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost as xgb

__all__ = ["FitResult", "TrainParams", "fit", "predict_margin"]


@dataclass(frozen=True)
class TrainParams:
    """Defaults: the PEERS.md baseline protocol (hist, eta 0.05, depth 4, early stopping on 10 %
    of the training part), with row/column subsampling."""

    eta: float = 0.05
    max_depth: int = 4
    max_rounds: int = 2000
    early_stopping_rounds: int = 100
    min_child_weight: float = 1.0
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    reg_lambda: float = 1.0
    validation_share: float = 0.1
    nthread: int = 0
    """0 = all cores."""

    def as_params(self) -> dict[str, Any]:
        return {f"train.{k}": v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class FitResult:
    booster: xgb.Booster
    best_iteration: int
    best_validation_logloss: float


class _Progress(xgb.callback.TrainingCallback):
    def __init__(self, report: Callable[[int], None]) -> None:
        self._report = report

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        self._report(epoch + 1)
        return False


def fit(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int8],
    *,
    monotone: Sequence[int],
    params: TrainParams,
    seed: int,
    on_round: Callable[[int], None] | None = None,
) -> FitResult:
    """Train a binary:logistic booster with early stopping on a stratified share of ``x``; the
    returned booster keeps only the trees up to the best iteration."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    fit_idx, val_idx = train_test_split(
        idx, test_size=params.validation_share, stratify=y, random_state=seed
    )
    dfit = xgb.DMatrix(x[np.sort(fit_idx)], label=y[np.sort(fit_idx)], missing=np.nan)
    dval = xgb.DMatrix(x[np.sort(val_idx)], label=y[np.sort(val_idx)], missing=np.nan)
    booster_params: dict[str, Any] = {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        "eta": params.eta,
        "max_depth": params.max_depth,
        "min_child_weight": params.min_child_weight,
        "subsample": params.subsample,
        "colsample_bytree": params.colsample_bytree,
        "lambda": params.reg_lambda,
        "monotone_constraints": "(" + ",".join(str(int(m)) for m in monotone) + ")",
        "seed": seed,
        "nthread": params.nthread,
        "verbosity": 0,
    }
    callbacks: list[xgb.callback.TrainingCallback] = []
    if on_round is not None:
        callbacks.append(_Progress(on_round))
    booster = xgb.train(
        booster_params,
        dfit,
        num_boost_round=params.max_rounds,
        evals=[(dval, "validation")],
        early_stopping_rounds=params.early_stopping_rounds,
        verbose_eval=False,
        callbacks=callbacks,
    )
    best = int(booster.best_iteration)
    score = float(booster.best_score)
    return FitResult(
        booster=booster[: best + 1], best_iteration=best, best_validation_logloss=score
    )


def predict_margin(booster: xgb.Booster, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """XGBoost's own log-odds for ``x`` (all trees of the booster)."""
    out = booster.inplace_predict(x, missing=np.nan, predict_type="margin")
    return np.asarray(out, dtype=np.float64)
