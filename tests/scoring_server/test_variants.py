"""Champion/challenger end to end on real servers: hot swaps under load, sticky split routing,
shadow mode, and outcomes reported through gRPC. Each test has its own MLflow store holding
copies of the trained champion (same booster: compiles are cache hits, loads take milliseconds).
"""

from __future__ import annotations

import bisect
import hashlib
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_status import rpc_status

from credit_core import Routing
from credit_core.evaluation import EvaluationLog, matched
from feature_kernels import routing_bucket
from scoring_server.grpc._proto import scoring_pb2 as pb
from scoring_server.grpc._proto import scoring_pb2_grpc as pb_grpc
from tests.conftest import (
    MODEL_NAME,
    ServerProcess,
    TrainedModel,
    champion_bundle,
    register_bundle,
    register_tampered,
    registry_at,
    start_server,
)
from tests.scoring_server.test_grpc_e2e import GOOD, request, violations_of

FAST = {"ALTSCORE_REGISTRY_POLL_SECONDS": "0.2"}
PROPAGATION_SECONDS = 2.0
"""Most time from an alias move in MLflow to the data plane answering with the new version:
registry poll + download + gates (the compiled library is a cache hit) + the swap."""


@dataclass
class Store:
    state: Path
    versions: list[str]


def make_store(trained: TrainedModel, tmp: Path, copies: int) -> Store:
    bundle = champion_bundle(trained, tmp / "download")
    state = tmp / "state"
    versions = [
        register_bundle(state, bundle, "champion" if i == 0 else None) for i in range(copies)
    ]
    if (trained.state_dir / "compiled").is_dir():  # same booster: a cache hit saves a compile
        shutil.copytree(trained.state_dir / "compiled", state / "compiled")
    return Store(state, versions)


def wait_for(what: str, check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def versions_answering(srv: ServerProcess, n: int = 30) -> set[str]:
    with grpc.insecure_channel(srv.target) as ch:
        stub = pb_grpc.ScoringStub(ch)
        return {
            stub.Score(request(f"probe-{time.time_ns()}-{i}"), timeout=5).model.version
            for i in range(n)
        }


# -- hot swap -----------------------------------------------------------------------------------


@dataclass
class Answer:
    sent: float
    received: float
    version: str | None
    error: str | None


def _unary_load(target: str, stop: threading.Event, out: list[Answer]) -> None:
    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.ScoringStub(ch)
        i = 0
        while not stop.is_set():
            i += 1
            sent = time.time()
            try:
                r = stub.Score(request(f"u-{i}"), timeout=10)
                out.append(Answer(sent, time.time(), r.model.version, None))
            except grpc.RpcError as e:
                out.append(Answer(sent, time.time(), None, f"{e.code()}: {e.details()}"))


def _stream_load(target: str, stop: threading.Event, out: list[Answer]) -> None:
    sent_at: dict[str, float] = {}

    def requests() -> Iterator[pb.ScoreRequest]:
        i = 0
        while not stop.is_set():
            i += 1
            rid = f"s-{i}"
            sent_at[rid] = time.time()
            yield request(rid)
            time.sleep(0.002)

    with grpc.insecure_channel(target) as ch:
        try:
            for a in pb_grpc.ScoringStub(ch).ScoreStream(requests(), timeout=120):
                now = time.time()
                if a.HasField("response"):
                    out.append(Answer(sent_at[a.request_id], now, a.response.model.version, None))
                else:
                    out.append(Answer(sent_at[a.request_id], now, None, a.error.message))
        except grpc.RpcError as e:
            out.append(Answer(time.time(), time.time(), None, f"stream broke: {e.code()}"))


def test_champion_moved_ten_times_under_load(trained: TrainedModel, tmp_path: Path) -> None:
    store = make_store(trained, tmp_path, copies=3)
    register_tampered(store.state, tmp_path / "tampered", "spare", "reference")
    registry = registry_at(store.state)
    tampered = registry.get_alias(MODEL_NAME, "spare")
    assert tampered is not None
    srv = start_server(store.state, tmp_path / "server.log", wait_serving=True, **FAST)
    try:
        timeline: list[tuple[float, str]] = [(0.0, store.versions[0])]
        stop = threading.Event()
        unary: list[Answer] = []
        stream: list[Answer] = []
        loads = [
            threading.Thread(target=_unary_load, args=(srv.target, stop, unary)),
            threading.Thread(target=_stream_load, args=(srv.target, stop, stream)),
        ]
        for t in loads:
            t.start()
        time.sleep(0.5)
        moves = [store.versions[(i + 1) % 3] for i in range(10)]
        moves[4] = tampered.version  # one move to a model failing the parity gate
        for target_version in moves:
            registry.set_alias(MODEL_NAME, "champion", target_version)
            if target_version != tampered.version:
                timeline.append((time.time(), target_version))
            time.sleep(PROPAGATION_SECONDS / 2)
        time.sleep(PROPAGATION_SECONDS)
        stop.set()
        for t in loads:
            t.join(timeout=60)
    finally:
        srv.stop()

    answers = unary + stream
    assert len(unary) > 100
    assert len(stream) > 100
    failures = [a for a in answers if a.error is not None]
    assert failures == [], failures[:5]
    assert tampered.version not in {a.version for a in answers}
    assert "model refused: champion v" + tampered.version in srv.log()
    starts = [t for t, _ in timeline]
    for a in answers:
        # the versions that were champion at some time in [sent - propagation, received]
        first = max(0, bisect.bisect_right(starts, a.sent - PROPAGATION_SECONDS) - 1)
        last = bisect.bisect_right(starts, a.received)
        live = {v for _, v in timeline[first:last]}
        assert a.version in live, (a, timeline)
    # every live version was actually served (the swaps happened)
    assert {a.version for a in answers} == set(store.versions)


# -- routing -------------------------------------------------------------------------------------


def test_routing_bucket_share_and_stability() -> None:
    ids = [f"applicant-{i}" for i in range(20_000)]
    share = sum(routing_bucket(x) < 0.10 for x in ids) / len(ids)
    assert 0.09 <= share <= 0.11
    assert [routing_bucket(x) for x in ids[:100]] == [routing_bucket(x) for x in ids[:100]]


def test_routing_bucket_is_the_hash_the_python_servers_used() -> None:
    """No applicant changes variant across the move to the Rust data plane: the bucket is
    blake2b (8-byte digest, big-endian) over 2**64, as the Python servers computed it."""
    ids = [f"applicant-{i}" for i in range(2000)] + ["", "é", "日本", "x" * 300]
    for key in ids:
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        assert routing_bucket(key) == int.from_bytes(digest, "big") / 2.0**64, key


@pytest.fixture(scope="module")
def routed(
    trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, Store]]:
    tmp = tmp_path_factory.mktemp("routed")
    store = make_store(trained, tmp, copies=2)
    registry = registry_at(store.state)
    registry.set_alias(MODEL_NAME, "challenger", store.versions[1])
    registry.set_routing(MODEL_NAME, Routing("split", 0.1))
    srv = start_server(
        store.state,
        tmp / "server.log",
        wait_serving=True,
        ALTSCORE_MAX_BATCH_SIZE="1000",
        **FAST,
    )
    wait_for("the challenger", lambda: srv.log().count("(split)") >= 1)
    yield srv, store
    srv.stop()


def _batch_variants(stub: pb_grpc.ScoringStub, applicants: list[str], tag: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for start in range(0, len(applicants), 1000):
        chunk = applicants[start : start + 1000]
        reqs = [
            pb.ScoreRequest(
                request_id=f"{tag}-{a}",
                applicant=pb.Applicant(
                    applicant_id=a, numeric={k: float(v) for k, v in GOOD.items()}
                ),
            )
            for a in chunk
        ]
        results = stub.ScoreBatch(pb.ScoreBatchRequest(requests=reqs), timeout=30).results
        for a, r in zip(chunk, results, strict=True):
            out[a] = r.model.variant
    return out


def test_split_share_is_ten_percent_and_sticky(routed: tuple[ServerProcess, Store]) -> None:
    srv, store = routed
    applicants = [f"cust-{i:05d}" for i in range(20_000)]
    with grpc.insecure_channel(srv.target) as ch:
        stub = pb_grpc.ScoringStub(ch)
        first = _batch_variants(stub, applicants, "a")
        share = sum(v == pb.VARIANT_CHALLENGER for v in first.values()) / len(first)
        assert 0.09 <= share <= 0.11, share
        # the same applicants again, in other calls: same variants
        again = _batch_variants(stub, applicants[:3000], "b")
    with grpc.insecure_channel(srv.target) as ch:
        unary = pb_grpc.ScoringStub(ch)
        for a in applicants[:200]:
            r = unary.Score(
                pb.ScoreRequest(
                    request_id=f"c-{a}",
                    applicant=pb.Applicant(
                        applicant_id=a, numeric={k: float(v) for k, v in GOOD.items()}
                    ),
                ),
                timeout=5,
            )
            assert r.model.variant == first[a]
            expected = store.versions[1] if first[a] == pb.VARIANT_CHALLENGER else store.versions[0]
            assert r.model.version == expected
    assert all(again[a] == first[a] for a in again)


def test_model_info_lists_both_variants(routed: tuple[ServerProcess, Store]) -> None:
    srv, store = routed
    with grpc.insecure_channel(srv.target) as ch:
        info = pb_grpc.ScoringStub(ch).GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
    assert [(m.model.variant, m.model.version) for m in info.models] == [
        (pb.VARIANT_CHAMPION, store.versions[0]),
        (pb.VARIANT_CHALLENGER, store.versions[1]),
    ]


def test_shadow_answers_with_champion_and_logs_both(routed: tuple[ServerProcess, Store]) -> None:
    srv, store = routed
    registry = registry_at(store.state)
    registry.set_routing(MODEL_NAME, Routing("shadow", 0.1))
    try:
        wait_for("shadow mode", lambda: srv.log().count("(shadow)") >= 1)
        applicants = [f"shadow-{i}" for i in range(2000)]
        with grpc.insecure_channel(srv.target) as ch:
            variants = _batch_variants(pb_grpc.ScoringStub(ch), applicants, "sh")
        assert set(variants.values()) == {pb.VARIANT_CHAMPION}
        log = EvaluationLog(store.state / "evaluation")

        def logged() -> bool:
            p = log.read_predictions()
            return p.filter(p["request_id"].str.starts_with("sh-")).height == 2 * len(applicants)

        wait_for("both predictions in the evaluation log", logged, timeout=10)
        p = log.read_predictions()
        p = p.filter(p["request_id"].str.starts_with("sh-"))
        served = p.filter(p["served"])
        shadow = p.filter(~p["served"])
        assert set(served["variant"]) == {"champion"}
        assert set(served["model_version"]) == {store.versions[0]}
        assert set(shadow["variant"]) == {"challenger"}
        assert set(shadow["model_version"]) == {store.versions[1]}
        assert sorted(shadow["request_id"]) == sorted(served["request_id"])
    finally:
        registry.set_routing(MODEL_NAME, Routing("split", 0.1))
        wait_for("split mode again", lambda: srv.log().count("(split)") >= 2)


# -- outcomes -------------------------------------------------------------------------------------


def test_report_outcome_is_on_disk_when_the_call_returns(
    routed: tuple[ServerProcess, Store],
) -> None:
    srv, store = routed
    with grpc.insecure_channel(srv.target) as ch:
        stub = pb_grpc.ScoringStub(ch)
        scored = [stub.Score(request(f"out-{i}"), timeout=5) for i in range(20)]
        outcomes = [
            pb.Outcome(request_id=r.request_id, defaulted=i % 3 == 0) for i, r in enumerate(scored)
        ]
        outcomes.append(
            pb.Outcome(applicant_id="app-out-0", defaulted=True, observed_at=time.time())
        )
        answer = stub.ReportOutcome(pb.ReportOutcomeRequest(outcomes=outcomes), timeout=5)
        assert answer.recorded == 21
        log = EvaluationLog(store.state / "evaluation")
        got = log.read_outcomes()  # no wait: written through before OK
        assert {f"out-{i}" for i in range(20)} <= set(got["request_id"])

        with pytest.raises(grpc.RpcError) as info:
            stub.ReportOutcome(
                pb.ReportOutcomeRequest(
                    outcomes=[
                        pb.Outcome(request_id="x", defaulted=True),
                        pb.Outcome(defaulted=True),
                        pb.Outcome(request_id="y", observed_at=float("nan")),
                    ]
                ),
                timeout=5,
            )
        status = rpc_status.from_call(info.value)
        assert status is not None
        assert violations_of(status) == {
            "outcomes[1]": "needs a request_id or an applicant_id",
            "outcomes[2].observed_at": "must be a Unix time in seconds (0: now)",
        }
        with pytest.raises(grpc.RpcError) as info:
            stub.ReportOutcome(pb.ReportOutcomeRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    def matched_outcomes() -> bool:
        m = matched(log)  # once: predictions keep arriving (the log flushes every second)
        return m.filter(m["request_id"].str.starts_with("out-")).height >= 20

    wait_for("predictions matched to outcomes", matched_outcomes, timeout=10)
