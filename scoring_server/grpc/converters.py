"""The only code that sees both protobuf and domain types: ``to_domain`` and ``to_pb``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np
from google.protobuf.message import DecodeError, Message

from credit_core import (
    Decision,
    Explanation,
    InvalidRequestError,
    ModelRef,
    ScoreResult,
    ScoringPolicy,
)
from credit_core.domain import DECISIONS
from feature_kernels import FeaturePipeline, encode_score_responses
from scoring_server.grpc._proto import scoring_pb2 as pb
from scoring_server.loader import LoadedModel
from scoring_server.service import FeatureBatch, OutcomeReport, ScoredBatch, ScoringRequest

__all__ = [
    "decode_features",
    "encode_scored",
    "model_info_to_pb",
    "outcome_to_domain",
    "parse",
    "to_domain",
    "to_pb",
    "variant_code",
]

_DECISION = {
    Decision.APPROVE: pb.DECISION_APPROVE,
    Decision.REVIEW: pb.DECISION_REVIEW,
    Decision.DECLINE: pb.DECISION_DECLINE,
}
_VARIANT = {"champion": pb.VARIANT_CHAMPION, "challenger": pb.VARIANT_CHALLENGER}
_INPUT_TYPE = {
    "number": pb.INPUT_TYPE_NUMBER,
    "integer": pb.INPUT_TYPE_INTEGER,
    "categorical": pb.INPUT_TYPE_CATEGORICAL,
}


_M = TypeVar("_M", bound=Message)
_DECISION_CODES = np.array(
    [_DECISION[d] for d in DECISIONS], dtype=np.int32
)  # ScoringPolicy.decision_codes -> wire enum


def variant_code(variant: str) -> pb.Variant:
    """The ``credit.scoring.v1.Variant`` number of a variant name."""
    return _VARIANT.get(variant, pb.VARIANT_UNSPECIFIED)


def parse(message_type: type[_M], data: bytes) -> _M:
    """A request message from its bytes; malformed bytes are bad input, not an internal error."""
    try:
        return message_type.FromString(data)
    except DecodeError as e:
        raise InvalidRequestError(
            [("request", f"not a valid {message_type.DESCRIPTOR.name} message: {e}")]
        ) from e


def decode_features(model: LoadedModel, data: bytes, *, batch: bool) -> FeatureBatch | None:
    """``ScoreRequest`` / ``ScoreBatchRequest`` bytes straight to the model's feature matrix
    (native decoder, same validation as ``to_domain`` + the kernels). None when a request asks
    for an explanation (that takes the general path)."""
    name = "ScoreBatchRequest" if batch else "ScoreRequest"
    try:
        ids, applicants, explain, matrix, violations = model.pipeline.decode_score_requests(
            data, batch=batch
        )
    except ValueError as e:
        raise InvalidRequestError([("request", f"not a valid {name} message: {e}")]) from e
    if any(explain):
        return None
    return FeatureBatch(ids, applicants, matrix, violations)


def encode_scored(scored: ScoredBatch, *, batch: bool) -> bytes:
    """``ScoreBatchResponse`` (``batch``) or ``ScoreResponse`` bytes, encoded natively."""
    m = scored.model
    return encode_score_responses(
        list(scored.request_ids),
        scored.pd,
        scored.score,
        _DECISION_CODES[scored.decision],
        m.name,
        m.version,
        variant_code(m.variant),
        batch,
    )


def to_domain(request: pb.ScoreRequest) -> ScoringRequest:
    a = request.applicant
    return ScoringRequest(
        request_id=request.request_id,
        applicant_id=a.applicant_id,
        numeric=dict(a.numeric),
        categorical=dict(a.categorical),
        explain=request.explain,
        numeric_values=tuple(a.numeric_values),
    )


def outcome_to_domain(outcome: pb.Outcome) -> OutcomeReport:
    return OutcomeReport(
        request_id=outcome.request_id,
        applicant_id=outcome.applicant_id,
        defaulted=outcome.defaulted,
        observed_at=outcome.observed_at,
    )


def model_ref_to_pb(ref: ModelRef) -> pb.ModelRef:
    return pb.ModelRef(
        name=ref.name,
        version=ref.version,
        variant=variant_code(ref.variant),
    )


def to_pb(result: ScoreResult) -> pb.ScoreResponse:
    return pb.ScoreResponse(
        request_id=result.request_id,
        pd=result.pd,
        score=result.score,
        decision=_DECISION[result.decision],
        model=model_ref_to_pb(result.model),
        defaulted_features=result.defaulted,
        degraded=result.degraded,
        explanation=_explanation_to_pb(result.explanation),
    )


def _explanation_to_pb(e: Explanation | None) -> pb.Explanation | None:
    if e is None:
        return None
    return pb.Explanation(
        base_value=e.base_value,
        contributions=[
            pb.FeatureContribution(feature=f, contribution=c) for f, c in e.contributions
        ],
        reasons=[
            pb.ReasonCode(code=r.code, text=r.text, contribution=r.contribution) for r in e.reasons
        ],
    )


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


def model_info_to_pb(
    models: Sequence[LoadedModel], policy: ScoringPolicy
) -> pb.GetModelInfoResponse:
    response = pb.GetModelInfoResponse(
        policy=pb.ScorePolicy(
            base_score=policy.base_score,
            base_odds=policy.base_odds,
            pdo=policy.pdo,
            approve_below=policy.approve_below,
            decline_from=policy.decline_from,
        )
    )
    for model in models:
        metrics: Mapping[str, object] = model.bundle.metadata.get("metrics", {})
        response.models.append(
            pb.ModelInfo(
                model=model_ref_to_pb(model.ref),
                spec_name=model.pipeline.spec.name,
                spec_version=model.pipeline.spec.version,
                schema_hash=model.pipeline.schema_hash,
                inputs=_inputs(model.pipeline),
                features=model.pipeline.feature_names,
                metrics={
                    k: float(v)
                    for k, v in metrics.items()
                    if isinstance(v, int | float) and math.isfinite(float(v))
                },
            )
        )
    return response
