"""Hyper-parameters: the spec's ``model`` section, the CLI flags over it, and ``--tune`` (Optuna
TPE, stratified k-fold CV on the training part, pruning, refit on the chosen rounds, every trial
an MLflow child run) on German credit, into a real MLflow store."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
import yaml
from rich.console import Console

from credit_core.registry import MlflowRegistry, local_tracking_uri
from feature_kernels import FeaturePipeline, SpecError, load_spec, parse_spec
from tests.conftest import ROOT
from tests.training.test_run import GERMAN_DATA, GERMAN_SPEC
from training.__main__ import main as cli
from training.dataset import labels, load_frame, stratified_split
from training.run import train_and_register
from training.settings import TrainingSettings
from training.train import TrainParams
from training.tune import SEARCH_SPACE, TuneSettings, tune

QUIET = Console(stderr=True, quiet=True)


def _german() -> tuple[np.ndarray, np.ndarray, FeaturePipeline]:
    spec = load_spec(GERMAN_SPEC)
    pipeline = FeaturePipeline(spec)
    frame = load_frame(GERMAN_DATA, spec)
    y = labels(frame, spec)
    split = stratified_split(y, 0.2, 42)
    return pipeline.transform_frame(frame)[split.train], y[split.train], pipeline


def test_the_search_is_seeded_starts_from_the_spec_and_prunes() -> None:
    x, y, pipeline = _german()
    # few rounds (German's 800 rows stop early anyway): the search, not the boosting, is tested
    base = TrainParams(max_rounds=100, early_stopping_rounds=10)
    settings = TuneSettings(trials=12, folds=3)
    runs = [
        tune(x, y, monotone=pipeline.monotone, base=base, settings=settings, seed=7)
        for _ in range(2)
    ]
    first, second = runs
    # the same data and seed give the same search, trial by trial
    assert [(t.params, t.state, t.cv_auc) for t in first.trials] == [
        (t.params, t.state, t.cv_auc) for t in second.trials
    ]
    trial0 = first.trials[0]
    assert trial0.params == {n: getattr(base, n) for n in SEARCH_SPACE}  # the baseline
    complete = [t for t in first.trials if t.state == "COMPLETE"]
    assert first.cv_auc == max(t.cv_auc for t in complete) >= trial0.cv_auc
    assert all(t.folds_run == 3 for t in complete)
    pruned = [t for t in first.trials if t.state == "PRUNED"]
    assert pruned, "no trial was pruned"  # 12 trials, 5 before the pruner starts
    assert all(t.folds_run == 2 for t in pruned)  # from the second fold on
    assert {t.state for t in first.trials} <= {"COMPLETE", "PRUNED"}
    for t in first.trials:  # every proposal inside the documented space
        for name, (low, high, _) in SEARCH_SPACE.items():
            if t.number > 0:
                assert low <= t.params[name] <= high, (t.number, name)
    assert 1 <= first.rounds <= base.max_rounds
    assert first.params.max_rounds == base.max_rounds  # not searched: the spec's value


def test_tuned_training_refits_on_the_chosen_rounds_and_logs_every_trial(
    tmp_path: Path,
) -> None:
    settings = TrainingSettings(state_dir=tmp_path, model_name="german-tuned")
    outcome = train_and_register(
        settings,
        spec_path=GERMAN_SPEC,
        data_path=GERMAN_DATA,
        params=TrainParams(max_rounds=100, early_stopping_rounds=10),
        tune=TuneSettings(trials=8, folds=3),
        console=QUIET,
    )
    registry = MlflowRegistry(local_tracking_uri(tmp_path / "mlflow"))
    parent = registry.client.get_run(outcome.run_id)
    experiment = parent.info.experiment_id
    children = registry.client.search_runs(
        [experiment], filter_string=f"tags.mlflow.parentRunId = '{outcome.run_id}'"
    )
    assert sorted(c.info.run_name for c in children) == [f"trial-{i}" for i in range(8)]
    assert {c.data.tags["trial_state"] for c in children} <= {"COMPLETE", "PRUNED"}
    best = max(
        (c for c in children if c.data.tags["trial_state"] == "COMPLETE"),
        key=lambda c: c.data.metrics["cv_auc"],
    )
    assert parent.data.metrics["cv_auc"] == pytest.approx(best.data.metrics["cv_auc"])
    for name in SEARCH_SPACE:  # the model was trained with the best trial's parameters
        assert float(parent.data.params[f"train.{name}"]) == pytest.approx(
            float(best.data.params[f"train.{name}"])
        )
    # the refit: exactly the best trial's mean rounds, no early stopping
    bundle = registry.download(registry.get_alias("german-tuned", "champion"), tmp_path / "b")  # type: ignore[arg-type]
    booster = xgb.Booster(model_file=str(bundle / "booster.json"))
    assert booster.num_boosted_rounds() == int(best.data.metrics["rounds"])
    assert outcome.best_iteration + 1 == booster.num_boosted_rounds()
    assert outcome.evaluation.auc >= 0.75
    # the spec's monotone constraints held in the tuned model: along each constrained input's
    # grid, every applicant's PD moves only in the declared direction
    spec = load_spec(GERMAN_SPEC)
    pipeline = FeaturePipeline(spec)
    x, _, _ = _german()
    rows = x[:50]
    for j, direction in enumerate(pipeline.monotone):
        if direction == 0:
            continue
        column = x[:, j][np.isfinite(x[:, j])]
        grid = np.linspace(column.min(), column.max(), 25, dtype=np.float32)
        curves = []
        for value in grid:
            moved = rows.copy()
            moved[:, j] = value
            curves.append(booster.inplace_predict(moved))
        steps = np.diff(np.array(curves), axis=0) * direction
        assert steps.min() >= -1e-7, pipeline.feature_names[j]


def test_the_spec_model_section_and_the_cli_flags_over_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = GERMAN_SPEC.read_text()
    spec = parse_spec(yaml.safe_load(text + "\nmodel:\n  eta: 0.1\n  max_depth: 3\n"))
    assert (spec.model.eta, spec.model.max_depth, spec.model.subsample) == (0.1, 3, 0.8)
    assert spec.plan() == load_spec(GERMAN_SPEC).plan()  # not part of the plan or its hash
    with pytest.raises(SpecError, match=r"model\.max_dpeth"):
        parse_spec(yaml.safe_load(text + "\nmodel:\n  max_dpeth: 3\n"))
    with pytest.raises(SpecError, match=r"model\.subsample"):
        parse_spec(yaml.safe_load(text + "\nmodel:\n  subsample: 1.5\n"))

    spec_file = tmp_path / "german.yaml"
    spec_file.write_text(text + "\nmodel:\n  eta: 0.1\n  max_rounds: 40\n")
    # the CLI's own entry point, in this process (a subprocess would add only the interpreter's
    # start-up: `python -m training` is `sys.exit(main())`)
    for name in [k for k in os.environ if k.startswith("ALTSCORE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ALTSCORE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(ROOT)
    run = ["train", "--spec", str(spec_file), "--data", str(GERMAN_DATA),
           "--model-name", "german-cli"]  # fmt: skip
    capsys.readouterr()
    assert cli([*run, "--max-depth", "2", "--early-stopping-rounds", "10"]) == 0
    stderr = capsys.readouterr().err
    (report,) = [line for line in stderr.splitlines() if line.startswith("report: ")]
    assert Path(report.removeprefix("report: file://")).is_file()  # the CLI says where it is
    registry = MlflowRegistry(local_tracking_uri(tmp_path / "state" / "mlflow"))
    version = registry.get_alias("german-cli", "champion")
    assert version is not None
    assert version.run_id is not None
    params = registry.client.get_run(version.run_id).data.params
    # flags over the spec's section over the defaults
    assert (params["train.max_depth"], params["train.eta"], params["train.max_rounds"]) == (
        "2", "0.1", "40",
    )  # fmt: skip
    assert params["train.subsample"] == "0.8"
    for bad in (["--tune", "--trials", "0"], ["--subsample", "2"]):
        assert cli([*run, *bad]) == 2, bad  # an answer, not an exception
        assert "training failed" in capsys.readouterr().err
    assert not math.isnan(float(params["train.eta"]))
