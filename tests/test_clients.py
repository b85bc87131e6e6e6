"""Clients of other languages, built from ``proto/``: the Go client (generated stubs, committed
and checked current) and grpcurl through server reflection v1 both read a stream's error
answer with its machine-readable details."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, ServerProcess, metric

GO_CLIENT = ROOT / "clients" / "go"


def _go_bin(name: str) -> str:
    gopath = subprocess.run(["go", "env", "GOPATH"], capture_output=True, text=True, check=True)
    path = Path(gopath.stdout.strip()) / "bin" / name
    found = shutil.which(name) or (str(path) if path.is_file() else None)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make grpcurl`")
    return found


def test_go_code_is_current(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(_go_bin('protoc-gen-go')).parent}:{os.environ['PATH']}"}
    env["PYTHON"] = sys.executable
    subprocess.run(
        ["bash", str(GO_CLIENT / "generate.sh"), str(tmp_path)], env=env, check=True, cwd=ROOT
    )
    committed = GO_CLIENT / "gen" / "go"
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.go"))
    assert made == sorted(p.relative_to(committed) for p in committed.rglob("*.go"))
    stale = [p for p in made if (tmp_path / p).read_bytes() != (committed / p).read_bytes()]
    assert not stale, f"stale generated Go code: {stale}; run `make proto`"


def _go_run(command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one of the Go client's commands (``clients/go/cmd/<command>``)."""
    return subprocess.run(
        ["go", "run", f"./cmd/{command}", *args],
        cwd=GO_CLIENT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_go_client_prints_a_stream_error_answer(server: ServerProcess) -> None:
    done = _go_run("score-stream", "-target", server.target)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("go-1: pd=")
    assert lines[1].startswith("go-2: error InvalidArgument: invalid request")
    assert "  violation applicant.numeric.age [OUT_OF_RANGE]: value 7 is outside" in lines[2]
    assert lines[3].startswith("go-3: pd=")  # the stream went on


def test_grpcurl_through_reflection_v1_prints_a_stream_error(server: ServerProcess) -> None:
    good = {"revolving_utilization": 0.35, "age": 41, "debt_ratio": 0.3, "open_credit_lines": 7}
    good |= {"past_due_30_59": 0, "times_90_days_late": 0, "real_estate_loans": 1}
    good |= {"past_due_60_89": 0}
    messages = [
        {"request_id": "cli-1", "applicant": {"applicant_id": "c1", "numeric": good}},
        {"request_id": "cli-2", "applicant": {"numeric": {**good, "age": 7}}},
    ]
    before = metric(
        server, "grpc_server_handled_total", grpc_service="grpc.reflection.v1.ServerReflection"
    )
    done = subprocess.run(
        [_go_bin("grpcurl"), "-plaintext", "-d", "@", server.target,
         "credit.scoring.v1.Scoring/ScoreStream"],
        input="\n".join(json.dumps(m) for m in messages),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    decoder = json.JSONDecoder()
    answers, text = [], done.stdout.strip()
    while text:
        answer, end = decoder.raw_decode(text)
        answers.append(answer)
        text = text[end:].strip()
    assert [a["requestId"] for a in answers] == ["cli-1", "cli-2"]
    assert "response" in answers[0]
    error = answers[1]["error"]
    assert error["code"] == 3  # INVALID_ARGUMENT
    (detail,) = error["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    (violation,) = detail["fieldViolations"]
    assert violation["field"] == "applicant.numeric.age"
    assert violation["reason"] == "OUT_OF_RANGE"
    after = metric(
        server, "grpc_server_handled_total", grpc_service="grpc.reflection.v1.ServerReflection"
    )
    assert after > before  # grpcurl resolved the service through reflection v1


def test_answers_are_not_held_back_by_nagle(server: ServerProcess) -> None:
    """Answers leave at once: the data plane sets TCP_NODELAY on every accepted connection.
    Without it, gRPC-Go's client (like ghz) waited for a delayed ACK on every call: 100 calls in
    sequence took 3.6 s (36 ms each)."""
    done = _go_run("score-sequence", "-target", server.target, "-n", "100")
    assert done.returncode == 0, done.stderr
    fields = dict(part.split("=") for part in done.stdout.split())
    assert fields["calls"] == "100"
    # 100 delayed ACKs take 4 s; the bound leaves a slow shared machine 20x its usual time.
    assert float(fields["elapsed_ms"]) < 2000, done.stdout
