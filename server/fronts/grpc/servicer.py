"""The gRPC servicer: request validation and wire glue around `check.verdict.check`.

Each call reads the current `ServingState` once and answers from it alone: decode →
check(state, batch) → encode, with no I/O of its own, no rebuild and no lock.

Per-IMEI problems are answers (REASON_INVALID_FORMAT); only a request that breaks
the API's limits fails, with INVALID_ARGUMENT and google.rpc.BadRequest details.
The two check RPCs go through the columnar wire codec (wire.py), the others
through the generated protobuf classes; `add_to_server()` registers both kinds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from imeireg.imei import TAC_DIGITS, is_digits
from imeireg.server.check.columns import TextColumn
from imeireg.server.check.imsis import IMSI_LENGTHS, invalid_imsis
from imeireg.server.check.verdict import check, tac_records
from imeireg.server.fronts.grpc.wire import (
    CheckRequest,
    encode_response,
    unwrap_stream_request,
    wrap_stream_response,
)
from imeireg.server.model import ImportRecord, Snapshot
from imeireg.server.serving.watcher import Watcher
from imeireg.server.store import SCHEMA_VERSION
from imeireg.v1 import legality_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["LegalityService"]

MAX_IMEIS = 10_000
MAX_TACS = 1_000
RECENT_IMPORTS = 20
_MAX_VIOLATIONS = 20


class InvalidRequest(Exception):
    """A request broke an API limit: (field, description) pairs for google.rpc.BadRequest."""

    def __init__(self, violations: list[tuple[str, str]]) -> None:
        self.violations = violations[:_MAX_VIOLATIONS]
        more = len(violations) - len(self.violations)
        summary = "; ".join(f"{field}: {text}" for field, text in self.violations)
        super().__init__(summary + (f"; and {more} more" if more > 0 else ""))

    def status(self) -> grpc.Status:
        details = any_pb2.Any()
        details.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=field, description=text)
                    for field, text in self.violations
                ]
            )
        )
        return rpc_status.to_status(
            status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(self), details=[details])
        )


def validate_check(count: int, imsis: Sequence[str], prefix: str = "") -> Sequence[str]:
    """Check a batch against the API's limits; returns the IMSIs, as a column if any."""
    if not 1 <= count <= MAX_IMEIS:
        raise InvalidRequest([(f"{prefix}imeis", f"{count} IMEIs given; 1 to {MAX_IMEIS} allowed")])
    if not imsis:
        return ()
    if len(imsis) != count:
        raise InvalidRequest(
            [
                (
                    f"{prefix}imsis",
                    f"{len(imsis)} IMSIs given for {count} IMEIs; give none or one per IMEI",
                )
            ]
        )
    column = TextColumn.of(imsis)
    bad = invalid_imsis(column, IMSI_LENGTHS)
    if bad:
        raise InvalidRequest(
            [
                (
                    f"{prefix}imsis[{i}]",
                    f"{imsis[i]!r} is not an IMSI (6 to 15 digits, or empty for none)",
                )
                for i in bad
            ]
        )
    return column


def list_enum(name: str) -> pb.RegistryList.ValueType:
    return pb.RegistryList.Value("REGISTRY_LIST_" + name.upper().replace("-", "_"))


def _timestamp(unix: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(round(unix * 1e9))
    return stamp


class LegalityServicer:
    """imeireg.v1.LegalityService, answering from the state `watcher` keeps current."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self._snapshot = Snapshot(-1, 0.0)
        self._snapshot_pb = pb.Snapshot()
        self._snapshot_bytes = b""

    def _snapshot_message(self, snapshot: Snapshot) -> pb.Snapshot:
        if snapshot != self._snapshot:
            self._snapshot = snapshot
            self._snapshot_pb = pb.Snapshot(
                generation=snapshot.generation, commit_time=_timestamp(snapshot.committed_at)
            )
            self._snapshot_bytes = self._snapshot_pb.SerializeToString()
        return self._snapshot_pb

    def _check(self, request: CheckRequest, prefix: str = "") -> bytes:
        """A serialized CheckImeisResponse."""
        imsis = validate_check(request.count, request.imsis, prefix)
        verdict = check(self.watcher.state, request.imeis, imsis)
        self._snapshot_message(verdict.snapshot)
        return encode_response(verdict.statuses, verdict.reasons, self._snapshot_bytes)

    async def CheckImeis(self, request: CheckRequest, context: grpc.aio.ServicerContext) -> bytes:
        try:
            return self._check(request)
        except InvalidRequest as invalid:
            await context.abort_with_status(invalid.status())
            raise  # abort_with_status always raises

    async def StreamCheckImeis(
        self, request_iterator: AsyncIterator[CheckRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async for request in request_iterator:
            try:
                answer = self._check(request, prefix="check.")
            except InvalidRequest as invalid:
                await context.abort_with_status(invalid.status())
                raise
            yield wrap_stream_response(answer)

    async def LookupTacs(
        self, request: pb.LookupTacsRequest, context: grpc.aio.ServicerContext
    ) -> pb.LookupTacsResponse:
        tacs = list(request.tacs)
        violations = [("tacs", f"{len(tacs)} TACs given; 1 to {MAX_TACS} allowed")]
        if 1 <= len(tacs) <= MAX_TACS:
            violations = [
                (f"tacs[{i}]", f"{tac!r} is not a TAC (8 digits)")
                for i, tac in enumerate(tacs)
                if not (len(tac) == TAC_DIGITS and is_digits(tac))
            ]
        if violations:
            invalid = InvalidRequest(violations)
            await context.abort_with_status(invalid.status())
            raise invalid
        state = self.watcher.state
        return pb.LookupTacsResponse(
            tacs=[
                pb.TacInfo(
                    tac=record.tac, allocated=record.allocated, barred=record.barred, **record.model
                )
                for record in tac_records(state, tacs)
            ],
            snapshot=self._snapshot_message(state.snapshot),
        )

    async def GetRegistryInfo(
        self, request: pb.GetRegistryInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRegistryInfoResponse:
        state = self.watcher.state
        return pb.GetRegistryInfoResponse(
            schema_version=SCHEMA_VERSION,
            snapshot=self._snapshot_message(state.snapshot),
            lists=[
                pb.ListRows(list=list_enum(name), rows=rows)
                for name, rows in state.view.rows().items()
            ],
            tac_count=len(state.allocated),
            recent_imports=[_import_record(r) for r in state.view.import_log(RECENT_IMPORTS)],
        )


def _import_record(record: ImportRecord) -> pb.ImportRecord:
    return pb.ImportRecord(
        list=list_enum(record.list_name) if record.list_name else pb.REGISTRY_LIST_UNSPECIFIED,
        mode=pb.ImportMode.Value("IMPORT_MODE_" + record.mode.upper()),
        file_name=record.file_name,
        sha256=record.sha256,
        rows=record.rows,
        generation=record.generation,
        commit_time=_timestamp(record.committed_at),
        added=record.added,
        removed=record.removed,
        updated=record.updated,
        rolled_back_to=record.rolled_back_to,
    )


def method_handlers(servicer: LegalityServicer) -> dict[str, grpc.RpcMethodHandler]:
    """The service's method handlers, with the wire codec for the two check RPCs."""
    methods: dict[str, Any] = {
        "CheckImeis": grpc.unary_unary_rpc_method_handler(
            servicer.CheckImeis, request_deserializer=CheckRequest.parse, response_serializer=_raw
        ),
        "StreamCheckImeis": grpc.stream_stream_rpc_method_handler(
            servicer.StreamCheckImeis,
            request_deserializer=unwrap_stream_request,
            response_serializer=_raw,
        ),
        "LookupTacs": _unary(servicer.LookupTacs, pb.LookupTacsRequest),
        "GetRegistryInfo": _unary(servicer.GetRegistryInfo, pb.GetRegistryInfoRequest),
    }
    assert set(methods) == set(SERVICE.methods_by_name), "every RPC of the proto is served"
    return methods


def add_to_server(servicer: LegalityServicer, server: grpc.aio.Server) -> None:
    """Serve `servicer` as the generated code would: its methods registered by name, so
    that gRPC finds a call's handler without asking every generic handler in Python."""
    methods = method_handlers(servicer)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, methods),)
    )
    server.add_registered_method_handlers(SERVICE.full_name, methods)


def _raw(data: bytes) -> bytes:
    return data


def _unary(behaviour: Callable[..., Any], request_type: Any) -> Any:
    return grpc.unary_unary_rpc_method_handler(
        behaviour,
        request_deserializer=request_type.FromString,
        response_serializer=lambda message: message.SerializeToString(),
    )
