"""The client's one exception: a failed call, as a readable one-line message."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class ImeiregError(Exception):
    """A call to the imeireg service failed; `code` is the gRPC status code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _bad_request(error: grpc.RpcError) -> list[str]:
    """The field violations of the error's google.rpc.BadRequest details, as "field: why"."""
    try:
        # Both sync and grpc.aio errors carry what from_call reads: code, details, trailers.
        status = rpc_status.from_call(cast(grpc.Call, error))
    except ValueError:  # trailers that contradict the call's status: nothing to trust
        return []
    if status is None:
        return []
    violations: list[str] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            violations += (f"{v.field}: {v.description}" for v in bad_request.field_violations)
    return violations


def from_rpc_error(error: grpc.RpcError, target: str) -> ImeiregError:
    """An ImeiregError saying what failed, on one line."""
    code = error.code()
    # Transport errors span lines; an operator's log wants one.
    details = " ".join((error.details() or "").split())
    message = f"{target}: {code.name}: {details}"
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        # The server's message may already spell the violations out.
        violations = [v for v in _bad_request(error) if v not in details]
        if violations:
            message += f" ({'; '.join(violations)})"
    return ImeiregError(code, message)


@contextmanager
def translated(target: str) -> Iterator[None]:
    """Raise the gRPC errors of the calls inside as ImeiregError."""
    try:
        yield
    except grpc.RpcError as error:
        raise from_rpc_error(error, target) from error
