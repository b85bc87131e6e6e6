"""In-process micro-benchmarks of the serving path, against XGBoost in the same run.

    uv run python -m benchmarks.inprocess [--write benchmarks/RESULTS.md]

Loads the `champion` of the local registry (run `make serve` or `make train` first), then times:
the Rust row path (request maps -> float32 vector), the compiled model (TL2cgen Predictor) and
XGBoost's `inplace_predict` at 1 / 64 / 4096 rows, and the service's whole `score` (validate +
features + predict + policy). Median of repeated timings; figures move between runs on a shared
machine, so compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import tl2cgen
import treelite
import xgboost as xgb

import feature_kernels
from credit_core.feature_store import InMemoryFeatureStore
from credit_core.registry import MlflowRegistry
from scoring_server.loader import ModelLoader
from scoring_server.metrics import ServerMetrics
from scoring_server.runtime import ROW_PATH_MAX
from scoring_server.service import ScoringRequest, ScoringService
from scoring_server.settings import ServerSettings

ROW = {
    "revolving_utilization": 0.77,
    "age": 45.0,
    "past_due_30_59": 2.0,
    "debt_ratio": 0.8,
    "monthly_income": 9120.0,
    "open_credit_lines": 13.0,
    "times_90_days_late": 0.0,
    "real_estate_loans": 6.0,
    "past_due_60_89": 0.0,
    "dependents": 2.0,
}


def timeit(fn: Callable[[], object], *, repeat: int = 7, min_seconds: float = 0.2) -> float:
    """Median seconds per call over ``repeat`` rounds of at least ``min_seconds`` each."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t0 >= min_seconds / 4:
            break
        n *= 2
    rounds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - t0) / n)
    return statistics.median(rounds)


def _score_seconds(service: ScoringService, request: ScoringRequest, n: int = 2000) -> float:
    """Median seconds of ``await service.score`` over 7 rounds of ``n`` calls in one loop."""

    async def rounds() -> float:
        medians = []
        for _ in range(7):
            t0 = time.perf_counter()
            for _ in range(n):
                await service.score(request)
            medians.append((time.perf_counter() - t0) / n)
        return statistics.median(medians)

    return asyncio.run(rounds())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", type=Path, default=None)
    ns = parser.parse_args()
    settings = ServerSettings()
    loader = ModelLoader(
        MlflowRegistry(settings.tracking_uri()),
        model_name=settings.model_name,
        state_dir=settings.state_dir,
        parity_tolerance=settings.parity_tolerance,
        parallel_units=settings.compile_parallel_units,
    )
    model = loader.load("champion")
    booster = xgb.Booster(model_file=str(model.bundle.booster_path))
    booster.set_param({"nthread": 1})
    reference = model.bundle.reference().features
    service = ScoringService(
        settings.policy(),
        max_batch_size=10_000,
        metrics=ServerMetrics(),
        store=InMemoryFeatureStore(),
        store_timeout=1.0,
    )
    service.set_model(model)
    request = ScoringRequest("bench", "a", ROW, {})
    rows: list[tuple[str, str, str, str]] = []

    t_feat = timeit(lambda: model.pipeline.transform_row(ROW, {}))
    t_score = _score_seconds(service, request)
    rows.append(("features, row path (1 applicant)", f"{t_feat * 1e6:.1f} µs", "", ""))
    rows.append(
        (
            "service.score: validate + features + compiled predict + policy",
            f"{t_score * 1e6:.1f} µs",
            "",
            "",
        )
    )
    for n in (1, 64, 4096):
        path = "direct ctypes call" if n <= ROW_PATH_MAX else "TL2cgen Predictor"
        x = np.ascontiguousarray(np.resize(reference, (n, reference.shape[1])), dtype=np.float32)
        t_c = timeit(partial(model.runtime.predict, x))  # picks the direct call up to 32 rows
        t_x = timeit(partial(booster.inplace_predict, x))
        rows.append(
            (
                f"predict {n} row(s): compiled ({path}) vs XGBoost inplace_predict",
                f"{t_c * 1e6:.1f} µs ({n / t_c:,.0f} rows/s)",
                f"{t_x * 1e6:.1f} µs ({n / t_x:,.0f} rows/s)",
                f"{t_x / t_c:.2f}x",
            )
        )
    trees = booster.num_boosted_rounds()
    lines = [
        "# Benchmark results",
        "",
        "## In-process serving path",
        "",
        "Command: `make bench` (= `uv run python -m benchmarks.inprocess "
        "--write benchmarks/RESULTS.md`). "
        f"Model: `{settings.model_name}` v{model.ref.version} (GMSC spec, {trees} trees, depth 4, "
        f"{len(model.pipeline.feature_names)} features). One thread; median of 7 rounds.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
        f"Python {platform.python_version()}, XGBoost {xgb.__version__}, "
        f"Treelite {treelite.__version__}, TL2cgen {tl2cgen.__version__}, "
        f"feature_kernels {feature_kernels.__version__} "
        f"({feature_kernels.build_profile}).",
        "",
        "| what | ours | XGBoost (same run) | XGBoost time / ours |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
        "",
        "gRPC load runs (ghz, MLServer side by side) are not measured yet.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if ns.write:
        ns.write.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
