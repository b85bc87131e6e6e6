"""Shared domain code of altscore: types, the error tree, the scoring policy, the model bundle
and the MLflow registry adapter. Pure Python, no transport types; imports none of the workers.
"""

from credit_core.bundle import ModelBundle, ReferenceSample
from credit_core.domain import (
    Decision,
    Explanation,
    ModelRef,
    ReasonCode,
    Routing,
    ScoreResult,
    ScoringPolicy,
)
from credit_core.errors import (
    CreditError,
    FeatureStoreError,
    InvalidRequestError,
    ModelNotReady,
    ModelRejectedError,
    RegistryError,
    SchemaMismatch,
)

__all__ = [
    "CreditError",
    "Decision",
    "Explanation",
    "FeatureStoreError",
    "InvalidRequestError",
    "ModelBundle",
    "ModelNotReady",
    "ModelRef",
    "ModelRejectedError",
    "ReasonCode",
    "ReferenceSample",
    "RegistryError",
    "Routing",
    "SchemaMismatch",
    "ScoreResult",
    "ScoringPolicy",
]
