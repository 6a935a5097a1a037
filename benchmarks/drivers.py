"""How a client calls each system under test, with requests built and serialized beforehand.

Each driver has a parent side (`prepare`: the batches → ready-to-send requests)
and a client side (`open`, `call`, `close`, `verify`), run in the client
processes. gRPC is called through generic multi-callables with no serializers:
a request is bytes serialized once, a response is bytes, parsed only for the
sampled answers that are verified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, cast

import grpc
import hiredis
import numpy as np
import psycopg
import redis.asyncio
from grpc_health.v1 import health_pb2

from benchmarks.workload import Batch
from imeireg.v1 import legality_pb2 as pb

CHECK_METHOD = "/imeireg.v1.LegalityService/CheckImeis"
STREAM_METHOD = "/imeireg.v1.LegalityService/StreamCheckImeis"
HEALTH_METHOD = "/grpc.health.v1.Health/Check"
REDIS_KEY = "registration_list"
POSTGRES_QUERY = "SELECT imei_norm FROM registration_list WHERE imei_norm = ANY(%s)"
CALL_TIMEOUT = 60.0
_MAX_MESSAGE_BYTES = 1 << 20


class System(StrEnum):
    """A system under test; the value is its name in the report."""

    CEILING = "in-process ceiling"
    IMEIREG = "imeireg"
    IMEIREG_STREAM = "imeireg stream"
    FLOOR = "empty gRPC method"
    # imeireg's check RPCs answered with canned bytes (benchmarks/empty_server.py), sent
    # imeireg's requests: the floor of a check call, the handler's own work aside.
    EMPTY_HANDLER = "empty handler"
    EMPTY_HANDLER_STREAM = "empty handler stream"
    REDIS = "Redis"
    POSTGRES = "PostgreSQL"


@dataclass(frozen=True)
class Job:
    """What every client process of one run does: call `system` at `target` with `requests`."""

    system: System
    target: str  # host:port, a libpq conninfo, or for the ceiling the store directory
    batch_size: int
    concurrency: int  # calls in flight per process
    channels: int  # gRPC connections per process
    warmup: float
    duration: float
    cpus: tuple[int, ...]  # CPU affinity of the client processes; () for any
    requests: Sequence[Any]  # one per batch, cycled
    expected: Sequence[bytes]  # per batch: statuses (imeireg) or membership flags (peers)


class Driver(Protocol):
    async def open(self) -> None: ...

    async def call(self, slot: int, request: Any) -> Any: ...

    def verify(self, request: Any, response: Any, expected: bytes) -> bool: ...

    async def close(self) -> None: ...


def prepare(system: System, batches: Sequence[Batch]) -> list[Any]:
    """The requests of `system` for `batches`, built once, before any measurement."""
    if system in (System.IMEIREG, System.EMPTY_HANDLER):
        return [
            pb.CheckImeisRequest(imeis=b.imeis, imsis=b.imsis).SerializeToString() for b in batches
        ]
    if system in (System.IMEIREG_STREAM, System.EMPTY_HANDLER_STREAM):
        return [
            pb.StreamCheckImeisRequest(
                check=pb.CheckImeisRequest(imeis=b.imeis, imsis=b.imsis)
            ).SerializeToString()
            for b in batches
        ]
    if system is System.FLOOR:
        return [health_pb2.HealthCheckRequest().SerializeToString()]
    if system is System.CEILING:
        return [(b.imeis, b.imsis) for b in batches]
    if system is System.REDIS:
        # hiredis's stub types the command as a 1-tuple; it takes any number of arguments.
        return [
            hiredis.pack_command(("SMISMEMBER", REDIS_KEY, *b.bodies))  # type: ignore[arg-type]
            for b in batches
        ]
    return [b.bodies for b in batches]


def driver_for(job: Job) -> Driver:
    drivers: dict[System, type[Driver]] = {
        System.CEILING: _Ceiling,
        System.IMEIREG: _GrpcUnary,
        System.FLOOR: _GrpcUnary,
        System.EMPTY_HANDLER: _GrpcUnary,
        System.IMEIREG_STREAM: _GrpcStream,
        System.EMPTY_HANDLER_STREAM: _GrpcStream,
        System.REDIS: _Redis,
        System.POSTGRES: _Postgres,
    }
    return drivers[job.system](job)  # type: ignore[call-arg]


def _channel(target: str) -> Any:
    # A local subchannel pool gives each channel its own TCP connection, so that the
    # kernel can spread a process's connections over server workers sharing the port.
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        ],
    )


class _GrpcUnary:
    """CheckImeis (imeireg's or the empty handler's), or the health service's Check as the
    empty method, over raw bytes."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.method = HEALTH_METHOD if job.system is System.FLOOR else CHECK_METHOD
        self.channels: list[Any] = []
        self.callables: list[Any] = []

    async def open(self) -> None:
        self.channels = [_channel(self.job.target) for _ in range(self.job.channels)]
        self.callables = [channel.unary_unary(self.method) for channel in self.channels]
        for channel in self.channels:
            await channel.channel_ready()

    async def call(self, slot: int, request: bytes) -> bytes:
        answer: bytes = await self.callables[slot % len(self.callables)](
            request, timeout=CALL_TIMEOUT
        )
        return answer

    def verify(self, request: bytes, response: bytes, expected: bytes) -> bool:
        if self.job.system is System.FLOOR:
            status = health_pb2.HealthCheckResponse.FromString(response).status
            return bool(status == health_pb2.HealthCheckResponse.SERVING)
        return _statuses_match(
            self.job.system, pb.CheckImeisResponse.FromString(response).statuses, expected
        )

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


def _statuses_match(system: System, statuses: Sequence[int], expected: bytes) -> bool:
    """imeireg's answer gives the expected statuses; the empty handler's, which are canned,
    parse and hold one status per IMEI."""
    if system in (System.EMPTY_HANDLER, System.EMPTY_HANDLER_STREAM):
        return len(statuses) == len(expected)
    return bytes(statuses) == expected


class _GrpcStream:
    """StreamCheckImeis (imeireg's or the empty handler's): one stream per in-flight slot,
    each a write then a read."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.channels: list[Any] = []
        self.streams: list[Any] = []

    async def open(self) -> None:
        self.channels = [_channel(self.job.target) for _ in range(self.job.channels)]
        lifetime = self.job.warmup + self.job.duration + CALL_TIMEOUT
        self.streams = [
            self.channels[slot % len(self.channels)].stream_stream(STREAM_METHOD)(timeout=lifetime)
            for slot in range(self.job.concurrency)
        ]

    async def call(self, slot: int, request: bytes) -> bytes:
        stream = self.streams[slot]
        await stream.write(request)
        answer = await stream.read()
        if answer is grpc.aio.EOF:
            raise RuntimeError("the stream ended early")
        assert isinstance(answer, bytes)
        return answer

    def verify(self, request: bytes, response: bytes, expected: bytes) -> bool:
        return _statuses_match(
            self.job.system,
            pb.StreamCheckImeisResponse.FromString(response).check.statuses,
            expected,
        )

    async def close(self) -> None:
        for stream in self.streams:
            await stream.done_writing()
        for channel in self.channels:
            await channel.close()


class _Ceiling:
    """`check.verdict.check` called in the client process itself: no gRPC, no network."""

    def __init__(self, job: Job) -> None:
        from imeireg.server.check.policy import Policy
        from imeireg.server.serving.build import first_state
        from imeireg.server.store import Store

        self.store = Store.open(job.target)
        self.state = first_state(self.store, Policy.default())

    async def open(self) -> None:
        pass

    async def call(self, slot: int, request: tuple[list[str], list[str]]) -> bytes:
        from imeireg.server.check.verdict import check

        return check(self.state, *request).statuses.tobytes()

    def verify(self, request: object, response: bytes, expected: bytes) -> bool:
        return response == expected

    async def close(self) -> None:
        self.state.close()
        self.store.close()


class _Redis:
    """SMISMEMBER of a batch's bodies in one set, through redis-py with the hiredis parser.

    Like imeireg's, the commands are packed once before the run (hiredis.pack_command), and
    sent on one redis-py connection per in-flight slot, so that the client stays cheap.
    """

    def __init__(self, job: Job) -> None:
        host, port = job.target.rsplit(":", 1)
        self.connections = [
            redis.asyncio.Connection(host=host, port=int(port)) for _ in range(job.concurrency)
        ]

    async def open(self) -> None:
        for connection in self.connections:
            await connection.connect()  # type: ignore[no-untyped-call]

    async def call(self, slot: int, request: bytes) -> list[int]:
        connection = self.connections[slot]
        await connection.send_packed_command(request, check_health=False)
        return cast(list[int], await connection.read_response())

    def verify(self, request: object, response: list[int], expected: bytes) -> bool:
        return bytes(response) == expected

    async def close(self) -> None:
        for connection in self.connections:
            await connection.disconnect()


class _Postgres:
    """`imei_norm = ANY($1)` per batch, a prepared statement on one connection per slot."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.connections: list[psycopg.AsyncConnection[Any]] = []

    async def open(self) -> None:
        self.connections = [
            await psycopg.AsyncConnection.connect(self.job.target, autocommit=True)
            for _ in range(self.job.concurrency)
        ]

    async def call(self, slot: int, request: list[str]) -> list[Any]:
        cursor = await self.connections[slot].execute(POSTGRES_QUERY, (request,), prepare=True)
        return await cursor.fetchall()

    def verify(self, request: list[str], response: list[Any], expected: bytes) -> bool:
        members = {body for body, member in zip(request, expected, strict=True) if member}
        return {row[0] for row in response} == members

    async def close(self) -> None:
        for connection in self.connections:
            await connection.close()


def expected_answers(
    system: System, batch_size: int, count: int, statuses: bytes, members: bytes
) -> list[bytes]:
    """Per batch, the answer a correct system gives: statuses for imeireg, flags for the peers.

    `statuses` and `members` hold one byte per pool query, from the in-process checker.
    """
    if system is System.FLOOR:
        return [b""]
    column = members if system in (System.REDIS, System.POSTGRES) else statuses
    flat = np.frombuffer(column, dtype=np.uint8)
    return [flat[i * batch_size : (i + 1) * batch_size].tobytes() for i in range(count)]
