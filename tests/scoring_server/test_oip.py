"""The Open Inference Protocol v2 (``inference.GRPCInferenceService``) on the scoring port,
spoken by a real client (tritonclient) to a real server: the same answers, errors, log and
counters as ``ScoreBatch``, whose path it takes."""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import polars as pl
import pytest
import tritonclient.grpc as triton
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status
from rich.console import Console
from tritonclient.grpc import service_pb2 as oip
from tritonclient.grpc import service_pb2_grpc as oip_grpc
from tritonclient.utils import InferenceServerException

from credit_core.evaluation import EvaluationLog
from feature_kernels import load_spec
from scoring_server.grpc._proto import scoring_pb2 as pb
from scoring_server.grpc._proto import scoring_pb2_grpc as pb_grpc
from tests.conftest import (
    DATA_DIR,
    MODEL_NAME,
    ROOT,
    ServerProcess,
    TrainedModel,
    metric,
    start_server,
)
from tests.scoring_server.test_grpc_e2e import GOOD, violations_of
from tests.test_clients import _go_bin
from training.dataset import load_frame

GERMAN_DATA = DATA_DIR / "german_credit" / "germancredit.csv"
GERMAN_SPEC = ROOT / "specs" / "german_credit.yaml"
GERMAN_MODEL = "altscore-german"
OUTPUTS = ["pd", "score", "decision", "model_version"]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(url=server.target) as c:
        yield c


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.ScoringStub:
    return pb_grpc.ScoringStub(channel)


@pytest.fixture(scope="module")
def raw_stub(channel: grpc.Channel) -> oip_grpc.GRPCInferenceServiceStub:
    """tritonclient's generated stub: for calls its high-level client cannot make (typed
    contents, bad raw contents) and to read an error's details."""
    return oip_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def info(stub: pb_grpc.ScoringStub) -> pb.ModelInfo:
    return stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5).models[0]


def numeric_order(info: pb.ModelInfo) -> list[str]:
    """The numeric inputs in ``numeric_values`` order: what the ``numeric`` tensor's columns are."""
    return [i.name for i in info.inputs if i.type != pb.INPUT_TYPE_CATEGORICAL]


def numeric_tensor(
    info: pb.ModelInfo, rows: list[dict[str, float]], dtype: type = np.float64
) -> triton.InferInput:
    names = numeric_order(info)
    values = np.array([[r.get(n, math.nan) for n in names] for r in rows], dtype=dtype)
    tensor = triton.InferInput(
        "numeric", list(values.shape), "FP64" if dtype is np.float64 else "FP32"
    )
    tensor.set_data_from_numpy(values)
    return tensor


def bytes_tensor(name: str, values: list[str]) -> triton.InferInput:
    tensor = triton.InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array([v.encode() for v in values], dtype=np.object_))
    return tensor


def texts(result: triton.InferResult, name: str) -> list[str]:
    array = result.as_numpy(name)
    assert array is not None, name
    return [bytes(v).decode() for v in array]


def decision_name(decision: int) -> str:
    return pb.Decision.Name(decision).removeprefix("DECISION_").lower()  # type: ignore[arg-type]


def error_status(err: grpc.RpcError) -> tuple[int, list[tuple[str, str]], str]:
    """(code, [(field, reason)], ErrorInfo reason) of a failed call's rich status."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, err
    bad = error_details_pb2.BadRequest()
    info = error_details_pb2.ErrorInfo()
    fields = []
    for detail in status.details:
        if detail.Unpack(bad):
            fields = [(v.field, v.reason) for v in bad.field_violations]
        elif detail.Unpack(info):
            assert info.domain == "scoring.altscore.dev"
    return status.code, fields, info.reason


def _violations(err: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, err
    return violations_of(status)


# -- discovery, health, metadata --------------------------------------------------------------


def test_grpcurl_lists_the_inference_service(server: ServerProcess) -> None:
    listed = subprocess.run(
        [_go_bin("grpcurl"), "-plaintext", server.target, "list"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.split()  # fmt: skip
    assert "inference.GRPCInferenceService" in listed
    assert "credit.scoring.v1.Scoring" in listed
    methods = subprocess.run(
        [_go_bin("grpcurl"), "-plaintext", server.target, "list", "inference.GRPCInferenceService"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.split()  # fmt: skip
    assert {m.rsplit(".", 1)[-1] for m in methods} == {
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"
    }  # fmt: skip


def test_live_and_ready(client: triton.InferenceServerClient, trained: TrainedModel) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL_NAME)
    assert client.is_model_ready(MODEL_NAME, trained.version)
    assert not client.is_model_ready(MODEL_NAME, "999999")
    assert not client.is_model_ready("altscore-other")


def test_metadata(
    client: triton.InferenceServerClient, trained: TrainedModel, info: pb.ModelInfo
) -> None:
    server = client.get_server_metadata()
    assert (server.name, list(server.extensions)) == ("altscore", [])
    assert server.version
    meta = client.get_model_metadata(MODEL_NAME)
    assert (meta.name, list(meta.versions), meta.platform) == (
        MODEL_NAME,
        [trained.version],
        "altscore",
    )
    inputs = [(t.name, t.datatype, list(t.shape)) for t in meta.inputs]
    # GMSC is all numeric: one [N, k] tensor, then the optional ids.
    assert inputs == [
        ("numeric", "FP64", [-1, len(numeric_order(info))]),
        ("applicant_id", "BYTES", [-1]),
        ("request_id", "BYTES", [-1]),
    ]
    outputs = [(t.name, t.datatype, list(t.shape)) for t in meta.outputs]
    assert outputs == [
        ("pd", "FP64", [-1]),
        ("score", "INT32", [-1]),
        ("decision", "BYTES", [-1]),
        ("model_version", "BYTES", [-1]),
    ]
    assert client.get_model_metadata(MODEL_NAME, trained.version).name == MODEL_NAME


# -- inference ---------------------------------------------------------------------------------


def _applicants() -> list[dict[str, float]]:
    rows: list[dict[str, float]] = [{k: float(v) for k, v in GOOD.items()}]
    rows.append({**rows[0], "revolving_utilization": 0.9, "times_90_days_late": 3.0})
    rows.append({**rows[0], "age": 23.0, "monthly_income": math.nan})  # NaN = not given
    return rows


def _score(stub: pb_grpc.ScoringStub, row: dict[str, float], request_id: str) -> pb.ScoreResponse:
    given = {k: v for k, v in row.items() if not math.isnan(v)}
    return stub.Score(
        pb.ScoreRequest(request_id=request_id, applicant=pb.Applicant(numeric=given)), timeout=5
    )


def test_fp64_equals_score_exactly(
    client: triton.InferenceServerClient,
    stub: pb_grpc.ScoringStub,
    info: pb.ModelInfo,
    trained: TrainedModel,
) -> None:
    rows = _applicants()
    result = client.infer(MODEL_NAME, [numeric_tensor(info, rows)], request_id="fp64")
    pd_out = result.as_numpy("pd")
    score_out = result.as_numpy("score")
    assert pd_out is not None
    assert score_out is not None
    assert (pd_out.dtype, score_out.dtype) == (np.float64, np.int32)
    assert pd_out.shape == (len(rows),)
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (
        MODEL_NAME,
        trained.version,
        "fp64",
    )
    assert [o.name for o in response.outputs] == OUTPUTS
    for i, row in enumerate(rows):
        # routed like ScoreBatch: by request id "<id>/<row>" (no applicant id), so the same key
        expected = _score(stub, row, f"fp64/{i}")
        assert pd_out[i] == expected.pd  # the same path: exactly the same PD
        assert int(score_out[i]) == expected.score
        assert texts(result, "decision")[i] == decision_name(expected.decision)
        assert texts(result, "model_version")[i] == expected.model.version
    assert len(set(pd_out.tolist())) == len(rows)  # the rows were not mixed up


def test_fp32_equals_score(
    client: triton.InferenceServerClient, stub: pb_grpc.ScoringStub, info: pb.ModelInfo
) -> None:
    # values an FP32 holds exactly: the model sees the same inputs
    row = {
        **{k: float(v) for k, v in GOOD.items()},
        "revolving_utilization": 0.375,
        "debt_ratio": 0.25,
    }
    result = client.infer(MODEL_NAME, [numeric_tensor(info, [row], np.float32)], request_id="fp32")
    pd_out = result.as_numpy("pd")
    assert pd_out is not None
    assert pd_out[0] == _score(stub, row, "fp32/0").pd


def test_typed_contents_equal_raw(
    raw_stub: oip_grpc.GRPCInferenceServiceStub,
    client: triton.InferenceServerClient,
    info: pb.ModelInfo,
) -> None:
    rows = _applicants()
    names = numeric_order(info)
    typed = oip.ModelInferRequest(model_name=MODEL_NAME, id="typed")
    tensor = typed.inputs.add(name="numeric", datatype="FP64", shape=[len(rows), len(names)])
    tensor.contents.fp64_contents.extend([r.get(n, math.nan) for r in rows for n in names])
    answer = raw_stub.ModelInfer(typed, timeout=5)
    assert answer.id == "typed"
    typed_pd = np.frombuffer(answer.raw_output_contents[0], dtype="<f8")
    raw = client.infer(MODEL_NAME, [numeric_tensor(info, rows)], request_id="typed")
    assert typed_pd.tolist() == raw.as_numpy("pd").tolist()  # type: ignore[union-attr]


def test_outputs_subset(client: triton.InferenceServerClient, info: pb.ModelInfo) -> None:
    result = client.infer(
        MODEL_NAME,
        [numeric_tensor(info, _applicants())],
        outputs=[triton.InferRequestedOutput("decision"), triton.InferRequestedOutput("score")],
    )
    assert [o.name for o in result.get_response().outputs] == ["decision", "score"]
    assert result.as_numpy("pd") is None
    assert set(texts(result, "decision")) <= {"approve", "review", "decline"}


def test_ids_log_and_counters(
    client: triton.InferenceServerClient,
    server: ServerProcess,
    trained: TrainedModel,
    info: pb.ModelInfo,
) -> None:
    rows = _applicants()
    before_calls = metric(server, "credit_scoring_requests_total", rpc="ModelInfer", code="OK")
    before_scored = metric(server, "credit_scoring_applicants_scored_total", variant="champion")
    named = client.infer(MODEL_NAME, [numeric_tensor(info, rows)], request_id="oip-log")
    ids = [f"own-{i}" for i in range(len(rows))]
    own = client.infer(
        MODEL_NAME,
        [
            numeric_tensor(info, rows),
            bytes_tensor("request_id", ids),
            bytes_tensor("applicant_id", ["cust-1", "cust-2", "cust-3"]),
        ],
        request_id="ignored-for-rows",
    )
    generated = client.infer(MODEL_NAME, [numeric_tensor(info, rows[:1])])
    call_id = generated.get_response().id
    assert call_id.startswith("oip-")  # no id: the server makes one and answers it
    again = client.infer(MODEL_NAME, [numeric_tensor(info, rows[:1])]).get_response().id
    assert again != call_id

    log = EvaluationLog(trained.state_dir / "evaluation")
    wanted = {f"oip-log/{i}" for i in range(len(rows))} | set(ids) | {f"{call_id}/0"}
    deadline = time.monotonic() + 10
    while True:
        p = log.read_predictions()
        p = p.filter(p["request_id"].is_in(list(wanted)))
        if p.height == len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert set(p["request_id"]) == wanted  # every prediction logged, once
    assert p["served"].all()
    assert set(p["model_version"]) == {trained.version}
    by_id = {r["request_id"]: r for r in p.iter_rows(named=True)}
    for i, pd_value in enumerate(named.as_numpy("pd").tolist()):  # type: ignore[union-attr]
        assert by_id[f"oip-log/{i}"]["pd"] == pd_value
    assert [by_id[i]["applicant_id"] for i in ids] == ["cust-1", "cust-2", "cust-3"]
    assert [by_id[i]["pd"] for i in ids] == own.as_numpy("pd").tolist()  # type: ignore[union-attr]

    deadline = time.monotonic() + 5
    while (
        metric(server, "credit_scoring_requests_total", rpc="ModelInfer", code="OK")
        < (before_calls + 4)
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert metric(server, "credit_scoring_requests_total", rpc="ModelInfer", code="OK") == (
        before_calls + 4
    )
    scored = metric(server, "credit_scoring_applicants_scored_total", variant="champion")
    assert scored - before_scored >= 2 * len(rows) + 2
    assert (
        metric(
            server,
            "grpc_server_handled_total",
            grpc_service="inference.GRPCInferenceService",
            grpc_method="ModelInfer",
            grpc_code="OK",
        )
        >= 4
    )


# -- errors ------------------------------------------------------------------------------------


def test_unknown_model_or_version_is_not_found(
    client: triton.InferenceServerClient, info: pb.ModelInfo
) -> None:
    for name, version in [("altscore-other", ""), (MODEL_NAME, "999999")]:
        with pytest.raises(InferenceServerException) as err:
            client.infer(name, [numeric_tensor(info, _applicants())], model_version=version)
        assert err.value.status() == "StatusCode.NOT_FOUND", err.value
        with pytest.raises(InferenceServerException) as err:
            client.get_model_metadata(name, version)
        assert err.value.status() == "StatusCode.NOT_FOUND"


def _call(
    raw_stub: oip_grpc.GRPCInferenceServiceStub, request: oip.ModelInferRequest
) -> tuple[int, list[tuple[str, str]], str]:
    with pytest.raises(grpc.RpcError) as err:
        raw_stub.ModelInfer(request, timeout=5)
    return error_status(err.value)


def _request(k: int, rows: int = 1, datatype: str = "FP64") -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=MODEL_NAME)
    request.inputs.add(name="numeric", datatype=datatype, shape=[rows, k])
    size = 8 if datatype == "FP64" else 4
    request.raw_input_contents.append(b"\0" * (size * rows * k))
    return request


def test_bad_tensors_are_invalid_argument_with_details(
    raw_stub: oip_grpc.GRPCInferenceServiceStub, info: pb.ModelInfo
) -> None:
    k = len(numeric_order(info))
    invalid = code_pb2.INVALID_ARGUMENT
    assert _call(raw_stub, _request(k + 1)) == (
        invalid, [("inputs[numeric].shape", "BAD_TENSOR")], "BAD_TENSOR"
    )  # fmt: skip
    assert _call(raw_stub, _request(k, datatype="INT64")) == (
        invalid, [("inputs[numeric].datatype", "WRONG_TYPE")], "WRONG_TYPE"
    )  # fmt: skip
    short = _request(k)
    short.raw_input_contents[0] = short.raw_input_contents[0][:-1]
    assert _call(raw_stub, short) == (
        invalid, [("raw_input_contents[0]", "BAD_TENSOR")], "BAD_TENSOR"
    )  # fmt: skip
    extra = _request(k)
    extra.inputs.add(name="colour", datatype="BYTES", shape=[1])
    extra.inputs.add(name="numeric", datatype="FP64", shape=[1, k])
    extra.raw_input_contents.extend([b"\1\0\0\0x", b"\0" * (8 * k)])
    assert _call(raw_stub, extra) == (
        invalid,
        [("inputs[colour]", "UNKNOWN_FEATURE"), ("inputs[numeric]", "BAD_TENSOR")],
        "UNKNOWN_FEATURE",
    )
    odd = _request(k)
    odd.outputs.add(name="shap")
    odd.parameters["priority"].uint64_param = 1
    code, fields, _ = _call(raw_stub, odd)
    assert (code, sorted(fields)) == (
        invalid, [("outputs[shap]", "UNKNOWN_FEATURE"), ("parameters[priority]", "UNKNOWN_FEATURE")]
    )  # fmt: skip


def test_row_violations_are_score_batchs(
    raw_stub: oip_grpc.GRPCInferenceServiceStub,
    client: triton.InferenceServerClient,
    stub: pb_grpc.ScoringStub,
    info: pb.ModelInfo,
) -> None:
    rows = [_applicants()[0], {**_applicants()[0], "age": 3.0, "debt_ratio": math.inf}]
    with pytest.raises(InferenceServerException) as err:
        client.infer(MODEL_NAME, [numeric_tensor(info, rows)], request_id="rows")
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    names = numeric_order(info)
    request = oip.ModelInferRequest(model_name=MODEL_NAME, id="rows")
    request.inputs.add(name="numeric", datatype="FP64", shape=[2, len(names)])
    request.raw_input_contents.append(
        np.array([[r[n] for n in names] for r in rows], dtype="<f8").tobytes()
    )
    with pytest.raises(grpc.RpcError) as oip_err:
        raw_stub.ModelInfer(request, timeout=5)
    batch = pb.ScoreBatchRequest(
        requests=[
            pb.ScoreRequest(
                request_id=f"rows/{i}",
                applicant=pb.Applicant(numeric_values=[r[n] for n in names]),
            )
            for i, r in enumerate(rows)
        ]
    )
    with pytest.raises(grpc.RpcError) as batch_err:
        stub.ScoreBatch(batch, timeout=5)
    oip_bad, batch_bad = _violations(oip_err.value), _violations(batch_err.value)
    assert oip_bad == batch_bad
    assert set(oip_bad) == {
        "requests[1].applicant.numeric.age",
        "requests[1].applicant.numeric.debt_ratio",
    }


def test_layout_mismatch_is_failed_precondition(
    client: triton.InferenceServerClient,
    raw_stub: oip_grpc.GRPCInferenceServiceStub,
    info: pb.ModelInfo,
) -> None:
    rows = _applicants()[:1]
    good = client.infer(
        MODEL_NAME,
        [numeric_tensor(info, rows)],
        parameters={"numeric_values_layout": info.numeric_values_layout},
    )
    assert good.as_numpy("pd") is not None
    with pytest.raises(InferenceServerException) as err:
        client.infer(
            MODEL_NAME,
            [numeric_tensor(info, rows)],
            parameters={"numeric_values_layout": "0123456789abcdef"},
        )
    assert err.value.status() == "StatusCode.FAILED_PRECONDITION"
    assert info.numeric_values_layout in str(err.value.message())
    request = _request(len(numeric_order(info)))
    request.parameters["numeric_values_layout"].string_param = "0123456789abcdef"
    code, fields, reason = _call(raw_stub, request)
    assert (code, reason) == (code_pb2.FAILED_PRECONDITION, "NUMERIC_LAYOUT_MISMATCH")
    assert ("requests[0].applicant.numeric_values_layout", "NUMERIC_LAYOUT_MISMATCH") in fields


# -- categorical inputs (German credit) -------------------------------------------------------


@dataclass
class German:
    server: ServerProcess
    version: str
    frame: pl.DataFrame


@pytest.fixture(scope="module")
def german(tmp_path_factory: pytest.TempPathFactory) -> Iterator[German]:
    from training.run import train_and_register
    from training.settings import TrainingSettings
    from training.train import TrainParams

    state = tmp_path_factory.mktemp("german-state")
    outcome = train_and_register(
        TrainingSettings(state_dir=state, model_name=GERMAN_MODEL),
        spec_path=GERMAN_SPEC,
        data_path=GERMAN_DATA,
        params=TrainParams(max_rounds=200, early_stopping_rounds=30),
        console=Console(stderr=True, quiet=True),
    )
    log = tmp_path_factory.mktemp("german-logs") / "server.log"
    srv = start_server(state, log, wait_serving=True, ALTSCORE_MODEL_NAME=GERMAN_MODEL)
    try:
        frame = load_frame(GERMAN_DATA, load_spec(GERMAN_SPEC)).slice(0, 25)
        yield German(srv, outcome.version.version, frame)
    finally:
        srv.stop()


def _german_rows(frame: pl.DataFrame) -> list[tuple[dict[str, float], dict[str, str]]]:
    spec = load_spec(GERMAN_SPEC)
    rows = []
    for r in frame.iter_rows(named=True):
        numeric: dict[str, float] = {}
        categorical: dict[str, str] = {}
        for name, d in spec.inputs.items():
            value = r[spec.column_of(name)]
            if d.type == "categorical":
                if value is not None:
                    categorical[name] = str(value)
            elif value is not None:
                numeric[name] = float(value)
        rows.append((numeric, categorical))
    return rows


def _german_inputs(
    info: pb.ModelInfo, rows: list[tuple[dict[str, float], dict[str, str]]]
) -> list[triton.InferInput]:
    inputs = [numeric_tensor(info, [n for n, _ in rows])]
    for i in info.inputs:
        if i.type == pb.INPUT_TYPE_CATEGORICAL:
            inputs.append(bytes_tensor(i.name, [c.get(i.name, "") for _, c in rows]))
    return inputs


def test_categorical_bytes_inputs_equal_score(german: German) -> None:
    rows = _german_rows(german.frame)
    rows[1][1].pop("telephone")  # optional: an empty element is "not given"
    with grpc.insecure_channel(german.server.target) as ch:
        stub = pb_grpc.ScoringStub(ch)
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5).models[0]
        expected = [
            stub.Score(
                pb.ScoreRequest(
                    request_id=f"g-{i}",
                    applicant=pb.Applicant(numeric=n, categorical=c),
                ),
                timeout=5,
            )
            for i, (n, c) in enumerate(rows)
        ]
    with triton.InferenceServerClient(url=german.server.target) as client:
        meta = client.get_model_metadata(GERMAN_MODEL)
        categorical = [i.name for i in info.inputs if i.type == pb.INPUT_TYPE_CATEGORICAL]
        assert [t.name for t in meta.inputs] == [
            "numeric", *categorical, "applicant_id", "request_id"
        ]  # fmt: skip
        assert all(t.datatype == "BYTES" for t in meta.inputs[1:])
        ids = [f"g-{i}" for i in range(len(rows))]  # same ids: routed and logged alike
        inputs = [*_german_inputs(info, rows), bytes_tensor("request_id", ids)]
        result = client.infer(GERMAN_MODEL, inputs, model_version=german.version)
    pd_out = result.as_numpy("pd")
    assert pd_out is not None
    assert pd_out.tolist() == [e.pd for e in expected]
    assert texts(result, "decision") == [decision_name(e.decision) for e in expected]
    assert len(set(pd_out.tolist())) > len(rows) // 2


def test_unknown_category_is_score_batchs_answer(german: German) -> None:
    numeric, categorical = _german_rows(german.frame)[0]
    categorical = {**categorical, "credit_history": "galactic"}
    with grpc.insecure_channel(german.server.target) as ch:
        stub = pb_grpc.ScoringStub(ch)
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5).models[0]
        batch = pb.ScoreBatchRequest(
            requests=[
                pb.ScoreRequest(
                    request_id="u/0",
                    applicant=pb.Applicant(numeric=numeric, categorical=categorical),
                )
            ]
        )
        with pytest.raises(grpc.RpcError) as batch_err:
            stub.ScoreBatch(batch, timeout=5)
        request = oip.ModelInferRequest(model_name=GERMAN_MODEL, id="u")
        for t in _german_inputs(info, [(numeric, categorical)]):
            request.inputs.append(t._get_tensor())
            request.raw_input_contents.append(t._get_content())
        with pytest.raises(grpc.RpcError) as oip_err:
            oip_grpc.GRPCInferenceServiceStub(ch).ModelInfer(request, timeout=5)
    oip_bad, batch_bad = _violations(oip_err.value), _violations(batch_err.value)
    assert oip_bad == batch_bad
    assert list(oip_bad) == ["requests[0].applicant.categorical.credit_history"]
    # a categorical tensor that is not text
    request.inputs[1].datatype = "FP64"
    with grpc.insecure_channel(german.server.target) as ch, pytest.raises(grpc.RpcError) as err:
        oip_grpc.GRPCInferenceServiceStub(ch).ModelInfer(request, timeout=5)
    assert error_status(err.value)[1] == [
        (f"inputs[{request.inputs[1].name}].datatype", "WRONG_TYPE")
    ]


def test_readme_example(server: ServerProcess) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Open Inference Protocol v2", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(code.replace("127.0.0.1:50051", server.target), namespace)
    result = namespace["result"]
    assert isinstance(result, triton.InferResult)
    assert result.get_response().id == "loan-42"
    assert texts(result, "decision")[0] in {"approve", "review", "decline"}
