"""Processes under test: starting them pinned to CPUs on loopback, and what they cost in memory."""

from __future__ import annotations

import shlex
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
PROJECT = Path(__file__).resolve().parents[1]
_START_TIMEOUT = 60.0
# The `imeireg` command of the environment running the benchmark.
IMEIREG = (sys.executable, "-m", "imeireg.cli")
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
    """A running gRPC server under test (`imeireg serve`, or the empty handler); `target` is
    its address."""

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
                raise RuntimeError(f"the server exited with {process.returncode}")
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.02)
    raise RuntimeError(f"the server was not SERVING within {timeout:.0f} s")


@contextmanager
def imeireg_server(
    db: Path,
    cpus: Sequence[int],
    log: Path,
    workers: int = 1,
    *,
    program: Sequence[str] = IMEIREG,
    start_timeout: float = _START_TIMEOUT,
) -> Iterator[ImeiregServer]:
    """`imeireg serve` on a free loopback port, pinned to `cpus`, its stderr appended to `log`;
    stopped with SIGTERM after. `program` is the command that runs imeireg (another
    installation's `imeireg` script, for a baseline)."""
    port = free_port()
    command = [
        *program, "serve", "--db", str(db), "--host", LOOPBACK, "--port", str(port),
        "--workers", str(workers), "--grace", "1",
    ]  # fmt: skip
    with _serving(pinned(command, cpus), port, log, workers, start_timeout=start_timeout) as server:
        yield server


@contextmanager
def empty_handler_server(cpus: Sequence[int], log: Path) -> Iterator[ImeiregServer]:
    """The empty handler (benchmarks/empty_server.py) on a free loopback port, as
    `imeireg_server` starts imeireg."""
    port = free_port()
    command = [
        sys.executable, "-m", "benchmarks.empty_server", "--host", LOOPBACK, "--port", str(port),
    ]  # fmt: skip
    # Run from the project's root, where `benchmarks` is importable.
    with _serving(pinned(command, cpus), port, log, 1, cwd=PROJECT) as server:
        yield server


@contextmanager
def _serving(
    command: Sequence[str],
    port: int,
    log: Path,
    workers: int,
    *,
    start_timeout: float = _START_TIMEOUT,
    cwd: Path | None = None,
) -> Iterator[ImeiregServer]:
    with log.open("ab") as err:
        began = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, cwd=cwd)
    target = f"{LOOPBACK}:{port}"
    try:
        try:
            _wait_serving(process, target, start_timeout)
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


@dataclass(frozen=True)
class Installation:
    """imeireg as of a git commit, installed in a virtual environment of its own."""

    ref: str  # as given
    commit: str  # what it names, abbreviated
    program: tuple[str, ...]  # its `imeireg` command


@contextmanager
def installation_at(ref: str, scratch: Path) -> Iterator[Installation]:
    """imeireg at git `ref`: a detached worktree of it in `scratch`, installed (not editable,
    with the server extra) into a new venv there; the worktree is removed after.

    The dependencies are pinned to this environment's versions, so that the two
    installations differ in imeireg's own code only (pip's cache makes the install quick).
    """
    commit = _git("rev-parse", "--short", f"{ref}^{{commit}}")
    tree = scratch / "baseline"
    _git("worktree", "add", "--detach", str(tree), commit)
    try:
        venv = scratch / "baseline-venv"
        _run([sys.executable, "-m", "venv", str(venv)])
        constraints = scratch / "baseline-constraints.txt"
        constraints.write_text(_pinned_versions())
        python = str(venv / "bin" / "python")
        _run([python, "-m", "pip", "install", "-q", "-c", str(constraints), f"{tree}[server]"])
        yield Installation(ref, commit, (str(venv / "bin" / "imeireg"),))
    finally:
        _git("worktree", "remove", "--force", str(tree))


def _git(*arguments: str) -> str:
    return _run(["git", "-C", str(PROJECT), *arguments]).strip()


def _run(command: Sequence[str]) -> str:
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(command)} failed ({result.returncode}): {result.stderr.strip()[-800:]}"
        )
    return result.stdout


def _pinned_versions() -> str:
    """This environment's distributions as `name==version` lines, but for editable ones
    (imeireg itself)."""
    frozen = _run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"])
    return "".join(f"{line}\n" for line in frozen.splitlines() if "==" in line and " " not in line)
