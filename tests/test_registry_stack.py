"""The compose stack's registry, run for real: the ``mlflow server`` command of
docker-compose.yml (its artifacts in a MinIO bucket, proxied by the server; the backend store is
sqlite here, there is no Postgres on this machine) takes a trained bundle over HTTP, and a
scoring-server loader on a host without a C compiler downloads it through the server and loads
the TL2cgen library the bundle ships. The server's Host-header check admits the stack's clients
(``mlflow:5000``) and refuses other names."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from credit_core import ModelRef
from credit_core.registry import MlflowRegistry, local_tracking_uri
from scoring_server.loader import ModelLoader
from tests.conftest import MODEL_NAME, ROOT, TrainedModel
from tests.minio_server import ACCESS_KEY, SECRET_KEY, MinioServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _compose_mlflow() -> dict[str, str]:
    """The options compose starts ``mlflow server`` with."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    command = services["mlflow"]["command"]
    assert command[:2] == ["mlflow", "server"]
    return dict(a.removeprefix("--").split("=", 1) for a in command[2:] if "=" in a)


def _status(url: str, host: str) -> int:
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


@pytest.fixture(scope="module")
def stack_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, MinioServer]]:
    options = _compose_mlflow()
    bucket = options["artifacts-destination"].removeprefix("s3://").split("/")[0]
    work = tmp_path_factory.mktemp("mlflow-server")
    with MinioServer(bucket=bucket) as minio:
        port = _free_port()
        env = {
            **os.environ,
            "MLFLOW_S3_ENDPOINT_URL": minio.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }
        log = (work / "mlflow.log").open("wb")
        command = [
            sys.executable, "-m", "mlflow", "server", "--host=127.0.0.1", f"--port={port}",
            f"--backend-store-uri=sqlite:///{work / 'mlflow.db'}",
            f"--artifacts-destination={options['artifacts-destination']}",
            "--serve-artifacts", f"--allowed-hosts={options['allowed-hosts']},127.0.0.1:{port}",
            "--workers=1",
        ]  # fmt: skip
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while _status_or_none(f"{url}/health") != 200:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start: {(work / 'mlflow.log').read_text()}")
                time.sleep(0.3)
            yield url, minio
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _status_or_none(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except (urllib.error.URLError, OSError):
        return None


def test_the_stack_registry_stores_bundles_in_minio_and_serves_them_keyless(
    stack_registry: tuple[str, MinioServer],
    trained: TrainedModel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, minio = stack_registry
    # the stack's clients reach it as mlflow:5000; a rebinding name is refused
    api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _status(api, "mlflow:5000") == 200
    assert _status(api, "attacker.example") == 403

    # a training run's bundle, logged and registered over HTTP: no S3 keys on the client
    local = MlflowRegistry(local_tracking_uri(trained.state_dir / "mlflow"))
    source = local.get_alias(MODEL_NAME, "champion")
    assert source is not None
    bundle = local.download(source, tmp_path / "orig")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    remote = MlflowRegistry(url)
    run_id = remote.log_run(
        "stack", run_name="bundle", params={}, metrics={}, artifacts={"model": bundle}, tags={}
    )
    version = remote.register(MODEL_NAME, run_id, "model", tags={})
    remote.set_alias(MODEL_NAME, "champion", version.version)
    stored = minio.keys()
    assert any(k.endswith("/model/booster.json") for k in stored), stored
    assert any("/model/compiled/" in k and k.endswith(".so") for k in stored), stored

    # a server on a host without a compiler (the runtime image) loads it through MLflow
    empty = tmp_path / "no-compiler"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("gcc") is None
    loader = ModelLoader(
        remote,
        model_name=MODEL_NAME,
        state_dir=tmp_path / "server",
        parity_tolerance=1e-5,
        parallel_units=4,
    )
    model = loader.load("champion")
    assert model.ref == ModelRef(MODEL_NAME, version.version, "champion")
    assert model.compiled.source == "bundle"
    assert model.parity_max_abs_diff <= 1e-5
