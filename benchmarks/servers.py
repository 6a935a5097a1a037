"""Processes under test: starting them pinned to CPUs on loopback, and what they cost in memory."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

LOOPBACK = "127.0.0.1"
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0
_PROBE_BACKOFF = [
    ("grpc.initial_reconnect_backoff_ms", 10),
    ("grpc.min_reconnect_backoff_ms", 10),
    ("grpc.max_reconnect_backoff_ms", 50),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(command: Sequence[str], cpus: Sequence[int]) -> list[str]:
    """`command` run under taskset on `cpus`, when taskset is there."""
    taskset = shutil.which("taskset")
    if not cpus or taskset is None:
        return list(command)
    return [taskset, "-c", ",".join(map(str, cpus)), *command]


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS), 0 if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


@dataclass
class ImeiregServer:
    """A running `imeireg serve`; `target` is its address."""

    process: subprocess.Popen[bytes]
    target: str
    workers: int
    started_in: float  # seconds from exec to SERVING

    def rss_bytes(self) -> int:
        """The serving processes' resident memory: the workers' when forked, else the server's."""
        pids = children(self.process.pid) if self.workers > 1 else [self.process.pid]
        return sum(rss_bytes(pid) for pid in pids)


def _wait_serving(process: subprocess.Popen[bytes], target: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    # gRPC's default reconnect backoff (1 s, growing) would round the start time up.
    with grpc.insecure_channel(target, options=_PROBE_BACKOFF) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"imeireg serve exited with {process.returncode}")
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.02)
    raise RuntimeError(f"imeireg serve was not SERVING within {timeout:.0f} s")


@contextmanager
def imeireg_server(
    db: Path, cpus: Sequence[int], log: Path, workers: int = 1
) -> Iterator[ImeiregServer]:
    """`imeireg serve` on a free loopback port, pinned to `cpus`, its stderr appended to `log`;
    stopped with SIGTERM after."""
    port = free_port()
    command = pinned(
        [
            sys.executable, "-m", "imeireg.cli", "serve", "--db", str(db),
            "--host", LOOPBACK, "--port", str(port), "--workers", str(workers), "--grace", "1",
        ],
        cpus,
    )  # fmt: skip
    with log.open("ab") as err:
        began = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
    target = f"{LOOPBACK}:{port}"
    try:
        try:
            _wait_serving(process, target, _START_TIMEOUT)
        except RuntimeError as error:
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-5:])
            raise RuntimeError(f"{error}; its log ends: {tail}") from None
        yield ImeiregServer(process, target, workers, time.perf_counter() - began)
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> None:
    """`signum` (SIGTERM by default), then SIGKILL if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_STOP_TIMEOUT)
