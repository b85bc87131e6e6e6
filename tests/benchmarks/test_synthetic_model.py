"""The side-by-side benchmark's model and request bodies (a few trees: the real one has 400).

The MLServer venv is not installed here: it is benchmark-only (``python -m
benchmarks.mlserver_peer`` checks MLServer's answers against XGBoost end to end).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb
from google.protobuf import descriptor_pb2, json_format

from benchmarks.mlserver_peer import INFER_CALL, infer_requests, write_infer_bodies
from benchmarks.synthetic_model import (
    FEATURE_NAMES,
    MODEL_NAME,
    BenchModelParams,
    ensure_bench_model,
    request_rows,
    score_batch_requests,
    write_score_bodies,
    write_spec,
)
from credit_core import ModelBundle
from credit_core.registry import MlflowRegistry, local_tracking_uri
from feature_kernels import FeaturePipeline, load_spec
from scoring_server.grpc._proto import scoring_pb2

SMALL = BenchModelParams(n_trees=5, train_rows=2_000, holdout_rows=400, reference_rows=50)


def _no_bare_nan(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"bare {name} in a JSON body")

    return json.loads(text, parse_constant=refuse)


def test_registers_champion_once(tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "model"
    first = ensure_bench_model(state, out, SMALL)
    assert first.registered
    registry = MlflowRegistry(local_tracking_uri(state / "mlflow"))
    champion = registry.get_alias(MODEL_NAME, "champion")
    assert champion is not None
    assert champion.version == first.version.version

    bundle = ModelBundle.read(registry.download(champion, tmp_path / "download"))
    assert bundle.model_hash == first.booster_sha256
    assert bundle.feature_names == FEATURE_NAMES
    pipeline = FeaturePipeline(load_spec(bundle.spec_path))
    assert bundle.schema_hash == pipeline.schema_hash
    booster = xgb.Booster(model_file=str(bundle.booster_path))
    assert booster.num_boosted_rounds() == SMALL.n_trees
    ref = bundle.reference()
    assert ref.features.shape == (SMALL.reference_rows, 40)
    margin = booster.inplace_predict(ref.features, missing=np.nan, predict_type="margin")
    np.testing.assert_allclose(ref.margin, margin, rtol=0, atol=1e-6)

    # MLServer's copy holds the same trees and opens as a classifier (predict_proba)
    clf = xgb.XGBClassifier()
    clf.load_model(first.model_json)
    rows = request_rows(32)
    np.testing.assert_allclose(
        clf.predict_proba(rows)[:, 1], booster.predict(xgb.DMatrix(rows)), rtol=0, atol=1e-7
    )

    # ghz's --protoset for our service, with its import
    files = descriptor_pb2.FileDescriptorSet.FromString((out / "scoring.protoset").read_bytes())
    by_name = {f.name: f for f in files.file}
    assert "google/rpc/status.proto" in by_name
    (scoring,) = [f for f in files.file if f.package == "credit.scoring.v1"]
    (service,) = scoring.service
    assert {"Score", "ScoreBatch"} <= {m.name for m in service.method}

    again = ensure_bench_model(state, out, SMALL)
    assert not again.registered
    assert again.booster_sha256 == first.booster_sha256
    assert again.version.version == first.version.version


def test_spec_validates_with_forty_number_features(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path / "spec.yaml"))
    assert list(spec.inputs) == FEATURE_NAMES
    assert {d.type for d in spec.inputs.values()} == {"number"}
    assert all(d.description for d in spec.inputs.values())
    assert [(f.name, f.op, f.input) for f in spec.features] == [
        (n, "value", n) for n in FEATURE_NAMES
    ]
    assert all(f.reason for f in spec.features)
    assert FeaturePipeline(spec).feature_names == FEATURE_NAMES
    # the columns with missing values are optional inputs, the others required
    rows = request_rows(1024)
    has_nan = np.isnan(rows).any(axis=0)
    assert [not spec.inputs[n].required for n in FEATURE_NAMES] == has_nan.tolist()


def test_request_rows_are_deterministic_and_prefix_stable() -> None:
    rows = request_rows(300)
    assert rows.dtype == np.float32
    assert rows.shape == (300, 40)
    np.testing.assert_array_equal(rows, request_rows(300))
    np.testing.assert_array_equal(rows, request_rows(2048)[:300])
    assert 0 < np.isnan(rows).mean() < 0.05


def test_score_bodies_are_our_proto_and_carry_the_rows(tmp_path: Path) -> None:
    paths = write_score_bodies(tmp_path, single_messages=8, batch=4, batch_messages=3)
    spec = load_spec(write_spec(tmp_path / "spec.yaml"))
    pipeline = FeaturePipeline(spec)
    rows = request_rows(12)

    single = _no_bare_nan(paths["score-1.json"].read_text())
    assert isinstance(single, list)
    assert len(single) == 8
    for row, message in zip(rows, single, strict=False):
        request = json_format.ParseDict(message, scoring_pb2.ScoreRequest())
        assert request.request_id
        numeric = dict(request.applicant.numeric)
        assert set(numeric) == {n for n, v in zip(FEATURE_NAMES, row, strict=True) if v == v}
        vector, violations = pipeline.transform_row(numeric, {})
        assert violations == []
        np.testing.assert_array_equal(np.asarray(vector, dtype=np.float32), row)

    batches = _no_bare_nan(paths["score-batch-4.json"].read_text())
    assert len(batches) == 3
    for b, message in enumerate(batches):
        request = json_format.ParseDict(message, scoring_pb2.ScoreBatchRequest())
        assert len(request.requests) == 4
        ids = [r.request_id for r in request.requests]
        assert len(set(ids)) == 4  # unique within a batch, as ScoreBatch demands
        for r, row in zip(request.requests, rows[4 * b : 4 * b + 4], strict=True):
            for name, v in zip(FEATURE_NAMES, row, strict=True):
                if v == v:
                    assert np.float32(r.applicant.numeric[name]) == v

    for name, count in (("score-1-values.json", 8), ("score-batch-4-values.json", 3)):
        messages = _no_bare_nan(paths[name].read_text())
        assert len(messages) == count
        by_map = json.loads(paths[name.replace("-values", "")].read_text())
        for with_values, with_map in zip(messages, by_map, strict=True):
            kind = scoring_pb2.ScoreBatchRequest if "batch" in name else scoring_pb2.ScoreRequest
            dense = json_format.ParseDict(with_values, kind())
            expected = json_format.ParseDict(with_map, kind())
            for d, e in zip(
                getattr(dense, "requests", [dense]),
                getattr(expected, "requests", [expected]),
                strict=True,
            ):
                assert (d.request_id, d.applicant.applicant_id) == (
                    e.request_id,
                    e.applicant.applicant_id,
                )
                assert not d.applicant.numeric
                values = [float(np.float32(v)) for v in d.applicant.numeric_values]
                assert len(values) == len(FEATURE_NAMES) == len(pipeline.numeric_inputs)
                assert {
                    n: v for n, v in zip(pipeline.numeric_inputs, values, strict=True) if v == v
                } == {n: float(np.float32(v)) for n, v in e.applicant.numeric.items()}


def test_infer_bodies_are_one_fp32_tensor_of_the_rows(tmp_path: Path) -> None:
    assert INFER_CALL == "inference.GRPCInferenceService/ModelInfer"
    paths = write_infer_bodies(tmp_path, single_messages=8, batch=64, batch_messages=2)
    rows = request_rows(128)
    for name, batch, count in (("infer-1.json", 1, 8), ("infer-64.json", 64, 2)):
        messages = _no_bare_nan(paths[name].read_text())
        assert isinstance(messages, list)
        assert len(messages) == count
        for k, message in enumerate(messages):
            assert set(message) == {"model_name", "id", "inputs", "outputs"}
            assert message["model_name"] == MODEL_NAME
            assert message["outputs"] == [{"name": "predict_proba"}]
            (tensor,) = message["inputs"]
            assert tensor["datatype"] == "FP32"
            assert tensor["shape"] == [batch, 40]
            assert set(tensor["contents"]) == {"fp32_contents"}
            values = tensor["contents"]["fp32_contents"]
            assert all(isinstance(v, float) or v == "NaN" for v in values)
            decoded = np.array([math.nan if v == "NaN" else v for v in values], np.float32)
            np.testing.assert_array_equal(
                decoded.reshape(batch, 40), rows[k * batch : (k + 1) * batch]
            )


def test_bodies_refuse_ragged_batches() -> None:
    with pytest.raises(ValueError, match="batches of 64"):
        score_batch_requests(request_rows(100), 64)
    with pytest.raises(ValueError, match="batches of 64"):
        infer_requests(request_rows(100), 64)
