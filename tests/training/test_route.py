"""``python -m training route``: the routing tags servers watch, set and read on a real MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest

from credit_core import Routing
from credit_core.registry import ROUTING_MODE_TAG, ROUTING_SHARE_TAG, MlflowRegistry
from scoring_server.control import read_routing
from tests.conftest import MODEL_NAME, registry_at
from training.__main__ import main


@pytest.fixture
def registry(tmp_path: Path) -> MlflowRegistry:
    registry = registry_at(tmp_path)
    registry.client.create_registered_model(MODEL_NAME)
    return registry


def route(tmp_path: Path, *args: str) -> int:
    return main(["route", "--state-dir", str(tmp_path), "--model-name", MODEL_NAME, *args])


def test_route_sets_and_shows(
    tmp_path: Path, registry: MlflowRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    assert registry.routing(MODEL_NAME) == Routing()  # no tags: off
    assert route(tmp_path, "--mode", "split", "--share", "0.1") == 0
    assert registry.routing(MODEL_NAME) == Routing("split", 0.1)
    assert route(tmp_path, "--mode", "shadow") == 0  # keeps the share
    assert registry.routing(MODEL_NAME) == Routing("shadow", 0.1)
    assert route(tmp_path) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"{MODEL_NAME}: routing shadow, challenger share 0.1"
    )


@pytest.mark.parametrize(
    "args",
    [
        ("--mode", "split"),  # split needs a share
        ("--share", "0.2"),  # a share needs a mode
        ("--mode", "split", "--share", "1.5"),  # not a share
    ],
)
def test_route_refuses_bad_settings(
    tmp_path: Path, registry: MlflowRegistry, args: tuple[str, ...]
) -> None:
    registry.set_routing(MODEL_NAME, Routing("split", 0.05))
    assert route(tmp_path, *args) == 2
    assert registry.routing(MODEL_NAME) == Routing("split", 0.05)  # unchanged


def test_route_unknown_model_fails(tmp_path: Path) -> None:
    assert route(tmp_path, "--mode", "shadow") == 2


def test_bad_tag_means_off_for_servers(registry: MlflowRegistry) -> None:
    registry.set_model_tag(MODEL_NAME, ROUTING_MODE_TAG, "canary")
    with pytest.raises(ValueError, match="canary"):
        registry.routing(MODEL_NAME)
    assert read_routing(registry.model_tags(MODEL_NAME), MODEL_NAME) == Routing()
    registry.set_model_tag(MODEL_NAME, ROUTING_MODE_TAG, "split")
    registry.set_model_tag(MODEL_NAME, ROUTING_SHARE_TAG, "ten percent")
    assert read_routing(registry.model_tags(MODEL_NAME), MODEL_NAME) == Routing()
