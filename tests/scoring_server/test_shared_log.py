"""The shared prediction log (issue 11, item 1): two serving processes write their predictions
and outcomes to one Redis Stream (a real redis-server), each record holding what a regulator and
the drift worker need."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest
import redis

from credit_core.evaluation import matched
from scoring_server.grpc._proto import scoring_pb2 as pb
from scoring_server.grpc._proto import scoring_pb2_grpc as pb_grpc
from tests.conftest import ROOT, ServerProcess, TrainedModel, metric, start_server
from tests.redis_server import RedisServer
from tests.scoring_server.test_grpc_e2e import request
from training.settings import TrainingSettings


def _entries(client: redis.Redis, key: str) -> list[dict[str, object]]:
    out = []
    for _, fields in client.xrange(key):
        assert list(fields) == [b"r"], fields  # one field per entry: the record's JSON line
        line = fields[b"r"]
        assert not line.endswith(b"\n")
        out.append(json.loads(line))
    return out


def test_two_servers_write_every_prediction_and_outcome_to_one_stream(
    trained: TrainedModel, redis_url: str, tmp_path: Path
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}:log"
    env = {"ALTSCORE_LOG_REDIS_URL": redis_url, "ALTSCORE_LOG_STREAM_PREFIX": prefix}
    servers: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            servers.append(
                start_server(trained.state_dir, tmp_path / f"{name}.log", wait_serving=True, **env)
            )
        sent: dict[str, bool] = {}  # request id -> explained
        for n, server in enumerate(servers):
            with grpc.insecure_channel(server.target) as channel:
                stub = pb_grpc.ScoringStub(channel)
                features = list(stub.GetModelInfo(pb.GetModelInfoRequest()).models[0].features)
                for i in range(30):
                    req = request(f"s{n}-{i}")
                    req.explain = i % 3 == 0
                    stub.Score(req, timeout=10)
                    sent[req.request_id] = req.explain
                batch = pb.ScoreBatchRequest(
                    requests=[request(f"s{n}-batch-{i}") for i in range(5)]
                )
                stub.ScoreBatch(batch, timeout=10)
                sent.update({r.request_id: False for r in batch.requests})
        # outcomes for the first server's requests, reported to the second
        with grpc.insecure_channel(servers[1].target) as channel:
            recorded = pb_grpc.ScoringStub(channel).ReportOutcome(
                pb.ReportOutcomeRequest(
                    outcomes=[
                        pb.Outcome(request_id=f"s0-{i}", defaulted=i % 2 == 0) for i in range(10)
                    ]
                ),
                timeout=10,
            )
        assert recorded.recorded == 10
        # the other replica knows them (the outcome index in the same Redis): a retry is not
        # written twice, a contradiction is refused, a correction is written
        with grpc.insecure_channel(servers[0].target) as channel:
            stub = pb_grpc.ScoringStub(channel)
            again = stub.ReportOutcome(
                pb.ReportOutcomeRequest(outcomes=[pb.Outcome(request_id="s0-0", defaulted=True)]),
                timeout=10,
            )
            assert (again.recorded, again.unchanged) == (0, 1)
            flipped = pb.Outcome(request_id="s0-0", defaulted=False)
            with pytest.raises(grpc.RpcError) as info:
                stub.ReportOutcome(pb.ReportOutcomeRequest(outcomes=[flipped]), timeout=10)
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            flipped.correction = True
            fixed = stub.ReportOutcome(pb.ReportOutcomeRequest(outcomes=[flipped]), timeout=10)
            assert (fixed.recorded, fixed.unchanged) == (1, 0)
        for server in servers:
            assert server.stop(timeout=30) == 0  # a clean stop flushes what is buffered
    finally:
        for server in servers:
            server.stop()

    client = redis.Redis.from_url(redis_url)
    predictions = _entries(client, f"{prefix}:predictions")
    assert sorted(p["request_id"] for p in predictions) == sorted(sent)  # every one, once
    for p in predictions:
        assert p["served"] is True
        assert p["variant"] == "champion"
        assert p["model_name"] == "altscore-gmsc"
        assert p["predictor"] == "native"  # the server's default
        assert 0.0 <= float(p["pd"]) <= 1.0  # type: ignore[arg-type]
        assert p["decision"] in ("approve", "review", "decline")
        assert isinstance(p["score"], int)
        assert p["degraded"] is False
        assert p["imputed"] == []
        row = p["features"]
        assert isinstance(row, list)
        assert len(row) == len(features)
        reasons = p["reasons"]
        assert isinstance(reasons, list)
        assert bool(reasons) == sent[str(p["request_id"])]  # reason codes when explained
    outcomes = _entries(client, f"{prefix}:outcomes")
    assert sorted(o["request_id"] for o in outcomes) == sorted(
        [f"s0-{i}" for i in range(10)] + ["s0-0"]
    )  # ten reports and one correction
    assert [o["reporter"] for o in outcomes if o["correction"]] == ["loopback"]

    # the archiver drains both streams; compare's reader then sees every replica's traffic
    archive = tmp_path / "archive"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ALTSCORE_")},
        "ALTSCORE_LOG_REDIS_URL": redis_url,
        "ALTSCORE_LOG_STREAM_PREFIX": prefix,
        "ALTSCORE_ARCHIVE_URL": str(archive),
    }
    done = subprocess.run(
        [sys.executable, "-m", "drift", "archive", "--once"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    settings = TrainingSettings(
        state_dir=tmp_path / "state",
        log_redis_url=redis_url,
        log_stream_prefix=prefix,
        archive_url=str(archive),
    )
    log = settings.evaluation_log()
    assert log.read_predictions().height == len(sent)
    rows = matched(log, "altscore-gmsc")
    assert sorted(rows["request_id"].to_list()) == sorted(f"s0-{i}" for i in range(10))
    assert rows["defaulted"].to_list() == [
        int(r.removeprefix("s0-")) % 2 == 0 and r != "s0-0" for r in rows["request_id"].to_list()
    ]  # outcomes reported to one server matched to the other's predictions; s0-0 corrected


def test_a_redis_that_is_down_or_frozen_never_fails_a_score_and_loses_nothing_buffered(
    trained: TrainedModel, tmp_path: Path
) -> None:
    """Scores are answered while the log's Redis is stopped and while it is frozen (SIGSTOP);
    their records wait in the data plane's buffer and reach the stream once Redis is back.
    ``ReportOutcome`` says UNAVAILABLE while the recorded outcomes cannot be checked (they live
    in the same Redis) and records nothing; reported again once Redis is back, they are written
    once."""
    prefix = "down:log"
    with RedisServer() as log_redis:  # started
        server = start_server(
            trained.state_dir,
            tmp_path / "server.log",
            wait_serving=True,
            ALTSCORE_LOG_REDIS_URL=log_redis.url,
            ALTSCORE_LOG_STREAM_PREFIX=prefix,
        )
        try:
            with grpc.insecure_channel(server.target) as channel:
                stub = pb_grpc.ScoringStub(channel)
                stub.Score(request("before"), timeout=10)
                log_redis.stop()
                for i in range(20):
                    assert stub.Score(request(f"down-{i}"), timeout=2).pd > 0
                with pytest.raises(grpc.RpcError) as refused:
                    stub.ReportOutcome(
                        pb.ReportOutcomeRequest(
                            outcomes=[pb.Outcome(request_id="down-0", defaulted=True)]
                        ),
                        timeout=20,
                    )
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "nothing was recorded" in (refused.value.details() or "")
                log_redis.start()  # empty: what was added before the stop is gone with it
                again = stub.ReportOutcome(
                    pb.ReportOutcomeRequest(
                        outcomes=[pb.Outcome(request_id="down-0", defaulted=True)]
                    ),
                    timeout=20,
                )
                assert again.recorded == 1
                with log_redis.paused():
                    for i in range(5):
                        assert stub.Score(request(f"frozen-{i}"), timeout=2).pd > 0
            client = redis.Redis.from_url(log_redis.url)
            want = {f"down-{i}" for i in range(20)} | {f"frozen-{i}" for i in range(5)}
            # both logs retry on their own (every second): wait for each
            deadline = time.monotonic() + 30
            found: set[object] = set()
            outcomes: list[object] = []
            while time.monotonic() < deadline and not (want <= found and outcomes):
                found = {p["request_id"] for p in _entries(client, f"{prefix}:predictions")}
                outcomes = [o["request_id"] for o in _entries(client, f"{prefix}:outcomes")]
                time.sleep(0.2)
            assert want <= found  # every record buffered while Redis was away
            assert outcomes == ["down-0"]
            assert metric(server, "credit_scoring_prediction_log_dropped_total") == 0
        finally:
            server.stop()
