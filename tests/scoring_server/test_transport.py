"""The transport (tonic owns it): compressed messages, flow control on a stream whose client
stops reading, and errors that stay small whatever the request."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
from grpc_status import rpc_status

from benchmarks.procs import rss_bytes
from scoring_server.grpc._proto import scoring_pb2 as pb
from scoring_server.grpc._proto import scoring_pb2_grpc as pb_grpc
from tests.conftest import ServerProcess
from tests.scoring_server.test_grpc_e2e import GOOD, request, violations_of

SCORE = "/credit.scoring.v1.Scoring/Score"


def test_compressed_messages_are_read_and_answered(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.target, compression=grpc.Compression.Gzip) as channel:
        score = channel.unary_unary(SCORE, response_deserializer=pb.ScoreResponse.FromString)
        answer = score(request("gz").SerializeToString(), timeout=5)
    assert answer.request_id == "gz"
    assert 0 < answer.pd < 1


def _wait(condition: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not (callable(condition) and condition()):
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.1)


def test_a_stream_whose_reader_stops_is_not_read_further(server: ServerProcess) -> None:
    """A client that keeps sending on ``ScoreStream`` and never reads an answer: the server's
    bounded queues fill, it stops reading, HTTP/2 flow control stops the client, and the
    server's memory stays put."""
    pulled = [0]
    done = threading.Event()

    def messages() -> Iterator[pb.ScoreRequest]:
        for i in range(5_000_000):
            if done.is_set():
                return
            pulled[0] += 1
            yield request(f"bp-{i}")

    rss_before = rss_bytes(server.proc.pid)
    with grpc.insecure_channel(server.target) as channel:
        stream = channel.stream_stream(
            "/credit.scoring.v1.Scoring/ScoreStream",
            request_serializer=pb.ScoreRequest.SerializeToString,
            response_deserializer=pb.ScoreStreamResponse.FromString,
        )
        call = stream(messages(), timeout=60)
        try:
            _wait(lambda: pulled[0] > 1000)
            seen = -1
            deadline = time.monotonic() + 30
            while seen != pulled[0] and time.monotonic() < deadline:  # until sending stalls
                seen = pulled[0]
                time.sleep(1.0)
            stalled_at = pulled[0]
            time.sleep(2.0)
            after = pulled[0]
            rss_growth = rss_bytes(server.proc.pid) - rss_before
        finally:
            done.set()
            call.cancel()  # type: ignore[attr-defined]
    assert after == stalled_at, "the client could still send: nothing stopped reading"
    assert stalled_at < 200_000
    assert rss_growth < 64 * 2**20, f"the server grew by {rss_growth / 2**20:.0f} MB"


def test_errors_stay_small_whatever_the_request(server: ServerProcess) -> None:
    """A batch where every applicant is bad, with huge unknown names and ids: the error lists a
    bounded number of violations (the rest counted), echoes cut values, and its trailers stay
    under the 8 KiB a standard client accepts."""
    bad = []
    for i in range(10):  # ~44 KB: under the session server's 64 KiB message limit
        numeric = {**{k: float(v) for k, v in GOOD.items() if k != "age"}, "k" * 1000: 1.0}
        bad.append(
            pb.ScoreRequest(
                request_id=("x" * 1000) if i % 2 else f"r{i}",
                applicant=pb.Applicant(numeric=numeric, categorical={"c" * 300: "v" * 2000}),
            )
        )
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.ScoringStub(channel)
        try:
            stub.ScoreBatch(pb.ScoreBatchRequest(requests=bad), timeout=5)
        except grpc.RpcError as e:
            error = e
        else:
            raise AssertionError("a batch of bad requests was answered")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    trailers = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
    size = sum(len(k) + len(v) for k, v in trailers.items()) + len(error.details() or "")  # type: ignore[attr-defined]
    assert size < 8 * 1024, size
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found = violations_of(status)
    assert len(found) <= 17
    assert any("more violations not listed" in d for d in found.values())
    assert all(len(f) < 200 and len(d) < 300 for f, d in found.items())
