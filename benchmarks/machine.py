"""The machine a run measured and the versions of everything it ran, for the report."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from benchmarks.postgres_peer import postgres_version
from benchmarks.redis_peer import redis_version

PYTHON_PACKAGES = (
    "imeireg", "grpcio", "protobuf", "pyroaring", "lmdb", "numpy",
    "redis", "hiredis", "psycopg", "hdrhistogram",
)  # fmt: skip


def describe() -> dict[str, str]:
    """nproc, CPU model, memory, kernel and the versions of the software under test."""
    return {
        "nproc": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "memory": f"{_memory_kib() / 2**20:.1f} GiB",
        "kernel": platform.release(),
        "cpu pinning": (
            "server on CPU 0, clients on CPU 1 (taskset / sched_setaffinity)"
            if shutil.which("taskset")
            else "none (taskset not found)"
        ),
        "load average at start": load_average(),
        "python": platform.python_version(),
        **{name: _package_version(name) for name in PYTHON_PACKAGES},
        "redis-server": redis_version(),
        "postgres": postgres_version(),
        "git": _git_revision(),
    }


def load_average() -> str:
    """1, 5 and 15 minute load averages: other work on the machine skews every figure."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_kib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_revision() -> str:
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            check=False,
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() or "unknown"
