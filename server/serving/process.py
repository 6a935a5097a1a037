"""The server process: grpc.aio on one event loop, with health, reflection and graceful drain.

`--workers N` forks N processes before any gRPC server starts; each opens the
store after the fork and binds the same port with SO_REUSEPORT, so the kernel
spreads connections over the cores.

Each process answers from one `ServingState` that its watcher (watcher.py) keeps
current: a new generation, or `--db` repointed to another snapshot, is built on a
thread and swapped in between two requests, with no restart.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from imeireg.server.check.policy import Policy
from imeireg.server.fronts.grpc.servicer import MAX_IMEIS, SERVICE, LegalityServicer, add_to_server
from imeireg.server.serving.lag import LagProbe
from imeireg.server.serving.watcher import Watcher
from imeireg.server.store import Store

log = logging.getLogger("imeireg.server")

SERVICE_NAME = SERVICE.full_name
# The largest valid request: 10,000 "imeisv-" PEIs (23 bytes) and IMSIs (15 bytes),
# each with 2 bytes of field framing, is under 0.4 MiB; 1 MiB leaves room and no more.
MAX_MESSAGE_BYTES = 1 << 20
assert MAX_IMEIS * (23 + 2 + 15 + 2) < MAX_MESSAGE_BYTES
GIL_SWITCH_SECONDS = 0.0005
MAX_CONNECTION_AGE_MS = 5 * 60 * 1000
MAX_CONNECTION_AGE_GRACE_MS = 30 * 1000


@dataclass(frozen=True)
class ServeOptions:
    db: Path
    host: str = "127.0.0.1"
    port: int = 50051
    workers: int = 1
    policy: Policy | None = None
    grace: float = 10.0


def run(options: ServeOptions) -> int:
    """Serve until SIGTERM or SIGINT, then drain; returns the process exit code."""
    Store.open(options.db).close()  # fail fast, before forking, on a missing or foreign store
    if options.workers == 1:
        return asyncio.run(_serve(options))
    return _supervise(options)


def _supervise(options: ServeOptions) -> int:
    children = []
    for _ in range(options.workers):
        pid = os.fork()
        if pid == 0:
            os._exit(asyncio.run(_serve(options)))
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    failed = 0
    for child in children:
        _, status = os.waitpid(child, 0)
        failed += os.waitstatus_to_exitcode(status) != 0
    return 1 if failed else 0


async def _serve(options: ServeOptions) -> int:
    policy = options.policy or Policy.default()
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Clients re-resolve a DNS name of several replicas when a connection closes:
            # closing each after a while (calls in flight get the grace to finish) lets
            # them find replicas added since.
            ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
            ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS),
        ]
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    # The store is opened here, after any fork: LMDB handles must not cross one.
    probe = LagProbe()
    watcher = Watcher(options.db, policy, probe)
    add_to_server(LegalityServicer(watcher), server)
    port = server.add_insecure_port(f"{options.host}:{options.port}")
    # What is loaded by now (numba's compiler above all: 110,000 objects) lives as long as
    # the process. Frozen, it is left out of garbage collection: a full collection would
    # walk it all, for about 60 ms, in the middle of a call.
    gc.freeze()
    # While the watcher's thread builds a state in Python, the event loop waits for the GIL
    # up to the switch interval when a call or timer wakes it: 5 ms by default, which the
    # lag probe saw (4.4 ms at 10^8 while a saved table was mapped). Handing the GIL over
    # every 0.5 ms costs microseconds a handover, and only while a build runs.
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "serving %s on %s:%d, generation %d, policy %s",
        watcher.target,
        options.host,
        port,
        watcher.state.snapshot.generation,
        policy.name,
    )
    probe.start()
    watching = asyncio.create_task(watcher.run())

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    watching.cancel()

    log.info("draining (up to %.0f s) on %s:%d", options.grace, options.host, port)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(options.grace)
    probe.stop()
    watcher.close()
    log.info("stopped on %s:%d", options.host, port)
    return 0
