"""XGBoost fitting as a pure function of (features, labels, params)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost as xgb

from feature_kernels import ModelDef

__all__ = [
    "FitResult",
    "TrainParams",
    "booster_params",
    "early_stopping_split",
    "fit",
    "fit_rounds",
    "logged_params",
    "predict_margin",
]


TrainParams = ModelDef
"""XGBoost's hyper-parameters: the spec's ``model`` section (defaults there)."""


def logged_params(params: TrainParams) -> dict[str, Any]:
    """The hyper-parameters as MLflow params and bundle metadata (``train.<name>``)."""
    return {f"train.{k}": v for k, v in params.model_dump().items()}


def booster_params(params: TrainParams, monotone: Sequence[int], seed: int) -> dict[str, Any]:
    """``xgb.train``'s parameters for ``params``: binary:logistic, hist, the spec's monotone
    constraints, all cores."""
    return {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        "eta": params.eta,
        "max_depth": params.max_depth,
        "min_child_weight": params.min_child_weight,
        "subsample": params.subsample,
        "colsample_bytree": params.colsample_bytree,
        "lambda": params.reg_lambda,
        "alpha": params.reg_alpha,
        "gamma": params.gamma,
        "monotone_constraints": "(" + ",".join(str(int(m)) for m in monotone) + ")",
        "seed": seed,
        "nthread": 0,
        "verbosity": 0,
    }


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


def early_stopping_split(
    y: npt.NDArray[np.int8], share: float, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(rows boosted on, rows early stopping watches), each sorted: a stratified ``share`` of
    the training part held out."""
    from sklearn.model_selection import train_test_split

    fit_idx, val_idx = train_test_split(
        np.arange(len(y)), test_size=share, stratify=y, random_state=seed
    )
    return np.sort(fit_idx), np.sort(val_idx)


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
    fit_idx, val_idx = early_stopping_split(y, params.validation_share, seed)
    dfit = xgb.DMatrix(x[fit_idx], label=y[fit_idx], missing=np.nan)
    dval = xgb.DMatrix(x[val_idx], label=y[val_idx], missing=np.nan)
    callbacks: list[xgb.callback.TrainingCallback] = []
    if on_round is not None:
        callbacks.append(_Progress(on_round))
    booster = xgb.train(
        booster_params(params, monotone, seed),
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


def fit_rounds(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int8],
    *,
    monotone: Sequence[int],
    params: TrainParams,
    rounds: int,
    seed: int,
    on_round: Callable[[int], None] | None = None,
) -> FitResult:
    """Train on all of ``x`` for exactly ``rounds`` rounds (no early stopping): the refit after
    a search whose cross-validation chose the rounds."""
    callbacks: list[xgb.callback.TrainingCallback] = []
    if on_round is not None:
        callbacks.append(_Progress(on_round))
    booster = xgb.train(
        booster_params(params, monotone, seed),
        xgb.DMatrix(x, label=y, missing=np.nan),
        num_boost_round=rounds,
        verbose_eval=False,
        callbacks=callbacks,
    )
    return FitResult(booster=booster, best_iteration=rounds - 1, best_validation_logloss=np.nan)


def predict_margin(booster: xgb.Booster, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """XGBoost's own log-odds for ``x`` (all trees of the booster)."""
    out = booster.inplace_predict(x, missing=np.nan, predict_type="margin")
    return np.asarray(out, dtype=np.float64)
