"""The error table: domain errors to status codes; unexpected errors stay opaque."""

from __future__ import annotations

import logging

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from credit_core import InvalidRequestError, ModelNotReady, ModelRejectedError, RegistryError
from scoring_server.grpc.errors import INTERNAL_MESSAGE, status_code_of, to_status_proto


@pytest.mark.parametrize(
    ("err", "code"),
    [
        (InvalidRequestError([("a", "b")]), grpc.StatusCode.INVALID_ARGUMENT),
        (ModelNotReady("x"), grpc.StatusCode.UNAVAILABLE),
        (ModelRejectedError("x"), grpc.StatusCode.UNAVAILABLE),
        (RegistryError("x"), grpc.StatusCode.UNAVAILABLE),
        (KeyError("secret"), grpc.StatusCode.INTERNAL),
    ],
)
def test_status_code_table(err: Exception, code: grpc.StatusCode) -> None:
    assert status_code_of(err) == code


def test_unexpected_error_is_opaque_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        status = to_status_proto(RuntimeError("password=hunter2 in /etc/secret"))
    assert status.code == code_pb2.INTERNAL
    assert status.message == INTERNAL_MESSAGE
    assert "hunter2" not in status.SerializeToString().decode(errors="replace")
    assert "hunter2" in caplog.text


def test_bad_request_carries_every_violation() -> None:
    status = to_status_proto(InvalidRequestError([("x", "bad"), ("y", "worse")]))
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("x", "bad"),
        ("y", "worse"),
    ]
