"""``explain=true`` over the wire: exact TreeSHAP (equal to XGBoost's ``pred_contribs``), additive
to the answered PD, and reason codes that only name features that raised the risk."""

from __future__ import annotations

import math

import grpc
import numpy as np
import polars as pl
import xgboost as xgb
from google.rpc import code_pb2

from credit_core.bundle import ModelBundle
from feature_kernels import FeaturePipeline, load_spec
from scoring_server.grpc._proto import scoring_pb2 as pb
from scoring_server.grpc._proto import scoring_pb2_grpc as pb_grpc
from tests.conftest import GMSC_DATA, GMSC_SPEC, TrainedModel
from tests.scoring_server.test_grpc_e2e import request

ROWS = 200


def gmsc_requests(explain: bool) -> tuple[list[pb.ScoreRequest], np.ndarray]:
    spec = load_spec(GMSC_SPEC)
    frame = pl.read_csv(GMSC_DATA, null_values="NA").slice(1000, ROWS)
    requests = []
    for i, row in enumerate(frame.iter_rows(named=True)):
        numeric = {
            name: float(row[spec.column_of(name)])
            for name in spec.inputs
            if row[spec.column_of(name)] is not None
        }
        requests.append(
            pb.ScoreRequest(
                request_id=f"x-{i}",
                applicant=pb.Applicant(applicant_id=f"x-{i}", numeric=numeric),
                explain=explain,
            )
        )
    return requests, FeaturePipeline(spec).transform_frame(frame)


def test_explanations_equal_xgboost_and_add_up(
    channel: grpc.Channel, trained: TrainedModel
) -> None:
    stub = pb_grpc.ScoringStub(channel)
    requests, x = gmsc_requests(explain=True)
    bundle = ModelBundle.read(next((trained.state_dir / "models").glob("*-v*/model")))
    booster = xgb.Booster(model_file=str(bundle.booster_path))
    expected = booster.predict(xgb.DMatrix(x, missing=np.nan), pred_contribs=True)
    spec_reasons = {f.name: f.reason for f in load_spec(GMSC_SPEC).features}
    answers = [stub.Score(r, timeout=5) for r in requests[:50]]
    for chunk in range(50, ROWS, 50):  # the batched path (one native call per batch)
        batch = pb.ScoreBatchRequest(requests=requests[chunk : chunk + 50])
        answers.extend(stub.ScoreBatch(batch, timeout=10).results)
    names = list(bundle.feature_names)
    named_reasons = 0
    for i, a in enumerate(answers):
        e = a.explanation
        assert [c.feature for c in e.contributions] == names
        contributions = np.array([c.contribution for c in e.contributions])
        np.testing.assert_allclose(contributions, expected[i, :-1], atol=1e-5)
        assert abs(e.base_value - expected[i, -1]) <= 1e-5
        margin = math.log(a.pd / (1 - a.pd))
        assert abs(e.base_value + contributions.sum() - margin) <= 1e-4
        # reasons: only risk-raising features, largest first, at most four, with the spec's text
        assert len(e.reasons) <= 4
        by_name = dict(zip(names, contributions, strict=True))
        values = [r.contribution for r in e.reasons]
        assert values == sorted(values, reverse=True)
        for r in e.reasons:
            assert r.contribution > 0
            assert abs(r.contribution - by_name[r.code]) <= 1e-12
            assert r.text == spec_reasons[r.code]
            assert r.text
        raised = sorted((v for v in contributions if v > 0), reverse=True)
        assert len(e.reasons) == min(4, len(raised))
        named_reasons += len(e.reasons)
    assert named_reasons > ROWS  # most applicants get reasons: the check above is not vacuous


def test_stream_explains_in_micro_batches_and_only_when_asked(channel: grpc.Channel) -> None:
    stub = pb_grpc.ScoringStub(channel)
    requests, _ = gmsc_requests(explain=True)
    plain, _ = gmsc_requests(explain=False)
    mixed = [r if i % 2 else p for i, (r, p) in enumerate(zip(requests, plain, strict=True))]
    mixed.insert(7, request("bad", age=-1.0))
    answers = list(stub.ScoreStream(iter(mixed), timeout=30))
    assert len(answers) == len(mixed)
    assert answers[7].error.code == code_pb2.INVALID_ARGUMENT
    scored = [a for a in answers if a.HasField("response")]
    for a in scored:
        asked = int(a.request_id.removeprefix("x-")) % 2 == 1
        assert a.response.HasField("explanation") == asked
    unary = stub.Score(requests[1], timeout=5)
    streamed = next(a.response for a in scored if a.request_id == requests[1].request_id)
    assert list(streamed.explanation.contributions) == list(unary.explanation.contributions)
