"""Decision replay (issue 11, item 2): logged decisions reproduced from the prediction log and
the registered model version, a tampered record reported as a difference."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from scoring_server.grpc._proto import scoring_pb2 as pb
from scoring_server.grpc._proto import scoring_pb2_grpc as pb_grpc
from tests.conftest import TrainedModel, replay_cli, start_server
from tests.scoring_server.test_grpc_e2e import GOOD, request


@pytest.fixture(scope="module")
def logged(trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 GMSC decisions logged by a real server, a quarter of them explained, some with
    missing inputs."""
    evaluation = tmp_path_factory.mktemp("replay") / "evaluation"
    server = start_server(
        trained.state_dir,
        evaluation.parent / "server.log",
        wait_serving=True,
        ALTSCORE_EVALUATION_DIR=str(evaluation),
    )
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.ScoringStub(channel)
            for i in range(100):
                overrides: dict[str, float | None] = {
                    name: GOOD[name] * (1 + i / 37)
                    for name in ("revolving_utilization", "debt_ratio", "monthly_income")
                }
                overrides["times_90_days_late"] = i % 3
                if i % 5 == 0:
                    overrides["monthly_income"] = None  # missing: the spec's policy fills it
                req = request(f"replay-{i}", **overrides)
                req.explain = i % 4 == 0
                stub.Score(req, timeout=10)
            stub.ScoreBatch(
                pb.ScoreBatchRequest(requests=[request(f"batch-{i}") for i in range(3)]),
                timeout=10,
            )
    finally:
        assert server.stop(timeout=30) == 0
    return evaluation


def test_logged_decisions_are_reproduced(trained: TrainedModel, logged: Path) -> None:
    done = replay_cli(trained.state_dir, logged, "--last", "103")
    assert done.returncode == 0, done.stdout + done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == 103
    assert all(r["reproduced"] for r in results)
    explained = [r for r in results if r["logged"]["reasons"]]
    assert len(explained) == 25
    for r in results:
        assert abs(r["replayed"]["pd"] - r["logged"]["pd"]) <= 1e-9
        assert r["replayed"]["reasons"] == r["logged"]["reasons"]
        assert r["replayed"]["decision"] == r["logged"]["decision"]


def test_a_tampered_record_is_reported_as_a_difference(
    trained: TrainedModel, logged: Path, tmp_path: Path
) -> None:
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    for segment in logged.glob("predictions-*.jsonl"):
        lines = []
        for line in segment.read_text().splitlines():
            record = json.loads(line)
            if record["request_id"] == "replay-8":  # explained
                record["features"][0] = record["features"][0] * 3 + 1
                record["reasons"] = ["R_NOT_CHOSEN"]
            if record["request_id"] == "replay-9":
                record["pd"] += 1e-6
                record["decision"] = "approve" if record["decision"] != "approve" else "decline"
            lines.append(json.dumps(record))
        (evaluation / segment.name).write_text("\n".join(lines) + "\n")
    done = replay_cli(
        trained.state_dir, evaluation, "--request-id", "replay-8", "--request-id", "replay-9",
        "--request-id", "replay-10",
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    by_id = {r["request_id"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert by_id["replay-10"]["reproduced"]
    eight = " | ".join(by_id["replay-8"]["differences"])
    assert "pd: logged" in eight
    assert "reasons: logged ['R_NOT_CHOSEN']" in eight
    nine = " | ".join(by_id["replay-9"]["differences"])
    assert "pd: logged" in nine
    assert "decision: logged" in nine


def test_nothing_to_replay_is_said_plainly(trained: TrainedModel, logged: Path) -> None:
    done = replay_cli(trained.state_dir, logged, "--request-id", "never-scored")
    assert done.returncode == 2
    assert "no logged prediction" in done.stderr + done.stdout
