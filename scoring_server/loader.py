"""Loading a registered model for the data plane: download, schema check, compile (cached, in a
child process), then the gates (parity of every predictor with XGBoost, TreeSHAP additivity),
and the ``feature_kernels.ServingModel`` the data plane serves."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from credit_core import ModelBundle, ModelNotReady, ModelRef, ModelRejectedError, SchemaMismatch
from credit_core.registry import ModelRegistry, ModelVersionRef
from feature_kernels import (
    FeaturePipeline,
    ModelFormatError,
    ServingModel,
    SpecError,
    TreeEnsemble,
    load_spec,
    logistic,
)
from scoring_server.compile import Compiled, compiled_library
from scoring_server.model_info import model_info

__all__ = ["PREDICTORS", "EntityLookup", "LoadedModel", "ModelLoader"]

log = logging.getLogger(__name__)

ADDITIVITY_ROWS = 256
"""Reference rows whose explanations are checked at load (base + SHAP = XGBoost's margin)."""

PREDICTORS = ("native", "tl2cgen")
"""Every predictor the data plane can serve with; the parity gate checks all of them."""


@dataclass(frozen=True)
class EntityLookup:
    """What a model needs from the online feature store (from its spec's entity inputs)."""

    namespace: str
    inputs: tuple[str, ...]
    overridable: frozenset[str]
    categorical: frozenset[str]
    optional: bool

    @classmethod
    def of(cls, pipeline: FeaturePipeline) -> EntityLookup | None:
        spec = pipeline.spec
        names = tuple(spec.entity_inputs())
        if not names or spec.entity is None:
            return None
        return cls(
            namespace=spec.store_namespace(),
            inputs=names,
            overridable=frozenset(n for n in names if spec.inputs[n].overridable),
            categorical=frozenset(n for n in names if spec.inputs[n].type == "categorical"),
            optional=spec.entity.optional,
        )


@dataclass
class LoadedModel:
    """A gated model: what the data plane serves, and what the control plane knows of it."""

    ref: ModelRef
    bundle: ModelBundle
    pipeline: FeaturePipeline
    serving: ServingModel
    compiled: Compiled
    parity_max_abs_diff: float
    """Largest |PD - XGBoost's PD| of any predictor on the reference rows."""
    additivity_max_abs_diff: float
    """Largest |base + sum(SHAP) - XGBoost margin| on the reference rows checked at load."""
    entity: EntityLookup | None
    loaded_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


def reason_groups(pipeline: FeaturePipeline) -> list[tuple[str, str, list[int]]]:
    """``(code, text, model columns)`` per spec feature, in spec order: the one-hot columns of a
    feature are one reason."""
    columns: dict[str, list[int]] = {}
    texts: dict[str, str] = {}
    for i, (_, feature) in enumerate(pipeline.spec.output_features()):
        columns.setdefault(feature.name, []).append(i)
        texts[feature.name] = feature.reason
    return [(code, texts[code], cols) for code, cols in columns.items()]


class ModelLoader:
    def __init__(
        self,
        registry: ModelRegistry | None,
        *,
        model_name: str,
        state_dir: Path,
        parity_tolerance: float,
        parallel_units: int,
        reason_codes: int = 4,
        additivity_tolerance: float = 1e-4,
        predictor: str = "native",
    ) -> None:
        if predictor not in PREDICTORS:
            raise ValueError(f"predictor must be one of {PREDICTORS}, got {predictor!r}")
        self.registry = registry
        self.model_name = model_name
        state_dir = state_dir.resolve()  # MLflow answers with absolute paths
        self.models_dir = state_dir / "models"
        self.cache_dir = state_dir / "compiled"
        self.parity_tolerance = parity_tolerance
        self.parallel_units = parallel_units
        self.reason_codes = reason_codes
        self.additivity_tolerance = additivity_tolerance
        self.predictor = predictor

    def resolve(self, alias: str) -> ModelVersionRef:
        if self.registry is None:
            raise ModelNotReady("this process has no registry: it loads bundles it is given")
        ref = self.registry.get_alias(self.model_name, alias)
        if ref is None:
            raise ModelNotReady(
                f"no model {self.model_name!r} with alias {alias!r} in the registry"
            )
        return ref

    def fetch(self, alias: str) -> tuple[ModelVersionRef, Path]:
        """The version ``alias`` points at and its bundle directory (downloaded once)."""
        version = self.resolve(alias)
        return version, self._download(version)

    def fetch_version(self, version: str) -> tuple[ModelVersionRef, Path]:
        """A registered version by number and its bundle directory (downloaded once)."""
        if self.registry is None:
            raise ModelNotReady("this process has no registry: it loads bundles it is given")
        ref = self.registry.get_version(self.model_name, version)
        if ref is None:
            raise ModelNotReady(f"no version {version!r} of {self.model_name!r} in the registry")
        return ref, self._download(ref)

    def load(self, alias: str = "champion") -> LoadedModel:
        """Load the version ``alias`` points at. Raises ``ModelRejectedError`` when a gate fails."""
        version, bundle_dir = self.fetch(alias)
        return self.load_bundle(bundle_dir, ModelRef(self.model_name, version.version, alias))

    def load_bundle(self, bundle_dir: Path, ref: ModelRef) -> LoadedModel:
        """Load a downloaded bundle: spec and schema checks, compile (or reuse the cached
        library), the parity and additivity gates. Raises ``ModelRejectedError``."""
        version = ref.version
        bundle = ModelBundle.read(bundle_dir)
        try:
            pipeline = FeaturePipeline(load_spec(bundle.spec_path))
        except SpecError as e:
            raise ModelRejectedError(f"version {version}: bad feature spec: {e}") from e
        if pipeline.schema_hash != bundle.schema_hash:
            raise SchemaMismatch(
                f"version {version}: schema hash {bundle.schema_hash[:12]} does not match "
                f"its spec ({pipeline.schema_hash[:12]})"
            )
        if pipeline.feature_names != bundle.feature_names:
            raise SchemaMismatch(f"version {version}: feature names differ from its spec")
        compiled = compiled_library(bundle, self.cache_dir, self.parallel_units)
        try:
            ensemble = TreeEnsemble.from_json(bundle.booster_path.read_text())
        except (OSError, ModelFormatError) as e:
            raise ModelRejectedError(f"version {version}: native evaluator: {e}") from e
        if ensemble.n_features != pipeline.n_features:
            raise ModelRejectedError(
                f"version {version}: the booster has {ensemble.n_features} features, "
                f"the spec gives {pipeline.n_features}"
            )
        entity = EntityLookup.of(pipeline)

        def serving_model(library: Path) -> ServingModel:
            return ServingModel(
                pipeline.plan,
                ensemble,
                name=ref.name,
                version=version,
                variant="challenger" if ref.variant == "challenger" else "champion",
                reasons=reason_groups(pipeline),
                top_k=self.reason_codes,
                entity=None
                if entity is None
                else (
                    entity.namespace,
                    [(n, n in entity.overridable) for n in entity.inputs],
                    entity.optional,
                ),
                model_info=model_info(pipeline, bundle),
                compiled_library=library,
                predictor=self.predictor,
            )

        try:
            try:
                serving = serving_model(compiled.library)
            except OSError as e:
                if compiled.source != "bundle":
                    raise
                # built elsewhere and not loadable here (another C library): compile it here
                log.warning("the bundle's compiled library does not load here (%s)", e)
                compiled.library.unlink(missing_ok=True)
                compiled = compiled_library(
                    bundle, self.cache_dir, self.parallel_units, use_shipped=False
                )
                serving = serving_model(compiled.library)
        except (OSError, ValueError) as e:
            raise ModelRejectedError(f"version {version}: {e}") from e
        reference = bundle.reference()
        expected = logistic(reference.margin)
        diffs = {
            p: float(np.max(np.abs(serving.predict(reference.features, p) - expected)))
            for p in PREDICTORS
        }
        diff = max(diffs.values())
        if not diff <= self.parity_tolerance:  # NaN fails too
            worst = max(diffs, key=lambda p: diffs[p])
            raise ModelRejectedError(
                f"version {version}: {worst} predictions differ from XGBoost's by "
                f"{diff:.3g} > {self.parity_tolerance:g} on {len(expected)} reference rows"
            )
        rows = np.ascontiguousarray(reference.features[:ADDITIVITY_ROWS], dtype=np.float32)
        base, values = ensemble.shap(rows)
        additivity = float(
            np.max(np.abs(base + values.sum(axis=1) - reference.margin[:ADDITIVITY_ROWS]))
        )
        if not additivity <= self.additivity_tolerance:
            raise ModelRejectedError(
                f"version {version}: TreeSHAP base + contributions differ from XGBoost's margin "
                f"by {additivity:.3g} > {self.additivity_tolerance:g} on {len(rows)} reference rows"
            )
        log.info(
            "loaded %s version %s (%s): parity max |diff| %.3g on %d rows (%s), "
            "SHAP additivity %.3g; serving with the %s predictor",
            ref.name,
            version,
            ref.variant,
            diff,
            len(expected),
            ", ".join(f"{p} {d:.2g}" for p, d in diffs.items()),
            additivity,
            self.predictor,
        )
        return LoadedModel(
            ref=ref,
            bundle=bundle,
            pipeline=pipeline,
            serving=serving,
            compiled=compiled,
            parity_max_abs_diff=diff,
            additivity_max_abs_diff=additivity,
            entity=entity,
        )

    def _download(self, version: ModelVersionRef) -> Path:
        target = self.models_dir / f"{self.model_name}-v{version.version}"
        bundle_dir = target / "model"
        if not (bundle_dir / "metadata.json").is_file():
            tmp = target.with_name(target.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            if self.registry is None:
                raise ModelNotReady("this process has no registry to download from")
            path = self.registry.download(version, tmp)
            if path.resolve() != (tmp / "model").resolve():
                raise ModelRejectedError(f"version {version.version}: unexpected layout {path}")
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
        return bundle_dir
