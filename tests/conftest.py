"""Session fixtures: a real MLflow store (sqlite) with the default GMSC model trained into it,
and real scoring servers (``python -m scoring_server`` subprocesses on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import settings as hypothesis_settings

from benchmarks.procs import free_port
from credit_core.registry import MlflowRegistry, local_tracking_uri

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("ALTSCORE_DATA_DIR", ROOT.parent / "shared" / "data"))
GMSC_DATA = DATA_DIR / "give_me_some_credit" / "cs-training.csv"
GMSC_SPEC = ROOT / "specs" / "gmsc.yaml"
MODEL_NAME = "altscore-gmsc"

hypothesis_settings.register_profile("ci", deadline=None, print_blob=True)
hypothesis_settings.register_profile("dev", deadline=None, max_examples=50)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@dataclass
class TrainedModel:
    state_dir: Path
    version: str
    auc: float
    run_id: str


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """The default training config on the real GMSC file, registered in a fresh MLflow store."""
    if not GMSC_DATA.is_file():
        pytest.fail(f"Give Me Some Credit is missing at {GMSC_DATA}")
    from rich.console import Console

    from training.run import train_and_register
    from training.settings import TrainingSettings
    from training.train import TrainParams

    state = tmp_path_factory.mktemp("state")
    settings = TrainingSettings(state_dir=state, data_dir=DATA_DIR, model_name=MODEL_NAME)
    outcome = train_and_register(
        settings,
        spec_path=GMSC_SPEC,
        data_path=GMSC_DATA,
        params=TrainParams(),
        console=Console(stderr=True, quiet=True),
    )
    assert outcome.champion_set
    return TrainedModel(state, outcome.version.version, outcome.evaluation.auc, outcome.run_id)


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    grpc_port: int
    metrics_port: int
    log_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def metric(srv: ServerProcess, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` with these labels on the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    body = urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=5)
    total = 0.0
    for family in text_string_to_metric_families(body.read().decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def health_status(
    target: str, service: str = "", credentials: grpc.ChannelCredentials | None = None
) -> int:
    """The health of ``service``; over TLS with ``credentials``."""
    with (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials)
    ) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return int(response.status)


def start_server(
    state_dir: Path,
    log_path: Path,
    *,
    wait_serving: bool,
    credentials: grpc.ChannelCredentials | None = None,
    **env: str,
) -> ServerProcess:
    grpc_port = int(env["ALTSCORE_GRPC_PORT"]) if "ALTSCORE_GRPC_PORT" in env else free_port()
    metrics_port = free_port()
    full_env = {
        **os.environ,
        "ALTSCORE_STATE_DIR": str(state_dir),
        "ALTSCORE_GRPC_PORT": str(grpc_port),
        "ALTSCORE_METRICS_PORT": str(metrics_port),
        "ALTSCORE_REGISTRY_POLL_SECONDS": "1",
        **env,
    }
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "scoring_server"],
        cwd=ROOT,
        env=full_env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    server = ServerProcess(proc, grpc_port, metrics_port, log_path)
    want = health_pb2.HealthCheckResponse.SERVING if wait_serving else None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
        try:
            status = health_status(server.target, credentials=credentials)
            if want is None or status == want:
                return server
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    server.stop()
    raise TimeoutError(f"server not ready in time:\n{server.log()}")


@pytest.fixture(scope="session")
def server(
    trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server on the trained champion, with small limits to test them."""
    log_path = tmp_path_factory.mktemp("logs") / "server.log"
    srv = start_server(
        trained.state_dir,
        log_path,
        wait_serving=True,
        ALTSCORE_MAX_BATCH_SIZE="50",
        ALTSCORE_MAX_MESSAGE_BYTES="65536",
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as ch:
        yield ch


def register_tampered(state_dir: Path, tmp: Path, alias: str, tamper: str) -> None:
    """Register a copy of the champion's bundle with one part altered, under ``alias``."""
    registry = MlflowRegistry(
        local_tracking_uri(state_dir / "mlflow"), state_dir / "mlflow" / "artifacts"
    )
    source = registry.get_alias(MODEL_NAME, "champion")
    assert source is not None
    original = registry.download(source, tmp / "orig")
    bundle = tmp / "tampered"
    shutil.copytree(original, bundle)
    if tamper == "reference":
        with np.load(bundle / "reference.npz") as z:
            features, margin = z["features"], z["margin"].copy()
        margin[:5] += 0.01  # XGBoost "said" something else than the compiled library will
        np.savez_compressed(bundle / "reference.npz", features=features, margin=margin)
    elif tamper == "schema":
        meta = json.loads((bundle / "metadata.json").read_text())
        meta["schema_hash"] = "0" * 64
        (bundle / "metadata.json").write_text(json.dumps(meta))
    run_id = registry.log_run(
        "tampered",
        run_name=tamper,
        params={},
        metrics={},
        artifacts={"model": bundle},
        tags={},
    )
    version = registry.register(MODEL_NAME, run_id, "model", tags={"tampered": tamper})
    registry.set_alias(MODEL_NAME, alias, version.version)


def registry_at(state_dir: Path) -> MlflowRegistry:
    return MlflowRegistry(
        local_tracking_uri(state_dir / "mlflow"), state_dir / "mlflow" / "artifacts"
    )


def champion_bundle(trained: TrainedModel, dst: Path) -> Path:
    """The trained champion's bundle directory, downloaded to ``dst``."""
    registry = registry_at(trained.state_dir)
    source = registry.get_alias(MODEL_NAME, "champion")
    assert source is not None
    return registry.download(source, dst)


def register_bundle(state_dir: Path, bundle: Path, alias: str | None = None) -> str:
    """Register ``bundle`` as a new version of the test model in ``state_dir``'s store (created
    when missing); returns the version, and points ``alias`` at it when given."""
    registry = registry_at(state_dir)
    run_id = registry.log_run(
        "copies", run_name=bundle.name, params={}, metrics={}, artifacts={"model": bundle}, tags={}
    )
    version = registry.register(MODEL_NAME, run_id, "model", tags={})
    if alias is not None:
        registry.set_alias(MODEL_NAME, alias, version.version)
    return version.version


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``redis-server`` for the session (free loopback port, persistence off). Tests that
    kill or freeze a server start their own ``tests.redis_server.RedisServer`` instead."""
    from tests.redis_server import RedisServer

    server = RedisServer(workdir=tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


def replay_cli(state_dir: Path, evaluation: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m training replay --json ARGS`` on the log of ``evaluation`` (its own archive
    beside it) and the registry of ``state_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALTSCORE_")}
    return subprocess.run(
        [sys.executable, "-m", "training", "replay", "--json", *args],
        cwd=ROOT,
        env={
            **env,
            "ALTSCORE_STATE_DIR": str(state_dir),
            "ALTSCORE_EVALUATION_DIR": str(evaluation),
            "ALTSCORE_ARCHIVE_URL": str(evaluation.parent / "archive"),  # this test's own
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def http_probe(srv: ServerProcess, path: str) -> tuple[int, str]:
    """Status and body of ``GET path`` on the server's metrics port (``/readyz``, ``/livez``)."""
    import urllib.error

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}{path}", timeout=5) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode()


def settings_env_names() -> set[str]:
    """Every ``ALTSCORE_*`` variable some process of the stack reads."""
    from drift.settings import DriftSettings
    from scoring_server.settings import ServerSettings
    from training.settings import TrainingSettings

    names = set()
    for cls in (ServerSettings, TrainingSettings, DriftSettings):
        for field, info in cls.model_fields.items():
            alias = info.validation_alias
            choices = getattr(alias, "choices", None) or ([alias] if alias else [])
            names |= {str(c).upper() for c in choices if isinstance(c, str)}
            names.add(f"ALTSCORE_{field.upper()}")
    return names
