"""The serving process: one process, the control plane (Python) beside the data plane (Rust).
Its memory with a model loaded, its one /metrics, binding and re-binding its port, a clean
SIGTERM, and no process left behind that answers health but not calls."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from benchmarks.procs import child_pids, rss_bytes
from scoring_server.grpc._proto import scoring_pb2 as pb
from scoring_server.grpc._proto import scoring_pb2_grpc as pb_grpc
from tests.conftest import ROOT, ServerProcess, TrainedModel, http_probe, metric, start_server
from tests.scoring_server.test_grpc_e2e import request

if TYPE_CHECKING:
    from scoring_server.control import ControlPlane

RSS_LIMIT_BYTES = 300 * 1024 * 1024
"""The whole service with the GMSC model loaded (issue 10's budget)."""


def test_one_process_with_a_model_stays_under_its_memory_budget(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.ScoringStub(channel)
        for i in range(200):
            stub.Score(request(f"rss-{i}"), timeout=5)
    assert child_pids(server.proc.pid) == []  # no worker processes
    rss = rss_bytes(server.proc.pid)
    assert rss <= RSS_LIMIT_BYTES, f"{rss / 2**20:.0f} MB"


def test_one_metrics_endpoint_has_every_series(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.target) as channel:
        pb_grpc.ScoringStub(channel).Score(request(f"m-{time.time_ns()}"), timeout=5)
        pb_grpc.ScoringStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
    # no drain lag: counted before the answer is sent
    assert metric(server, "credit_scoring_requests_total", rpc="Score", code="OK") >= 1
    assert (
        metric(
            server,
            "grpc_server_handled_total",
            grpc_service="credit.scoring.v1.Scoring",
            grpc_method="GetModelInfo",
            grpc_type="unary",
            grpc_code="OK",
        )
        >= 1
    )
    assert metric(server, "grpc_server_handling_seconds_count", grpc_method="Score") >= 1
    assert metric(server, "grpc_server_calls_in_flight") >= 0
    assert metric(server, "process_resident_memory_bytes") > 0
    assert metric(server, "credit_scoring_model_loads_total", outcome="loaded") == 1
    assert metric(server, "credit_scoring_model_compile_seconds") > 0
    assert metric(server, "credit_scoring_prediction_log_dropped_total") == 0


def test_http_probes_follow_grpc_health(server: ServerProcess) -> None:
    assert http_probe(server, "/readyz") == (200, "SERVING\n")
    assert http_probe(server, "/livez") == (200, "ok\n")
    assert http_probe(server, "/nothing")[0] == 404


def test_busy_port_fails_fast(server: ServerProcess, tmp_path: Path) -> None:
    """A second server on a port already served fails at once, with the reason."""
    env = {
        **os.environ,
        "ALTSCORE_STATE_DIR": str(tmp_path),
        "ALTSCORE_GRPC_PORT": str(server.grpc_port),
        "ALTSCORE_METRICS_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "scoring_server"], cwd=ROOT, env=env, capture_output=True, timeout=60
    )
    assert done.returncode != 0
    assert b"cannot bind gRPC" in done.stderr


def test_sigterm_drains_and_a_restart_binds_at_once(trained: TrainedModel, tmp_path: Path) -> None:
    """SIGTERM: calls in flight finish, the process exits 0. A new server on the same port right
    after (the old connections in TIME_WAIT) binds at once, and takes connections only once
    its model is loaded."""
    first = start_server(trained.state_dir, tmp_path / "first.log", wait_serving=True)
    answers: list[str] = []

    def slow_stream() -> None:
        def messages():  # type: ignore[no-untyped-def]
            for i in range(20):
                yield request(f"drain-{i}")
                time.sleep(0.05)

        with grpc.insecure_channel(first.target) as channel:
            for a in pb_grpc.ScoringStub(channel).ScoreStream(messages(), timeout=30):
                answers.append(a.WhichOneof("result") or "")

    for i in range(20):  # connections the server closes: TIME_WAIT on its side
        with grpc.insecure_channel(first.target) as channel:
            pb_grpc.ScoringStub(channel).Score(request(f"tw-{i}"), timeout=5)
    streaming = threading.Thread(target=slow_stream)
    streaming.start()
    time.sleep(0.3)
    assert first.stop(timeout=30) == 0
    streaming.join(timeout=30)
    assert answers == ["response"] * 20, answers  # the stream in flight was answered in full
    log = first.log()
    assert "draining" in log
    assert "stopped" in log

    second = start_server(
        trained.state_dir,
        tmp_path / "second.log",
        wait_serving=True,
        ALTSCORE_GRPC_PORT=str(first.grpc_port),
    )
    try:
        assert second.grpc_port == first.grpc_port
        lines = second.log().splitlines()
        loaded = next(i for i, line in enumerate(lines) if "serving altscore-gmsc v" in line)
        listening = next(i for i, line in enumerate(lines) if "serving gRPC on" in line)
        assert loaded < listening  # connections are taken once the model is there
    finally:
        second.stop()


def _control_plane(
    trained: TrainedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ControlPlane:
    """A control plane in this process (data plane started, nothing served yet)."""
    from scoring_server.control import ControlPlane
    from scoring_server.settings import ServerSettings

    for name, value in {
        "ALTSCORE_STATE_DIR": str(trained.state_dir),
        "ALTSCORE_GRPC_PORT": "0",
        "ALTSCORE_METRICS_PORT": "0",
        "ALTSCORE_EVALUATION_DIR": str(tmp_path / "evaluation"),
    }.items():
        monkeypatch.setenv(name, value)
    return ControlPlane.create(ServerSettings())


def test_the_process_exits_when_its_data_plane_stops_serving(
    trained: TrainedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control plane watches the data plane: a data plane that stopped serving (here: its
    server stopped under it) ends the process with a non-zero status, so a supervisor replaces
    it; a process that answers health but not calls is never left behind."""
    control = _control_plane(trained, tmp_path, monkeypatch)
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(control.run()))
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # not the main thread
    runner.start()
    deadline = time.monotonic() + 60
    while not control.served.get("champion") and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    with socket.create_connection(("127.0.0.1", control.plane.grpc_port), timeout=5):
        pass  # serving
    control.plane.shutdown(0.0)  # the server goes away without the control plane asking
    runner.join(timeout=10)
    assert not runner.is_alive()
    assert result == [1]


def test_a_poll_that_finds_nothing_new_is_one_registry_read(
    trained: TrainedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every replica polls the registry every few seconds: when nothing moved, a poll is one
    read (the model's aliases and routing tags together), not one per alias."""
    control = _control_plane(trained, tmp_path, monkeypatch)
    try:
        assert control._poll()  # the champion loads
        client = control.registry.client
        calls: list[str] = []
        for method in ("get_registered_model", "get_model_version_by_alias", "get_model_version"):
            real = getattr(client, method)

            def spy(*args: object, _real: object = real, _name: str = method) -> object:
                calls.append(_name)
                return _real(*args)  # type: ignore[operator]

            monkeypatch.setattr(client, method, spy)
        assert not control._poll()  # nothing changed
        assert calls == ["get_registered_model"]
    finally:
        control.plane.shutdown(0.0)


def test_json_logs_are_one_object_per_line_from_both_planes(
    trained: TrainedModel, tmp_path: Path
) -> None:
    srv = start_server(
        trained.state_dir, tmp_path / "json.log", wait_serving=True, ALTSCORE_LOG_FORMAT="json"
    )
    with grpc.insecure_channel(srv.target) as channel:
        for i in range(3):
            pb_grpc.ScoringStub(channel).Score(request(f"json-{i}"), timeout=5)
    assert srv.stop(timeout=30) == 0
    lines = [line for line in srv.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert records
    for r in records:
        assert {"time", "level", "logger", "process", "pid", "message"} <= r.keys(), r
        assert r["pid"] == srv.proc.pid
    assert {r["process"] for r in records} == {"control", "data-plane"}
    serving = next(r for r in records if r["message"].startswith("serving "))
    assert serving["model_version"] == trained.version
    assert serving["process"] == "control"
    stopped = next(r for r in records if r["message"].startswith("data plane stopped"))
    assert stopped["process"] == "data-plane"
    assert stopped["predictions_logged"] == 3
    assert stopped["predictions_dropped"] == 0
