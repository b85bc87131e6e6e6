"""docker-compose.yml is checked by parsing (no Docker engine here): every service is wired to
files and modules that exist, and Prometheus scrapes the server's metrics port."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import yaml

from scoring_server.settings import ServerSettings
from tests.conftest import ROOT


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_services_and_build_files_exist() -> None:
    services = _compose()["services"]
    assert set(services) == {"mlflow", "trainer", "scoring-server", "prometheus"}
    for name in ("mlflow", "trainer", "scoring-server"):
        build = services[name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"


def test_commands_name_real_modules() -> None:
    services = _compose()["services"]
    for name in ("trainer", "scoring-server"):
        cmd = services[name]["command"]
        assert cmd[:2] == ["python", "-m"]
        assert importlib.util.find_spec(cmd[2]) is not None


def test_ports_match_settings_and_prometheus_target() -> None:
    services = _compose()["services"]
    defaults = ServerSettings()
    ports = services["scoring-server"]["ports"]
    assert f"{defaults.grpc_port}:{defaults.grpc_port}" in ports
    assert f"{defaults.metrics_port}:{defaults.metrics_port}" in ports
    prom = yaml.safe_load(Path(ROOT / "deploy" / "prometheus.yml").read_text())
    targets = prom["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"scoring-server:{defaults.metrics_port}"]
    env = services["scoring-server"]["environment"]
    assert env["ALTSCORE_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["ALTSCORE_HOST"] == "0.0.0.0"
