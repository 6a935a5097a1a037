"""The empty handler: imeireg's check RPCs served with no work, the floor of a check call.

`python -m benchmarks.empty_server --port P` serves `imeireg.v1.LegalityService`'s
`CheckImeis` and `StreamCheckImeis` as `imeireg serve` does (grpc.aio, the same
server options, raw bytes in and out, methods registered by name, the health
service, `gc.freeze()` before it starts), but each handler answers a
pre-serialized response at once. The client sends it the very request bytes it
sends imeireg, so what imeireg's throughput lacks of this server's is the
handler's own work: decoding, checking and encoding.

A response is built once per distinct request length, from the first request of
that length (protobuf counts its IMEIs): one WHITELISTED status and one
REASON_REGISTERED bit set per IMEI, and a snapshot, the size of most of imeireg's
answers. After the warm-up every call is a dictionary hit; a later request of the
same length but another count gets a response of the first one's count, which the
client does not mind (it only checks that answers parse).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from imeireg.server.fronts.grpc.servicer import SERVICE
from imeireg.server.serving.process import (
    MAX_CONNECTION_AGE_GRACE_MS,
    MAX_CONNECTION_AGE_MS,
    MAX_MESSAGE_BYTES,
)
from imeireg.v1 import legality_pb2 as pb

log = logging.getLogger("benchmarks.empty_server")

# The options of imeireg's server (server/serving/process.py), which has no function
# returning them: a connection limit or a message size differing here would be measured.
SERVER_OPTIONS = [
    ("grpc.so_reuseport", 1),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
    ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS),
]
_REGISTERED = 1 << pb.REASON_REGISTERED


def check_response(imeis: int, snapshot: pb.Snapshot) -> pb.CheckImeisResponse:
    """An answer of `imeis` registered phones: the size of a typical answer of imeireg's."""
    return pb.CheckImeisResponse(
        statuses=[pb.EQUIPMENT_STATUS_WHITELISTED] * imeis,
        reasons=[_REGISTERED] * imeis,
        snapshot=snapshot,
    )


class Answers:
    """Serialized responses by request length, each built from the first request of it."""

    def __init__(self, build: Callable[[bytes], bytes]) -> None:
        self._build = build
        self._by_length: dict[int, bytes] = {}

    def __call__(self, request: bytes) -> bytes:
        answer = self._by_length.get(len(request))
        if answer is None:
            answer = self._by_length[len(request)] = self._build(request)
        return answer


class EmptyServicer:
    """CheckImeis and StreamCheckImeis answering canned bytes."""

    def __init__(self) -> None:
        snapshot = pb.Snapshot(generation=1)
        snapshot.commit_time.FromNanoseconds(time.time_ns())
        self.unary = Answers(
            lambda raw: check_response(
                len(pb.CheckImeisRequest.FromString(raw).imeis), snapshot
            ).SerializeToString()
        )
        self.stream = Answers(
            lambda raw: pb.StreamCheckImeisResponse(
                check=check_response(
                    len(pb.StreamCheckImeisRequest.FromString(raw).check.imeis), snapshot
                )
            ).SerializeToString()
        )

    async def CheckImeis(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # noqa: N802
        return self.unary(request)

    async def StreamCheckImeis(  # noqa: N802
        self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async for request in request_iterator:
            yield self.stream(request)


def _raw(data: bytes) -> bytes:
    return data


def add_to_server(servicer: EmptyServicer, server: grpc.aio.Server) -> None:
    """Register the two RPCs as imeireg's servicer does: by name, bytes in and out."""
    methods: dict[str, Any] = {
        "CheckImeis": grpc.unary_unary_rpc_method_handler(
            servicer.CheckImeis, request_deserializer=_raw, response_serializer=_raw
        ),
        "StreamCheckImeis": grpc.stream_stream_rpc_method_handler(
            servicer.StreamCheckImeis, request_deserializer=_raw, response_serializer=_raw
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, methods),)
    )
    server.add_registered_method_handlers(SERVICE.full_name, methods)


async def serve(host: str, port: int, grace: float) -> int:
    """Serve until SIGTERM or SIGINT, then drain for up to `grace` seconds."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    # The benchmark waits for the health service to answer SERVING, as for imeireg.
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    add_to_server(EmptyServicer(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    # As imeireg does: what is loaded by now is left out of garbage collection.
    gc.freeze()
    await server.start()
    for name in ("", SERVICE.full_name):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving the empty handler on %s:%d", host, bound)

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace)
    log.info("stopped on %s:%d", host, bound)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.empty_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grace", type=float, default=1.0, help="seconds to drain on SIGTERM")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return asyncio.run(serve(args.host, args.port, args.grace))


if __name__ == "__main__":
    raise SystemExit(main())
