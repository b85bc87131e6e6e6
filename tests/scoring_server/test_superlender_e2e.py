"""Alternative data end to end: SuperLender entity features published to a real Redis, looked up
by applicant id at request time; the embedded store; Redis failures (down, frozen) and recovery."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import polars as pl
import pytest
import xgboost as xgb
from rich.console import Console

from credit_core.bundle import ModelBundle
from credit_core.feature_store import RedisFeatureStore
from feature_kernels import FeaturePipeline, load_spec
from scoring_server.grpc._proto import scoring_pb2 as pb
from scoring_server.grpc._proto import scoring_pb2_grpc as pb_grpc
from tests.conftest import DATA_DIR, ROOT, ServerProcess, free_port, replay_cli, start_server
from tests.redis_server import RedisServer
from training.dataset import load_frame
from training.entity import entity_features
from training.publish import publish_entities
from training.run import train_and_register
from training.settings import TrainingSettings
from training.train import TrainParams

APPS = DATA_DIR / "zindi_superlender" / "trainperf.csv"
SPEC = ROOT / "specs" / "superlender.yaml"
MODEL = "altscore-superlender"
AS_OF = dt.datetime(2017, 8, 1, tzinfo=dt.UTC)
STORE_TIMEOUT = 0.025
QUIET = Console(stderr=True, quiet=True)


@dataclass
class Trained:
    state: Path
    version: str


def _train(state: Path, spec_path: Path, model_name: str) -> Trained:
    outcome = train_and_register(
        TrainingSettings(state_dir=state, model_name=model_name),
        spec_path=spec_path,
        data_path=APPS,
        params=TrainParams(),
        console=QUIET,
    )
    return Trained(state, outcome.version.version)


@pytest.fixture(scope="module")
def superlender(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return _train(tmp_path_factory.mktemp("sl-state"), SPEC, MODEL)


def _publish(url: str) -> int:
    spec = load_spec(SPEC)
    _, rows = publish_entities(
        spec, APPS.parent, RedisFeatureStore(url), as_of=AS_OF, ttl_seconds=3600, console=QUIET
    )
    return rows


def _start(state: Path, log: Path, **env: str) -> ServerProcess:
    return start_server(
        state,
        log,
        wait_serving=True,
        ALTSCORE_MODEL_NAME=env.pop("model", MODEL),
        ALTSCORE_FEATURE_STORE_TIMEOUT_SECONDS=str(STORE_TIMEOUT),
        **env,
    )


@pytest.fixture(scope="module")
def apps() -> pl.DataFrame:
    return load_frame(APPS, load_spec(SPEC)).slice(0, 40)


def _request(row: dict[str, object], i: int, applicant_id: str | None = None) -> pb.ScoreRequest:
    numeric = {
        "loan_amount": float(row["loanamount"]),  # type: ignore[arg-type]
        "total_due": float(row["totaldue"]),  # type: ignore[arg-type]
        "term_days": float(row["termdays"]),  # type: ignore[arg-type]
        "loan_number": float(row["loannumber"]),  # type: ignore[arg-type]
        "application_day": float(row["approveddate"]),  # type: ignore[arg-type]
    }
    categorical = {"referred_by": str(row["referredby"])} if row["referredby"] else {}
    return pb.ScoreRequest(
        request_id=f"sl-{i}",
        applicant=pb.Applicant(
            applicant_id=applicant_id or str(row["customerid"]),
            numeric=numeric,
            categorical=categorical,
        ),
    )


def _offline_pd(state: Path, apps: pl.DataFrame) -> np.ndarray:
    """The training pipeline's own answer: entity features as of the publish date, the kernels'
    column path, XGBoost."""
    spec = load_spec(SPEC)
    assert spec.entity is not None
    entity = entity_features(
        apps.get_column("customerid"),
        pl.Series([AS_OF.timestamp() / 86_400.0] * apps.height),
        spec.entity,
        APPS.parent,
    )
    frame = pl.concat([apps.drop(spec.entity_inputs()), entity], how="horizontal")
    x = FeaturePipeline(spec).transform_frame(frame)
    bundle = ModelBundle.read(next((state / "models").glob("*-v*/model")))
    return np.asarray(xgb.Booster(model_file=str(bundle.booster_path)).inplace_predict(x))


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(workdir=tmp_path_factory.mktemp("sl-redis")).start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def redis_backed(
    superlender: Trained, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    assert _publish(redis_server.url) > 4000
    srv = _start(
        superlender.state, tmp_path_factory.mktemp("sl-logs") / "s.log", REDIS_URL=redis_server.url
    )
    yield srv
    srv.stop()


def test_redis_enriched_pd_equals_offline_pipeline(
    redis_backed: ServerProcess, superlender: Trained, apps: pl.DataFrame
) -> None:
    expected = _offline_pd(superlender.state, apps)
    with grpc.insecure_channel(redis_backed.target) as channel:
        stub = pb_grpc.ScoringStub(channel)
        for i, row in enumerate(apps.iter_rows(named=True)):
            response = stub.Score(_request(row, i), timeout=5)
            assert abs(response.pd - float(expected[i])) <= 1e-6, (i, response.pd, expected[i])
            assert not response.degraded
            assert "prev_loans" not in response.defaulted_features


def test_enriched_decisions_are_replayed_from_the_log(
    redis_backed: ServerProcess, superlender: Trained, apps: pl.DataFrame
) -> None:
    """Replay (issue 11, item 2) of Redis-enriched decisions, half explained, one of a new
    customer: the log holds the served (enriched) inputs, so the replay needs no feature store."""
    ids = []
    with grpc.insecure_channel(redis_backed.target) as channel:
        stub = pb_grpc.ScoringStub(channel)
        for i, row in enumerate(apps.iter_rows(named=True)):
            req = _request(row, 1000 + i)
            req.explain = i % 2 == 0
            stub.Score(req, timeout=5)
            ids.append(req.request_id)
        new = _request(next(apps.iter_rows(named=True)), 2000, applicant_id="never-seen")
        assert stub.Score(new, timeout=5).defaulted_features
        ids.append(new.request_id)
    time.sleep(1.5)  # the log's flush interval
    args = [a for rid in ids for a in ("--request-id", rid)]
    done = replay_cli(superlender.state, superlender.state / "evaluation", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(r["request_id"] for r in results) == sorted(ids)
    assert sum(bool(r["logged"]["reasons"]) for r in results) == 20
    assert all(r["reproduced"] for r in results)


def test_new_customer_gets_missing_policy_and_is_told(
    redis_backed: ServerProcess, apps: pl.DataFrame
) -> None:
    spec = load_spec(SPEC)
    with grpc.insecure_channel(redis_backed.target) as channel:
        response = pb_grpc.ScoringStub(channel).Score(
            _request(apps.row(0, named=True), 0, applicant_id="brand-new-customer"), timeout=5
        )
    assert not response.degraded
    assert list(response.defaulted_features) == spec.entity_inputs()


def test_entity_values_may_not_be_sent_and_applicant_id_is_required(
    redis_backed: ServerProcess, apps: pl.DataFrame
) -> None:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    req = _request(apps.row(0, named=True), 0)
    req.applicant.numeric["prev_loans"] = 50
    req.applicant.applicant_id = ""
    with grpc.insecure_channel(redis_backed.target) as channel:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.ScoringStub(channel).Score(req, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(info.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    status.details[0].Unpack(bad)
    fields = {v.field for v in bad.field_violations}
    assert fields == {"applicant.applicant_id", "applicant.numeric.prev_loans"}


def test_embedded_store_serves_the_bundle_snapshot(
    superlender: Trained, apps: pl.DataFrame, tmp_path: Path
) -> None:
    srv = _start(superlender.state, tmp_path / "s.log")
    try:
        with grpc.insecure_channel(srv.target) as channel:
            response = pb_grpc.ScoringStub(channel).Score(_request(apps.row(0, named=True), 0))
        assert not response.degraded
        assert "prev_loans" not in response.defaulted_features
        assert "embedded feature store" in srv.log()
    finally:
        srv.stop()


def _load(
    target: str, apps: pl.DataFrame, stop: threading.Event, out: list[tuple[float, bool]]
) -> None:
    rows = list(apps.iter_rows(named=True))
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.ScoringStub(channel)
        i = 0
        while not stop.is_set() and i < 100_000:
            started = time.perf_counter()
            response = stub.Score(_request(rows[i % len(rows)], i), timeout=5)
            out.append((time.perf_counter() - started, response.degraded))
            i += 1


def test_redis_down_or_frozen_during_load(
    superlender: Trained, apps: pl.DataFrame, tmp_path: Path
) -> None:
    """Acceptance: killing (and freezing) redis-server under load — no request waits longer than
    the timeout + 50 ms, answers are degraded (entity features are optional), and the service
    recovers by itself once Redis is back."""
    redis = RedisServer(workdir=tmp_path).start()
    srv: ServerProcess | None = None
    try:
        _publish(redis.url)
        srv = _start(superlender.state, tmp_path / "s.log", REDIS_URL=redis.url)
        phases: dict[str, list[tuple[float, bool]]] = {}
        for phase in ("healthy", "killed", "frozen", "back"):
            if phase == "killed":
                redis.kill()
            elif phase == "frozen":
                redis.start()
                _publish(redis.url)
            elif phase == "back":
                pass
            out: list[tuple[float, bool]] = []
            stop = threading.Event()
            worker = threading.Thread(target=_load, args=(srv.target, apps, stop, out))
            if phase == "frozen":
                with redis.paused():
                    worker.start()
                    time.sleep(1.5)
                    stop.set()
                    worker.join()
            else:
                worker.start()
                time.sleep(1.5)
                stop.set()
                worker.join()
            phases[phase] = out
        budget = STORE_TIMEOUT + 0.050
        for phase, out in phases.items():
            assert len(out) > 20, phase
            slowest = max(t for t, _ in out)
            assert slowest <= budget, f"{phase}: a request took {slowest * 1000:.1f} ms"
        assert not any(d for _, d in phases["healthy"])
        assert all(d for _, d in phases["killed"])
        assert all(d for _, d in phases["frozen"])
        assert not any(d for _, d in phases["back"][-10:]), "did not recover"
    finally:
        if srv is not None:
            srv.stop()
        redis.close()


def test_required_entity_features_answer_unavailable(tmp_path: Path, apps: pl.DataFrame) -> None:
    strict = tmp_path / "superlender_strict.yaml"
    strict.write_text(SPEC.read_text().replace("  optional: true\n", "  optional: false\n"))
    trained = _train(tmp_path / "state", strict, "altscore-strict")
    dead = f"redis://127.0.0.1:{free_port()}/0"
    srv = _start(trained.state, tmp_path / "s.log", model="altscore-strict", REDIS_URL=dead)
    try:
        with grpc.insecure_channel(srv.target) as channel:
            stub = pb_grpc.ScoringStub(channel)
            started = time.perf_counter()
            with pytest.raises(grpc.RpcError) as info:
                stub.Score(_request(apps.row(0, named=True), 0), timeout=5)
            assert time.perf_counter() - started < 1.0
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        srv.stop()
    shutil.rmtree(tmp_path / "state", ignore_errors=True)
