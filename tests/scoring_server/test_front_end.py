"""The native front end (``ALTSCORE_NATIVE_FRONT_END``, on by default): it answers ``Score`` /
``ScoreBatch`` calls that need only their own features without Python and passes every other
call to the worker's grpc.aio server. A server with it and a server without it give the same
bytes, codes and error details for the same requests; what it answers directly is in the
evaluation log and the metrics as if Python had answered."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from credit_core.evaluation import EvaluationLog
from feature_kernels import FeaturePipeline, load_spec
from scoring_server.grpc._proto import scoring_pb2 as pb
from tests.conftest import GMSC_SPEC, ServerProcess, TrainedModel, start_server
from tests.scoring_server.test_explain_e2e import gmsc_requests
from tests.scoring_server.test_grpc_e2e import request
from tests.scoring_server.test_workers import metric

SCORE = "/credit.scoring.v1.Scoring/Score"
BATCH = "/credit.scoring.v1.Scoring/ScoreBatch"


@pytest.fixture(scope="module")
def python_only(
    trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The same model and limits as the session ``server``, every call through Python."""
    srv = start_server(
        trained.state_dir,
        tmp_path_factory.mktemp("logs") / "python-only.log",
        wait_serving=True,
        ALTSCORE_MAX_BATCH_SIZE="50",
        ALTSCORE_MAX_MESSAGE_BYTES="65536",
        ALTSCORE_NATIVE_FRONT_END="false",
    )
    yield srv
    srv.stop()


def _call(target: str, method: str, data: bytes) -> tuple[str, str, bytes, bytes | None]:
    """Raw bytes in; (code, details, response bytes, grpc-status-details-bin) out."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method)
        try:
            response = call(data, timeout=10)
            return ("OK", "", response, None)
        except grpc.RpcError as e:
            details = dict(e.trailing_metadata() or ()).get("grpc-status-details-bin")  # type: ignore[attr-defined]
            return (e.code().name, e.details() or "", b"", details)  # type: ignore[attr-defined]


def _batch(*requests: pb.ScoreRequest) -> bytes:
    return pb.ScoreBatchRequest(requests=requests).SerializeToString()


def _dense(r: pb.ScoreRequest, extra: int = 0) -> pb.ScoreRequest:
    """``r`` with its numeric inputs as ``numeric_values`` (``extra`` values too many)."""
    order = FeaturePipeline(load_spec(GMSC_SPEC)).numeric_inputs
    out = pb.ScoreRequest()
    out.CopyFrom(r)
    out.applicant.ClearField("numeric")
    out.applicant.numeric_values.extend(r.applicant.numeric.get(n, float("nan")) for n in order)
    out.applicant.numeric_values.extend([1.0] * extra)
    return out


def _cases() -> list[tuple[str, str, bytes]]:
    good, _ = gmsc_requests(explain=False)
    explained, _ = gmsc_requests(explain=True)
    huge = request("huge")
    huge.applicant.categorical["padding"] = "x" * 70_000
    return [
        ("numeric values", SCORE, _dense(good[6]).SerializeToString()),
        ("numeric values in a batch", BATCH, _batch(*(_dense(r) for r in good[7:40]))),
        ("numeric values, one too many", SCORE, _dense(good[8], extra=1).SerializeToString()),
        ("numeric values, out of range", SCORE, _dense(request("o", age=-1)).SerializeToString()),
        ("one good", SCORE, good[0].SerializeToString()),
        ("one good, no applicant id", SCORE, request("n", monthly_income=None).SerializeToString()),
        ("a good batch", BATCH, _batch(*good[:50])),
        ("explain", SCORE, explained[1].SerializeToString()),
        ("explain in a batch", BATCH, _batch(good[2], explained[3])),
        ("out of range", SCORE, request("r", age=-3.0).SerializeToString()),
        ("unknown feature", SCORE, request("u", shoe_size=42.0).SerializeToString()),
        ("empty request id", SCORE, request("").SerializeToString()),
        ("bad row in a batch", BATCH, _batch(good[4], request("b", debt_ratio=float("nan")))),
        ("duplicate ids", BATCH, _batch(good[5], good[5])),
        ("empty batch", BATCH, b""),
        ("batch too large", BATCH, _batch(*good[:51])),
        ("malformed bytes", SCORE, b"\x0a\x05ab"),
        ("malformed batch", BATCH, b"\x0a\x03\x12\x05\x00"),
        ("message too large", SCORE, huge.SerializeToString()),
    ]


@pytest.mark.parametrize(("name", "method", "data"), _cases(), ids=[c[0] for c in _cases()])
def test_front_end_answers_as_python_does(
    server: ServerProcess, python_only: ServerProcess, name: str, method: str, data: bytes
) -> None:
    assert _call(server.target, method, data) == _call(python_only.target, method, data)


def _wait(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.1)


def test_direct_answers_reach_the_log_and_the_metrics(
    server: ServerProcess, trained: TrainedModel
) -> None:
    good, _ = gmsc_requests(explain=False)
    tag = f"fe-{time.time_ns()}-"
    requests = [pb.ScoreRequest() for _ in range(60)]
    for r, g in zip(requests, good, strict=False):
        r.CopyFrom(g)
        r.request_id = tag + r.request_id
    before = {
        "direct": metric(server, "credit_scoring_direct_answers_total", rpc="Score"),
        "direct_batch": metric(server, "credit_scoring_direct_answers_total", rpc="ScoreBatch"),
        "ok": metric(server, "credit_scoring_requests_total", rpc="Score", code="OK"),
        "latency": metric(server, "credit_scoring_request_duration_seconds_count", rpc="Score"),
        "applicants": metric(server, "credit_scoring_applicants_scored_total", variant="champion"),
    }
    answers: dict[str, float] = {}
    with grpc.insecure_channel(server.target) as channel:
        score = channel.unary_unary(SCORE, response_deserializer=pb.ScoreResponse.FromString)
        batch = channel.unary_unary(BATCH, response_deserializer=pb.ScoreBatchResponse.FromString)
        for r in requests[:20]:
            answers[r.request_id] = score(r.SerializeToString(), timeout=5).pd
        results = batch(_batch(*requests[20:]), timeout=5).results
        answers.update({a.request_id: a.pd for a in results})

    def counted() -> bool:
        return (
            metric(server, "credit_scoring_direct_answers_total", rpc="ScoreBatch")
            >= before["direct_batch"] + 1
            and metric(server, "credit_scoring_direct_answers_total", rpc="Score")
            >= before["direct"] + 20
        )

    _wait(counted)
    assert metric(server, "credit_scoring_requests_total", rpc="Score", code="OK") >= (
        before["ok"] + 20
    )
    assert metric(server, "credit_scoring_request_duration_seconds_count", rpc="Score") >= (
        before["latency"] + 20
    )
    assert metric(server, "credit_scoring_applicants_scored_total", variant="champion") >= (
        before["applicants"] + 60
    )

    log = EvaluationLog(trained.state_dir / "evaluation")

    def logged() -> dict[str, tuple[float, bool, str, str]]:
        frame = log.read_predictions()
        rows = frame.filter(frame["request_id"].str.starts_with(tag)).iter_rows(named=True)
        return {
            r["request_id"]: (r["pd"], r["served"], r["variant"], r["applicant_id"]) for r in rows
        }

    _wait(lambda: len(logged()) == len(answers), timeout=20)
    got = logged()
    for r in requests:
        assert got[r.request_id] == (
            answers[r.request_id],
            True,
            "champion",
            r.applicant.applicant_id,
        )


def test_the_public_port_carries_health_reflection_and_streams(server: ServerProcess) -> None:
    """Calls the front end passes on (here a stream with a bad message in the middle) behave
    as on the Python server itself."""
    good = request("s-1")
    bad = request("s-2", age=-1.0)
    with grpc.insecure_channel(server.target) as channel:
        stream = channel.stream_stream(
            "/credit.scoring.v1.Scoring/ScoreStream",
            request_serializer=pb.ScoreRequest.SerializeToString,
            response_deserializer=pb.ScoreStreamResponse.FromString,
        )
        answers = list(stream(iter([good, bad, request("s-3")]), timeout=10))
    assert [a.request_id for a in answers] == ["s-1", "s-2", "s-3"]
    assert [a.WhichOneof("result") for a in answers] == ["response", "error", "response"]


def test_grpc_frame_of_a_compressed_message_goes_to_python(server: ServerProcess) -> None:
    """A message the front end cannot read as one plain frame is left to the backend."""
    with grpc.insecure_channel(server.target, compression=grpc.Compression.Gzip) as channel:
        score = channel.unary_unary(SCORE, response_deserializer=pb.ScoreResponse.FromString)
        answer = score(request("gz").SerializeToString(), timeout=5)
    assert answer.request_id == "gz"
    assert 0 < answer.pd < 1


def test_a_stream_whose_reader_stops_is_not_read_further(server: ServerProcess) -> None:
    """A client that keeps sending on ``ScoreStream`` and never reads an answer: the front end,
    the backend and HTTP/2 flow control stop reading it, and the worker's memory stays put."""
    from benchmarks.procs import child_pids, rss_bytes

    pulled = [0]
    done = threading.Event()

    def messages() -> Iterator[pb.ScoreRequest]:
        for i in range(5_000_000):
            if done.is_set():
                return
            pulled[0] += 1
            yield request(f"bp-{i}")

    (worker,) = child_pids(server.proc.pid)
    rss_before = rss_bytes(worker)
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
            rss_growth = rss_bytes(worker) - rss_before
        finally:
            done.set()
            call.cancel()  # type: ignore[attr-defined]
    assert after == stalled_at, "the client could still send: nothing stopped reading"
    assert stalled_at < 200_000
    assert rss_growth < 64 * 2**20, f"worker grew by {rss_growth / 2**20:.0f} MB"
