"""deploy/k8s is checked offline (no cluster here): every manifest validates against the
Kubernetes API schemas (kubernetes-validate ships them; strict: an unknown field fails), and the
manifests agree with the code (settings, ports, commands, probes, the image's user)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from scoring_server.settings import ServerSettings
from tests.conftest import ROOT, settings_env_names

BASE = ROOT / "deploy" / "k8s" / "base"
K8S_VERSION = "1.30.0"
"""The oldest Kubernetes the manifests are written for (HPA v2, PDB v1, CronJob v1, grpc probe)."""


def _kustomization() -> dict[str, Any]:
    data = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _resources() -> list[dict[str, Any]]:
    docs = []
    for name in _kustomization()["resources"]:
        docs.extend(d for d in yaml.safe_load_all((BASE / name).read_text()) if d)
    return docs


def _one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in _resources() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _pod(kind: str, name: str) -> dict[str, Any]:
    spec = _one(kind, name)["spec"]
    if kind == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod: dict[str, Any] = spec["template"]["spec"]
    return pod


WORKLOADS = [
    ("Deployment", "scoring-server"),
    ("Deployment", "archiver"),
    ("Deployment", "drift-worker"),
    ("CronJob", "retrain"),
]


def test_the_kustomization_lists_every_manifest() -> None:
    listed = set(_kustomization()["resources"])
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


@pytest.mark.parametrize("doc", _resources(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_manifest_validates_against_the_api_schema(doc: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")


def test_a_broken_manifest_is_caught() -> None:
    """The validator really validates: a misspelt field and a wrong type both fail."""
    bad = yaml.safe_load((BASE / "pdb.yaml").read_text())
    bad["spec"]["minAvailabel"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    hpa = yaml.safe_load((BASE / "hpa.yaml").read_text())
    hpa["spec"]["minReplicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)


def test_settings_commands_and_user_match_the_code() -> None:
    known = settings_env_names()
    config = _one("ConfigMap", "altscore-settings")["data"]
    for var in config:
        assert var in known, f"{var} is read by no settings class"
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    copied = {
        line.split()[1]
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
    }
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    images = {i["name"] for i in kustomization["images"]}
    assert images == {"altscore", "altscore-trainer"}
    trains = {("CronJob", "retrain"), ("Deployment", "drift-worker")}  # compile at training
    for kind, name in WORKLOADS:
        pod = _pod(kind, name)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert f"--uid {pod['securityContext']['runAsUser']}" in dockerfile, name
        (container,) = pod["containers"]
        # the kustomization sets the tags; only what trains gets the image with a compiler
        assert container["image"] == ("altscore-trainer" if (kind, name) in trains else "altscore")
        command = container["command"]
        assert command[:2] == ["python", "-m"]
        assert importlib.util.find_spec(command[2]) is not None
        assert command[2] in copied, f"the image lacks {command[2]}"
        refs = [e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e]
        assert refs == ["altscore-settings"], name
        for env in container.get("env", []):
            assert not env["name"].startswith("ALTSCORE_") or env["name"] in known, env
    assert _pod("CronJob", "retrain")["containers"][0]["command"][2:] == ["training", "retrain"]
    assert _pod("Deployment", "archiver")["containers"][0]["command"][2:] == ["drift", "archive"]
    (drift,) = _pod("Deployment", "drift-worker")["containers"]
    assert drift["command"][2:] == ["drift", "run"]
    assert drift["ports"] == [{"name": "metrics", "containerPort": 9465}]
    env = {e["name"]: e["value"] for e in drift["env"]}
    assert env["ALTSCORE_RETRAIN_COMMAND"].split()[2:] == ["training", "retrain"]


def test_the_server_is_probed_reached_and_scaled_as_it_serves() -> None:
    defaults = ServerSettings()
    server = _one("Deployment", "scoring-server")
    labels = server["spec"]["template"]["metadata"]["labels"]
    assert server["spec"]["selector"]["matchLabels"] == labels
    (container,) = _pod("Deployment", "scoring-server")["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": defaults.grpc_port, "metrics": defaults.metrics_port}
    for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"),
                        ("livenessProbe", "/livez")):  # fmt: skip
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}, probe
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    config = _one("ConfigMap", "altscore-settings")["data"]
    assert config["ALTSCORE_STATE_DIR"] in mounts  # writable under a read-only root
    assert Path(config["ALTSCORE_TLS_CERT_FILE"]).parent.as_posix() in mounts
    service = _one("Service", "scoring-server")
    assert service["spec"]["clusterIP"] == "None"  # headless: client-side round robin
    assert service["spec"]["selector"] == labels
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"grpc", "metrics"}
    hpa = _one("HorizontalPodAutoscaler", "scoring-server")["spec"]
    assert hpa["scaleTargetRef"]["name"] == "scoring-server"
    assert hpa["minReplicas"] >= 2
    assert _one("PodDisruptionBudget", "scoring-server")["spec"]["selector"]["matchLabels"] == (
        labels
    )
