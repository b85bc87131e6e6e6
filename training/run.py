"""One training run: data -> features (Rust kernels) -> XGBoost -> evaluation and report ->
model bundle -> MLflow run and model version -> alias ``champion`` when gates pass and none exists.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from credit_core import ModelBundle, ModelRejectedError, ReferenceSample, ScoringPolicy
from credit_core.bundle import ENTITIES
from credit_core.performance import Calibration, estimated_auc
from credit_core.registry import ChildRun, ModelVersionRef
from feature_kernels import FeatureError, FeaturePipeline, TreeEnsemble, load_spec, logistic
from scoring_server.compile import ship_library
from scoring_server.settings import ServerSettings
from training.dataset import (
    TrainingDataError,
    describe_bad_rows,
    labels,
    learned_columns,
    load_frame,
    stratified_split,
)
from training.evaluate import Evaluation, evaluate
from training.publish import entity_snapshot
from training.quality import (
    Quality,
    auc_interval,
    gains_table,
    monotone_check,
    policy_bands,
    population_stability,
)
from training.report import write_report
from training.settings import TrainingSettings
from training.train import (
    FitResult,
    TrainParams,
    fit,
    fit_rounds,
    logged_params,
    predict_margin,
)
from training.tune import TrialRecord, TuneResult, TuneSettings

__all__ = ["TrainOutcome", "bundle_metadata", "train_and_register"]

log = logging.getLogger(__name__)
CHAMPION = "champion"


@dataclass(frozen=True)
class TrainOutcome:
    version: ModelVersionRef
    evaluation: Evaluation
    best_iteration: int
    champion_set: bool
    run_id: str


def bundle_metadata(
    pipeline: FeaturePipeline, *, metrics: Mapping[str, float], training: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``metadata.json`` of a model bundle: what the loader checks (spec name and version,
    schema hash, feature order) plus the holdout metrics and the training details."""
    spec = pipeline.spec
    return {
        "spec_name": spec.name,
        "spec_version": spec.version,
        "schema_hash": pipeline.schema_hash,
        "feature_names": pipeline.feature_names,
        "metrics": dict(metrics),
        "training": dict(training),
    }


@contextmanager
def _step(console: Console, text: str) -> Iterator[None]:
    t0 = time.perf_counter()
    with console.status(text):
        yield
    console.log(f"{text} done in {time.perf_counter() - t0:.1f} s")


def _search(
    console: Console,
    x: np.ndarray[Any, np.dtype[np.float32]],
    y: np.ndarray[Any, np.dtype[np.int8]],
    pipeline: FeaturePipeline,
    base: TrainParams,
    settings: TuneSettings,
    training: TrainingSettings,
) -> TuneResult:
    from training.tune import tune

    limit = f", at most {settings.timeout:g} s" if settings.timeout else ""
    console.log(
        f"tuning: up to {settings.trials} trials{limit}, {settings.folds}-fold CV on "
        f"{len(y):,} training rows"
    )
    with Progress(
        TextColumn("tuning"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("trials  {task.fields[best]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("tuning", total=settings.trials, best="")

        def on_trial(record: TrialRecord, best: float) -> None:
            progress.update(task, advance=1, best=f"best CV AUC {best:.4f}")

        result = tune(
            x,
            y,
            monotone=pipeline.monotone,
            base=base,
            settings=settings,
            seed=training.seed,
            on_trial=on_trial,
        )
    states = [r.state for r in result.trials]
    console.log(
        f"tuning done in {result.seconds:.0f} s: {len(states)} trials "
        f"({states.count('PRUNED')} pruned, {states.count('FAIL')} failed); best CV AUC "
        f"{result.cv_auc:.4f} ± {result.cv_auc_std:.4f} (trial 0, the spec's parameters: "
        f"{result.trials[0].cv_auc:.4f})"
    )
    return result


SCORE = "score"
"""The score's row in the stability table."""
SHAP_ROWS = 2000
MONOTONE_ROWS = 200


def _quality(
    booster: Any,
    pipeline: FeaturePipeline,
    x_train: np.ndarray[Any, np.dtype[np.float32]],
    y_train: np.ndarray[Any, np.dtype[np.int8]],
    x_test: np.ndarray[Any, np.dtype[np.float32]],
    y_test: np.ndarray[Any, np.dtype[np.int8]],
    pd_test: np.ndarray[Any, np.dtype[np.float64]],
    policy: ScoringPolicy,
    *,
    subject: str,
    seed: int,
) -> Quality:
    """The report's committee sections (:mod:`training.quality`) for a fitted booster."""
    names = pipeline.feature_names
    pd_train = logistic(predict_margin(booster, x_train))
    scores_train = policy.scores(pd_train).astype(np.float64)
    scores_test = policy.scores(pd_test).astype(np.float64)
    psi = population_stability(
        np.column_stack([x_train, scores_train]),
        np.column_stack([x_test, scores_test]),
        [*names, SCORE],
    )
    gain = {
        names[int(k[1:])]: float(v)
        for k, v in booster.get_score(importance_type="total_gain").items()
    }
    total = sum(gain.values()) or 1.0
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(x_test), size=min(SHAP_ROWS, len(x_test)), replace=False))
    rows = np.ascontiguousarray(x_test[sample], dtype=np.float32)
    ensemble = TreeEnsemble.from_json(bytes(booster.save_raw(raw_format="json")).decode())
    _, shap_values = ensemble.shap(rows)
    mono_rows = rows[: min(MONOTONE_ROWS, len(rows))]
    return Quality(
        subject=subject,
        auc_ci=auc_interval(y_test, pd_test),
        train=evaluate(y_train, pd_train),
        gains=gains_table(y_test, pd_test),
        bands=policy_bands(y_test, pd_test, policy),
        psi=psi,
        importance={k: v / total for k, v in gain.items()},
        shap_mean_abs={n: float(np.mean(np.abs(shap_values[:, j]))) for j, n in enumerate(names)},
        shap_values=np.asarray(shap_values, dtype=np.float64),
        shap_features=rows,
        monotone=monotone_check(
            lambda m: logistic(ensemble.predict_margin(np.ascontiguousarray(m))),
            mono_rows,
            names,
            pipeline.monotone,
        ),
        policy=policy,
    )


def _boost(
    console: Console,
    x: np.ndarray[Any, np.dtype[np.float32]],
    y: np.ndarray[Any, np.dtype[np.int8]],
    rows: np.ndarray[Any, np.dtype[np.int64]],
    pipeline: FeaturePipeline,
    params: TrainParams,
    tuned: TuneResult | None,
    seed: int,
) -> FitResult:
    with Progress(
        TextColumn("boosting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rounds" if tuned else "rounds (max)"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        if tuned is None:
            task = progress.add_task("boosting", total=params.max_rounds)
            return fit(
                x[rows],
                y[rows],
                monotone=pipeline.monotone,
                params=params,
                seed=seed,
                on_round=lambda n: progress.update(task, completed=n),
            )
        # the refit: the whole training part, the rounds the cross-validation chose
        task = progress.add_task("boosting", total=tuned.rounds)
        return fit_rounds(
            x[rows],
            y[rows],
            monotone=pipeline.monotone,
            params=params,
            rounds=tuned.rounds,
            seed=seed,
            on_round=lambda n: progress.update(task, completed=n),
        )


def _on_dask(
    console: Console,
    address: str,
    frame: Any,
    y: np.ndarray[Any, np.dtype[np.int8]],
    rows: np.ndarray[Any, np.dtype[np.int64]],
    spec: Any,
    pipeline: FeaturePipeline,
    params: TrainParams,
    seed: int,
    describe: Callable[[FeatureError], str],
) -> tuple[np.ndarray[Any, np.dtype[np.float32]], FitResult]:
    """Features on the Dask workers, boosting by ``xgboost.dask`` (:mod:`training.distributed`);
    the features come back for the evaluation and report."""
    from training.distributed import dask_client, features_on_workers, fit_on_workers

    with dask_client(address) as client:
        workers = len(client.scheduler_info()["workers"])
        text = f"building {pipeline.n_features} features for {len(y):,} rows on {workers} workers"
        with _step(console, text):
            try:
                features = features_on_workers(client, spec, frame, pipeline.n_features)
                x = np.asarray(features.compute(), dtype=np.float32)
            except FeatureError as e:
                raise TrainingDataError(describe(e)) from None
        with _step(console, f"boosting on {workers} Dask workers (xgboost.dask)"):
            result = fit_on_workers(
                client,
                features[rows],
                y[rows],
                monotone=list(pipeline.monotone),
                params=params,
                seed=seed,
            )
    return x, result


def train_and_register(
    settings: TrainingSettings,
    *,
    spec_path: Path,
    data_path: Path,
    params: TrainParams | None = None,
    tune: TuneSettings | None = None,
    dask_scheduler: str | None = None,
    champion: str = "if-missing",
    alias: str = CHAMPION,
    console: Console | None = None,
) -> TrainOutcome:
    """Train on ``data_path`` with ``spec_path`` and register the model.

    ``params``: XGBoost's hyper-parameters (default: the spec's ``model`` section). ``tune``:
    search them first by cross-validation on the training part (:mod:`training.tune`); the
    best trial is refit on the whole training part and every trial is logged to MLflow as a
    child run of the training run. ``dask_scheduler``: build the features and boost on a Dask
    cluster (:mod:`training.distributed`; ``local`` for a ``LocalCluster``).

    ``champion``: ``if-missing`` sets the alias only when none exists, ``always`` moves it,
    ``never`` leaves it. The alias is set only when the holdout AUC passes ``settings.min_auc``.
    ``alias``: the alias it applies to, ``champion`` or ``challenger`` (a challenger is promoted
    later by ``python -m training promote``); ``champion_set`` in the outcome tells whether it
    was set.
    """
    console = console or Console(stderr=True)
    spec = load_spec(spec_path)
    if params is None:
        params = spec.model

    with _step(console, f"loading {data_path}"):
        frame = load_frame(data_path, spec)
        y = labels(frame, spec)
    split = stratified_split(y, settings.test_size, settings.seed)
    source = spec
    spec = spec.fitted(learned_columns(frame, spec, split.train))  # frequency ranks
    pipeline = FeaturePipeline(spec)
    tuned: TuneResult | None = None
    if dask_scheduler is not None:
        if tune is not None:
            raise ValueError(
                "--tune runs on one machine: tune there, then train the chosen parameters "
                "(the run's train.* params) on the cluster with --dask-scheduler"
            )
        x, result = _on_dask(
            console, dask_scheduler, frame, y, split.train, spec, pipeline, params, settings.seed,
            lambda e: describe_bad_rows(e, data_path, spec, spec_path),
        )  # fmt: skip
    else:
        with _step(console, f"building {pipeline.n_features} features for {len(y):,} rows"):
            try:
                x = pipeline.transform_frame(frame)
            except FeatureError as e:
                raise TrainingDataError(describe_bad_rows(e, data_path, spec, spec_path)) from None
        if tune is not None:
            tuned = _search(
                console, x[split.train], y[split.train], pipeline, params, tune, settings
            )
            params = tuned.params
        result = _boost(console, x, y, split.train, pipeline, params, tuned, settings.seed)
    trees = result.best_iteration + 1
    console.log(
        f"boosting stopped: {trees} trees (best validation round)"
        if tuned is None
        else f"refit: {trees} trees (the best trial's mean rounds over its folds)"
    )

    x_test, y_test = x[split.test], y[split.test]
    margin_test = predict_margin(result.booster, x_test)
    pd_test = 1.0 / (1.0 + np.exp(-margin_test))
    evaluation = evaluate(y_test, pd_test)
    metrics = evaluation.metrics()
    # the label-free estimate from the raw PDs: its gap to the AUC measures the miscalibration
    # the stored calibration corrects for the drift worker
    metrics["estimated_auc_uncalibrated"] = estimated_auc(pd_test)
    calibration = Calibration.fit(pd_test, y_test)
    console.log(
        f"holdout AUC {evaluation.auc:.4f}  Gini {evaluation.gini:.4f}  KS {evaluation.ks:.4f}  "
        f"Brier {evaluation.brier:.5f}  (n={evaluation.n:,}, seed={settings.seed})"
    )

    rng = np.random.default_rng(settings.seed)
    n_ref = min(settings.reference_rows, len(split.test))
    ref_rows = np.sort(rng.choice(len(split.test), size=n_ref, replace=False))
    reference = ReferenceSample(features=x_test[ref_rows], margin=margin_test[ref_rows])

    policy = ServerSettings().policy()  # what the server answers with (ALTSCORE_*)
    scores = policy.scores(pd_test).astype(np.float64)
    with _step(console, "computing the report's gains, bands, stability, SHAP, monotonicity"):
        quality = _quality(
            result.booster,
            pipeline,
            x[split.train],
            y[split.train],
            x_test,
            y_test,
            pd_test,
            policy,
            subject=f"{spec.name} v{spec.version} on {data_path.name}",
            seed=settings.seed,
        )
    report_metrics = dict(
        auc_ci_low=quality.auc_ci[1],
        auc_ci_high=quality.auc_ci[2],
        train_auc=quality.train.auc,
        psi_score=quality.psi[SCORE],
        psi_max_feature=max((v for k, v in quality.psi.items() if k != SCORE), default=0.0),
        monotone_violations=float(sum(m.violations for m in quality.monotone)),
    )
    details: dict[str, str | float | int] = {
        "spec": f"{spec.name} v{spec.version}",
        "data": str(data_path),
        "rows": len(y),
        "holdout": f"stratified {settings.test_size:.0%}, random_state={settings.seed}",
        "trees": result.best_iteration + 1,
        "schema_hash": pipeline.schema_hash,
    }
    if tuned is not None:
        states = [r.state for r in tuned.trials]
        details["tuning"] = (
            f"{len(states)} trials ({states.count('PRUNED')} pruned), {tuned.folds}-fold CV on "
            f"the training part: best CV AUC {tuned.cv_auc:.4f} ± {tuned.cv_auc_std:.4f} in "
            f"{tuned.seconds:.0f} s"
        )
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    metadata = bundle_metadata(
        pipeline,
        metrics=metrics,
        training={
            **details,
            "created_at": now,
            "params": logged_params(params),
            "train_rows": len(split.train),
            "test_rows": len(split.test),
        },
    )
    registry = settings.registry()
    with tempfile.TemporaryDirectory(prefix="altscore-train-") as tmp:
        bundle_dir = Path(tmp) / "model"
        report_dir = Path(tmp) / "report"
        with _step(console, "writing model bundle and report"):
            ModelBundle.write(
                bundle_dir,
                booster_json=bytes(result.booster.save_raw(raw_format="json")),
                spec_file=spec_path,
                spec_text=None if spec is source else spec.to_yaml(),  # as fitted
                reference=reference,
                metadata=metadata,
                calibration=calibration,
            )
            try:
                shipped = ship_library(
                    ModelBundle.read(bundle_dir), settings.compile_parallel_units
                )
                console.log(f"compiled the TL2cgen library in {shipped.compile_seconds:.1f} s")
            except ModelRejectedError as e:  # servers with a compiler still compile it
                console.log(
                    f"[yellow]warning:[/] the bundle ships no compiled library ({e}); a server "
                    "without a C compiler (the runtime image) will refuse this version"
                )
            if spec.entity is not None:
                entity_snapshot(spec, data_path.parent, dt.datetime.now(dt.UTC)).write_parquet(
                    bundle_dir / ENTITIES
                )
            write_report(
                report_dir,
                title=f"{spec.name} v{spec.version}: holdout evaluation",
                y_true=y_test,
                pd=pd_test,
                score=scores,
                evaluation=evaluation,
                details=details,
                quality=quality,
                feature_names=pipeline.feature_names,
            )
        with _step(console, f"logging to MLflow ({registry.tracking_uri})"):
            run_id = registry.log_run(
                settings.experiment,
                run_name=f"{spec.name}-v{spec.version}-{now}",
                params={
                    **logged_params(params),
                    "spec": spec.name,
                    "spec_version": spec.version,
                    "data": str(data_path),
                    "seed": settings.seed,
                    "test_size": settings.test_size,
                    "best_iteration": result.best_iteration,
                },
                metrics={
                    **{f"holdout_{k}": v for k, v in metrics.items()},
                    **report_metrics,
                    **(
                        {}
                        if tuned is None
                        else {
                            "cv_auc": tuned.cv_auc,
                            "cv_auc_std": tuned.cv_auc_std,
                            "tune_seconds": tuned.seconds,
                            "tune_trials": len(tuned.trials),
                        }
                    ),
                },
                artifacts={"model": bundle_dir, "report": report_dir},
                tags={"spec": spec.name, "schema_hash": pipeline.schema_hash},
            )
            if tuned is not None:  # every trial as a child run of this one
                registry.log_child_runs(
                    settings.experiment,
                    run_id,
                    [
                        ChildRun(
                            name=f"trial-{t.number}",
                            params={f"train.{k}": v for k, v in t.params.items()},
                            metrics={
                                k: v
                                for k, v in (
                                    ("cv_auc", t.cv_auc),
                                    ("cv_auc_std", t.cv_auc_std),
                                    ("folds_run", float(t.folds_run)),
                                    ("rounds", float(t.rounds)),
                                    ("seconds", t.seconds),
                                )
                                if np.isfinite(v)
                            },
                            tags={"trial_state": t.state},
                        )
                        for t in tuned.trials
                    ],
                )
            version = registry.register(
                settings.model_name,
                run_id,
                "model",
                tags={"schema_hash": pipeline.schema_hash, "auc": f"{evaluation.auc:.5f}"},
            )
    console.log(f"registered {version.name} version {version.version} (run {run_id})")
    console.print(f"report: {registry.artifact_uri(run_id)}/report/report.html", soft_wrap=True)

    champion_set = False
    if evaluation.auc < settings.min_auc:
        console.log(f"gate failed: AUC {evaluation.auc:.4f} < {settings.min_auc}; no alias set")
    elif champion == "always" or (
        champion == "if-missing" and registry.get_alias(settings.model_name, alias) is None
    ):
        registry.set_alias(settings.model_name, alias, version.version)
        champion_set = True
        console.log(f"alias {alias!r} -> version {version.version}")
    return TrainOutcome(version, evaluation, result.best_iteration, champion_set, run_id)
