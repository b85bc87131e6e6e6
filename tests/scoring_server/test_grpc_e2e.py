"""The wire contract against a real server process on 127.0.0.1."""

from __future__ import annotations

import math
import time
import urllib.request
from collections.abc import Iterator

import grpc
import numpy as np
import polars as pl
import pytest
import xgboost as xgb
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status
from prometheus_client.parser import text_string_to_metric_families

from credit_core import ScoringPolicy
from credit_core.bundle import ModelBundle
from feature_kernels import FeaturePipeline, load_spec
from scoring_server.grpc._proto import scoring_pb2 as pb
from scoring_server.grpc._proto import scoring_pb2_grpc as pb_grpc
from tests.conftest import GMSC_DATA, GMSC_SPEC, ServerProcess, TrainedModel, health_status

GOOD = {
    "revolving_utilization": 0.35,
    "age": 41,
    "past_due_30_59": 0,
    "debt_ratio": 0.3,
    "monthly_income": 5200,
    "open_credit_lines": 7,
    "times_90_days_late": 0,
    "real_estate_loans": 1,
    "past_due_60_89": 0,
    "dependents": 2,
}


def request(request_id: str, **overrides: float | None) -> pb.ScoreRequest:
    numeric = {k: float(v) for k, v in {**GOOD, **overrides}.items() if v is not None}
    return pb.ScoreRequest(
        request_id=request_id,
        applicant=pb.Applicant(applicant_id=f"app-{request_id}", numeric=numeric),
    )


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.ScoringStub:
    return pb_grpc.ScoringStub(channel)


def violations_of(status: status_pb2.Status) -> dict[str, str]:
    assert status.code == code_pb2.INVALID_ARGUMENT, status
    bad = error_details_pb2.BadRequest()
    info = error_details_pb2.ErrorInfo()
    assert len(status.details) == 2  # the violations, then the machine-readable reason
    assert status.details[0].Unpack(bad)
    assert status.details[1].Unpack(info)
    assert info.domain == "scoring.altscore.dev"
    assert info.reason == bad.field_violations[0].reason
    return {v.field: v.description for v in bad.field_violations}


def call_violations(err: grpc.RpcError) -> dict[str, str]:
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    status = rpc_status.from_call(err)
    assert status is not None
    return violations_of(status)


# -- discovery and health ---------------------------------------------------------------------


def test_reflection_lists_scoring_and_health(channel: grpc.Channel) -> None:
    services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "credit.scoring.v1.Scoring" in services
    assert "grpc.health.v1.Health" in services


def test_health_serving(server: ServerProcess) -> None:
    assert health_status(server.target) == health_pb2.HealthCheckResponse.SERVING
    assert (
        health_status(server.target, "credit.scoring.v1.Scoring")
        == health_pb2.HealthCheckResponse.SERVING
    )


# -- scoring ----------------------------------------------------------------------------------


def test_score_real_gmsc_rows_matches_xgboost(
    stub: pb_grpc.ScoringStub, trained: TrainedModel
) -> None:
    """PD over the wire equals XGBoost's own prediction of the same rows (column path)."""
    spec = load_spec(GMSC_SPEC)
    pipeline = FeaturePipeline(spec)
    frame = pl.read_csv(GMSC_DATA, null_values="NA").slice(0, 200)
    bundle_dir = next((trained.state_dir / "models").glob("*-v*/model"))
    booster = xgb.Booster(model_file=str(ModelBundle.read(bundle_dir).booster_path))
    expected = booster.inplace_predict(pipeline.transform_frame(frame))
    policy = ScoringPolicy()
    for i, row in enumerate(frame.iter_rows(named=True)):
        numeric = {
            name: float(row[spec.column_of(name)])
            for name in spec.inputs
            if row[spec.column_of(name)] is not None
        }
        response = stub.Score(
            pb.ScoreRequest(
                request_id=f"gmsc-{i}", applicant=pb.Applicant(applicant_id=str(i), numeric=numeric)
            ),
            timeout=5,
        )
        assert response.request_id == f"gmsc-{i}"
        assert abs(response.pd - float(expected[i])) <= 1e-5
        assert response.score == policy.score(response.pd)
        assert response.decision == pb.Decision.Value("DECISION_" + policy.decide(response.pd).name)
        assert response.model.name == "altscore-gmsc"
        assert response.model.version == trained.version
        assert response.model.variant == pb.VARIANT_CHAMPION


def test_batch_equals_unary(stub: pb_grpc.ScoringStub) -> None:
    requests = [request(f"b{i}", revolving_utilization=i / 10) for i in range(20)]
    batch = stub.ScoreBatch(pb.ScoreBatchRequest(requests=requests), timeout=5)
    assert [r.request_id for r in batch.results] == [r.request_id for r in requests]
    for req, res in zip(requests, batch.results, strict=True):
        assert stub.Score(req, timeout=5).pd == res.pd


def test_optional_inputs_may_be_absent(stub: pb_grpc.ScoringStub) -> None:
    response = stub.Score(request("opt", monthly_income=None, dependents=None), timeout=5)
    assert 0.0 < response.pd < 1.0


def test_model_info(stub: pb_grpc.ScoringStub, trained: TrainedModel) -> None:
    info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
    (model,) = info.models
    assert model.model.version == trained.version
    assert model.spec_name == "gmsc"
    assert len(model.schema_hash) == 64
    inputs = {i.name: i for i in model.inputs}
    assert set(inputs) == set(GOOD)
    assert inputs["age"].min == 18
    assert inputs["age"].required
    assert not inputs["monthly_income"].required
    assert model.features[0] == "revolving_utilization"
    assert abs(model.metrics["auc"] - trained.auc) < 1e-9
    assert info.policy.base_score == 600
    assert info.policy.pdo == 20


# -- bad input: every class, unary and in a stream ----------------------------------------------

BAD_CASES: list[tuple[str, pb.ScoreRequest, dict[str, str]]] = [
    (
        "unknown feature",
        pb.ScoreRequest(
            request_id="u1",
            applicant=pb.Applicant(numeric={**{k: float(v) for k, v in GOOD.items()}, "shoe": 9}),
        ),
        {"applicant.numeric.shoe": "unknown feature"},
    ),
    (
        "wrong type",
        pb.ScoreRequest(
            request_id="w1",
            applicant=pb.Applicant(
                numeric={k: float(v) for k, v in GOOD.items() if k != "age"},
                categorical={"age": "forty"},
            ),
        ),
        {"applicant.categorical.age": "wrong type"},
    ),
    ("NaN", request("n1", debt_ratio=math.nan), {"applicant.numeric.debt_ratio": "finite"}),
    ("inf", request("i1", monthly_income=math.inf), {"applicant.numeric.monthly_income": "finite"}),
    ("out of range", request("o1", age=7), {"applicant.numeric.age": "outside the allowed range"}),
    (
        "not an integer",
        request("f1", past_due_30_59=1.5),
        {"applicant.numeric.past_due_30_59": "integer"},
    ),
    (
        "missing required",
        request("m1", age=None, open_credit_lines=None),
        {
            "applicant.numeric.age": "required feature is missing",
            "applicant.numeric.open_credit_lines": "required feature is missing",
        },
    ),
    ("empty request id", request(""), {"request_id": "must not be empty"}),
    (
        "several at once",
        request("s1", age=200, debt_ratio=-1, past_due_60_89=math.nan),
        {
            "applicant.numeric.age": "outside",
            "applicant.numeric.debt_ratio": "outside",
            "applicant.numeric.past_due_60_89": "finite",
        },
    ),
]


@pytest.mark.parametrize(("case", "req", "expected"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_unary(
    stub: pb_grpc.ScoringStub, case: str, req: pb.ScoreRequest, expected: dict[str, str]
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.Score(req, timeout=5)
    found = call_violations(info.value)
    assert set(found) == set(expected), found
    for field, text in expected.items():
        assert text in found[field]


def test_bad_input_in_batch_names_index(stub: pb_grpc.ScoringStub) -> None:
    reqs = [
        request("ok0"),
        request("bad1", age=3),
        request("ok2"),
        request("bad3", debt_ratio=math.inf),
    ]
    with pytest.raises(grpc.RpcError) as info:
        stub.ScoreBatch(pb.ScoreBatchRequest(requests=reqs), timeout=5)
    assert set(call_violations(info.value)) == {
        "requests[1].applicant.numeric.age",
        "requests[3].applicant.numeric.debt_ratio",
    }


def test_duplicate_request_id_in_batch(stub: pb_grpc.ScoringStub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.ScoreBatch(pb.ScoreBatchRequest(requests=[request("d"), request("d")]), timeout=5)
    assert "duplicate" in call_violations(info.value)["requests[1].request_id"]


def test_oversized_and_empty_batch(stub: pb_grpc.ScoringStub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.ScoreBatch(
            pb.ScoreBatchRequest(requests=[request(f"x{i}") for i in range(51)]), timeout=5
        )
    assert "exceed the limit of 50" in call_violations(info.value)["requests"]
    with pytest.raises(grpc.RpcError) as info:
        stub.ScoreBatch(pb.ScoreBatchRequest(), timeout=5)
    assert "requests" in call_violations(info.value)


def test_oversized_message(stub: pb_grpc.ScoringStub) -> None:
    big = request("big")
    big.applicant.applicant_id = "x" * 70_000
    with pytest.raises(grpc.RpcError) as info:
        stub.Score(big, timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def _stream(stub: pb_grpc.ScoringStub, reqs: list[pb.ScoreRequest]) -> list[pb.ScoreStreamResponse]:
    def gen() -> Iterator[pb.ScoreRequest]:
        yield from reqs

    return list(stub.ScoreStream(gen(), timeout=30))


def test_stream_mixed_bad_messages_answers_all_in_order(stub: pb_grpc.ScoringStub) -> None:
    reqs: list[pb.ScoreRequest] = []
    expected_bad: dict[int, dict[str, str]] = {}
    for i in range(120):
        if i % 10 == 3:
            case = BAD_CASES[(i // 10) % len(BAD_CASES)]
            bad = pb.ScoreRequest()
            bad.CopyFrom(case[1])
            if bad.request_id:
                bad.request_id = f"{bad.request_id}-{i}"
            reqs.append(bad)
            expected_bad[i] = case[2]
        else:
            reqs.append(request(f"s{i}", revolving_utilization=(i % 7) / 5))
    answers = _stream(stub, reqs)
    assert len(answers) == len(reqs)
    for i, (req, ans) in enumerate(zip(reqs, answers, strict=True)):
        assert ans.request_id == req.request_id
        if i in expected_bad:
            assert ans.WhichOneof("result") == "error"
            assert set(violations_of(ans.error)) == set(expected_bad[i])
        else:
            assert ans.WhichOneof("result") == "response"
            assert ans.response.request_id == req.request_id
            assert ans.response.pd == stub.Score(req, timeout=5).pd


def test_stream_duplicate_request_id(stub: pb_grpc.ScoringStub) -> None:
    answers = _stream(stub, [request("same"), request("other"), request("same")])
    assert [a.WhichOneof("result") for a in answers] == ["response", "response", "error"]
    assert "duplicate" in violations_of(answers[2].error)["request_id"]


# -- metrics ----------------------------------------------------------------------------------


def test_metrics_scrape(server: ServerProcess, stub: pb_grpc.ScoringStub) -> None:
    stub.Score(request("metrics-ok"), timeout=5)
    with pytest.raises(grpc.RpcError):
        stub.Score(request("metrics-bad", age=1), timeout=5)
    deadline = time.monotonic() + 5  # the native front end hands its counts over every 0.25 s
    while True:
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        body = urllib.request.urlopen(url, timeout=5)
        families = {f.name: f for f in text_string_to_metric_families(body.read().decode())}
        counts = {
            (s.labels["rpc"], s.labels["code"]): s.value
            for s in families["credit_scoring_requests"].samples
            if s.name == "credit_scoring_requests_total"
        }
        if ("Score", "OK") in counts or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert counts[("Score", "OK")] >= 1
    assert counts[("Score", "INVALID_ARGUMENT")] >= 1
    hist = families["credit_scoring_request_duration_seconds"]
    assert any(s.name.endswith("_bucket") and s.labels["rpc"] == "Score" for s in hist.samples)
    (info,) = [s for s in families["credit_scoring_model_info"].samples if s.value == 1]
    assert info.labels["variant"] == "champion"
    parity = families["credit_scoring_model_parity_max_abs_diff"].samples[0].value
    assert 0 <= parity <= 1e-5


def test_scores_are_finite_for_extreme_valid_inputs(stub: pb_grpc.ScoringStub) -> None:
    response = stub.Score(
        request("extreme", revolving_utilization=1e6, debt_ratio=1e7, monthly_income=0, age=120),
        timeout=5,
    )
    assert np.isfinite(response.pd)
    assert 0 <= response.pd <= 1


def test_readme_python_client(server: ServerProcess) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    done = subprocess.run(
        [sys.executable, "-m", "examples.score_client", server.target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "decision=DECISION_" in done.stdout
    assert "model=altscore-gmsc v" in done.stdout


def test_long_stream_is_micro_batched_in_order(stub: pb_grpc.ScoringStub) -> None:
    reqs = [request(f"long-{i}", revolving_utilization=(i % 13) / 4) for i in range(600)]
    answers = _stream(stub, reqs)
    assert [a.request_id for a in answers] == [r.request_id for r in reqs]
    assert all(a.WhichOneof("result") == "response" for a in answers)
    for i in range(0, 600, 97):
        assert answers[i].response.pd == stub.Score(reqs[i], timeout=5).pd
