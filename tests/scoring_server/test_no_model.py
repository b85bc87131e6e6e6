"""A server whose registry has no champion: NOT_SERVING, UNAVAILABLE, and a clean SIGTERM."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2

from scoring_server.grpc._proto import scoring_pb2 as pb
from scoring_server.grpc._proto import scoring_pb2_grpc as pb_grpc
from tests.conftest import (
    ServerProcess,
    TrainedModel,
    health_status,
    http_probe,
    metric,
    register_tampered,
    start_server,
)


@pytest.fixture(scope="module")
def empty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    state: Path = tmp_path_factory.mktemp("empty-state")
    srv = start_server(state, state / "server.log", wait_serving=False)
    yield srv
    srv.stop()


def test_health_not_serving_without_model(empty_server: ServerProcess) -> None:
    assert health_status(empty_server.target) == health_pb2.HealthCheckResponse.NOT_SERVING
    # the plain-HTTP probes beside /metrics say the same (Kubernetes' grpc probe cannot do TLS)
    assert http_probe(empty_server, "/readyz") == (503, "NOT_SERVING\n")
    assert http_probe(empty_server, "/livez") == (200, "ok\n")


def test_unavailable_unary_batch_and_stream(empty_server: ServerProcess) -> None:
    with grpc.insecure_channel(empty_server.target) as channel:
        stub = pb_grpc.ScoringStub(channel)
        req = pb.ScoreRequest(request_id="r", applicant=pb.Applicant(numeric={"age": 40}))
        for call in (
            lambda: stub.Score(req, timeout=5),
            lambda: stub.ScoreBatch(pb.ScoreBatchRequest(requests=[req]), timeout=5),
        ):
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        answers = list(stub.ScoreStream(iter([req, req]), timeout=5))
        assert [a.error.code for a in answers] == [code_pb2.UNAVAILABLE] * 2
        info_response = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
        assert len(info_response.models) == 0


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    srv = start_server(tmp_path, tmp_path / "server.log", wait_serving=False)
    started = time.monotonic()
    assert srv.stop(timeout=20) == 0
    assert time.monotonic() - started < 15
    assert "draining" in srv.log()
    assert "stopped" in srv.log()


def test_refused_champion_never_serves(trained: TrainedModel, tmp_path: Path) -> None:
    """A champion that fails the parity gate is refused: health stays NOT_SERVING, calls answer
    UNAVAILABLE, the log says why and the refusal is counted."""
    state = tmp_path / "state"
    shutil.copytree(trained.state_dir / "mlflow", state / "mlflow")
    register_tampered(state, tmp_path, "champion", "reference")
    srv = start_server(state, tmp_path / "server.log", wait_serving=False)
    try:
        deadline = time.monotonic() + 120
        while "model refused" not in srv.log() and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "differ from XGBoost's" in srv.log()
        assert health_status(srv.target) == health_pb2.HealthCheckResponse.NOT_SERVING
        with grpc.insecure_channel(srv.target) as channel:
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.ScoringStub(channel).Score(
                    pb.ScoreRequest(request_id="r", applicant=pb.Applicant()), timeout=5
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert metric(srv, "credit_scoring_model_loads_total", outcome="rejected") == 1
    finally:
        srv.stop()
