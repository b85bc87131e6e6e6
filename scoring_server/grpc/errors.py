"""One table from domain errors to gRPC status codes, and the rich status they travel in."""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from credit_core import (
    CreditError,
    FeatureStoreError,
    InvalidRequestError,
    ModelNotReady,
    ModelRejectedError,
    RegistryError,
)

__all__ = ["INTERNAL_MESSAGE", "status_code_of", "to_status_proto"]

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error"
"""The only text a client sees for an unexpected error; the traceback goes to the log."""

_TABLE: list[tuple[type[CreditError], grpc.StatusCode]] = [
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (ModelNotReady, grpc.StatusCode.UNAVAILABLE),
    (ModelRejectedError, grpc.StatusCode.UNAVAILABLE),
    (RegistryError, grpc.StatusCode.UNAVAILABLE),
    (FeatureStoreError, grpc.StatusCode.UNAVAILABLE),
]


def status_code_of(err: BaseException) -> grpc.StatusCode:
    for cls, code in _TABLE:
        if isinstance(err, cls):
            return code
    return grpc.StatusCode.INTERNAL


def to_status_proto(err: BaseException) -> status_pb2.Status:
    """A ``google.rpc.Status`` for ``err``: BadRequest field violations for bad input, an opaque
    message for anything unexpected (logged here with its traceback)."""
    code = status_code_of(err)
    if code == grpc.StatusCode.INTERNAL:
        log.error("unexpected error", exc_info=err)
        return status_pb2.Status(code=code_pb2.INTERNAL, message=INTERNAL_MESSAGE)
    status = status_pb2.Status(code=code.value[0], message=str(err))
    if isinstance(err, InvalidRequestError):
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                for f, d in err.violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad)
        status.details.append(detail)
    return status
