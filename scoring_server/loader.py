"""Loading a registered model: download, schema check, compile (cached), parity gate."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from credit_core import ModelBundle, ModelNotReady, ModelRef, ModelRejectedError, SchemaMismatch
from credit_core.registry import ModelRegistry, ModelVersionRef
from feature_kernels import FeaturePipeline, FeatureSpec, SpecError, load_spec
from scoring_server.explain import Explainer
from scoring_server.runtime import CompiledModel

__all__ = ["EntityLookup", "LoadedModel", "ModelLoader"]

log = logging.getLogger(__name__)

ADDITIVITY_ROWS = 256
"""Reference rows whose explanations are checked at load (base + SHAP = XGBoost's margin)."""


@dataclass(frozen=True)
class EntityLookup:
    """What a model needs from the online feature store (from its spec's entity inputs)."""

    namespace: str
    inputs: tuple[str, ...]
    overridable: frozenset[str]
    categorical: frozenset[str]
    optional: bool

    @classmethod
    def of(cls, spec: FeatureSpec) -> EntityLookup | None:
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
    """A model ready to serve: its spec pipeline and its compiled runtime."""

    ref: ModelRef
    bundle: ModelBundle
    pipeline: FeaturePipeline
    runtime: CompiledModel
    parity_max_abs_diff: float
    explainer: Explainer
    additivity_max_abs_diff: float
    """Largest |base + sum(SHAP) - XGBoost margin| on the reference rows checked at load."""
    loaded_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def entity(self) -> EntityLookup | None:
        return self._entity

    def __post_init__(self) -> None:
        self._entity = EntityLookup.of(self.pipeline.spec)


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
    ) -> None:
        self.registry = registry
        self.model_name = model_name
        state_dir = state_dir.resolve()  # MLflow answers with absolute paths
        self.models_dir = state_dir / "models"
        self.cache_dir = state_dir / "compiled"
        self.parity_tolerance = parity_tolerance
        self.parallel_units = parallel_units
        self.reason_codes = reason_codes
        self.additivity_tolerance = additivity_tolerance

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

    def load(self, alias: str = "champion") -> LoadedModel:
        """Load the version ``alias`` points at. Raises ``ModelRejectedError`` when a gate fails."""
        version, bundle_dir = self.fetch(alias)
        return self.load_bundle(bundle_dir, ModelRef(self.model_name, version.version, alias))

    def load_bundle(self, bundle_dir: Path, ref: ModelRef) -> LoadedModel:
        """Load a downloaded bundle without the registry (what serving workers do): spec and
        schema checks, compile (or reuse the cached library), parity gate."""
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
        runtime = CompiledModel.build(bundle, self.cache_dir, self.parallel_units)
        reference = bundle.reference()
        expected = 1.0 / (1.0 + np.exp(-reference.margin))
        diff = max(  # the native evaluator (serves) and the compiled library (cross-check) pass
            float(np.max(np.abs(runtime.predict_rows(reference.features) - expected))),
            float(np.max(np.abs(runtime.predict_batch(reference.features) - expected))),
        )
        if not diff <= self.parity_tolerance:  # NaN fails too
            runtime.unload()
            raise ModelRejectedError(
                f"version {version}: compiled predictions differ from XGBoost's by "
                f"{diff:.3g} > {self.parity_tolerance:g} on {len(expected)} reference rows"
            )
        if runtime.ensemble is None:
            runtime.unload()
            raise ModelRejectedError(f"version {version}: no native evaluator to explain with")
        explainer = Explainer(runtime.ensemble, pipeline, self.reason_codes)
        rows = reference.features[:ADDITIVITY_ROWS]
        base, values = explainer.contributions(rows)
        additivity = float(
            np.max(np.abs(base + values.sum(axis=1) - reference.margin[:ADDITIVITY_ROWS]))
        )
        if not additivity <= self.additivity_tolerance:
            runtime.unload()
            raise ModelRejectedError(
                f"version {version}: TreeSHAP base + contributions differ from XGBoost's margin "
                f"by {additivity:.3g} > {self.additivity_tolerance:g} on {len(rows)} reference rows"
            )
        log.info(
            "loaded %s version %s (%s): parity max |diff| %.3g on %d rows, SHAP additivity %.3g",
            ref.name,
            version,
            ref.variant,
            diff,
            len(expected),
            additivity,
        )
        return LoadedModel(
            ref=ref,
            bundle=bundle,
            pipeline=pipeline,
            runtime=runtime,
            parity_max_abs_diff=diff,
            explainer=explainer,
            additivity_max_abs_diff=additivity,
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
