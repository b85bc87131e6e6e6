"""The drift worker (issue 11, item 3; acceptance 3): a replayed stream of GMSC applicants whose
``DebtRatio`` is tripled in its second half. The worker flags the features that moved, and only
those, within one window; the report is in MLflow under the model's run; the gauges are set;
the retrain signal fires once; a worker killed mid-way loses no window and double-counts none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import xgboost as xgb

from credit_core import ScoringPolicy
from credit_core.bundle import ModelBundle
from credit_core.evaluation import EvaluationLog, PredictionRecord
from credit_core.registry import local_tracking_uri
from drift.monitor import DriftWorker, WindowResult, closed_windows
from drift.settings import DriftSettings
from feature_kernels import FeaturePipeline, load_spec
from tests.conftest import (
    GMSC_DATA,
    GMSC_SPEC,
    MODEL_NAME,
    ROOT,
    TrainedModel,
    champion_bundle,
    registry_at,
)
from training.dataset import labels, load_frame, stratified_split
from training.settings import TrainingSettings

WINDOW = 5_000  # the GMSC spec's monitoring.window_rows (its default)
SHIFTED = "DebtRatio"


class Crash(RuntimeError):
    pass


@pytest.fixture(scope="module")
def stream(
    trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, set[str]]:
    """Four windows of served predictions of the champion (holdout applicants): two as they
    are, two with ``DebtRatio`` x 3. Returns the log directory and the output features whose
    values the shift moved."""
    spec = load_spec(GMSC_SPEC)
    assert spec.monitoring.window_rows == WINDOW
    frame = load_frame(GMSC_DATA, spec)
    y = labels(frame, spec)
    fields = TrainingSettings.model_fields
    split = stratified_split(y, fields["test_size"].default, fields["seed"].default)
    holdout = frame[np.asarray(split.test)].head(4 * WINDOW)
    shifted = holdout.with_columns(pl.col(SHIFTED) * 3)
    pipeline = FeaturePipeline(spec)
    plain_x = pipeline.transform_frame(holdout)
    shifted_x = pipeline.transform_frame(shifted)
    moved = {
        name
        for j, name in enumerate(pipeline.feature_names)
        if not np.allclose(plain_x[:, j], shifted_x[:, j], equal_nan=True)
    }
    x = np.vstack([plain_x[: 2 * WINDOW], shifted_x[2 * WINDOW :]])
    bundle = ModelBundle.read(champion_bundle(trained, tmp_path_factory.mktemp("bundle")))
    pd = xgb.Booster(model_file=str(bundle.booster_path)).inplace_predict(x)
    directory = tmp_path_factory.mktemp("drift") / "evaluation"
    t0 = time.time() - 3600.0
    policy = ScoringPolicy()
    with EvaluationLog(directory).predictions_writer(flush_records=WINDOW) as writer:
        writer.write(
            [
                PredictionRecord(
                    t0 + i * 0.05,
                    f"d-{i}",
                    f"app-{i}",
                    MODEL_NAME,
                    "champion",
                    trained.version,
                    float(pd[i]),
                    True,
                    score=policy.score(float(pd[i])),
                    decision=policy.decide(float(pd[i])).value,
                    reasons=("R_UTIL", "R_LATE") if i % 10 == 0 else (),  # explained: 1 in 10
                    features=tuple(map(float, x[i])),
                )
                for i in range(len(x))
            ]
        )
    return directory, moved


def _settings(
    trained: TrainedModel, evaluation: Path, work: Path, **extra: object
) -> DriftSettings:
    return DriftSettings(
        state_dir=work,
        evaluation_dir=evaluation,
        archive_url=str(work / "archive"),
        model_name=MODEL_NAME,
        mlflow_tracking_uri=local_tracking_uri(trained.state_dir / "mlflow"),
        drift_settle_seconds=0,
        **extra,  # type: ignore[arg-type]
    )


def test_shifted_feature_is_flagged_once_reported_and_survives_a_crash(
    trained: TrainedModel, stream: tuple[Path, set[str]], tmp_path: Path
) -> None:
    evaluation, moved = stream
    assert moved  # DebtRatio feeds at least one output feature
    marker = tmp_path / "retrain-signals.txt"
    command = f"{sys.executable} -c \"open('{marker}', 'a').write('retrain\\n')\""
    settings = _settings(trained, evaluation, tmp_path, retrain_command=command)
    seen: list[WindowResult] = []

    def crash_at_window_1(result: WindowResult) -> None:
        seen.append(result)
        if result.index == 1:
            raise Crash("killed after window 1's report, before its acknowledgement")

    with pytest.raises(Crash):
        DriftWorker(settings, after_window=crash_at_window_1).run_once()
    worker = DriftWorker(settings, after_window=seen.append)
    results = worker.run_once()
    worker.reap(wait=True)
    assert [r.index for r in results] == [1, 2, 3]  # window 0 was acknowledged: not again

    by_window = {r.index: r for r in seen}  # window 1 twice: the crashed run and the rerun
    assert [r.index for r in seen] == [0, 1, 1, 2, 3]
    for w in (0, 1):
        assert by_window[w].drifted == [], by_window[w].tests
    for w in (2, 3):  # flagged within the first shifted window
        features = set(by_window[w].drifted) - {"pd"}
        assert features, by_window[w].tests
        assert features <= moved, (features, moved)  # only features that moved
    assert marker.read_text() == "retrain\n"  # the signal fired once

    state = pl.read_parquet(tmp_path / "archive" / "_state" / f"drift-{MODEL_NAME}.parquet")
    assert state["window"].to_list() == [0, 1, 2, 3]  # each window acknowledged once
    assert DriftWorker(settings).run_once() == []  # a restart recomputes nothing
    assert marker.read_text() == "retrain\n"

    labels = {"model_name": MODEL_NAME, "model_version": trained.version}
    flagged = sorted(set(by_window[3].drifted) - {"pd"})[0]
    r = worker.registry
    assert r.get_sample_value("altscore_drift_detected", {**labels, "column": flagged}) == 1.0
    assert r.get_sample_value("altscore_drift_windows_total", labels) == 3.0
    shares = [
        r.get_sample_value("altscore_window_decision_share", {**labels, "decision": d}) or 0.0
        for d in ("approve", "review", "decline")
    ]
    assert sum(shares) == pytest.approx(1.0)
    assert all(share > 0 for share in shares)
    q = {
        k: r.get_sample_value("altscore_window_pd_quantile", {**labels, "quantile": k})
        for k in ("0.1", "0.5", "0.9")
    }
    assert q["0.1"] < q["0.5"] < q["0.9"]  # type: ignore[operator]
    for code in ("R_UTIL", "R_LATE"):  # every explained answer carries both
        sample = {**labels, "code": code}
        assert r.get_sample_value("altscore_window_reason_code_share", sample) == 1.0
    est = r.get_sample_value("altscore_estimated_auc", labels)
    assert est is not None
    assert 0.7 < est < 1.0

    client = registry_at(trained.state_dir).client
    version = client.get_model_version(MODEL_NAME, trained.version)
    files = {a.path for a in client.list_artifacts(version.run_id, "drift/window-00002")}
    assert {
        f"drift/window-00002/{n}" for n in ("drift.html", "evidently.json", "summary.json")
    } <= files
    summary = json.loads(
        Path(
            client.download_artifacts(
                version.run_id, "drift/window-00002/summary.json", str(tmp_path)
            )
        ).read_text()
    )
    assert summary["drifted"] == by_window[2].drifted
    assert summary["retrain_signal"] is True


def test_the_command_line_checks_the_closed_windows(
    trained: TrainedModel, stream: tuple[Path, set[str]], tmp_path: Path
) -> None:
    evaluation, _ = stream
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALTSCORE_")}
    env |= {
        "ALTSCORE_STATE_DIR": str(tmp_path),
        "ALTSCORE_EVALUATION_DIR": str(evaluation),
        "ALTSCORE_ARCHIVE_URL": str(tmp_path / "archive"),
        "ALTSCORE_MLFLOW_TRACKING_URI": local_tracking_uri(trained.state_dir / "mlflow"),
        "ALTSCORE_DRIFT_SETTLE_SECONDS": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "drift", "run", "--once"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    windows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [w["window"] for w in windows] == [0, 1, 2, 3]
    assert [bool(w["drifted"]) for w in windows] == [False, False, True, True]
    assert "no ALTSCORE_RETRAIN_COMMAND" in done.stderr  # signalled, nothing configured to run


def test_windows_close_by_count_or_by_time_and_never_change_once_closed() -> None:
    from feature_kernels.spec import MonitoringDef

    ts = np.arange(0.0, 1000.0, 1.0)  # one prediction a second
    by_count = MonitoringDef(window_rows=300, min_rows=100)
    assert closed_windows(ts, by_count, horizon=2000.0) == [
        range(300), range(300, 600), range(600, 900)
    ]  # fmt: skip  # the last 100 rows wait for more
    by_time = MonitoringDef(window_rows=300, window_seconds=120.0, min_rows=100)
    assert closed_windows(ts, by_time, horizon=2000.0)[:2] == [range(120), range(120, 240)]
    # not yet 120 s after the window's first row: it waits (below the count as well)
    assert closed_windows(ts[:110], by_time, horizon=110.0) == []
    # 120 s passed but fewer than min_rows arrived: it waits for the count
    sparse = np.arange(0.0, 1000.0, 10.0)
    assert closed_windows(sparse, by_time, horizon=2000.0) == []
    # a window closed at some horizon is the same at any later one
    early = closed_windows(ts[:500], by_time, horizon=500.0)
    late = closed_windows(ts, by_time, horizon=5000.0)
    assert late[: len(early)] == early
