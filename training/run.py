"""One training run: data -> features (Rust kernels) -> XGBoost -> evaluation and report ->
model bundle -> MLflow run and model version -> alias ``champion`` when gates pass and none exists.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import time
from collections.abc import Iterator, Mapping
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
from credit_core.registry import ModelVersionRef
from feature_kernels import FeaturePipeline, load_spec
from scoring_server.compile import ship_library
from training.dataset import labels, load_frame, stratified_split
from training.evaluate import Evaluation, evaluate
from training.publish import entity_snapshot
from training.report import write_report
from training.settings import TrainingSettings
from training.train import TrainParams, fit, predict_margin

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


def train_and_register(
    settings: TrainingSettings,
    *,
    spec_path: Path,
    data_path: Path,
    params: TrainParams,
    champion: str = "if-missing",
    alias: str = CHAMPION,
    console: Console | None = None,
) -> TrainOutcome:
    """Train on ``data_path`` with ``spec_path`` and register the model.

    ``champion``: ``if-missing`` sets the alias only when none exists, ``always`` moves it,
    ``never`` leaves it. The alias is set only when the holdout AUC passes ``settings.min_auc``.
    ``alias``: the alias it applies to, ``champion`` or ``challenger`` (a challenger is promoted
    later by ``python -m training promote``); ``champion_set`` in the outcome tells whether it
    was set.
    """
    console = console or Console(stderr=True)
    spec = load_spec(spec_path)
    pipeline = FeaturePipeline(spec)

    with _step(console, f"loading {data_path}"):
        frame = load_frame(data_path, spec)
        y = labels(frame, spec)
    with _step(console, f"building {pipeline.n_features} features for {len(y):,} rows"):
        x = pipeline.transform_frame(frame)
    split = stratified_split(y, settings.test_size, settings.seed)

    with Progress(
        TextColumn("boosting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rounds (max)"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("boosting", total=params.max_rounds)
        result = fit(
            x[split.train],
            y[split.train],
            monotone=pipeline.monotone,
            params=params,
            seed=settings.seed,
            on_round=lambda n: progress.update(task, completed=n),
        )
    console.log(f"boosting stopped: best iteration {result.best_iteration}")

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

    policy = ScoringPolicy()
    scores = np.array([policy.score(float(p)) for p in pd_test])
    details: dict[str, str | float | int] = {
        "spec": f"{spec.name} v{spec.version}",
        "data": str(data_path),
        "rows": len(y),
        "holdout": f"stratified {settings.test_size:.0%}, random_state={settings.seed}",
        "best_iteration": result.best_iteration,
        "schema_hash": pipeline.schema_hash,
    }
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    metadata = bundle_metadata(
        pipeline,
        metrics=metrics,
        training={
            **details,
            "created_at": now,
            "params": params.as_params(),
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
            )
        with _step(console, f"logging to MLflow ({registry.tracking_uri})"):
            run_id = registry.log_run(
                settings.experiment,
                run_name=f"{spec.name}-v{spec.version}-{now}",
                params={
                    **params.as_params(),
                    "spec": spec.name,
                    "spec_version": spec.version,
                    "data": str(data_path),
                    "seed": settings.seed,
                    "test_size": settings.test_size,
                    "best_iteration": result.best_iteration,
                },
                metrics={f"holdout_{k}": v for k, v in metrics.items()},
                artifacts={"model": bundle_dir, "report": report_dir},
                tags={"spec": spec.name, "schema_hash": pipeline.schema_hash},
            )
            version = registry.register(
                settings.model_name,
                run_id,
                "model",
                tags={"schema_hash": pipeline.schema_hash, "auc": f"{evaluation.auc:.5f}"},
            )
    console.log(f"registered {version.name} version {version.version} (run {run_id})")

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
