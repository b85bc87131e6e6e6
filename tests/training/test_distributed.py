"""Training on a Dask cluster (a real ``LocalCluster``: one worker process per core): the
workers' features equal the single-machine column path bit for bit, and the model boosted by
``xgboost.dask`` lands within 0.002 AUC of the single-machine run on the same split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from feature_kernels import FeaturePipeline, load_spec
from tests.conftest import GMSC_DATA, GMSC_SPEC
from training.dataset import load_frame
from training.distributed import dask_client, features_on_workers
from training.run import train_and_register
from training.settings import TrainingSettings
from training.train import TrainParams

QUIET = Console(stderr=True, quiet=True)


def test_dask_training_matches_one_machine(tmp_path: Path) -> None:
    sample = tmp_path / "gmsc.csv"
    with GMSC_DATA.open() as src:  # the header and 60,000 applicants
        sample.write_text("".join(line for _, line in zip(range(60_001), src, strict=False)))
    spec = load_spec(GMSC_SPEC)
    frame = load_frame(sample, spec)
    pipeline = FeaturePipeline(spec)
    params = TrainParams(eta=0.1, max_rounds=400, early_stopping_rounds=40)
    with dask_client("local") as client:
        assert len(client.scheduler_info()["workers"]) >= 2
        features = features_on_workers(client, spec, frame, pipeline.n_features)
        assert len(features.chunks[0]) >= 2  # really cut into partitions
        on_workers = features.compute()
    local = pipeline.transform_frame(frame)
    np.testing.assert_array_equal(on_workers.view(np.uint32), local.view(np.uint32))

    runs = {}
    for name, scheduler in (("single", None), ("dask", "local")):
        runs[name] = train_and_register(
            TrainingSettings(state_dir=tmp_path / name, model_name=f"gmsc-{name}"),
            spec_path=GMSC_SPEC,
            data_path=sample,
            params=params,
            dask_scheduler=scheduler,
            console=QUIET,
        )
    single, dask = runs["single"].evaluation.auc, runs["dask"].evaluation.auc
    print(f"AUC one machine {single:.4f}, on Dask {dask:.4f}")
    assert dask == pytest.approx(single, abs=0.002), (single, dask)
    assert runs["dask"].champion_set


def test_tuning_stays_on_one_machine(tmp_path: Path) -> None:
    from training.tune import TuneSettings

    with pytest.raises(ValueError, match="--tune runs on one machine"):
        train_and_register(
            TrainingSettings(state_dir=tmp_path),
            spec_path=GMSC_SPEC,
            data_path=GMSC_DATA,
            tune=TuneSettings(trials=2),
            dask_scheduler="local",
            console=QUIET,
        )
