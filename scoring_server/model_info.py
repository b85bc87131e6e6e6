"""What ``GetModelInfo`` says about a model: built once per load from its spec and bundle, then
handed to the data plane, which answers the RPC."""

from __future__ import annotations

import math
from collections.abc import Mapping

from credit_core import ModelBundle
from feature_kernels import FeaturePipeline
from scoring_server.grpc._proto import scoring_pb2 as pb

__all__ = ["model_info"]

_INPUT_TYPE = {
    "number": pb.INPUT_TYPE_NUMBER,
    "integer": pb.INPUT_TYPE_INTEGER,
    "categorical": pb.INPUT_TYPE_CATEGORICAL,
}


def _inputs(pipeline: FeaturePipeline) -> list[pb.InputInfo]:
    spec = pipeline.spec
    categories: dict[str, list[str]] = {}
    for f in spec.features:
        if f.input is not None and (f.categories or f.mapping):
            known = categories.setdefault(f.input, [])
            known.extend(c for c in (f.categories or list(f.mapping or {})) if c not in known)
    out = []
    for name, d in spec.inputs.items():
        info = pb.InputInfo(
            name=name,
            type=_INPUT_TYPE[d.type],
            required=d.required,
            description=d.description,
            categories=categories.get(name, []),
        )
        if d.range is not None:
            lo, hi = d.range
            if lo is not None:
                info.min = lo
            if hi is not None:
                info.max = hi
        out.append(info)
    return out


def model_info(pipeline: FeaturePipeline, bundle: ModelBundle) -> bytes:
    """The serialized ``credit.scoring.v1.ModelInfo`` of a model (its ``model`` field is set by
    the data plane, which knows the variant it serves it as)."""
    metrics: Mapping[str, object] = bundle.metadata.get("metrics", {})
    return pb.ModelInfo(
        spec_name=pipeline.spec.name,
        spec_version=pipeline.spec.version,
        schema_hash=pipeline.schema_hash,
        inputs=_inputs(pipeline),
        features=pipeline.feature_names,
        metrics={
            k: float(v)
            for k, v in metrics.items()
            if isinstance(v, int | float) and math.isfinite(float(v))
        },
    ).SerializeToString()
