"""Retraining: a challenger from the latest data, trained the way the champion was.

``python -m training retrain [--data PATH]`` downloads the champion's bundle, trains on ``PATH``
(default: the data the default model trains on) with the champion's feature spec and its
hyper-parameters, registers the new version, and gives it the ``challenger`` alias only when its
holdout gates pass (``ALTSCORE_MIN_AUC``). A challenger is then scored in **shadow** (every
request scored by both, the caller always answered by the champion), so outcome evidence
accumulates without touching a decision; promotion stays with ``python -m training promote`` and
its evidence rule. A failed gate leaves aliases and routing as they were.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from credit_core import ModelBundle, ModelNotReady, Routing
from credit_core.registry import CHALLENGER, CHAMPION
from training.run import TrainOutcome, train_and_register
from training.settings import TrainingSettings
from training.train import TrainParams

__all__ = ["RetrainOutcome", "champion_params", "retrain"]


@dataclass(frozen=True)
class RetrainOutcome:
    champion_version: str
    trained: TrainOutcome
    routing: Routing
    """The routing after the retrain (shadow when the challenger was registered)."""

    @property
    def challenger_set(self) -> bool:
        return self.trained.champion_set


def champion_params(bundle: ModelBundle) -> TrainParams:
    """The hyper-parameters the champion was trained with (the defaults for any it lacks)."""
    recorded = bundle.metadata.get("training", {}).get("params", {})
    values = {
        name: recorded[f"train.{name}"]
        for name in TrainParams.model_fields
        if f"train.{name}" in recorded
    }
    return TrainParams.model_validate(values)


def retrain(
    settings: TrainingSettings, *, data_path: Path, console: Console | None = None
) -> RetrainOutcome:
    """Train a challenger on ``data_path`` as the champion was trained (see the module docs).
    Raises ``ModelNotReady`` when the model has no champion."""
    console = console or Console(stderr=True)
    registry = settings.registry()
    name = settings.model_name
    champion = registry.get_alias(name, CHAMPION)
    if champion is None:
        raise ModelNotReady(f"{name} has no {CHAMPION}: train one first (nothing to retrain)")
    with tempfile.TemporaryDirectory(prefix="altscore-retrain-") as tmp:
        bundle = ModelBundle.read(registry.download(champion, Path(tmp) / "champion"))
        console.log(
            f"retraining {name} v{champion.version} ({bundle.metadata.get('spec_name')} "
            f"v{bundle.metadata.get('spec_version')}) on {data_path}"
        )
        outcome = train_and_register(
            settings,
            spec_path=bundle.spec_path,
            data_path=data_path,
            params=champion_params(bundle),
            champion="always",
            alias=CHALLENGER,
            console=console,
        )
    routing = registry.routing(name)
    if outcome.champion_set:
        routing = Routing("shadow", routing.challenger_share)
        registry.set_routing(name, routing)
    return RetrainOutcome(champion.version, outcome, routing)
