"""``Score`` and ``ScoreBatch`` have two paths on the server: the native wire path (request bytes
decoded and answers encoded in Rust) for requests that need only their own features, and the
general path through protobuf objects (here forced by ``explain=true``, which only the general
path serves). Same answers and the same errors, whichever path a request takes."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc.error_details_pb2 import ErrorInfo
from grpc_status import rpc_status

from scoring_server.grpc._proto import scoring_pb2 as pb
from scoring_server.grpc._proto import scoring_pb2_grpc as pb_grpc
from tests.scoring_server.test_explain_e2e import gmsc_requests
from tests.scoring_server.test_grpc_e2e import request, violations_of


def _without_explanation(r: pb.ScoreResponse) -> pb.ScoreResponse:
    out = pb.ScoreResponse()
    out.CopyFrom(r)
    out.ClearField("explanation")
    return out


def test_both_paths_give_the_same_answers(channel: grpc.Channel) -> None:
    stub = pb_grpc.ScoringStub(channel)
    native, _ = gmsc_requests(explain=False)
    general, _ = gmsc_requests(explain=True)
    for a, b in zip(native[:40], general[:40], strict=True):
        assert stub.Score(a, timeout=5) == _without_explanation(stub.Score(b, timeout=5))
    for start in range(0, 200, 50):
        fast = stub.ScoreBatch(pb.ScoreBatchRequest(requests=native[start : start + 50]), timeout=5)
        slow = stub.ScoreBatch(
            pb.ScoreBatchRequest(requests=general[start : start + 50]), timeout=5
        )
        assert list(fast.results) == [_without_explanation(r) for r in slow.results]


BAD = [
    request("", age=-3.0, debt_ratio=float("nan")),
    request("u", revolving_utilization=None, shoe_size=42.0),
    request("i", age=41.5, monthly_income=float("inf")),
]


def _violations(call: object) -> dict[str, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    status = rpc_status.from_call(info.value)
    assert status is not None
    return violations_of(status)


@pytest.mark.parametrize("bad", BAD, ids=["empty-id-range-nan", "missing-unknown", "int-inf"])
def test_both_paths_give_the_same_errors(channel: grpc.Channel, bad: pb.ScoreRequest) -> None:
    stub = pb_grpc.ScoringStub(channel)
    explained = pb.ScoreRequest()
    explained.CopyFrom(bad)
    explained.explain = True
    native = _violations(lambda: stub.Score(bad, timeout=5))
    general = _violations(lambda: stub.Score(explained, timeout=5))
    assert native == general
    assert native  # the request is bad on both paths
    good = request("g")
    batch_native = _violations(
        lambda: stub.ScoreBatch(pb.ScoreBatchRequest(requests=[good, bad, good]), timeout=5)
    )
    batch_general = _violations(
        lambda: stub.ScoreBatch(pb.ScoreBatchRequest(requests=[good, explained, good]), timeout=5)
    )
    assert batch_native == batch_general  # includes the duplicate id of the two good requests
    assert "requests[2].request_id" in batch_native


def test_malformed_bytes_are_invalid_argument(channel: grpc.Channel) -> None:
    truncated = [b"\x0a\xff", b"\x0a\x05ab", b"\x0f"]  # varint, length, wire type 7
    bad_utf8 = {"Score": b"\x0a\x03\xff\xfe\xfd", "ScoreBatch": b"\x0a\x05\x0a\x03\xff\xfe\xfd"}
    for method in ("Score", "ScoreBatch"):
        call = channel.unary_unary(
            f"/credit.scoring.v1.Scoring/{method}",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        for data in [*truncated, bad_utf8[method]]:
            with pytest.raises(grpc.RpcError) as info:
                call(data, timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, data)
            status = rpc_status.from_call(info.value)
            assert status is not None
            assert list(violations_of(status)) == ["request"]


def _numeric_order(stub: pb_grpc.ScoringStub) -> list[str]:
    info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5).models[0]
    return [i.name for i in info.inputs if i.type != pb.INPUT_TYPE_CATEGORICAL]


def _dense(r: pb.ScoreRequest, order: list[str], *, explain: bool | None = None) -> pb.ScoreRequest:
    """``r`` with its numeric map sent as ``numeric_values`` (NaN where it has no value)."""
    out = pb.ScoreRequest()
    out.CopyFrom(r)
    out.applicant.ClearField("numeric")
    out.applicant.numeric_values.extend(r.applicant.numeric.get(n, float("nan")) for n in order)
    if explain is not None:
        out.explain = explain
    return out


def test_numeric_values_answer_as_the_map_does(channel: grpc.Channel) -> None:
    stub = pb_grpc.ScoringStub(channel)
    order = _numeric_order(stub)
    native, _ = gmsc_requests(explain=False)
    assert any(len(r.applicant.numeric) < len(order) for r in native[:40])  # some NaN below
    for r in native[:40]:
        by_map = stub.Score(r, timeout=5)
        assert stub.Score(_dense(r, order), timeout=5) == by_map
        explained = stub.Score(_dense(r, order, explain=True), timeout=5)
        assert _without_explanation(explained) == by_map
    dense = [_dense(r, order) for r in native[:50]]
    assert stub.ScoreBatch(pb.ScoreBatchRequest(requests=dense), timeout=5) == stub.ScoreBatch(
        pb.ScoreBatchRequest(requests=native[:50]), timeout=5
    )


def test_numeric_values_errors_on_both_paths(channel: grpc.Channel) -> None:
    stub = pb_grpc.ScoringStub(channel)
    order = _numeric_order(stub)
    good = request("d")
    short = _dense(good, order)
    del short.applicant.numeric_values[-1]
    both = _dense(good, order)
    both.applicant.numeric["age"] = 40.0
    out_of_range = _dense(request("d", age=-3.0, debt_ratio=float("inf")), order)
    missing = _dense(request("d", age=None), order)
    cases = {
        "short": (short, {"applicant.numeric_values"}),
        "both": (both, {"applicant.numeric_values"}),
        "range": (out_of_range, {"applicant.numeric.age", "applicant.numeric.debt_ratio"}),
        "missing": (missing, {"applicant.numeric.age"}),
    }
    for name, (bad, fields) in cases.items():
        native = _violations(lambda b=bad: stub.Score(b, timeout=5))
        explained = pb.ScoreRequest()
        explained.CopyFrom(bad)
        explained.explain = True
        assert _violations(lambda e=explained: stub.Score(e, timeout=5)) == native, name
        assert fields <= set(native), (name, native)
    assert (
        "expected 10 values"
        in _violations(lambda: stub.Score(short, timeout=5))["applicant.numeric_values"]
    )


def test_numeric_values_built_for_another_layout_are_refused(channel: grpc.Channel) -> None:
    """A client that read its input order from another model (a new champion reordered its
    inputs) is refused FAILED_PRECONDITION naming the served layout, instead of having its
    values read into the wrong inputs."""
    stub = pb_grpc.ScoringStub(channel)
    info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5).models[0]
    served = info.numeric_values_layout
    assert len(served) == 16
    assert int(served, 16) >= 0
    order = _numeric_order(stub)
    good = _dense(request("layout"), order)
    good.applicant.numeric_values_layout = served
    assert stub.Score(good, timeout=5) == stub.Score(request("layout"), timeout=5)
    stale = pb.ScoreRequest()
    stale.CopyFrom(good)
    stale.applicant.numeric_values_layout = "0123456789abcdef"
    stale.request_id = "layout-stale"
    for call in (
        lambda: stub.Score(stale, timeout=5),
        lambda: stub.ScoreBatch(pb.ScoreBatchRequest(requests=[good, stale]), timeout=5),
    ):
        with pytest.raises(grpc.RpcError) as info_err:
            call()
        assert info_err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert served in (info_err.value.details() or "")
        status = rpc_status.from_call(info_err.value)
        assert status is not None
        reasons = [_error_info(d) for d in status.details if d.Is(ErrorInfo.DESCRIPTOR)]
        assert reasons == [("NUMERIC_LAYOUT_MISMATCH", "scoring.altscore.dev")]
    # in a stream: that message's answer, and the stream goes on
    answers = list(stub.ScoreStream(iter([stale, good]), timeout=5))
    assert answers[0].error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert answers[1].WhichOneof("result") == "response"


def _error_info(detail: Any) -> tuple[str, str]:
    info = ErrorInfo()
    detail.Unpack(info)
    return info.reason, info.domain


def test_every_error_carries_an_error_info(channel: grpc.Channel) -> None:
    stub = pb_grpc.ScoringStub(channel)
    with pytest.raises(grpc.RpcError) as e:
        stub.Score(request("", age=-3.0), timeout=5)
    status = rpc_status.from_call(e.value)
    assert status is not None
    kinds = [d.type_url.rsplit("/", 1)[-1] for d in status.details]
    assert kinds == ["google.rpc.BadRequest", "google.rpc.ErrorInfo"]
    info = ErrorInfo()
    status.details[1].Unpack(info)
    assert (info.reason, info.domain) == ("EMPTY_ID", "scoring.altscore.dev")
    assert int(info.metadata["violations"]) >= 2
