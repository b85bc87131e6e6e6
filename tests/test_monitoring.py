"""Monitoring as shipped in deploy/prometheus: the config and alert rules pass promtool, every
alert passes its unit tests, every metric a rule names is exported by the server, and a real
Prometheus scrapes a running server and answers a rate and a histogram quantile over its API."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from scoring_server.grpc._proto import scoring_pb2_grpc as pb_grpc
from tests.conftest import ROOT, ServerProcess
from tests.scoring_server.test_grpc_e2e import request

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"

# promtool and prometheus: the Debian package, installed by `make prometheus` (part of `make test`).


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60
    )


def test_config_and_rules_pass_promtool() -> None:
    for args in (("check", "config", "prometheus.yml"), ("check", "rules", "alerts.yml")):
        done = _promtool(*args)
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_passes_its_unit_tests() -> None:
    done = _promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    tested = {
        case["alertname"]
        for test in yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
        for case in test["alert_rule_test"]
    }
    assert tested == set(_alerts()), "every alert has a unit test"


ALERTMANAGER_DIR = ROOT / "deploy" / "alertmanager"
ROUTED = {"page": "on-call", "warning": "risk-team"}
"""The receiver each severity goes to (deploy/alertmanager/alertmanager.yml)."""


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    """amtool of the Debian package ``prometheus-alertmanager`` (``make prometheus``)."""
    return subprocess.run(
        ["amtool", *args],
        cwd=ALERTMANAGER_DIR, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_every_alert_reaches_the_receiver_of_its_severity() -> None:
    """The stack's Alertmanager config passes amtool, and amtool's routing sends each alert of
    the rules to the receiver its severity names (no alert falls through unrouted)."""
    done = _amtool("check-config", "alertmanager.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    rules = [rule for g in groups for rule in g["rules"]]
    for rule in rules:
        severity = rule["labels"]["severity"]
        assert severity in ROUTED, f"{rule['alert']}: severity {severity!r} has no receiver"
        labels = (f"alertname={rule['alert']}", f"severity={severity}")
        routed = _amtool("config", "routes", "test", "--config.file=alertmanager.yml", *labels)
        assert routed.stdout.split() == [ROUTED[severity]], (rule["alert"], routed.stdout)
    # inhibition names alerts that exist, so a renamed alert cannot silently stop inhibiting
    config = yaml.safe_load((ALERTMANAGER_DIR / "alertmanager.yml").read_text())
    names = {rule["alert"] for rule in rules}
    for inhibit in config["inhibit_rules"]:
        for matcher in inhibit["source_matchers"] + inhibit["target_matchers"]:
            key, _, value = matcher.partition("=")
            if key == "alertname":
                for name in value.lstrip("~").strip('"').split("|"):
                    assert name in names, name
    prom = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    (target,) = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert target == "alertmanager:9093"


def _alerts() -> dict[str, str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for g in groups for rule in g["rules"]}


_PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def _named_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression: what is left once label matchers, ranges and
    grouping clauses are removed, minus function names and operators."""
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    words = re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr)
    return {w for w in words if w.lower() not in _PROMQL_WORDS}


def _dashboard_exprs() -> list[str]:
    return [
        target["expr"]
        for path in sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
        for panel in json.loads(path.read_text())["panels"]
        for target in panel.get("targets", [])
    ]


def _exported(srv: ServerProcess) -> set[str]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=5)
    return {
        s.name
        for family in text_string_to_metric_families(body.read().decode())
        for s in family.samples
    }


def _drift_worker_exports() -> set[str]:
    """Every series name the drift worker's registry declares (counters with ``_total``)."""
    from drift.monitor import DriftWorker
    from drift.settings import DriftSettings

    registry = DriftWorker(DriftSettings()).registry
    return {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in registry.collect()
    }


def test_every_metric_a_rule_or_dashboard_names_is_exported(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.target) as channel:
        pb_grpc.ScoringStub(channel).Score(request(f"mon-{time.time_ns()}"), timeout=5)
    drift = _drift_worker_exports()
    assert {
        "altscore_drift_detected",
        "altscore_estimated_auc",
        "altscore_drift_windows_total",
    } <= (drift)
    exported = _exported(server) | drift | {"up"}  # `up` is Prometheus's own, per target
    rules = {name for expr in _alerts().values() for name in _named_metrics(expr)}
    dashboards = {name for expr in _dashboard_exprs() for name in _named_metrics(expr)}
    # the parser finds names with and without selectors, and no function or label names
    assert {"up", "grpc_server_handled_total", "credit_scoring_model_info"} <= rules
    assert "process_resident_memory_bytes" in dashboards
    assert not (rules | dashboards) & {"rate", "sum", "histogram_quantile", "le", "grpc_method"}
    assert rules - exported == set()
    assert dashboards - exported == set()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


@pytest.fixture
def prometheus(server: ServerProcess, tmp_path: Path) -> Iterator[int]:
    """A real Prometheus scraping the server every second, with the shipped alert rules."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": "altscore-scoring",
                "static_configs": [{"targets": [f"127.0.0.1:{server.metrics_port}"]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
                assert time.monotonic() < deadline, "prometheus not ready in 30 s"
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_a_real_prometheus_scrapes_the_server(server: ServerProcess, prometheus: int) -> None:
    stop = threading.Event()

    def traffic() -> None:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.ScoringStub(channel)
            i = 0
            while not stop.is_set():
                stub.Score(request(f"prom-{time.time_ns()}-{i}"), timeout=5)
                i += 1
                time.sleep(0.01)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        rate = 'sum(rate(grpc_server_handled_total{grpc_method="Score", grpc_code="OK"}[5s]))'
        p99 = (
            "histogram_quantile(0.99, sum by (le) "
            '(rate(grpc_server_handling_seconds_bucket{grpc_method="Score"}[5s])))'
        )
        deadline = time.monotonic() + 60
        while True:
            got = _query(prometheus, rate)
            if got and float(got[0]["value"][1]) > 0:
                break
            assert time.monotonic() < deadline, f"no Score rate after 60 s: {got}"
            time.sleep(0.5)
        (quantile,) = _query(prometheus, p99)
        assert 0 < float(quantile["value"][1]) < 1.0, quantile  # seconds, finite
    finally:
        stop.set()
        worker.join(timeout=10)
    # The shipped rules load, evaluate without error on real series, and the ones that watch
    # a healthy server (up, champion loaded, logging) find nothing.
    with urllib.request.urlopen(f"http://127.0.0.1:{prometheus}/api/v1/rules", timeout=5) as r:
        groups = json.load(r)["data"]["groups"]
    rules = {rule["name"]: rule for g in groups for rule in g["rules"]}
    assert set(rules) == set(_alerts())
    assert all(rule["health"] == "ok" for rule in rules.values()), rules
    for name in ("AltscoreDown", "AltscoreNoChampion", "AltscorePredictionLogDropping"):
        assert _query(prometheus, _alerts()[name]) == [], name
    # Every dashboard query is valid PromQL, and the service panels have data.
    grafana_vars = {"$instance": ".*", "$__rate_interval": "5s", "$__range": "1m"}
    answered = 0
    for expr in _dashboard_exprs():
        for var, value in grafana_vars.items():
            expr = expr.replace(var, value)
        answered += bool(_query(prometheus, expr))
    assert answered >= 8, answered
