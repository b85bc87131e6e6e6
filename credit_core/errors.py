"""The error tree. Transport codes live in the wire layer (``scoring_server/grpc/errors.py``).

::

    CreditError
    ├── InvalidRequestError      bad input; carries every (field, description) violation
    ├── FeatureStoreError        the online feature store failed or timed out
    ├── ModelNotReady            no model loaded yet
    ├── ModelRejectedError       a model failed a gate (compile, parity) and is not served
    │   └── SchemaMismatch       its schema hash does not match its feature spec
    └── RegistryError            the model registry cannot be reached or answers nonsense
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CreditError",
    "FeatureStoreError",
    "InvalidRequestError",
    "ModelNotReady",
    "ModelRejectedError",
    "RegistryError",
    "SchemaMismatch",
]


class CreditError(Exception):
    """Base of every error altscore raises on purpose."""


class InvalidRequestError(CreditError):
    """A request broke the contract or the feature spec."""

    def __init__(self, violations: Sequence[tuple[str, str]]) -> None:
        self.violations: list[tuple[str, str]] = list(violations)
        text = "; ".join(f"{f}: {d}" for f, d in self.violations)
        super().__init__(f"invalid request: {text}")


class FeatureStoreError(CreditError):
    """The online feature store failed or timed out."""


class ModelNotReady(CreditError):
    """No model is loaded yet."""


class ModelRejectedError(CreditError):
    """A model failed a gate and was not loaded."""


class SchemaMismatch(ModelRejectedError):
    """The model's recorded schema hash differs from the hash of the spec it carries."""


class RegistryError(CreditError):
    """The model registry failed."""
