"""Hyper-parameter search: ``python -m training train --tune [--trials N] [--timeout S]``.

Optuna's TPE sampler (seeded: the same data, seed and trial count give the same search) proposes
XGBoost parameters; each trial is scored by stratified k-fold cross-validation on the **training
part only** (the holdout never informs the search), with early stopping on each fold's held-out
rows by AUC and the spec's monotone constraints in every fit. After each fold the trial reports
its mean AUC so far, and Optuna's median pruner stops a trial whose running mean falls below the
median of earlier trials at the same fold, from the second fold on (one fold alone is too noisy
on small data) and after ``STARTUP_TRIALS`` complete trials. The best
trial's parameters are refit on the whole training part for the mean of its folds' best round
counts (no early stopping: the rounds were chosen by the cross-validation).

Search space (the spec's ``model`` section gives everything not searched: ``max_rounds`` caps
each fold, ``early_stopping_rounds`` is each fold's patience)::

    eta               0.01 .. 0.3    log scale
    max_depth         2 .. 8
    min_child_weight  0.5 .. 100     log scale
    subsample         0.5 .. 1.0
    colsample_bytree  0.4 .. 1.0
    reg_lambda        0.001 .. 100   log scale
    reg_alpha         0.001 .. 10    log scale
    gamma             0 .. 5

Trial 0 is the spec's own parameters, so the search never ends worse (in cross-validation) than
the configuration it started from.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost as xgb

from training.train import TrainParams, booster_params

__all__ = ["SEARCH_SPACE", "TrialRecord", "TuneResult", "TuneSettings", "tune"]

STARTUP_TRIALS = 5
"""Complete trials before the pruner may stop one."""

SEARCH_SPACE: dict[str, tuple[float, float, bool]] = {
    "eta": (0.01, 0.3, True),
    "max_depth": (2, 8, False),
    "min_child_weight": (0.5, 100.0, True),
    "subsample": (0.5, 1.0, False),
    "colsample_bytree": (0.4, 1.0, False),
    "reg_lambda": (1e-3, 100.0, True),
    "reg_alpha": (1e-3, 10.0, True),
    "gamma": (0.0, 5.0, False),
}
"""name -> (low, high, log scale); integers where the parameter is one."""


@dataclass(frozen=True)
class TuneSettings:
    trials: int = 50
    """Most trials (the search stops earlier at ``timeout``)."""
    timeout: float | None = None
    """Seconds the search may take (trials under way finish)."""
    folds: int = 3
    """Cross-validation folds of the training part."""


@dataclass(frozen=True)
class TrialRecord:
    number: int
    params: dict[str, Any]
    state: str
    """``COMPLETE``, ``PRUNED`` or ``FAIL``."""
    cv_auc: float
    """Mean AUC over the folds run (NaN when none finished)."""
    cv_auc_std: float
    folds_run: int
    rounds: int
    """Mean best round count over the folds run (0 when none finished)."""
    seconds: float


@dataclass(frozen=True)
class TuneResult:
    params: TrainParams
    """The best trial's parameters."""
    rounds: int
    """Boosting rounds of the refit: the mean best round count of the best trial's folds."""
    cv_auc: float
    cv_auc_std: float
    folds: int
    trials: list[TrialRecord] = field(repr=False)
    seconds: float


def _suggest(trial: Any, base: TrainParams) -> TrainParams:
    values: dict[str, Any] = {}
    for name, (low, high, log) in SEARCH_SPACE.items():
        if isinstance(getattr(base, name), int):
            values[name] = trial.suggest_int(name, int(low), int(high), log=log)
        else:
            values[name] = trial.suggest_float(name, low, high, log=log)
    return base.model_copy(update=values)


def _fold_auc(
    params: TrainParams,
    monotone: Sequence[int],
    seed: int,
    train: tuple[npt.NDArray[np.float32], npt.NDArray[np.int8]],
    valid: tuple[npt.NDArray[np.float32], npt.NDArray[np.int8]],
) -> tuple[float, int]:
    """(best validation AUC, rounds up to it) of one fold, with early stopping on AUC."""
    booster_args = {**booster_params(params, monotone, seed), "eval_metric": "auc"}
    dtrain = xgb.DMatrix(train[0], label=train[1], missing=np.nan)
    dvalid = xgb.DMatrix(valid[0], label=valid[1], missing=np.nan)
    booster = xgb.train(
        booster_args,
        dtrain,
        num_boost_round=params.max_rounds,
        evals=[(dvalid, "validation")],
        early_stopping_rounds=params.early_stopping_rounds,
        verbose_eval=False,
    )
    return float(booster.best_score), int(booster.best_iteration) + 1


def tune(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int8],
    *,
    monotone: Sequence[int],
    base: TrainParams,
    settings: TuneSettings,
    seed: int,
    on_trial: Callable[[TrialRecord, float], None] | None = None,
) -> TuneResult:
    """Search XGBoost's parameters by cross-validation on ``x`` (see the module docs).
    ``on_trial(record, best_cv_auc)`` is called after every trial."""
    import optuna
    from sklearn.model_selection import StratifiedKFold

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folds = list(
        StratifiedKFold(n_splits=settings.folds, shuffle=True, random_state=seed).split(x, y)
    )
    records: list[TrialRecord] = []
    tried: dict[int, TrainParams] = {}
    per_trial: dict[int, tuple[list[float], list[int]]] = {}

    def objective(trial: optuna.Trial) -> float:
        # trial 0: the spec's own parameters (the baseline the search must beat)
        params = base if trial.number == 0 else _suggest(trial, base)
        tried[trial.number] = params
        aucs, rounds = per_trial.setdefault(trial.number, ([], []))
        for k, (fit_idx, val_idx) in enumerate(folds):
            auc, n = _fold_auc(
                params, monotone, seed, (x[fit_idx], y[fit_idx]), (x[val_idx], y[val_idx])
            )
            aucs.append(auc)
            rounds.append(n)
            trial.report(float(np.mean(aucs)), k)
            if k < len(folds) - 1 and trial.should_prune():
                raise optuna.TrialPruned
        return float(np.mean(aucs))

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=1),
    )
    started = time.perf_counter()

    def record(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        aucs, rounds = per_trial.get(frozen.number, ([], []))
        rec = TrialRecord(
            number=frozen.number,
            params={n: getattr(tried.get(frozen.number, base), n) for n in SEARCH_SPACE},
            state=frozen.state.name,
            cv_auc=float(np.mean(aucs)) if aucs else math.nan,
            cv_auc_std=float(np.std(aucs)) if aucs else math.nan,
            folds_run=len(aucs),
            rounds=round(float(np.mean(rounds))) if rounds else 0,
            seconds=(frozen.duration.total_seconds() if frozen.duration else math.nan),
        )
        records.append(rec)
        if on_trial is not None:
            best = max((r.cv_auc for r in records if r.state == "COMPLETE"), default=math.nan)
            on_trial(rec, best)

    study.optimize(
        objective,
        n_trials=settings.trials,
        timeout=settings.timeout,
        callbacks=[record],
        catch=(xgb.core.XGBoostError,),
    )
    best = max((r for r in records if r.state == "COMPLETE"), key=lambda r: r.cv_auc)
    return TuneResult(
        params=tried[best.number],
        rounds=max(1, best.rounds),
        cv_auc=best.cv_auc,
        cv_auc_std=best.cv_auc_std,
        folds=settings.folds,
        trials=records,
        seconds=time.perf_counter() - started,
    )
