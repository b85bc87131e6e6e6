"""docker-compose.yml is checked by parsing (no Docker engine here): every service is wired to
files and modules that exist, and Prometheus scrapes the server's metrics port."""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scoring_server.settings import ServerSettings
from tests.conftest import ROOT, settings_env_names


@dataclass
class Stage:
    name: str
    parent: str
    lines: list[str] = field(default_factory=list)


def _stages() -> list[Stage]:
    """deploy/Dockerfile's stages in order (continuation lines joined)."""
    text = (ROOT / "deploy" / "Dockerfile").read_text().replace("\\\n", " ")
    stages: list[Stage] = []
    for line in text.splitlines():
        if line.startswith("FROM "):
            words = line.split()
            stages.append(Stage(words[3] if len(words) > 3 else "", words[1]))
        elif line and not line.startswith("#") and stages:
            stages[-1].lines.append(line)
    return stages


def _chain(name: str) -> list[Stage]:
    """Stage ``name`` and the stages it is built FROM, down to an external image."""
    by_name = {stage.name: stage for stage in _stages()}
    chain = [by_name[name]]
    while chain[-1].parent in by_name:
        chain.append(by_name[chain[-1].parent])
    return chain


COMPILERS = ("gcc", "g++", "clang", "build-essential", "rustup", "cargo", "rustc", "make ")


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_services_and_build_files_exist() -> None:
    services = _compose()["services"]
    assert set(services) == {
        "postgres", "minio", "minio-buckets", "mlflow", "trainer", "retrainer", "scoring-server",
        "redis", "archiver", "drift-worker", "prometheus", "alertmanager", "grafana",
    }  # fmt: skip
    stages = {stage.name for stage in _stages()}
    for name in ("mlflow", "trainer", "scoring-server", "archiver"):
        build = services[name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file()
        assert build["target"] in stages
    for stage in _stages():
        for line in stage.lines:
            if line.startswith("COPY ") and "--from=" not in line:
                for src in line.split()[1:-1]:
                    assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"
    for name, service in services.items():  # every dependency is a service of the stack
        assert set(service.get("depends_on", [])) <= set(services), name


def test_commands_name_real_modules() -> None:
    services = _compose()["services"]
    copied = {
        line.split()[1]
        for stage in _chain("runtime")
        for line in stage.lines
        if line.startswith("COPY ") and "--from=" not in line
    }
    for name in ("trainer", "scoring-server", "archiver", "drift-worker"):
        cmd = services[name]["command"]
        assert cmd[:2] == ["python", "-m"]
        assert importlib.util.find_spec(cmd[2]) is not None
        assert cmd[2].split(".")[0] in copied, f"the image lacks the package {name} runs"


def test_ports_match_settings_and_prometheus_target() -> None:
    services = _compose()["services"]
    defaults = ServerSettings()
    ports = services["scoring-server"]["ports"]
    # gRPC for the lenders; metrics only on this host (Prometheus scrapes in-network)
    assert f"{defaults.grpc_port}:{defaults.grpc_port}" in ports
    assert f"127.0.0.1:{defaults.metrics_port}:{defaults.metrics_port}" in ports
    prom = yaml.safe_load(Path(ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = prom["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"scoring-server:{defaults.metrics_port}"]
    # the folder with the config and its rule files is what the container reads
    assert services["prometheus"]["volumes"] == ["./deploy/prometheus:/etc/prometheus:ro"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    for rules in prom["rule_files"]:
        assert (ROOT / "deploy" / "prometheus" / rules).is_file(), rules
    env = services["scoring-server"]["environment"]
    assert env["ALTSCORE_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["ALTSCORE_HOST"] == "0.0.0.0"


def test_grafana_is_provisioned_with_the_prometheus_of_the_stack() -> None:
    services = _compose()["services"]
    grafana = services["grafana"]
    assert grafana["volumes"] == [
        "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro",
        "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro",
    ]
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090"
    assert services["prometheus"]["ports"] == ["127.0.0.1:9090:9090"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "altscore.yml").read_text())[
        "providers"
    ]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboards = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
    assert dashboards
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] == source["uid"], (path.name, panel["title"])


def test_every_variable_the_stack_sets_is_read_by_a_settings_class() -> None:
    """A misspelt or removed variable would be ignored silently by pydantic-settings."""
    known = settings_env_names()
    for name, service in _compose()["services"].items():
        for var in service.get("environment", {}):
            if var.startswith("ALTSCORE_"):
                assert var in known, f"{name}: {var} is read by no settings class"


def test_the_shared_prediction_log_is_wired() -> None:
    """Every writer and reader of the prediction log meets at one Redis and one archive."""
    services = _compose()["services"]
    minio = services["minio"]["environment"]
    buckets = services["minio-buckets"]["entrypoint"][-1]
    for name in ("scoring-server", "archiver", "trainer", "retrainer", "drift-worker"):
        env = services[name]["environment"]
        assert env["ALTSCORE_LOG_REDIS_URL"] == "redis://redis:6379/0", name
        # the archive is the MinIO bucket the stack creates, reached with MinIO's own keys
        bucket = re.fullmatch(r"s3://([a-z0-9-]+)/\S+", env["ALTSCORE_ARCHIVE_URL"])
        assert bucket is not None, name
        assert f"stack/{bucket[1]}" in buckets, name
        options = json.loads(env["ALTSCORE_ARCHIVE_STORAGE_OPTIONS"])
        assert options["aws_endpoint_url"] == "http://minio:9000", name
        assert options["aws_access_key_id"] == minio["MINIO_ROOT_USER"], name
        assert options["aws_secret_access_key"] == minio["MINIO_ROOT_PASSWORD"], name
    assert "minio-buckets" in services["archiver"]["depends_on"]
    assert services["archiver"]["command"] == ["python", "-m", "drift", "archive"]
    assert "redis" in services["scoring-server"]["depends_on"]
    assert "--appendonly" in services["redis"]["command"]  # unarchived records survive a restart


def test_retraining_is_scheduled_with_the_retrain_command() -> None:
    retrainer = _compose()["services"]["retrainer"]
    loop = retrainer["command"][-1]
    assert "python -m training retrain" in loop
    assert "ALTSCORE_RETRAIN_EVERY_SECONDS" in loop
    assert retrainer["depends_on"]["trainer"] == {"condition": "service_completed_successfully"}


def test_the_image_runs_as_a_fixed_non_root_user_and_builds_from_sources_only() -> None:
    for target in ("runtime", "trainer"):
        lines = [line for stage in reversed(_chain(target)) for line in stage.lines]
        users = [line.split()[1] for line in lines if line.startswith("USER ")]
        assert users, f"the {target} image runs as root"
        assert users[-1] not in ("0", "root"), users  # the last USER is what runs
    assert any(line.startswith("HEALTHCHECK ") for line in _chain("runtime")[0].lines)
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", "target", "var", ".git"} <= ignored
    # every volume compose mounts for a process of the image exists in it, owned by that user
    created = " ".join(line for line in lines if "chown" in line or "mkdir" in line)
    for service in _compose()["services"].values():
        if service.get("image") not in ("altscore:latest", "altscore-trainer:latest"):
            continue
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if not source.startswith((".", "$", "/")):  # a named volume
                assert target in created, f"{target} is not created for the non-root user"


def test_prometheus_scrapes_the_drift_worker_on_its_metrics_port() -> None:
    from drift.settings import DriftSettings

    services = _compose()["services"]
    worker = services["drift-worker"]
    assert worker["command"] == ["python", "-m", "drift", "run"]
    assert worker["environment"]["ALTSCORE_DRIFT_METRICS_HOST"] == "0.0.0.0"
    retrain = worker["environment"]["ALTSCORE_RETRAIN_COMMAND"].split()
    assert retrain[:2] == ["python", "-m"]
    assert importlib.util.find_spec(retrain[2]) is not None
    prom = yaml.safe_load(Path(ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {c["job_name"]: c["static_configs"][0]["targets"] for c in prom["scrape_configs"]}
    assert jobs["altscore-drift"] == [f"drift-worker:{DriftSettings().drift_metrics_port}"]


def test_the_final_image_has_no_compiler_and_only_training_gets_one() -> None:
    """The runtime (the last stage, what `docker build` gives) serves the TL2cgen library each
    bundle ships; only the trainer image, which compiles it into the bundle, has gcc."""
    stages = _stages()
    assert stages[-1].name == "runtime"
    for stage in _chain("runtime"):
        for line in stage.lines:
            if line.startswith("RUN "):
                assert not any(c in line for c in COMPILERS), (stage.name, line)
    assert any("gcc" in line for stage in _chain("trainer") for line in stage.lines)
    assert any("rustup" in line for line in _chain("build")[0].lines)
    services = _compose()["services"]
    compiles = {"trainer", "retrainer", "drift-worker"}  # training, or its retrain signal
    for name, service in services.items():
        if "build" in service:
            expected = "trainer" if name in compiles else "runtime"
            assert service["build"]["target"] == expected, name
    # the image installs the locked `stack` group: the MLflow server's Postgres and S3 clients
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    stack = {re.split(r"[<>=\[ ]", d)[0] for d in project["dependency-groups"]["stack"]}
    assert stack == {"boto3", "psycopg2-binary"}
    (sync,) = [line for line in _chain("build")[0].lines if "uv sync" in line]
    for flag in ("--group stack", "--no-dev", "--frozen", "--no-editable"):
        assert flag in sync, flag


def test_mlflow_runs_on_postgres_and_minio_and_listens_on_loopback() -> None:
    services = _compose()["services"]
    mlflow = services["mlflow"]
    args = dict(a.removeprefix("--").split("=", 1) for a in mlflow["command"][2:] if "=" in a)
    pg = services["postgres"]["environment"]
    assert args["backend-store-uri"] == (
        f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/"
        f"{pg['POSTGRES_DB']}"
    )
    bucket = re.fullmatch(r"s3://([a-z0-9-]+)/\S+", args["artifacts-destination"])
    assert bucket is not None
    assert f"stack/{bucket[1]}" in services["minio-buckets"]["entrypoint"][-1]
    assert "--serve-artifacts" in mlflow["command"]  # clients go through MLflow, keyless
    env, minio = mlflow["environment"], services["minio"]["environment"]
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"],
    )  # fmt: skip
    assert mlflow["depends_on"]["postgres"] == {"condition": "service_healthy"}
    # what drives routing (aliases, tags) and holds the models is not published beyond the host
    for name in ("mlflow", "minio", "grafana", "alertmanager"):
        for port in services[name].get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
    alertmanager = services["alertmanager"]
    assert alertmanager["volumes"] == ["./deploy/alertmanager:/etc/alertmanager:ro"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in alertmanager["command"]
    assert "alertmanager" in services["prometheus"]["depends_on"]
