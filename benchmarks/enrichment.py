"""Cost of the Redis lookup per unary request, against the same requests with the features
already in process, in the same run.

    uv run python -m benchmarks.enrichment [--write benchmarks/RESULTS.md]

Trains the SuperLender model into a temporary MLflow store (or reuses ``--state``), starts its own
``redis-server`` on a free loopback port, publishes every customer's entity features, then
scores the same requests through ``ScoringService.score`` (lookup by applicant id, merge,
validation, kernels, compiled predict, policy) with (a) ``RedisFeatureStore`` on loopback and
(b) the in-process store holding the same rows ("inline": no network). Rounds alternate between
the two; percentiles are over all requests of each.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis
from rich.console import Console

from benchmarks.results import write_section
from credit_core.feature_store import InMemoryFeatureStore, RedisFeatureStore
from feature_kernels import load_spec
from scoring_server.loader import ModelLoader
from scoring_server.metrics import ServerMetrics
from scoring_server.service import ScoringRequest, ScoringService
from scoring_server.settings import ServerSettings
from tests.redis_server import RedisServer
from training.dataset import load_frame
from training.publish import entity_snapshot, snapshot_rows
from training.run import train_and_register
from training.settings import TrainingSettings
from training.train import TrainParams

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "superlender.yaml"
MODEL = "altscore-superlender"
TITLE = "Feature-store enrichment (SuperLender, one unary request)"


def _requests(data: Path, n: int) -> list[ScoringRequest]:
    frame = load_frame(data, load_spec(SPEC))
    out = []
    for i, row in enumerate(frame.iter_rows(named=True)):
        if i == n:
            break
        numeric = {
            "loan_amount": float(row["loanamount"]),
            "total_due": float(row["totaldue"]),
            "term_days": float(row["termdays"]),
            "loan_number": float(row["loannumber"]),
            "application_day": float(row["approveddate"]),
        }
        categorical = {"referred_by": str(row["referredby"])} if row["referredby"] else {}
        out.append(ScoringRequest(f"r{i}", str(row["customerid"]), numeric, categorical))
    return out


async def _time(service: ScoringService, requests: list[ScoringRequest]) -> list[float]:
    out = []
    for r in requests:
        t0 = time.perf_counter()
        result = await service.score(r)
        out.append(time.perf_counter() - t0)
        if result.degraded:
            raise RuntimeError("a lookup exceeded the benchmark's 1 s store timeout")
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared/data/zindi_superlender/trainperf.csv"
    )
    parser.add_argument("--state", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--write", type=Path, default=None)
    ns = parser.parse_args()
    console = Console(stderr=True)
    state = ns.state or Path(tempfile.mkdtemp(prefix="altscore-bench-"))
    settings = TrainingSettings(state_dir=state, model_name=MODEL)
    if settings.registry().get_alias(MODEL, "champion") is None:
        train_and_register(
            settings, spec_path=SPEC, data_path=ns.data, params=TrainParams(), console=console
        )
    loader = ModelLoader(
        settings.registry(),
        model_name=MODEL,
        state_dir=state,
        parity_tolerance=1e-5,
        parallel_units=8,
    )
    model = loader.load("champion")
    spec = model.pipeline.spec
    snapshot = entity_snapshot(spec, ns.data.parent, dt.datetime.now(dt.UTC))
    requests = _requests(ns.data, ns.requests)
    policy = ServerSettings().policy()
    with RedisServer() as server:
        remote = RedisFeatureStore(server.url)
        remote.publish(
            spec.store_namespace(), "bench", snapshot_rows(snapshot, spec), ttl_seconds=None
        )
        remote.activate(spec.store_namespace(), "bench")
        local = InMemoryFeatureStore()
        local.publish(
            spec.store_namespace(), "bench", snapshot_rows(snapshot, spec), ttl_seconds=None
        )
        local.activate(spec.store_namespace(), "bench")
        services = {
            name: ScoringService(
                policy,
                max_batch_size=1000,
                metrics=ServerMetrics(),
                store=store,
                store_timeout=0.025,
            )
            for name, store in (("redis", remote), ("inline", local))
        }
        for s in services.values():
            s.set_model(model)
        timings: dict[str, list[float]] = {"redis": [], "inline": []}

        async def run() -> None:
            for s in services.values():  # warm-up
                await _time(s, requests[:100])
            for _ in range(ns.rounds):
                for name, s in services.items():
                    timings[name].extend(await _time(s, requests))
            await remote.close()

        asyncio.run(run())
        with redis.Redis.from_url(server.url) as client:
            info: dict[str, Any] = client.info()
        redis_version = str(info["redis_version"])
    pct = {k: (np.percentile(v, 50) * 1e6, np.percentile(v, 99) * 1e6) for k, v in timings.items()}
    added_p50 = pct["redis"][0] - pct["inline"][0]
    added_p99 = pct["redis"][1] - pct["inline"][1]
    hiredis = "hiredis" in sys.modules
    added_mean = (statistics.fmean(timings["redis"]) - statistics.fmean(timings["inline"])) * 1e6
    lines = [
        f"## {TITLE}",
        "",
        "Command: `uv run python -m benchmarks.enrichment --write benchmarks/RESULTS.md` "
        f"({ns.rounds} alternating rounds x {len(requests)} requests per path; "
        f"redis-server {redis_version} on loopback, redis-py {redis.__version__}"
        f"{' + hiredis' if hiredis else ''}; Python {platform.python_version()}; "
        f"{len(snapshot):,} customers published). `ScoringService.score` end to end, in process.",
        "",
        "| path | p50 µs | p99 µs |",
        "|---|---|---|",
        f"| features inline (in-process store) | {pct['inline'][0]:.0f} | {pct['inline'][1]:.0f} |",
        f"| Redis lookup by applicant id | {pct['redis'][0]:.0f} | {pct['redis'][1]:.0f} |",
        f"| **added by Redis** | **{added_p50:.0f}** | **{added_p99:.0f}** |",
        "",
        f"Mean added: {added_mean:.0f} µs.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if ns.write:
        write_section(ns.write, TITLE, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
