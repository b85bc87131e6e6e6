"""docker-compose.yml is checked by parsing (no Docker engine here): every service is wired to
files and modules that exist, and Prometheus scrapes the server's metrics port."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import yaml

from scoring_server.settings import ServerSettings
from tests.conftest import ROOT, settings_env_names


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_services_and_build_files_exist() -> None:
    services = _compose()["services"]
    assert set(services) == {
        "mlflow", "trainer", "retrainer", "scoring-server", "redis", "archiver", "drift-worker",
        "prometheus", "grafana",
    }  # fmt: skip
    for name in ("mlflow", "trainer", "scoring-server", "archiver"):
        build = services[name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"


def test_commands_name_real_modules() -> None:
    services = _compose()["services"]
    copied = {
        line.split()[1]
        for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
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
    assert f"{defaults.grpc_port}:{defaults.grpc_port}" in ports
    assert f"{defaults.metrics_port}:{defaults.metrics_port}" in ports
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
    assert "9090:9090" in services["prometheus"]["ports"]
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
    for name in ("scoring-server", "archiver", "trainer", "drift-worker"):
        env = services[name]["environment"]
        assert env["ALTSCORE_LOG_REDIS_URL"] == "redis://redis:6379/0", name
        assert env["ALTSCORE_ARCHIVE_URL"] == "/archive", name
    assert "archive:/archive" in services["archiver"]["volumes"]
    assert "archive:/archive" in services["trainer"]["volumes"]
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
    lines = (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users, "the image runs as root"
    assert users[-1] not in ("0", "root"), users  # the last USER is what runs
    assert any(line.startswith("HEALTHCHECK ") for line in lines)
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", "target", "var", ".git"} <= ignored
    # every volume compose mounts for a process of the image exists in it, owned by that user
    created = " ".join(line for line in lines if "chown" in line or "mkdir" in line)
    for service in _compose()["services"].values():
        if service.get("image") != "altscore:latest":
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
