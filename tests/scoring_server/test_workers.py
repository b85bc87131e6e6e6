"""Several serving processes on one port (SO_REUSEPORT) under one control process: every worker
serves, /metrics sums them, a dead worker is replaced, SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.procs import child_pids, rss_bytes
from scoring_server.grpc._proto import scoring_pb2_grpc as pb_grpc
from tests.conftest import ROOT, ServerProcess, TrainedModel, start_server
from tests.scoring_server.test_grpc_e2e import request

RSS_LIMIT_BYTES = 200 * 1024 * 1024


def metric(srv: ServerProcess, name: str, **labels: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=5)
    total = 0.0
    for family in text_string_to_metric_families(body.read().decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def served_by(srv: ServerProcess, n: int) -> int:
    """Score ``n`` requests, each on a new connection (the kernel spreads connections)."""
    ok = 0
    for i in range(n):
        with grpc.insecure_channel(srv.target) as ch:
            answer = pb_grpc.ScoringStub(ch).Score(request(f"w-{i}-{time.time_ns()}"), timeout=10)
            ok += answer.pd > 0
    return ok


@pytest.fixture(scope="module")
def two_workers(
    trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log_path = tmp_path_factory.mktemp("workers") / "server.log"
    srv = start_server(trained.state_dir, log_path, wait_serving=True, ALTSCORE_WORKERS="2")
    deadline = time.monotonic() + 60  # health answers from the first worker ready
    while srv.log().count("serving altscore-gmsc") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    yield srv
    srv.stop()


def test_every_worker_serves_and_metrics_sum_them(two_workers: ServerProcess) -> None:
    workers = set(child_pids(two_workers.proc.pid))
    assert len(workers) == 2
    before = metric(two_workers, "credit_scoring_requests_total", rpc="Score", code="OK")
    assert served_by(two_workers, 40) == 40
    deadline = time.monotonic() + 5  # the native front end hands its counts over every 0.25 s
    while (
        after := metric(two_workers, "credit_scoring_requests_total", rpc="Score", code="OK")
    ) < before + 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert after - before == 40
    per_pid = {
        line.split("[")[1].split("]")[0]
        for line in two_workers.log().splitlines()
        if "serving altscore-gmsc" in line
    }
    assert per_pid == {str(p) for p in workers}


def test_serving_process_rss_with_model_loaded(two_workers: ServerProcess) -> None:
    for pid in set(child_pids(two_workers.proc.pid)):
        assert rss_bytes(pid) <= RSS_LIMIT_BYTES, f"worker {pid}: {rss_bytes(pid) / 2**20:.0f} MB"


def test_dead_worker_is_replaced(two_workers: ServerProcess) -> None:
    old = set(child_pids(two_workers.proc.pid))
    victim = min(old)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        now = set(child_pids(two_workers.proc.pid))
        if len(now) == 2 and victim not in now and two_workers.log().count("serving altscore") >= 3:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"worker not replaced:\n{two_workers.log()[-3000:]}")
    assert metric(two_workers, "credit_scoring_worker_restarts_total") == 1
    assert served_by(two_workers, 20) == 20


def test_sigterm_stops_every_worker(trained: TrainedModel, tmp_path: Path) -> None:
    srv = start_server(
        trained.state_dir, tmp_path / "server.log", wait_serving=True, ALTSCORE_WORKERS="2"
    )
    workers = set(child_pids(srv.proc.pid))
    assert len(workers) == 2
    assert srv.stop(timeout=30) == 0
    for pid in workers:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        ), f"worker {pid} outlived the control process"
    assert srv.log().count("draining") >= 3  # the control process and both workers
    run_dirs = list((trained.state_dir / "run").glob(str(srv.proc.pid)))
    assert run_dirs == []  # scratch (manifest, metrics files) removed


def test_busy_port_fails_fast(two_workers: ServerProcess, tmp_path: Path) -> None:
    """A second server on a port already served must not join it silently (SO_REUSEPORT would
    let it)."""
    env = {
        **os.environ,
        "ALTSCORE_STATE_DIR": str(tmp_path),
        "ALTSCORE_GRPC_PORT": str(two_workers.grpc_port),
        "ALTSCORE_METRICS_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "scoring_server"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert b"cannot bind gRPC" in done.stderr
