"""Redis 7 as a peer: Debian's redis-server on loopback, one set holding the registration list.

The set holds every registered IMEI body (complete and provisional registrations)
as a 14-digit string; a batch is one SMISMEMBER. It answers membership only.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis

from benchmarks.drivers import REDIS_KEY
from benchmarks.registry import Registry
from benchmarks.servers import LOOPBACK, free_port, pinned, stop
from benchmarks.textrows import Digits, render

SADD_MEMBERS = 10_000  # per SADD; a pipeline sends many
PIPELINE_COMMANDS = 20
_START_TIMEOUT = 20.0


@dataclass
class RedisPeer:
    target: str
    version: str
    load_seconds: float = 0.0
    members: int = 0

    def client(self) -> redis.Redis:
        host, port = self.target.rsplit(":", 1)
        return redis.Redis(host=host, port=int(port))

    def used_memory(self) -> int:
        """`INFO memory` used_memory, bytes."""
        with self.client() as client:
            info = client.info("memory")
        return int(info["used_memory"])

    def load(self, registry: Registry) -> None:
        """SADD every registered body, pipelined in chunks."""
        began = time.perf_counter()
        with self.client() as client:
            client.delete(REDIS_KEY)
            pipe = client.pipeline(transaction=False)
            queued = 0
            for bodies in registration_bodies(registry, SADD_MEMBERS):
                pipe.sadd(REDIS_KEY, *bodies)
                queued += 1
                if queued == PIPELINE_COMMANDS:
                    pipe.execute()
                    queued = 0
            pipe.execute()
            self.members = int(client.scard(REDIS_KEY))
        self.load_seconds = time.perf_counter() - began


def registration_bodies(registry: Registry, chunk: int) -> Iterator[list[bytes]]:
    """The registration list's 14-digit bodies, `chunk` at a time."""
    for _, bodies in registry.complete.chunks(chunk):
        yield _texts(bodies)
    for start in range(0, len(registry.provisional), chunk):
        yield _texts(registry.provisional[start : start + chunk])


def _texts(bodies: np.typing.NDArray[np.uint64]) -> list[bytes]:
    return render([Digits(bodies, 14)]).split(b"\n")[:-1]


def redis_version() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        return "not installed"
    return subprocess.run(
        [binary, "--version"], check=False, capture_output=True, text=True
    ).stdout.strip()


@contextmanager
def redis_server(cpus: Sequence[int]) -> Iterator[RedisPeer]:
    """redis-server on a free loopback port, no persistence, in a temporary directory."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="imeireg-bench-redis-") as directory:
        command = pinned(
            [
                binary, "--port", str(port), "--bind", LOOPBACK, "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--dir", directory,
                "--protected-mode", "yes",
            ],
            cpus,
        )  # fmt: skip
        log = Path(directory) / "redis.log"
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            peer = RedisPeer(f"{LOOPBACK}:{port}", redis_version())
            _wait_ready(peer, process, log)
            yield peer
        finally:
            stop(process)


def _wait_ready(peer: RedisPeer, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {log.read_text()[-500:]}")
        try:
            with peer.client() as client:
                client.ping()
            return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not answer within {_START_TIMEOUT:.0f} s")
