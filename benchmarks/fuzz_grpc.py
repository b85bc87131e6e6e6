"""A fuzzer over gRPC (issue 13, item 5): hypothesis generates requests for every RPC of
``credit.scoring.v1.Scoring`` and of the Open Inference Protocol v2
(``inference.GRPCInferenceService``) against a real server, and every answer's status code is
counted.

    uv run python -m benchmarks.fuzz_grpc [--cases 100000] [--seed N] [--workers 8]
        [--write benchmarks/RESULTS.md]

Cases (all sent as raw bytes through ``unary_unary`` / ``stream_stream`` with identity
serializers, so a malformed body reaches the server as it was generated):

- ``Score`` / ``ScoreBatch`` / ``ScoreStream`` messages: ``numeric`` maps with the model's inputs
  and unknown keys, values in and out of range, NaN / ±inf, subnormals, ±0, huge; ``categorical``
  maps with unicode keys and values; ``numeric_values`` of the right and wrong lengths, and both
  ``numeric`` and ``numeric_values`` at once; empty, unicode, duplicate and > 256-byte ids;
  unknown fields appended; strings large enough to pass the message size limit;
- well-formed valid applicants, which must be answered OK;
- ``ReportOutcome``: outcomes by request id and applicant id (from a small pool, so reports
  repeat and contradict each other: ``FAILED_PRECONDITION`` is the designed answer to a
  contradiction), NaN / inf ``observed_at``, corrections;
- ``GetModelInfo``: empty, with unknown fields;
- OIP v2 ``ModelInfer``: numeric tensors N x k (k right and wrong), FP64 / FP32 typed or raw
  (raw cut short too), wrong shapes, datatypes and names, special floats, ``applicant_id``
  tensors, unknown tensors, parameters and outputs, unknown models and versions; valid GMSC rows,
  which must be answered OK; the other OIP RPCs with served and unknown model names;
- raw bytes on every RPC (streams included): random bytes, and valid messages truncated, with
  bytes flipped, inserted or a length prefix inflated. A body Python's protobuf parser
  (upb) refuses is malformed and must be answered ``INVALID_ARGUMENT`` (``RESOURCE_EXHAUSTED``
  when it is above the message size limit); a stream answers each message in order.

Fails (exit 1) on any ``INTERNAL`` or ``UNKNOWN``, a code outside what the RPC may answer, a
malformed body answered otherwise than ``INVALID_ARGUMENT``, a valid applicant not answered OK,
the server exiting or restarting (same pid, health SERVING at the end), or a panic in its log.

The server is the GMSC champion of the local registry (``make train``) in its own store under
``var/bench/fuzz``, started as the other benchmarks start it (``benchmarks.production.serving``),
with ``ALTSCORE_MAX_MESSAGE_BYTES`` lowered to 64 KiB (``--max-message-bytes``) so the size limit
is reached often; ReportOutcome is called from loopback (allowed by default).
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import struct
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

# Triton's client messages of the Open Inference Protocol v2 (wire-compatible with the server's)
from tritonclient.grpc import service_pb2 as oip  # type: ignore[import-untyped]

from scoring_server.grpc._proto import scoring_pb2 as pb

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / "var" / "bench" / "fuzz"
SERVICE = "/credit.scoring.v1.Scoring/"
INFERENCE = "/inference.GRPCInferenceService/"
MODEL = "altscore-gmsc"
"""The served model's name (the GMSC champion of benchmarks and tests)."""
OIP_RPCS = ("ModelInfer", "ModelMetadata", "ModelReady", "ServerLive", "ServerReady",
            "ServerMetadata")  # fmt: skip
SCORING_RPCS = ("Score", "ScoreBatch", "ScoreStream", "GetModelInfo", "ReportOutcome")
PATHS = {
    **{rpc: SERVICE + rpc for rpc in SCORING_RPCS},
    **{rpc: INFERENCE + rpc for rpc in OIP_RPCS},
}
TITLE = "gRPC fuzzing"
MAX_ID_BYTES = 256

REQUEST_TYPES: dict[str, type[Message]] = {
    "Score": pb.ScoreRequest,
    "ScoreBatch": pb.ScoreBatchRequest,
    "ScoreStream": pb.ScoreRequest,
    "GetModelInfo": pb.GetModelInfoRequest,
    "ReportOutcome": pb.ReportOutcomeRequest,
    "ModelInfer": oip.ModelInferRequest,
    "ModelMetadata": oip.ModelMetadataRequest,
    "ModelReady": oip.ModelReadyRequest,
    "ServerLive": oip.ServerLiveRequest,
    "ServerReady": oip.ServerReadyRequest,
    "ServerMetadata": oip.ServerMetadataRequest,
}
C = grpc.StatusCode
ALLOWED: dict[str, frozenset[grpc.StatusCode]] = {
    "Score": frozenset({C.OK, C.INVALID_ARGUMENT, C.RESOURCE_EXHAUSTED}),
    "ScoreBatch": frozenset({C.OK, C.INVALID_ARGUMENT, C.RESOURCE_EXHAUSTED}),
    "ScoreStream": frozenset({C.OK, C.INVALID_ARGUMENT, C.RESOURCE_EXHAUSTED}),
    "ScoreStream messages": frozenset({C.OK, C.INVALID_ARGUMENT}),
    "GetModelInfo": frozenset({C.OK, C.INVALID_ARGUMENT, C.RESOURCE_EXHAUSTED}),
    "ReportOutcome": frozenset(
        {C.OK, C.INVALID_ARGUMENT, C.FAILED_PRECONDITION, C.RESOURCE_EXHAUSTED}
    ),
    # OIP v2: an unknown model or version is NOT_FOUND; a layout hash that is not the served
    # one FAILED_PRECONDITION
    "ModelInfer": frozenset(
        {C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.FAILED_PRECONDITION, C.RESOURCE_EXHAUSTED}
    ),
    "ModelMetadata": frozenset({C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.RESOURCE_EXHAUSTED}),
    "ModelReady": frozenset({C.OK, C.INVALID_ARGUMENT, C.RESOURCE_EXHAUSTED}),
    "ServerLive": frozenset({C.OK, C.INVALID_ARGUMENT, C.RESOURCE_EXHAUSTED}),
    "ServerReady": frozenset({C.OK, C.INVALID_ARGUMENT, C.RESOURCE_EXHAUSTED}),
    "ServerMetadata": frozenset({C.OK, C.INVALID_ARGUMENT, C.RESOURCE_EXHAUSTED}),
}
"""What each RPC may answer a fuzzed call (the model is loaded, the caller is on loopback);
anything else is a failure."""
CODE_BY_NUMBER = {c.value[0]: c for c in grpc.StatusCode}


@dataclass(frozen=True)
class Input:
    name: str
    integer: bool
    low: float
    high: float
    required: bool


GMSC_INPUTS = (
    Input("revolving_utilization", False, 0, 1e6, True),
    Input("age", True, 18, 120, True),
    Input("past_due_30_59", True, 0, 95, True),
    Input("debt_ratio", False, 0, 1e7, True),
    Input("monthly_income", False, 0, 1e8, False),
    Input("open_credit_lines", True, 0, 500, True),
    Input("times_90_days_late", True, 0, 95, True),
    Input("real_estate_loans", True, 0, 500, True),
    Input("past_due_60_89", True, 0, 95, True),
    Input("dependents", True, 0, 50, False),
)
"""The GMSC spec's inputs (``specs/gmsc.yaml``) in ``GetModelInfo`` order; checked against the
served model's at start."""


# -- cases ---------------------------------------------------------------------------------------


@dataclass
class Case:
    rpc: str
    kind: str
    bodies: list[bytes]
    """One body for a unary call; the messages of a stream."""
    must_ok: bool = False


@dataclass
class Outcome:
    case: Case
    code: grpc.StatusCode
    message_codes: list[grpc.StatusCode] = field(default_factory=list)
    detail: str = ""


SPECIAL_FLOATS = (
    math.nan,
    -math.nan,
    math.inf,
    -math.inf,
    5e-324,
    -5e-324,
    2.2250738585072009e-308,  # the largest subnormal
    2.2250738585072014e-308,  # the smallest normal
    0.0,
    -0.0,
    1.7976931348623157e308,
    -1.7976931348623157e308,
    1e-300,
    0.5,
    96.0,  # GMSC's missing codes
    98.0,
    17.0,
    121.0,
)
ID_POOL = tuple(f"fz-{i}" for i in range(40))
"""Request and applicant ids that repeat: duplicates in batches, outcomes that contradict."""


# Strategies are built once (building one per draw costs more than the draw).
FLOATS = st.one_of(
    st.sampled_from(SPECIAL_FLOATS),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.floats(min_value=-10, max_value=1000),
    st.integers(min_value=-(2**53), max_value=2**53).map(float),
)
BIG_TEXT = st.builds(
    lambda c, n: c * n,
    st.characters(codec="utf-8"),
    st.sampled_from((0, 1, 63, 64, 65, 255, 256, 257, 1000, 20_000, 70_000)),
)
"""A character repeated: ids just past 256 bytes, and strings past the size limit."""
TEXTS = st.one_of(
    st.sampled_from(("", " ", "\x00", "é", "😀" * 64, "x" * 256, "x" * 257, "é" * 129)),
    st.sampled_from(ID_POOL),
    st.text(max_size=24),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=64),
    BIG_TEXT,
)
IDS = st.one_of(st.sampled_from(ID_POOL), TEXTS)
KEYS = st.one_of(st.sampled_from([i.name for i in GMSC_INPUTS]), TEXTS)
IN_RANGE = {
    i.name: st.integers(min_value=int(i.low), max_value=int(i.high)).map(float)
    if i.integer
    else st.floats(min_value=i.low, max_value=i.high)
    for i in GMSC_INPUTS
}


@st.composite
def valid_applicant(draw: st.DrawFn) -> pb.Applicant:
    numeric = {
        i.name: draw(IN_RANGE[i.name]) for i in GMSC_INPUTS if i.required or draw(st.booleans())
    }
    applicant = pb.Applicant(applicant_id=draw(st.sampled_from(ID_POOL)))
    if draw(st.booleans()):
        applicant.numeric.update(numeric)
    else:
        applicant.numeric_values.extend(numeric.get(i.name, math.nan) for i in GMSC_INPUTS)
    return applicant


@st.composite
def any_applicant(draw: st.DrawFn) -> pb.Applicant:
    applicant = pb.Applicant()
    if draw(st.booleans()):
        applicant.applicant_id = draw(IDS)
    if draw(st.integers(0, 3)):
        applicant.numeric.update(draw(st.dictionaries(KEYS, FLOATS, max_size=14)))
    if not draw(st.integers(0, 4)):
        applicant.categorical.update(draw(st.dictionaries(KEYS, TEXTS, max_size=4)))
    choice = draw(st.integers(0, 5))
    if choice == 0:  # the right length, maybe beside the map
        applicant.numeric_values.extend(draw(st.lists(FLOATS, min_size=10, max_size=10)))
    elif choice == 1:  # a wrong length
        n = draw(st.sampled_from((0, 1, 9, 11, 40, 1000)))
        applicant.numeric_values.extend(draw(FLOATS) for _ in range(n))
    return applicant


@st.composite
def score_request(draw: st.DrawFn, valid: bool = False) -> pb.ScoreRequest:
    if valid:
        return pb.ScoreRequest(
            request_id=f"fz-ok-{draw(st.integers(0, 2**32))}",
            applicant=draw(valid_applicant()),
            explain=draw(st.booleans()),
        )
    request = pb.ScoreRequest(explain=draw(st.booleans()))
    if draw(st.integers(0, 5)):
        request.request_id = draw(IDS)
    if draw(st.integers(0, 7)):
        request.applicant.CopyFrom(draw(APPLICANTS))
    return request


APPLICANTS = st.one_of(valid_applicant(), any_applicant())
SCORE_REQUESTS = {True: score_request(True), False: score_request(False)}


@st.composite
def unknown_fields(draw: st.DrawFn) -> bytes:
    """Well-formed fields the schema does not have (varint, fixed64, bytes, fixed32)."""
    out = b""
    for _ in range(draw(st.integers(1, 3))):
        number = draw(st.integers(16, 2**29 - 1))
        wire = draw(st.sampled_from((0, 1, 2, 5)))
        out += _varint(number << 3 | wire)
        if wire == 0:
            out += _varint(draw(st.integers(0, 2**64 - 1)))
        elif wire == 1:
            out += draw(st.binary(min_size=8, max_size=8))
        elif wire == 2:
            payload = draw(st.binary(max_size=32))
            out += _varint(len(payload)) + payload
        else:
            out += draw(st.binary(min_size=4, max_size=4))
    return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


UNKNOWN_FIELDS = unknown_fields()


def maybe_unknown(draw: st.DrawFn, message: Message) -> bytes:
    body = message.SerializeToString()
    if not draw(st.integers(0, 5)):
        body += draw(UNKNOWN_FIELDS)
    return body


def mutated(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` truncated, with bytes flipped, inserted or a length inflated; or random bytes."""
    how = draw(st.integers(0, 4))
    if how == 0 or not body:
        return draw(st.binary(max_size=256))
    data = bytearray(body)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if how == 1:
            del data[at:]
        elif how == 2:
            data[at] ^= draw(st.integers(1, 255))
        elif how == 3:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            data[at] = draw(st.sampled_from((0xFF, 0x80, 0x7F, 0x0F, 0x0A)))
    return bytes(data)


@st.composite
def outcome_request(draw: st.DrawFn) -> pb.ReportOutcomeRequest:
    outcomes = []
    for _ in range(draw(st.integers(0, 5))):
        o = pb.Outcome(defaulted=draw(st.booleans()), correction=not draw(st.integers(0, 9)))
        by = draw(st.integers(0, 3))
        if by in (0, 2):
            o.request_id = draw(IDS)
        if by in (1, 2):
            o.applicant_id = draw(IDS)
        if draw(st.booleans()):
            o.observed_at = draw(FLOATS)
        outcomes.append(o)
    return pb.ReportOutcomeRequest(outcomes=outcomes)


OUTCOME_REQUESTS = outcome_request()


def _copy(request: pb.ScoreRequest) -> pb.ScoreRequest:
    out = pb.ScoreRequest()
    out.CopyFrom(request)
    return out


@st.composite
def infer_request(draw: st.DrawFn, valid: bool = False) -> Any:  # oip.ModelInferRequest
    """An OIP v2 ModelInfer request: a numeric tensor of N x k values (FP64 / FP32, typed or
    raw, k right or wrong, shapes and datatypes right or wrong, special floats), sometimes an
    applicant_id BYTES tensor, unknown tensors, parameters and outputs; ``valid``: N rows of
    valid GMSC applicants, which must be answered OK."""
    k = len(GMSC_INPUTS)
    if valid:
        rows = [draw(valid_applicant()) for _ in range(draw(st.integers(1, 4)))]
        request = oip.ModelInferRequest(
            model_name=MODEL, id=f"fz-oip-{draw(st.integers(0, 2**32))}"
        )
        tensor = request.inputs.add(name="numeric", datatype="FP64", shape=[len(rows), k])
        for a in rows:
            values = a.numeric_values or [a.numeric.get(i.name, math.nan) for i in GMSC_INPUTS]
            tensor.contents.fp64_contents.extend(values)
        return request
    request = oip.ModelInferRequest(
        model_name=draw(st.sampled_from((MODEL, MODEL, MODEL, "", "other"))),
        model_version=draw(st.sampled_from(("", "", "", "1", "999", "x"))),
    )
    if draw(st.booleans()):
        request.id = draw(IDS)
    n = draw(st.sampled_from((0, 1, 1, 2, 3, 8)))
    cols = draw(st.sampled_from((k, k, k, 0, 1, k - 1, k + 1)))
    datatype = draw(st.sampled_from(("FP64", "FP64", "FP32", "INT64", "BYTES", "", "fp64")))
    values = [draw(FLOATS) for _ in range(n * cols)]
    tensor = request.inputs.add(
        name=draw(st.sampled_from(("numeric", "numeric", "numeric", "other", ""))),
        datatype=datatype,
        shape=draw(
            st.sampled_from(([n, cols], [n, cols], [n * cols], [n, cols, 1], [], [-1, cols]))
        ),
    )
    how = draw(st.integers(0, 3))
    if how == 0:  # typed
        if datatype == "FP32":
            tensor.contents.fp32_contents.extend(values)
        else:
            tensor.contents.fp64_contents.extend(values)
    elif how < 3:  # raw, maybe cut short
        if datatype == "FP32":  # what an FP32 holds: too large becomes inf, as numpy casts
            with np.errstate(over="ignore"):
                raw = np.asarray(values, dtype=np.float64).astype("<f4").tobytes()
        else:
            raw = struct.pack(f"<{len(values)}d", *values)
        request.raw_input_contents.append(raw[: draw(st.sampled_from((len(raw), len(raw), 0, 3)))])
    if not draw(st.integers(0, 3)):
        ids = request.inputs.add(name="applicant_id", datatype="BYTES", shape=[n])
        ids.contents.bytes_contents.extend(draw(IDS).encode() for _ in range(n))
    if not draw(st.integers(0, 5)):
        request.inputs.add(name=draw(TEXTS), datatype=draw(st.sampled_from(("BYTES", "FP64"))))
    if not draw(st.integers(0, 4)):
        name = draw(st.sampled_from(("numeric_values_layout", "priority", "timeout", "x")))
        param = request.parameters[name]
        if draw(st.booleans()):
            param.string_param = draw(TEXTS)
        else:
            param.int64_param = draw(st.integers(-(2**63), 2**63 - 1))
    if not draw(st.integers(0, 4)):
        for name in draw(st.lists(st.sampled_from(("pd", "score", "decision", "x")), max_size=3)):
            request.outputs.add(name=name)
    return request


OIP_ANY = infer_request()
OIP_VALID = infer_request(True)


@st.composite
def cases(draw: st.DrawFn, max_batch: int = 1000) -> Case:
    rpc = draw(st.sampled_from(("Score", "Score", "ScoreBatch", "ScoreStream", "ReportOutcome",
                                "GetModelInfo", "ModelInfer", *OIP_RPCS)))  # fmt: skip
    raw = not draw(st.integers(0, 3))  # a quarter of the cases: raw bytes
    if rpc in OIP_RPCS:
        valid = not raw and rpc == "ModelInfer" and not draw(st.integers(0, 4))
        if rpc == "ModelInfer":
            oip_message: Message = draw(OIP_VALID if valid else OIP_ANY)
        elif rpc in ("ModelMetadata", "ModelReady"):
            oip_message = REQUEST_TYPES[rpc](
                name=draw(st.sampled_from((MODEL, MODEL, "", "other"))),
                version=draw(st.sampled_from(("", "", "1", "999"))),
            )
        else:
            oip_message = REQUEST_TYPES[rpc]()
        body = maybe_unknown(draw, oip_message)
        if raw:
            body = mutated(draw, body)
        return Case(rpc, "raw" if raw else "valid" if valid else "messages", [body], valid)
    valid = not raw and rpc != "ReportOutcome" and not draw(st.integers(0, 4))
    if rpc == "ScoreStream":
        n = draw(st.integers(1, 6))
        messages = [draw(SCORE_REQUESTS[valid]) for _ in range(n)]
        if valid:  # a stream's ids must differ
            for i, m in enumerate(messages):
                m.request_id = f"{m.request_id}-{i}"
        bodies = [maybe_unknown(draw, m) for m in messages]
        if raw:
            bodies = [mutated(draw, b) if draw(st.booleans()) else b for b in bodies]
        return Case(rpc, "raw" if raw else "valid" if valid else "messages", bodies, valid)
    message: Message
    if rpc == "Score":
        message = draw(SCORE_REQUESTS[valid])
    elif rpc == "ScoreBatch":
        size = draw(st.sampled_from((0, 1, 2, 3, 5, 8, 64, 1001)))
        requests = [draw(SCORE_REQUESTS[valid]) for _ in range(min(size, 8))]
        if size > 8:  # large batches repeat a few drawn requests
            requests = [_copy(requests[i % len(requests)]) for i in range(size)]
        if valid:  # a batch's ids must differ
            for i, r in enumerate(requests):
                r.request_id = f"{r.request_id}-{i}"
        elif len(requests) > 1 and draw(st.booleans()):
            requests[-1].request_id = requests[0].request_id  # a duplicate
        message = pb.ScoreBatchRequest(requests=requests)
        valid = valid and 0 < size <= max_batch
    elif rpc == "ReportOutcome":
        message = draw(OUTCOME_REQUESTS)
    else:
        message = pb.GetModelInfoRequest()
    body = maybe_unknown(draw, message)
    if raw:
        body = mutated(draw, body)
    return Case(rpc, "raw" if raw else "valid" if valid else "messages", [body], valid)


# -- running -------------------------------------------------------------------------------------


def malformed(rpc: str, body: bytes) -> bool:
    try:
        REQUEST_TYPES[rpc].FromString(body)
    except DecodeError:
        return True
    return False


class Fuzzer:
    def __init__(self, target: str, max_message_bytes: int, workers: int) -> None:
        self.channel = grpc.insecure_channel(
            target, options=[("grpc.max_receive_message_length", 64 * 2**20)]
        )
        self.max_message_bytes = max_message_bytes
        self.unary: dict[str, grpc.UnaryUnaryMultiCallable[bytes, bytes]] = {
            rpc: self.channel.unary_unary(path)
            for rpc, path in PATHS.items()
            if rpc != "ScoreStream"
        }
        self.stream: grpc.StreamStreamMultiCallable[bytes, bytes] = self.channel.stream_stream(
            PATHS["ScoreStream"]
        )
        self.pool = ThreadPoolExecutor(workers)
        self.window = threading.BoundedSemaphore(workers * 4)
        self.lock = threading.Lock()
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.failures: dict[str, list[str]] = defaultdict(list)
        self.failure_counts: Counter[str] = Counter()
        self.malformed: Counter[str] = Counter()
        """Malformed bodies (below the size limit) sent, by RPC."""
        self.sent = 0

    def submit(self, case: Case) -> None:
        self.window.acquire()
        future: Future[None] = self.pool.submit(self._run, case)
        future.add_done_callback(lambda _: self.window.release())
        self.sent += 1

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.channel.close()

    def _run(self, case: Case) -> None:
        try:
            outcome = self._call(case)
        except Exception as e:  # a fuzzer bug must show, not stop the run
            self._fail("client error", case, f"{type(e).__name__}: {e}")
            return
        self._judge(outcome)

    def _call(self, case: Case) -> Outcome:
        if case.rpc != "ScoreStream":
            try:
                self.unary[case.rpc](case.bodies[0], timeout=30)
                return Outcome(case, C.OK)
            except grpc.RpcError as e:
                return Outcome(case, e.code(), detail=e.details() or "")
        codes = []
        try:
            for answer in self.stream(iter(case.bodies), timeout=30):
                parsed = pb.ScoreStreamResponse.FromString(answer)
                codes.append(
                    C.OK if parsed.HasField("response") else CODE_BY_NUMBER[parsed.error.code]
                )
            return Outcome(case, C.OK, codes)
        except grpc.RpcError as e:
            return Outcome(case, e.code(), codes, e.details() or "")

    def _fail(self, why: str, case: Case, detail: str) -> None:
        with self.lock:
            self.failure_counts[why] += 1
            if len(self.failures[why]) < 5:
                shown = [b[:120].hex() + ("..." if len(b) > 120 else "") for b in case.bodies]
                self.failures[why].append(
                    f"{case.rpc} ({case.kind}): {detail[:200]!r}; body {shown}"
                )

    def _judge(self, o: Outcome) -> None:
        case = o.case
        with self.lock:
            self.counts[case.rpc][o.code.name] += 1
            for code in o.message_codes:
                self.counts["ScoreStream messages"][code.name] += 1
        oversize = [len(b) > self.max_message_bytes for b in case.bodies]
        if o.code in (C.INTERNAL, C.UNKNOWN):
            self._fail(o.code.name, case, o.detail)
        elif o.code not in ALLOWED[case.rpc]:
            self._fail(f"{case.rpc} answered {o.code.name}", case, o.detail)
        if case.rpc == "ScoreStream":
            self._judge_stream(o, oversize)
            return
        if oversize[0]:
            if o.code != C.RESOURCE_EXHAUSTED:
                self._fail("oversized body not RESOURCE_EXHAUSTED", case, o.code.name)
        elif malformed(case.rpc, case.bodies[0]):
            with self.lock:
                self.malformed[case.rpc] += 1
            if o.code != C.INVALID_ARGUMENT:
                self._fail(f"malformed body answered {o.code.name}", case, o.detail)
        elif case.must_ok and o.code != C.OK:
            self._fail(f"valid request answered {o.code.name}", case, o.detail)

    def _judge_stream(self, o: Outcome, oversize: list[bool]) -> None:
        case = o.case
        for code in o.message_codes:
            if code not in ALLOWED["ScoreStream messages"]:
                self._fail(f"stream message answered {code.name}", case, o.detail)
        if any(oversize):
            # the stream ends at the first oversized message: its answers stop there
            first = oversize.index(True)
            if o.code != C.RESOURCE_EXHAUSTED or len(o.message_codes) > first:
                self._fail("oversized stream message not RESOURCE_EXHAUSTED", case, o.code.name)
            return
        if o.code != C.OK:
            self._fail(f"stream ended {o.code.name}", case, o.detail)
            return
        if len(o.message_codes) != len(case.bodies):
            self._fail("stream answers missing", case, f"{len(o.message_codes)} answers")
            return
        for body, code in zip(case.bodies, o.message_codes, strict=True):
            if malformed("ScoreStream", body):
                with self.lock:
                    self.malformed["ScoreStream messages"] += 1
                if code != C.INVALID_ARGUMENT:
                    self._fail(f"malformed stream message answered {code.name}", case, "")
            elif case.must_ok and code != C.OK:
                self._fail(f"valid stream message answered {code.name}", case, "")


def check_inputs(target: str) -> None:
    """The served model takes GMSC_INPUTS, in that order."""
    with grpc.insecure_channel(target) as channel:
        info = channel.unary_unary(
            SERVICE + "GetModelInfo",
            request_serializer=pb.GetModelInfoRequest.SerializeToString,
            response_deserializer=pb.GetModelInfoResponse.FromString,
        )(pb.GetModelInfoRequest(), timeout=10)
    names = [i.name for i in info.models[0].inputs]
    if names != [i.name for i in GMSC_INPUTS]:
        raise SystemExit(f"the served model's inputs are not GMSC's: {names}")


def health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status)


@dataclass
class Report:
    cases: int
    seconds: float
    counts: dict[str, Counter[str]]
    failures: dict[str, list[str]]
    failure_counts: Counter[str]
    malformed: Counter[str]

    @property
    def ok(self) -> bool:
        return not self.failure_counts


def fuzz(
    target: str,
    cases_wanted: int,
    *,
    max_message_bytes: int,
    max_batch: int = 1000,
    workers: int = 8,
    random_seed: int | None = None,
    alive: Callable[[], str | None] = lambda: None,
    progress: bool = False,
) -> Report:
    """Send ``cases_wanted`` generated cases to ``target``; ``alive`` returns a reason when the
    server is gone (checked as the run goes)."""
    check_inputs(target)
    fuzzer = Fuzzer(target, max_message_bytes, workers)
    started = time.monotonic()
    dead: list[str] = []

    @settings(
        max_examples=cases_wanted,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(cases(max_batch))
    def drive(case: Case) -> None:
        if dead:
            return
        fuzzer.submit(case)
        if fuzzer.sent % 2000 == 0:
            reason = alive()
            if reason:
                dead.append(reason)
            if progress:
                rate = fuzzer.sent / (time.monotonic() - started)
                print(f"{fuzzer.sent:,} cases, {rate:,.0f}/s", file=sys.stderr, flush=True)

    if random_seed is not None:
        drive = seed(random_seed)(drive)
    try:
        drive()
    finally:
        fuzzer.close()
    seconds = time.monotonic() - started
    reason = dead[0] if dead else alive()
    if reason:
        fuzzer.failure_counts["server gone"] += 1
        fuzzer.failures["server gone"].append(reason)
    return Report(fuzzer.sent, seconds, dict(fuzzer.counts), dict(fuzzer.failures),
                  fuzzer.failure_counts, fuzzer.malformed)  # fmt: skip


def report_lines(report: Report) -> list[str]:
    codes = sorted({c for counter in report.counts.values() for c in counter})
    rows = ["| RPC | " + " | ".join(codes) + " | of which malformed bodies |",
            "|---" * (len(codes) + 2) + "|"]  # fmt: skip
    order = ("Score", "ScoreBatch", "ScoreStream", "ScoreStream messages", "GetModelInfo",
             "ReportOutcome", *OIP_RPCS)  # fmt: skip
    for rpc in order:
        counter = report.counts.get(rpc, Counter())
        rows.append(
            f"| {rpc} | " + " | ".join(f"{counter[c]:,}" for c in codes)
            + f" | {report.malformed[rpc]:,} |"
        )  # fmt: skip
    return rows


def failure_lines(report: Report) -> list[str]:
    out = []
    for why, n in report.failure_counts.most_common():
        out.append(f"FAIL {why}: {n}")
        out.extend(f"    {example}" for example in report.failures.get(why, []))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fuzz_grpc")
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    parser.add_argument("--workers", type=int, default=8, help="client threads")
    parser.add_argument("--max-message-bytes", type=int, default=65536)
    parser.add_argument("--write", type=Path, default=None)
    ns = parser.parse_args(argv)
    from benchmarks.production import GMSC_MODEL, gmsc_store, serving

    run_seed = ns.seed if ns.seed is not None else random.SystemRandom().randrange(2**32)
    STATE.mkdir(parents=True, exist_ok=True)
    store = gmsc_store(STATE)
    log = STATE / "server.log"
    with serving(store, GMSC_MODEL, log, ALTSCORE_MAX_MESSAGE_BYTES=str(ns.max_message_bytes)) as (
        proc,
        port,
    ):
        target = f"127.0.0.1:{port}"
        pid = proc.pid

        def alive() -> str | None:
            if proc.poll() is not None:
                return f"the server exited with {proc.returncode}"
            try:
                status = health(target)
            except grpc.RpcError as e:
                return f"health check failed: {e.code()}"
            if status != health_pb2.HealthCheckResponse.SERVING:
                return f"health {status}"
            return None

        report = fuzz(
            target,
            ns.cases,
            max_message_bytes=ns.max_message_bytes,
            workers=ns.workers,
            random_seed=run_seed,
            alive=alive,
            progress=True,
        )
        if proc.pid != pid:
            report.failure_counts["server restarted"] += 1
    text = log.read_text(errors="replace")
    if "panicked" in text:
        report.failure_counts["panic in the server log"] += 1
        report.failures["panic in the server log"] = [
            line for line in text.splitlines() if "panicked" in line
        ][:5]
    lines = [
        f"## {TITLE}",
        "",
        f"Command: `make fuzz-grpc` (= `uv run python -m benchmarks.fuzz_grpc --cases {ns.cases} "
        f"--write benchmarks/RESULTS.md`), hypothesis seed {run_seed}. {report.cases:,} cases in "
        f"{report.seconds:.0f} s ({report.cases / report.seconds:,.0f} cases/s; {ns.workers} "
        "client threads on the same cores as the server). Server: the GMSC champion, default "
        f"settings except `ALTSCORE_MAX_MESSAGE_BYTES={ns.max_message_bytes}`. A quarter of the "
        "cases are raw bytes (random, or valid messages truncated / flipped / inflated); the "
        "rest are messages with known and unknown keys, special floats, odd ids and wrong "
        "`numeric_values`, and Open Inference Protocol v2 calls (ModelInfer tensors of wrong "
        "shapes, datatypes, lengths and names, unknown models; see the module's docstring). "
        "`NOT_FOUND` is an OIP call naming a model or version not served, `FAILED_PRECONDITION` "
        "a contradicting outcome or a layout hash not the served one (both by design). Answers "
        "by status code:",
        "",
        *report_lines(report),
        "",
        "Result: "
        + (
            "**pass**: 0 INTERNAL, 0 UNKNOWN, every malformed body INVALID_ARGUMENT, "
            "no exit or restart, no panic."
            if report.ok
            else "**FAIL**"
        )
        + f" Machine: {platform.machine()}, Python {platform.python_version()}.",
    ]
    if not report.ok:
        lines += ["", "```", *failure_lines(report), "```"]
    print("\n".join(lines))
    if not report.ok:
        print("\n".join(failure_lines(report)), file=sys.stderr)
    if ns.write:
        from benchmarks.results import write_section

        write_section(ns.write, TITLE, "\n".join(lines))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
