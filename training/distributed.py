"""Training beyond one machine: ``python -m training train --dask-scheduler ADDRESS``.

The client reads the data with Polars (as a single-machine run does), cuts it into one
partition per worker thread and sends each to a Dask worker, where the same Rust kernels
(:class:`feature_kernels.FeaturePipeline`, built from the fitted spec's YAML) turn it into
features; ``xgboost.dask`` then boosts on the workers' partitions with the same parameters,
monotone constraints and early-stopping rows as a single-machine run. The features come back to
the client for the holdout evaluation, the report and the bundle's reference sample.

``ADDRESS`` is a scheduler (``tcp://scheduler:8786``: start one with ``dask scheduler`` and
workers with ``dask worker tcp://scheduler:8786`` on machines that have altscore installed), or
``local`` for a ``LocalCluster`` on this machine (what the tests use).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import xgboost as xgb
import xgboost.dask as xgb_dask

from feature_kernels import FeatureSpec
from training.train import FitResult, TrainParams, booster_params, early_stopping_split

__all__ = ["dask_client", "features_on_workers", "fit_on_workers"]


@contextmanager
def dask_client(address: str) -> Iterator[Any]:
    """A client of the scheduler at ``address`` (``local``: a ``LocalCluster`` of one worker
    process per core, one thread each, closed on exit)."""
    from distributed import Client, LocalCluster

    if address == "local":
        with (
            LocalCluster(threads_per_worker=1, dashboard_address=None, processes=True) as cluster,
            Client(cluster) as client,
        ):
            yield client
    else:
        with Client(address) as client:
            yield client


def _features(spec_yaml: str, part: pl.DataFrame) -> npt.NDArray[np.float32]:
    """On a worker: one partition's features, by the same kernels as training on one machine."""
    import yaml

    from feature_kernels import FeaturePipeline, parse_spec

    return FeaturePipeline(parse_spec(yaml.safe_load(spec_yaml))).transform_frame(part)


def features_on_workers(
    client: Any, spec: FeatureSpec, frame: pl.DataFrame, n_features: int
) -> Any:
    """The feature matrix of ``frame`` as a Dask array whose row blocks were computed on the
    workers (one per worker thread), persisted there."""
    import dask.array as da
    from dask.delayed import delayed

    parts = max(1, min(sum(client.nthreads().values()), frame.height))
    bounds = np.linspace(0, frame.height, parts + 1).astype(int)
    text = spec.to_yaml()
    blocks = [
        da.from_delayed(
            delayed(_features)(text, frame.slice(int(lo), int(hi - lo))),
            shape=(int(hi - lo), n_features),
            dtype=np.float32,
        )
        for lo, hi in itertools.pairwise(bounds)
        if hi > lo
    ]
    return client.persist(da.concatenate(blocks, axis=0))


def fit_on_workers(
    client: Any,
    x: Any,
    y: npt.NDArray[np.int8],
    *,
    monotone: list[int],
    params: TrainParams,
    seed: int,
) -> FitResult:
    """``training.train.fit`` on the workers: the same early-stopping rows (a stratified share
    of ``x``'s rows), parameters and constraints, boosted by ``xgboost.dask``."""
    import dask.array as da

    fit_idx, val_idx = early_stopping_split(y, params.validation_share, seed)

    def part(rows: npt.NDArray[np.int64]) -> tuple[Any, Any]:
        xs = x[rows]
        return xs, da.from_array(y[rows], chunks=(xs.chunks[0],))

    x_fit, y_fit = part(fit_idx)
    x_val, y_val = part(val_idx)
    dfit = xgb_dask.DaskDMatrix(client, x_fit, y_fit, missing=np.nan)
    dval = xgb_dask.DaskDMatrix(client, x_val, y_val, missing=np.nan)
    output = xgb_dask.train(
        client,
        booster_params(params, monotone, seed),
        dfit,
        num_boost_round=params.max_rounds,
        evals=[(dval, "validation")],
        early_stopping_rounds=params.early_stopping_rounds,
        verbose_eval=False,
    )
    booster: xgb.Booster = output["booster"]
    best = int(booster.best_iteration)
    score = float(output["history"]["validation"]["logloss"][best])
    return FitResult(
        booster=booster[: best + 1], best_iteration=best, best_validation_logloss=score
    )
