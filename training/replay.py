"""Decision replay: reproduce a logged decision from its prediction-log record and the registered
model version, or say exactly what differs.

A record holds the model's input vector as served (after feature-store enrichment and the spec's
transforms), the model name, version and the predictor that computed the PD. The replay loads
that version from the registry through the server's own loader (download, compile, the parity
and additivity gates), computes the PD with the same predictor, the score and decision with the
server's policy (``ALTSCORE_BASE_SCORE`` ... ``ALTSCORE_DECLINE_FROM``, read as the server reads
them) and, when the record was explained, the reason codes with the data plane's TreeSHAP and
reason choice. A PD more than :data:`PD_TOLERANCE` away, another score, decision or reason
list, a feature vector of the wrong length or a version the registry no longer has is reported
as a difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import polars as pl

from credit_core import CreditError, ModelRef

if TYPE_CHECKING:
    from credit_core.domain import ScoringPolicy
    from scoring_server.loader import LoadedModel

__all__ = ["PD_TOLERANCE", "Replayed", "as_served", "replay", "select_records"]

PD_TOLERANCE: Final = 1e-9
"""Largest |PD difference| a replay accepts as the same decision."""


@dataclass(frozen=True)
class Replayed:
    """One logged prediction and what the replay made of it."""

    request_id: str
    variant: str
    model: str
    logged: dict[str, Any]
    replayed: dict[str, Any]
    differences: list[str] = field(default_factory=list)

    @property
    def reproduced(self) -> bool:
        return not self.differences

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "variant": self.variant,
            "model": self.model,
            "reproduced": self.reproduced,
            "differences": self.differences,
            "logged": self.logged,
            "replayed": self.replayed,
        }


def select_records(
    predictions: pl.DataFrame, request_ids: Sequence[str], last: int | None
) -> pl.DataFrame:
    """The records to replay: every variant's prediction of ``request_ids`` (log order), or the
    ``last`` predictions logged."""
    if request_ids:
        return predictions.filter(pl.col("request_id").is_in(list(request_ids)))
    if last is not None:
        return predictions.tail(last)
    raise ValueError("give request ids or a number of last predictions")


Load = Callable[[str, str, str, str], "LoadedModel"]
"""``(model_name, version, variant, predictor)`` to the gated model."""


def replay(records: pl.DataFrame, load: Load, policy: ScoringPolicy) -> list[Replayed]:
    """Replay every record of ``records`` (:data:`credit_core.evaluation.PREDICTION_SCHEMA`)."""
    models: dict[tuple[str, str, str, str], LoadedModel | str] = {}
    out = []
    for row in records.iter_rows(named=True):
        predictor = row["predictor"] or "native"
        key = (row["model_name"], row["model_version"], row["variant"], predictor)
        if key not in models:
            try:
                models[key] = load(*key)
            except CreditError as e:
                models[key] = f"{row['model_name']} v{row['model_version']} cannot be loaded: {e}"
        out.append(_replay_one(row, models[key], predictor, policy))
    return out


def _replay_one(
    row: dict[str, Any], model: LoadedModel | str, predictor: str, policy: ScoringPolicy
) -> Replayed:
    logged = {
        "pd": row["pd"],
        "score": row["score"],
        "decision": row["decision"],
        "reasons": list(row["reasons"]),
        "predictor": predictor,
    }
    done = Replayed(
        row["request_id"],
        row["variant"],
        f"{row['model_name']} v{row['model_version']}",
        logged,
        {},
    )
    if isinstance(model, str):
        done.differences.append(model)
        return done
    features = row["features"]
    n = model.pipeline.n_features
    if len(features) != n:
        done.differences.append(
            f"the record has {len(features)} feature values, the model takes {n}"
            + (" (logged before records carried them)" if not features else "")
        )
        return done
    x = np.array([[math.nan if v is None else v for v in features]], dtype=np.float32)
    pd = float(model.serving.predict(x, predictor)[0])
    rule = policy.rule
    replayed: dict[str, Any] = {
        "pd": pd,
        "score": rule.score(pd),
        "decision": rule.decide(pd),
        "reasons": model.serving.reason_codes(x)[0] if logged["reasons"] else [],
    }
    done.replayed.update(replayed)
    if not abs(pd - row["pd"]) <= PD_TOLERANCE:
        done.differences.append(
            f"pd: logged {row['pd']!r}, replayed {pd!r} (|diff| {abs(pd - row['pd']):.3g} > "
            f"{PD_TOLERANCE:g})"
        )
    for name in ("score", "decision", "reasons"):
        if logged[name] != replayed[name]:
            done.differences.append(f"{name}: logged {logged[name]!r}, replayed {replayed[name]!r}")
    return done


def as_served(state_dir: Path, tracking_uri: str) -> tuple[Load, ScoringPolicy]:
    """How the server loads versions and scores: its settings (the same ``ALTSCORE_*``
    variables), its loader and gates, and its policy."""
    from credit_core.registry import MlflowRegistry
    from scoring_server.loader import ModelLoader
    from scoring_server.settings import ServerSettings

    server = ServerSettings(state_dir=state_dir, mlflow_tracking_uri=tracking_uri)
    registry = MlflowRegistry(tracking_uri)

    def load(name: str, version: str, variant: str, predictor: str) -> LoadedModel:
        loader = ModelLoader(
            registry,
            model_name=name,
            state_dir=server.state_dir,
            parity_tolerance=server.parity_tolerance,
            parallel_units=server.compile_parallel_units,
            reason_codes=server.reason_codes,
            additivity_tolerance=server.additivity_tolerance,
            predictor=predictor,
        )
        _, bundle_dir = loader.fetch_version(version)
        return loader.load_bundle(bundle_dir, ModelRef(name, version, variant))

    return load, server.policy()
