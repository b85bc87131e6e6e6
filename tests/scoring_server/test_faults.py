"""Faults a serving process meets in production (issue 13, item 6), with real components: SIGTERM
under load, the MLflow registry unreachable at start and at reload (a real ``mlflow server``
process, killed), a corrupted model version, and the prediction log's disk full (a 64 KiB tmpfs).
The other faults of the README's "Faults" table are tested where their component is."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from benchmarks.procs import free_port
from credit_core import ModelBundle
from scoring_server.grpc._proto import scoring_pb2 as pb
from scoring_server.grpc._proto import scoring_pb2_grpc as pb_grpc
from tests.conftest import (
    ROOT,
    ServerProcess,
    TrainedModel,
    champion_bundle,
    health_status,
    http_probe,
    metric,
    register_bundle,
    start_server,
)
from tests.scoring_server.test_grpc_e2e import request

SERVING = health_pb2.HealthCheckResponse.SERVING
PENDING = 200_000
"""Records the data plane's log keeps waiting for a failing disk (``LogConfig::max_pending``)."""


def _store_copy(trained: TrainedModel, dst: Path) -> Path:
    """A store of its own holding the trained registry (and its compiled library, so the
    server does not compile again)."""
    shutil.copytree(trained.state_dir / "mlflow", dst / "mlflow")
    if (trained.state_dir / "compiled").is_dir():
        shutil.copytree(trained.state_dir / "compiled", dst / "compiled")
    return dst


# -- SIGTERM under load --------------------------------------------------------------------------


def test_sigterm_under_load_fails_no_call_in_flight(trained: TrainedModel, tmp_path: Path) -> None:
    """Unary, batch and stream clients keep the server busy; SIGTERM in the middle. Every call
    sent before the signal is answered OK (streams in progress answered in full); calls sent
    after it may be refused (UNAVAILABLE), nothing else; the process exits 0."""
    srv = start_server(
        trained.state_dir,
        tmp_path / "server.log",
        wait_serving=True,
        ALTSCORE_EVALUATION_DIR=str(tmp_path / "evaluation"),
    )
    calls: list[tuple[float, float, grpc.StatusCode]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def record(started: float, code: grpc.StatusCode) -> None:
        with lock:
            calls.append((started, time.monotonic(), code))

    def unary(batch: bool) -> None:
        with grpc.insecure_channel(srv.target) as channel:
            stub = pb_grpc.ScoringStub(channel)
            i = 0
            while not stop.is_set():
                started = time.monotonic()
                try:
                    if batch:
                        stub.ScoreBatch(
                            pb.ScoreBatchRequest(
                                requests=[request(f"b{i}-{j}") for j in range(200)]
                            ),
                            timeout=10,
                        )
                    else:
                        stub.Score(request(f"u{i}"), timeout=10)
                    record(started, grpc.StatusCode.OK)
                except grpc.RpcError as e:
                    record(started, e.code())
                i += 1

    def streams() -> None:
        with grpc.insecure_channel(srv.target) as channel:
            stub = pb_grpc.ScoringStub(channel)
            n = 0
            while not stop.is_set():

                def messages(n: int = n) -> Iterator[pb.ScoreRequest]:
                    for k in range(15):
                        yield request(f"s{n}-{k}")
                        time.sleep(0.02)

                started = time.monotonic()
                try:
                    answers = list(stub.ScoreStream(messages(), timeout=10))
                    ok = len(answers) == 15 and all(a.HasField("response") for a in answers)
                    record(started, grpc.StatusCode.OK if ok else grpc.StatusCode.DATA_LOSS)
                except grpc.RpcError as e:
                    record(started, e.code())
                n += 1

    workers = [threading.Thread(target=unary, args=(b,)) for b in (False, False, True)]
    workers += [threading.Thread(target=streams) for _ in range(2)]
    for w in workers:
        w.start()
    time.sleep(1.5)
    signalled = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    code = srv.proc.wait(timeout=30)
    stop.set()
    for w in workers:
        w.join(timeout=30)
    assert code == 0, srv.log()[-2000:]
    before = [c for c in calls if c[0] < signalled - 0.01]
    in_flight = [c for c in before if c[1] > signalled]
    failed = [c for c in before if c[2] != grpc.StatusCode.OK]
    assert len(before) > 100
    assert in_flight, "no call was in flight at the signal: the test proved nothing"
    assert failed == [], f"{len(failed)} calls sent before SIGTERM failed: {failed[:5]}"
    after = {c[2] for c in calls if c[0] >= signalled}
    assert after <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, after


# -- the registry --------------------------------------------------------------------------------


@contextmanager
def mlflow_server(store: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], None]]:
    """MLflow's own tracking server (its Flask app, every REST handler) on ``store``'s sqlite
    registry, served from a thread of this process on a free loopback port: an ``mlflow server``
    process costs 15-25 s of imports here. Yields its URL's ``kill``: the listening socket is
    closed (connections refused, as when the process dies)."""
    uri = f"sqlite:///{store / 'mlflow' / 'mlflow.db'}"
    monkeypatch.setenv("_MLFLOW_SERVER_FILE_STORE", uri)
    monkeypatch.setenv("_MLFLOW_SERVER_REGISTRY_STORE", uri)
    monkeypatch.setenv("_MLFLOW_SERVER_ARTIFACT_ROOT", str(store / "mlflow" / "artifacts"))
    from mlflow.server import app, handlers
    from werkzeug.serving import make_server

    handlers._tracking_store = None  # the app caches its stores: bind them to this one
    handlers._model_registry_store = None
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    closed = threading.Event()

    def kill() -> None:
        if not closed.is_set():
            closed.set()
            httpd.shutdown()
            httpd.server_close()
            thread.join()

    kill.url = f"http://127.0.0.1:{httpd.server_port}"  # type: ignore[attr-defined]
    try:
        yield kill
    finally:
        kill()
        handlers._tracking_store = None
        handlers._model_registry_store = None


def _scores(srv: ServerProcess, seconds: float) -> list[str]:
    """Score for ``seconds``: the version of every answer (a failure raises)."""
    versions: list[str] = []
    end = time.monotonic() + seconds
    with grpc.insecure_channel(srv.target) as channel:
        stub = pb_grpc.ScoringStub(channel)
        while time.monotonic() < end:
            versions.append(stub.Score(request(f"r{len(versions)}"), timeout=5).model.version)
            time.sleep(0.005)
    return versions


def _wait_log(srv: ServerProcess, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in srv.log():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{srv.log()[-3000:]}"
        time.sleep(0.2)


def test_a_corrupted_version_and_an_mlflow_gone_at_reload_keep_the_last_good_model(
    trained: TrainedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server reads MLflow's tracking server. A new champion whose booster file is
    corrupted is refused (logged, counted) and the last good version keeps answering; then
    MLflow is killed: every call is still answered by that version and health stays SERVING."""
    store = _store_copy(trained, tmp_path / "state")
    with mlflow_server(store, monkeypatch) as kill_mlflow:
        srv = start_server(
            store,
            tmp_path / "server.log",
            wait_serving=True,
            ALTSCORE_MLFLOW_TRACKING_URI=kill_mlflow.url,  # type: ignore[attr-defined]
            ALTSCORE_EVALUATION_DIR=str(tmp_path / "evaluation"),
        )
        try:
            assert set(_scores(srv, 0.3)) == {trained.version}
            bundle = champion_bundle(trained, tmp_path / "download")
            booster = ModelBundle.read(bundle).booster_path
            booster.write_bytes(booster.read_bytes()[: booster.stat().st_size // 2])
            corrupt = register_bundle(store, bundle, alias="champion")
            _wait_log(srv, f"model refused: champion v{corrupt}")
            assert metric(srv, "credit_scoring_model_loads_total", outcome="rejected") == 1
            assert set(_scores(srv, 0.5)) == {trained.version}

            kill_mlflow()
            assert set(_scores(srv, 3.0)) == {trained.version}  # polls fail meanwhile
            assert health_status(srv.target) == SERVING
            assert http_probe(srv, "/readyz")[0] == 200
            assert srv.proc.poll() is None
        finally:
            srv.proc.kill()  # a poll may be waiting on MLflow's retries (see the next test)
            srv.proc.wait()


def test_mlflow_unreachable_at_start_serves_health_and_stops_on_sigterm(
    trained: TrainedModel, tmp_path: Path
) -> None:
    """MLflow down when the server starts (its tracking URI is a closed port): the server comes
    up without a model (health NOT_SERVING) and a SIGTERM stops it. (It waited out MLflow's own
    HTTP retries, minutes, before: the server now caps them, ``scoring_server/__main__.py``.)"""
    store = _store_copy(trained, tmp_path / "state")
    port = free_port()
    env = {
        **os.environ,
        "ALTSCORE_STATE_DIR": str(store),
        "ALTSCORE_GRPC_PORT": str(port),
        "ALTSCORE_METRICS_PORT": "0",
        "ALTSCORE_REGISTRY_POLL_SECONDS": "1",
        "ALTSCORE_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
    }
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scoring_server"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        # minutes before the fix; 20 s leaves room for a start on a loaded 2-core machine
        deadline = time.monotonic() + 20
        status = None
        while status is None and time.monotonic() < deadline:
            try:
                status = health_status(f"127.0.0.1:{port}")
            except grpc.RpcError:
                time.sleep(0.2)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING, log.read_text()[-2000:]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.wait()


# -- the prediction log's disk -------------------------------------------------------------------


def _tmpfs_python(tmp_path: Path, mountpoint: Path, size: str) -> Path:
    """An executable that runs Python in a mount namespace of its own where ``mountpoint`` is a
    tmpfs of ``size`` (``unshare -rm``: no privilege needed where user namespaces are allowed)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is missing")
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size={size} tmpfs {tmp_path}"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace: {probe.stderr.decode()}")
    wrapper = tmp_path / "python-on-tmpfs"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'exec unshare -rm sh -c \'mount -t tmpfs -o size={size} tmpfs "{mountpoint}" && '
        f'exec "{sys.executable}" "$@"\' python "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def test_a_full_disk_loses_log_records_not_answers(
    trained: TrainedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prediction log's folder is a 64 KiB tmpfs (a few hundred records). Once it is full
    the records wait in the data plane's buffer (retried every second); beyond its 200,000
    every Score is still answered and the records that cannot be kept are counted in
    ``credit_scoring_prediction_log_dropped_total``. ReportOutcome, whose OK means "on disk",
    does not answer OK."""
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    monkeypatch.setattr(sys, "executable", str(_tmpfs_python(tmp_path, evaluation, "64k")))
    srv = start_server(
        trained.state_dir,
        tmp_path / "server.log",
        wait_serving=True,
        ALTSCORE_EVALUATION_DIR=str(evaluation),
    )
    monkeypatch.undo()
    try:
        with grpc.insecure_channel(srv.target) as channel:
            stub = pb_grpc.ScoringStub(channel)
            batch = pb.ScoreBatchRequest(requests=[request(f"full-{j}") for j in range(1000)])
            for _ in range(PENDING // 1000 + 20):  # the disk is full after a few hundred
                assert len(stub.ScoreBatch(batch, timeout=30).results) == 1000
            deadline = time.monotonic() + 10
            while metric(srv, "credit_scoring_prediction_log_dropped_total") == 0:
                assert time.monotonic() < deadline, srv.log()[-3000:]
                time.sleep(0.2)
            assert stub.Score(request("still-answered"), timeout=5).pd > 0
            with pytest.raises(grpc.RpcError) as refused:
                stub.ReportOutcome(
                    pb.ReportOutcomeRequest(
                        outcomes=[pb.Outcome(request_id="full-0", defaulted=True)]
                    ),
                    timeout=10,
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        dropped = metric(srv, "credit_scoring_prediction_log_dropped_total")
        assert 0 < dropped <= 20_000 + 1000
        assert health_status(srv.target) == SERVING
    finally:
        assert srv.stop(timeout=30) == 0
