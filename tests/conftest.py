"""Shared fixtures: a small real registry in a temp dir, and a real server on a free port.

Also what keeps the suite sound on a busy machine: Hypothesis without deadlines, and a
check at the end of the session that no process started by a test outlives it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from support import (
    KILL_TIMEOUT,
    STARTED_GROUPS,
    ServerProcess,
    SmallRegistry,
    build_small_registry,
    running_server,
)

# No deadline, and no health check that times data generation: on a loaded machine a slow
# example says nothing about the code. Loaded here, before any test module is imported,
# so that every @settings(...) builds on it; HYPOTHESIS_PROFILE=default restores
# Hypothesis's own, and --hypothesis-profile still chooses another.
settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
    derandomize=False,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def small_registry(tmp_path: Path) -> SmallRegistry:
    """A real LMDB store holding every list of the small registry, for one test to change."""
    return build_small_registry(tmp_path)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real server on the small registry, shared by the tests of a module that only read."""
    with running_server(build_small_registry(tmp_path_factory.mktemp("shared")).db) as running:
        yield running


@pytest.fixture
def server(small_registry: SmallRegistry) -> Iterator[ServerProcess]:
    """A real server answering from the small registry."""
    with running_server(small_registry.db) as running:
        yield running


@pytest.fixture
def target(shared_server: ServerProcess) -> str:
    """The address of the shared server on the small registry."""
    return shared_server.target


def _stat(pid: int) -> tuple[str, int, int] | None:
    """State, parent pid and process group of a process; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    return fields[0], int(fields[1]), int(fields[2])


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"  # a zombie has ended: only its reaping is due


def leftover_processes(root: int, groups: set[int]) -> list[int]:
    """Live processes descended from `root`, or left in one of `groups` by its dead leader
    (which orphans them: they are reparented out of `root`'s descent).

    A live leader of one of `groups` that is not `root`'s is another's process, with a
    reused pid (of at most 32768): its group is left alone.
    """
    processes = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None and stat[0] != "Z":
            processes[int(entry)] = stat[1:]

    def descends(pid: int) -> bool:
        seen = set()
        while pid in processes and pid not in seen:
            seen.add(pid)
            pid = processes[pid][0]
            if pid == root:
                return True
        return False

    return sorted(
        pid
        for pid, (_, group) in processes.items()
        if pid != root
        and (descends(pid) or (group in groups and (group not in processes or descends(group))))
    )


def command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_session() -> Iterator[None]:
    """At the end of the session, any process a test or fixture started and left running
    is killed, and the session fails: each must stop what it starts, even on failure."""
    yield
    leaked = {pid: command_line(pid) for pid in leftover_processes(os.getpid(), STARTED_GROUPS)}
    if not leaked:
        return
    for pid in leaked:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_TIMEOUT
    while any(_alive(pid) for pid in leaked) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [pid for pid in leaked if _alive(pid)]
    report = "\n".join(f"  {pid}: {command}" for pid, command in leaked.items())
    message = f"{len(leaked)} processes outlived the tests that started them (killed):\n{report}"
    if survivors:
        message += f"\n  still alive after SIGKILL: {survivors}"
    pytest.fail(message, pytrace=False)
