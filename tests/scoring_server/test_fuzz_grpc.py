"""The gRPC fuzzer (``benchmarks.fuzz_grpc``, ``make fuzz-grpc`` sends 100,000 cases), small and
fast: hypothesis-generated messages and raw bytes on every RPC of the session server (the
scoring service's and the Open Inference Protocol v2's). No
INTERNAL or UNKNOWN, every malformed body INVALID_ARGUMENT, valid applicants OK, the server
still up."""

from __future__ import annotations

import os

from benchmarks.fuzz_grpc import failure_lines, fuzz
from tests.conftest import ServerProcess

CASES = 800
SEED = int(os.environ.get("ALTSCORE_FUZZ_SEED", "13"))


def test_fuzzed_calls_on_every_rpc(server: ServerProcess) -> None:
    pid = server.proc.pid

    def alive() -> str | None:
        code = server.proc.poll()
        return None if code is None else f"the server exited with {code}"

    report = fuzz(
        server.target,
        CASES,
        max_message_bytes=65536,  # the session server's limits (tests/conftest.py)
        max_batch=50,
        workers=8,
        random_seed=SEED,
        alive=alive,
    )
    assert report.cases == CASES
    assert report.ok, "\n".join([f"seed {SEED}", *failure_lines(report)])
    assert server.proc.pid == pid
    assert server.proc.poll() is None
    for rpc in ("Score", "ScoreBatch", "ScoreStream", "GetModelInfo", "ReportOutcome",
                "ModelInfer"):  # fmt: skip
        assert report.malformed[rpc if rpc != "ScoreStream" else "ScoreStream messages"] > 0, rpc
    assert "panicked" not in server.log()
