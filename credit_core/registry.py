"""The model registry: MLflow (a local sqlite store and artifact folder by default).

MLflow exceptions never leave this module: they become ``RegistryError``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from credit_core.domain import ROUTING_MODES, Routing
from credit_core.errors import RegistryError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

__all__ = [
    "ARCHIVED",
    "CHALLENGER",
    "CHAMPION",
    "ROUTING_MODE_TAG",
    "ROUTING_SHARE_TAG",
    "ChildRun",
    "MlflowRegistry",
    "ModelRegistry",
    "ModelVersionRef",
    "Promotion",
    "local_tracking_uri",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelVersionRef:
    name: str
    version: str
    source: str
    run_id: str | None


CHAMPION = "champion"
CHALLENGER = "challenger"
ARCHIVED = "archived"
"""Alias of the champion a promotion replaced."""
ROUTING_MODE_TAG = "altscore.routing.mode"
"""Registered-model tag: ``off`` | ``split`` | ``shadow`` (absent: ``off``)."""
ROUTING_SHARE_TAG = "altscore.routing.challenger_share"
"""Registered-model tag: share of applicants the challenger answers in ``split`` mode (0..1)."""


@dataclass(frozen=True, slots=True)
class ChildRun:
    """A run logged under another (a tuning trial under its training run)."""

    name: str
    params: Mapping[str, Any]
    metrics: Mapping[str, float]
    tags: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Promotion:
    """What :meth:`MlflowRegistry.promote` did: ``champion`` is the promoted version,
    ``archived`` the former champion (None when there was none)."""

    name: str
    champion: ModelVersionRef
    archived: ModelVersionRef | None


@dataclass(frozen=True, slots=True)
class ModelState:
    """One read of a registered model: its aliases (alias -> version) and its tags."""

    aliases: Mapping[str, str]
    tags: Mapping[str, str]


def routing_from_tags(tags: Mapping[str, str]) -> Routing:
    """How traffic meets the challenger, from a model's routing tags. Raises ``ValueError``
    naming the tag when one holds a bad value."""
    mode = tags.get(ROUTING_MODE_TAG, "off").strip().lower()
    if mode not in ROUTING_MODES:
        raise ValueError(f"{ROUTING_MODE_TAG}={mode!r}: expected one of {ROUTING_MODES}")
    share_text = tags.get(ROUTING_SHARE_TAG, "0").strip()
    try:
        share = float(share_text)
    except ValueError:
        raise ValueError(f"{ROUTING_SHARE_TAG}={share_text!r}: not a number") from None
    return Routing(mode, share)  # type: ignore[arg-type]  # checked above


class ModelRegistry(Protocol):
    def get_alias(self, name: str, alias: str) -> ModelVersionRef | None: ...
    def get_version(self, name: str, version: str) -> ModelVersionRef | None: ...
    def set_alias(self, name: str, alias: str, version: str) -> None: ...
    def download(self, ref: ModelVersionRef, dst: Path) -> Path: ...


def local_tracking_uri(root: Path) -> str:
    """The default laptop store: ``<root>/mlflow.db`` (sqlite)."""
    return f"sqlite:///{root.resolve() / 'mlflow.db'}"


@contextmanager
def _mapped(what: str) -> Iterator[None]:
    try:
        yield
    except RegistryError:
        raise
    except Exception as e:  # MLflow raises many types: all are a registry failure to us
        raise RegistryError(f"MLflow {what} failed: {type(e).__name__}: {e}") from e


class MlflowRegistry:
    """Registry and tracking on one MLflow store."""

    def __init__(self, tracking_uri: str, artifact_root: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            with _mapped("connect"):
                from mlflow import MlflowClient

                self._client = MlflowClient(
                    tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
                )
        return self._client

    def experiment_id(self, name: str) -> str:
        with _mapped("experiment lookup"):
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                return str(exp.experiment_id)
            location = self.artifact_root.resolve().as_uri() if self.artifact_root else None
            return str(self.client.create_experiment(name, artifact_location=location))

    def log_run(
        self,
        experiment: str,
        *,
        run_name: str,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        artifacts: Mapping[str, Path],
        tags: Mapping[str, str],
    ) -> str:
        """Log one training run; ``artifacts`` maps an artifact path to a local folder."""
        with _mapped("run logging"):
            exp_id = self.experiment_id(experiment)
            run = self.client.create_run(exp_id, run_name=run_name, tags=dict(tags))
            run_id = str(run.info.run_id)
            try:
                for k, v in params.items():
                    self.client.log_param(run_id, k, v)
                for k, m in metrics.items():
                    self.client.log_metric(run_id, k, float(m))
                for artifact_path, folder in artifacts.items():
                    self.client.log_artifacts(run_id, str(folder), artifact_path)
            except Exception:
                self.client.set_terminated(run_id, status="FAILED")
                raise
            self.client.set_terminated(run_id, status="FINISHED")
            return run_id

    def artifact_uri(self, run_id: str) -> str:
        """Where a run's artifacts are (a ``file://`` folder for a local store)."""
        with _mapped("run lookup"):
            return str(self.client.get_run(run_id).info.artifact_uri)

    def log_child_runs(self, experiment: str, parent_run_id: str, runs: Sequence[ChildRun]) -> None:
        """Log ``runs`` as finished children of ``parent_run_id`` (MLflow nests them under it
        in its UI): one batch call per run."""
        with _mapped("child run logging"):
            from mlflow.entities import Metric, Param, RunTag

            exp_id = self.experiment_id(experiment)
            now = int(time.time() * 1000)
            for child in runs:
                tags = {**child.tags, "mlflow.parentRunId": parent_run_id}
                run = self.client.create_run(exp_id, run_name=child.name, tags=tags)
                run_id = str(run.info.run_id)
                self.client.log_batch(
                    run_id,
                    metrics=[Metric(k, float(v), now, 0) for k, v in child.metrics.items()],
                    params=[Param(k, str(v)) for k, v in child.params.items()],
                    tags=[RunTag(k, v) for k, v in tags.items()],
                )
                self.client.set_terminated(run_id, status="FINISHED")

    def register(
        self, name: str, run_id: str, artifact_path: str, tags: Mapping[str, str]
    ) -> ModelVersionRef:
        with _mapped("model registration"):
            from mlflow.exceptions import MlflowException

            try:
                self.client.get_registered_model(name)
            except MlflowException:
                self.client.create_registered_model(name)
            run = self.client.get_run(run_id)
            source = f"{run.info.artifact_uri}/{artifact_path}"
            mv = self.client.create_model_version(name, source, run_id=run_id, tags=dict(tags))
            return ModelVersionRef(name, str(mv.version), str(mv.source), run_id)

    def get_alias(self, name: str, alias: str) -> ModelVersionRef | None:
        """The version an alias points at, or None when the model or alias does not exist."""
        return self._version(
            name, "alias lookup", lambda: self.client.get_model_version_by_alias(name, alias)
        )

    def get_version(self, name: str, version: str) -> ModelVersionRef | None:
        """A registered version by its number, or None when it does not exist."""
        return self._version(
            name, "version lookup", lambda: self.client.get_model_version(name, version)
        )

    def _version(
        self, name: str, what: str, lookup: Callable[[], ModelVersion]
    ) -> ModelVersionRef | None:
        with _mapped(what):
            from mlflow.exceptions import MlflowException

            try:
                mv = lookup()
            except MlflowException as e:
                if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    return None
                raise
            return ModelVersionRef(name, str(mv.version), str(mv.source), mv.run_id)

    def model_state(self, name: str) -> ModelState:
        """The model's aliases and tags in one read (empty when the model does not exist): what
        a server watching the registry asks for at every poll."""
        with _mapped("model lookup"):
            from mlflow.exceptions import MlflowException

            try:
                model = self.client.get_registered_model(name)
            except MlflowException as e:
                if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return ModelState({}, {})
                raise
            aliases = {str(a): str(v) for a, v in (model.aliases or {}).items()}
            return ModelState(aliases, dict(model.tags))

    def model_tags(self, name: str) -> dict[str, str]:
        """Tags of the registered model (empty when it does not exist)."""
        return dict(self.model_state(name).tags)

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        with _mapped("model tag update"):
            self.client.set_registered_model_tag(name, key, value)

    def routing(self, name: str) -> Routing:
        """How traffic meets the challenger, from the model's routing tags. Raises
        ``ValueError`` naming the tag when one holds a bad value."""
        return routing_from_tags(self.model_tags(name))

    def set_routing(self, name: str, routing: Routing) -> None:
        """Servers watching ``name`` apply it within their registry poll interval."""
        self.set_model_tag(name, ROUTING_SHARE_TAG, repr(routing.challenger_share))
        self.set_model_tag(name, ROUTING_MODE_TAG, routing.mode)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        with _mapped("alias update"):
            self.client.set_registered_model_alias(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove ``alias``; nothing happens when the model has no such alias."""
        with _mapped("alias removal"):
            self.client.delete_registered_model_alias(name, alias)

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        with _mapped("version tag update"):
            self.client.set_model_version_tag(name, version, key, value)

    def promote(
        self,
        name: str,
        *,
        expected_version: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Promotion:
        """Make the challenger the champion: ``archived`` -> the current champion's version,
        ``champion`` -> the challenger's version, then remove ``challenger``. In this order a
        server watching the aliases always finds a champion (for a moment both aliases name the
        new version). ``archived`` keeps only the latest former champion. ``tags`` go on the new
        champion's version.

        Raises ``RegistryError`` when there is no challenger, when it already is the champion,
        or when it no longer points at ``expected_version`` (the version the evidence was for).
        """
        with _mapped("promotion"):
            challenger = self.get_alias(name, CHALLENGER)
            if challenger is None:
                raise RegistryError(f"{name!r} has no {CHALLENGER!r} alias: nothing to promote")
            if expected_version is not None and challenger.version != expected_version:
                raise RegistryError(
                    f"{name}@{CHALLENGER} is version {challenger.version}, not "
                    f"{expected_version} as expected: compare again"
                )
            champion = self.get_alias(name, CHAMPION)
            if champion is not None and champion.version == challenger.version:
                raise RegistryError(
                    f"{name}@{CHALLENGER} is version {challenger.version}, already the champion"
                )
            if champion is not None:
                self.set_alias(name, ARCHIVED, champion.version)
            self.set_alias(name, CHAMPION, challenger.version)
            self.delete_alias(name, CHALLENGER)
            for key, value in (tags or {}).items():
                self.set_version_tag(name, challenger.version, key, value)
            log.info(
                "promoted %s version %s to %s (former champion: %s)",
                name,
                challenger.version,
                CHAMPION,
                champion.version if champion else "none",
            )
            return Promotion(name, challenger, champion)

    def download(self, ref: ModelVersionRef, dst: Path) -> Path:
        with _mapped("artifact download"):
            from mlflow.artifacts import download_artifacts

            dst.mkdir(parents=True, exist_ok=True)
            return Path(
                download_artifacts(
                    artifact_uri=ref.source, dst_path=str(dst), tracking_uri=self.tracking_uri
                )
            )
