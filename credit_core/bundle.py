"""The model bundle: the directory a training run registers and a server loads.

Layout::

    booster.json     XGBoost model (JSON)
    spec.yaml        the feature spec the model was trained on: a verbatim copy, or the spec as
                     fitted when it learns from data (``frequency_rank`` -> ``ordinal`` maps)
    reference.npz    features (float32 [n, k]) and XGBoost's margins (float64 [n]) for parity gates
                     and, later, drift
    calibration.npz  PD -> observed default rate on the holdout (isotonic knots), for the drift
                     worker's label-free performance estimate (bundles from before it: absent)
    metadata.json    spec name/version, schema hash, feature names, metrics, training details
    compiled/        the TL2cgen library of the booster for the training host's architecture and
                     its sha256 (``<booster sha256>-tl2cgen<version>-<machine>.so`` / ``.json``):
                     what a server without a C compiler loads (:mod:`scoring_server.compile`)
    entities.parquet (specs with entity inputs) every entity's features as of training: fills the
                     embedded online store of a laptop run
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from credit_core.errors import ModelRejectedError
from credit_core.performance import Calibration

__all__ = ["ModelBundle", "ReferenceSample"]

BOOSTER = "booster.json"
SPEC = "spec.yaml"
REFERENCE = "reference.npz"
CALIBRATION = "calibration.npz"
METADATA = "metadata.json"
ENTITIES = "entities.parquet"
ENTITY_ID = "entity_id"
"""The id column of the entity snapshot."""


@dataclass(frozen=True)
class ReferenceSample:
    """Model inputs and XGBoost's own outputs on them (margin = log-odds)."""

    features: npt.NDArray[np.float32]
    margin: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.margin.shape != (self.features.shape[0],):
            raise ValueError("reference sample: features must be [n, k] and margin [n]")


@dataclass(frozen=True)
class ModelBundle:
    """What a registered model version carries."""

    path: Path
    metadata: dict[str, Any] = field(repr=False)

    @property
    def booster_path(self) -> Path:
        return self.path / BOOSTER

    @property
    def spec_path(self) -> Path:
        return self.path / SPEC

    @property
    def entities_path(self) -> Path | None:
        p = self.path / ENTITIES
        return p if p.is_file() else None

    @property
    def schema_hash(self) -> str:
        return str(self.metadata["schema_hash"])

    @property
    def feature_names(self) -> list[str]:
        return [str(n) for n in self.metadata["feature_names"]]

    @property
    def model_hash(self) -> str:
        """sha256 of the booster file: the key of the compiled-library cache."""
        return hashlib.sha256(self.booster_path.read_bytes()).hexdigest()

    def reference(self) -> ReferenceSample:
        with np.load(self.path / REFERENCE) as z:
            return ReferenceSample(
                features=z["features"].astype(np.float32, copy=False),
                margin=z["margin"].astype(np.float64, copy=False),
            )

    def calibration(self) -> Calibration | None:
        """The holdout's PD calibration (None in a bundle written before it was stored)."""
        path = self.path / CALIBRATION
        if not path.is_file():
            return None
        with np.load(path) as z:
            try:
                return Calibration(
                    z["knots_pd"].astype(np.float64), z["knots_rate"].astype(np.float64)
                )
            except (KeyError, ValueError) as e:
                raise ModelRejectedError(f"model bundle {self.path}: bad calibration: {e}") from e

    @classmethod
    def write(
        cls,
        path: Path,
        *,
        booster_json: bytes,
        spec_file: Path,
        spec_text: str | None = None,
        reference: ReferenceSample,
        metadata: dict[str, Any],
        calibration: Calibration | None = None,
    ) -> ModelBundle:
        path.mkdir(parents=True, exist_ok=True)
        (path / BOOSTER).write_bytes(booster_json)
        if spec_text is None:
            shutil.copyfile(spec_file, path / SPEC)
        else:
            (path / SPEC).write_text(spec_text, encoding="utf-8")
        np.savez_compressed(path / REFERENCE, features=reference.features, margin=reference.margin)
        if calibration is not None:
            np.savez_compressed(
                path / CALIBRATION,
                knots_pd=calibration.knots_pd,
                knots_rate=calibration.knots_rate,
            )
        (path / METADATA).write_text(json.dumps(metadata, indent=2, sort_keys=True))
        return cls.read(path)

    @classmethod
    def read(cls, path: Path) -> ModelBundle:
        """Open a bundle directory; a missing part or unreadable metadata is a rejection."""
        missing = [n for n in (BOOSTER, SPEC, REFERENCE, METADATA) if not (path / n).is_file()]
        if missing:
            raise ModelRejectedError(f"model bundle {path} lacks {', '.join(missing)}")
        try:
            metadata = json.loads((path / METADATA).read_text())
        except (OSError, ValueError) as e:
            raise ModelRejectedError(f"model bundle {path}: unreadable metadata: {e}") from e
        for key in ("schema_hash", "feature_names", "spec_name", "spec_version"):
            if key not in metadata:
                raise ModelRejectedError(f"model bundle {path}: metadata lacks {key!r}")
        return cls(path=path, metadata=metadata)
