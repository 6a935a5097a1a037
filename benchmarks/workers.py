"""The workers of one `imeireg serve --workers N`, seen from outside: their connections, and
when each began answering from each generation, by its own log.

Each worker logs, with its pid, "serving ..." once it listens, and a line at every switch:
its watcher (server/serving/watcher.py) polls the store every 0.1 s, builds the next
serving state on a thread while the loop keeps answering from the current one, then swaps
it in and logs "now answering from generation N (was M): built in B ms; the event loop's
worst lag meanwhile L ms" ("switched to snapshot PATH generation N ..." when `--db` was
repointed). A worker that finds several generations committed since its last look builds
and logs only the newest. The log's times are local wall-clock time to the millisecond,
comparable with the importer's commit times, and taken after the swap.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) imeireg\[(\d+)\] (.*)$")
# The build and lag clauses are absent from the lines of servers before the watcher.
_SWITCH = re.compile(
    r"(?:now answering from|switched to snapshot .+) generation (\d+) \(was \d+\)"
    r"(?:: built in ([\d.]+) ms)?(?:; the event loop's worst lag meanwhile ([\d.]+) ms)?"
)
_ESTABLISHED = "01"
_TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


@dataclass(frozen=True)
class Switch:
    """A worker began answering from `generation` at `at` (Unix time), after building its
    state in `build_ms` while its event loop ran at worst `loop_lag_ms` late (None: not
    logged)."""

    pid: int
    at: float
    generation: int
    build_ms: float | None = None
    loop_lag_ms: float | None = None


def _entries(log: Path) -> list[tuple[float, int, str]]:
    entries = []
    for line in log.read_text(errors="replace").splitlines():
        if match := _LINE.match(line):
            when = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            entries.append((when, int(match[2]), match[3]))
    return entries


def serving(log: Path) -> set[int]:
    """The pids of the processes that said they serve."""
    return {pid for _, pid, message in _entries(log) if message.startswith("serving ")}


def wait_serving(log: Path, workers: int, timeout: float) -> set[int]:
    """Wait until `workers` processes serve, so that each has its share of new connections."""
    deadline = time.monotonic() + timeout
    while len(pids := serving(log)) < workers:
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{len(pids)} of {workers} workers serving after {timeout:.0f} s")
        time.sleep(0.02)
    return pids


def switches(log: Path) -> list[Switch]:
    """Every switch to a newer generation the log records, in order."""
    return [
        Switch(pid, when, int(match[1]), _number(match[2]), _number(match[3]))
        for when, pid, message in _entries(log)
        if (match := _SWITCH.match(message))
    ]


def _number(text: str | None) -> float | None:
    return None if text is None else float(text)


def visible_after(
    found: list[Switch], pids: set[int], committed: dict[int, float]
) -> dict[int, dict[int, float | None]]:
    """Per worker, per generation: seconds from its commit to the worker's first answer from it
    or a later one (None: never). Slightly negative when a worker switched between the
    commit and the importer's clock reading."""
    lags: dict[int, dict[int, float | None]] = {}
    for pid in sorted(pids):
        own = [switch for switch in found if switch.pid == pid]
        lags[pid] = {
            generation: next((s.at - at for s in own if s.generation >= generation), None)
            for generation, at in sorted(committed.items())
        }
    return lags


def connections(pids: set[int], port: int) -> dict[int, int]:
    """Established TCP connections to `port` that each of `pids` holds."""
    inodes = set()
    for table in _TCP_TABLES:
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == _ESTABLISHED:
                inodes.add(fields[9])
    held = {}
    for pid in pids:
        count = 0
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            fds = []
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            count += link.startswith("socket:[") and link[8:-1] in inodes
        held[pid] = count
    return held


def cpu_seconds(pids: set[int]) -> float:
    """User and system CPU time the processes have used so far (0 for one that is gone)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            # Fields after the command name, which is in parentheses and may hold spaces.
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def anonymous_bytes(pids: set[int]) -> int:
    """The processes' own resident memory (RssAnon): not the pages of the store they map."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("RssAnon:"):
                total += int(line.split()[1]) * 1024
    return total
