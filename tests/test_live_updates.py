"""Updates under load: delta imports while clients keep checking, with nothing dropped.

A server with two workers answers CheckImeis from several client threads, each
with its own connections, while the test applies consecutive delta imports
(registrations added and removed, stolen reports added and withdrawn). The
deltas follow a fixed schedule over probe IMEIs, so the answer for every probe
is a known function of the generation: each answer is checked, IMEI by IMEI,
against the generation it reports.

Coverage of both workers is checked, not assumed. Each worker logs "serving" and
then "now answering from generation N" with its pid, and the test reads that log:
both pids must have switched past every generation. The clients hold 16
connections, which the kernel spreads over the workers sharing the port; should all
land on one worker (probability 2**-15), the log check fails the test rather than let
it pass on one worker. Besides, every client connection must answer from every
generation, in order. How soon (the target: within 1 s of the commit) is the updates
benchmark's to measure, not a test's: a busy machine may take longer.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import grpc
import pytest
from support import (
    OTHER_TAC,
    PHONE_TAC,
    REGISTRATION_HEADER,
    START_TIMEOUT,
    ServerProcess,
    SmallRegistry,
    imei,
    registration_row,
    running_server,
    write,
)

from imeireg.client.models import verdicts
from imeireg.server.imports.delta import import_delta
from imeireg.server.model import ListName
from imeireg.server.store import Store
from imeireg.v1 import legality_pb2 as pb
from imeireg.v1.legality_pb2_grpc import LegalityServiceStub

WORKERS = 2
DELTAS = 24
CLIENT_THREADS = 4
CONNECTIONS_PER_THREAD = 4  # 16 connections: all on one worker with probability 2**-15
# Seconds to wait for every connection to answer from a new generation: well under a
# second on a quiet machine (benchmarks/updates.py measures it); only a broken server
# never gets there.
VISIBLE_WAIT = 60.0
CALL_TIMEOUT = 60.0  # a bound for a loaded machine, not a speed asked of the server
# How long the clients' connections may take to answer for the first time: a bound too.
CONNECT_TIMEOUT = 60.0
# A local subchannel pool gives every channel its own TCP connection, so that the
# kernel spreads them over the workers sharing the port (SO_REUSEPORT).
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
SMALL_BATCH = 8  # at most 16 IMEIs: the server's IMEI-by-IMEI path, not the columnar one

R = SmallRegistry
Answer = tuple[str, tuple[str, ...]]  # status, reasons
# IMEIs of the small registry that no delta touches, with their verdicts.
UNTOUCHED: dict[str, Answer] = {
    R.registered: ("WHITELISTED", ("REGISTERED",)),
    R.stolen: ("BLACKLISTED", ("REGISTERED", "STOLEN")),
    R.barred_tac: ("BLACKLISTED", ("TAC_BARRED", "REGISTERED")),
    R.unregistered: ("BLACKLISTED", ("NOT_REGISTERED",)),
}


def probe(j: int) -> str:
    """Probe IMEI j (1..DELTAS): odd ones on PHONE_TAC, even ones on OTHER_TAC (leading 0)."""
    return imei(PHONE_TAC if j % 2 else OTHER_TAC, 200_000 + j)


PROBES = [probe(j) for j in range(1, DELTAS + 1)]


@dataclass(frozen=True)
class Delta:
    """Delta k of the schedule: one list's delta file rows."""

    list_name: ListName
    header: str
    rows: list[str]


def delta(k: int) -> Delta:
    """The schedule. An odd k registers probe k (complete) and probe k+1 (provisional) and
    deregisters probes k-6 and k-5; an even k reports probe k-1 stolen and withdraws the
    report of probe k-7. So an odd probe is registered, then stolen, deregistered, and its
    report withdrawn; an even one is provisional for six generations."""
    if k % 2:
        rows = [
            registration_row(probe(k)) + ",add",
            registration_row(probe(k + 1), "provisional") + ",add",
        ]
        rows += [f"{probe(j)},,,,,,,,,remove" for j in (k - 6, k - 5) if j >= 1]
        return Delta(ListName.REGISTRATION, REGISTRATION_HEADER + ",change_type", rows)
    rows = [f"{probe(k - 1)},20261128,,add"]
    rows += [f"{probe(k - 7)},,,remove"] if k - 7 >= 1 else []
    return Delta(ListName.STOLEN, "imei,reporting_date,status,change_type", rows)


def expected_answers() -> list[dict[str, Answer]]:
    """Per number of deltas applied (0..DELTAS), the answer for every IMEI the clients send."""
    complete: set[str] = set()
    provisional: set[str] = set()
    stolen: set[str] = set()
    answers = []
    for k in range(DELTAS + 1):
        if k:
            changes = delta(k)
            for row in changes.rows:
                fields = row.split(",")
                target, change = fields[0], fields[-1]
                if changes.list_name is ListName.STOLEN:
                    (stolen.add if change == "add" else stolen.discard)(target)
                elif change == "remove":
                    complete.discard(target)
                    provisional.discard(target)
                else:
                    (complete if fields[3] == "" else provisional).add(target)
        answers.append(
            UNTOUCHED | {p: _answer(p in complete, p in provisional, p in stolen) for p in PROBES}
        )
    return answers


def _answer(complete: bool, provisional: bool, stolen: bool) -> Answer:
    """The default policy (Indonesia's whitelist model) on these facts."""
    registration = (
        "REGISTERED"
        if complete
        else "REGISTRATION_PROVISIONAL"
        if provisional
        else "NOT_REGISTERED"
    )
    if stolen:
        return "BLACKLISTED", (registration, "STOLEN")
    if complete:
        return "WHITELISTED", (registration,)
    return ("GREYLISTED" if provisional else "BLACKLISTED"), (registration,)


def test_the_schedule_changes_probe_answers_at_every_generation() -> None:
    # So an answer that matches the generation it reports matches no other one.
    answers = expected_answers()
    assert answers[1][probe(1)] == ("WHITELISTED", ("REGISTERED",))
    assert answers[1][probe(2)] == ("GREYLISTED", ("REGISTRATION_PROVISIONAL",))
    assert answers[2][probe(1)] == ("BLACKLISTED", ("REGISTERED", "STOLEN"))
    assert answers[7][probe(1)] == ("BLACKLISTED", ("NOT_REGISTERED", "STOLEN"))
    assert answers[7][probe(2)] == ("BLACKLISTED", ("NOT_REGISTERED",))
    assert answers[8][probe(1)] == ("BLACKLISTED", ("NOT_REGISTERED",))
    assert all(answers[k] != answers[k - 1] for k in range(1, DELTAS + 1))


@dataclass
class Seen:
    """What one client thread saw: its calls' generations and anything wrong."""

    generations: list[int] = field(default_factory=list)  # in call order
    by_connection: dict[int, list[int]] = field(default_factory=dict)
    # connection → generation → when the connection first got an answer from it
    first_seen: dict[int, dict[int, float]] = field(default_factory=dict)
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)


class Clients:
    """Client threads calling CheckImeis without pause until stopped, each answer checked."""

    def __init__(self, target: str, first_generation: int) -> None:
        self.first_generation = first_generation
        self.answers = expected_answers()
        self.stop = threading.Event()
        self.seen = [Seen() for _ in range(CLIENT_THREADS)]
        self.channels = [
            grpc.insecure_channel(target, options=OWN_CONNECTION)
            for _ in range(CLIENT_THREADS * CONNECTIONS_PER_THREAD)
        ]
        self.threads = [
            threading.Thread(target=self._call, args=(n,), daemon=True)
            for n in range(CLIENT_THREADS)
        ]

    def _batches(self, thread: int) -> Iterator[list[str]]:
        """Half the threads send every IMEI at once, the others a few probes at a time."""
        if thread % 2 == 0:
            while True:
                yield [*UNTOUCHED, *PROBES]
        while True:
            for start in range(0, DELTAS, SMALL_BATCH // 2):
                yield [R.registered, *PROBES[start : start + SMALL_BATCH - 1]]

    def _call(self, thread: int) -> None:
        seen = self.seen[thread]
        first = thread * CONNECTIONS_PER_THREAD
        stubs = [
            (first + n, LegalityServiceStub(channel))
            for n, channel in enumerate(self.channels[first : first + CONNECTIONS_PER_THREAD])
        ]
        batches = self._batches(thread)
        while not self.stop.is_set():
            for connection, stub in stubs:
                imeis = next(batches)
                try:
                    response = stub.CheckImeis(
                        pb.CheckImeisRequest(imeis=imeis), timeout=CALL_TIMEOUT
                    )
                except grpc.RpcError as error:
                    seen.failures.append(
                        f"connection {connection}: {error.code()} {error.details()}"
                    )
                    continue
                answered = time.time()
                seen.calls += 1
                generation = response.snapshot.generation
                seen.generations.append(generation)
                seen.by_connection.setdefault(connection, []).append(generation)
                seen.first_seen.setdefault(connection, {}).setdefault(generation, answered)
                self._check(seen, imeis, response)

    def _check(self, seen: Seen, imeis: list[str], response: pb.CheckImeisResponse) -> None:
        generation = response.snapshot.generation
        applied = generation - self.first_generation
        if not 0 <= applied <= DELTAS:
            seen.wrong.append(f"generation {generation} is outside the test's")
            return
        expected = self.answers[applied]
        for verdict in verdicts(imeis, response):
            answer = verdict.status, verdict.reasons
            if answer != expected[verdict.imei]:
                seen.wrong.append(
                    f"generation {generation}: {verdict.imei} answered {answer}, "
                    f"expected {expected[verdict.imei]}"
                )

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        for channel in self.channels:
            channel.close()

    def newest(self, connection: int) -> int:
        """The generation of the connection's last answer (-1 before any)."""
        seen = self.seen[connection // CONNECTIONS_PER_THREAD]
        return seen.by_connection.get(connection, [-1])[-1]

    def wait_until_all_answer_from(self, generation: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.newest(c) >= generation for c in range(len(self.channels))):
                return
            time.sleep(0.002)

    def first_time(self, connection: int, generation: int) -> float | None:
        """When `connection` first got an answer from `generation` or a later one."""
        seen = self.seen[connection // CONNECTIONS_PER_THREAD]
        first_seen = seen.first_seen.get(connection, {})
        return min((t for g, t in first_seen.items() if g >= generation), default=None)


class ServerLog:
    """The server's stderr, read as it is written (so the pipe never fills)."""

    LINE = re.compile(r"^(\S+ \S+) imeireg\[(\d+)\] (.*)$")
    SWITCH = re.compile(r"now answering from generation (\d+)")

    def __init__(self, server: ServerProcess) -> None:
        self.lines: list[str] = []
        assert server.process.stderr is not None
        self._reader = threading.Thread(
            target=lambda: self.lines.extend(server.process.stderr or ()), daemon=True
        )
        self._reader.start()

    def wait_for_workers(self, workers: int, timeout: float) -> None:
        """Until `workers` processes have said they serve: the port is then theirs to share."""
        deadline = time.monotonic() + timeout
        while len(self.serving_pids()) < workers and time.monotonic() < deadline:
            time.sleep(0.02)

    def finish(self) -> None:
        self._reader.join(timeout=30)

    def _entries(self) -> Iterator[tuple[float, int, str]]:
        for line in self.lines:
            if match := self.LINE.match(line.strip()):
                when = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                yield when, int(match[2]), match[3]

    def serving_pids(self) -> set[int]:
        return {pid for _, pid, message in self._entries() if message.startswith("serving ")}

    def switches(self) -> dict[int, list[tuple[float, int]]]:
        """Per worker pid: (time, generation) of each switch to a newer generation, in order."""
        found: dict[int, list[tuple[float, int]]] = {}
        for when, pid, message in self._entries():
            if match := self.SWITCH.match(message):
                found.setdefault(pid, []).append((when, int(match[1])))
        return found


@pytest.fixture
def two_workers(small_registry: SmallRegistry) -> Iterator[tuple[ServerProcess, ServerLog]]:
    with running_server(small_registry.db, "--workers", str(WORKERS)) as server:
        log = ServerLog(server)
        try:
            log.wait_for_workers(WORKERS, timeout=START_TIMEOUT)
            yield server, log
        finally:
            server.stop()  # the server and both workers, so that the log ends
            log.finish()


def test_deltas_under_load_drop_nothing_and_answer_from_one_generation(
    small_registry: SmallRegistry,
    two_workers: tuple[ServerProcess, ServerLog],
    tmp_path: Path,
) -> None:
    server, log = two_workers
    store = Store.create(small_registry.db)  # the importer's own handle; the workers only read
    with store.read() as view:
        first_generation = view.snapshot().generation
    clients = Clients(server.target, first_generation)
    clients.start()
    committed: dict[int, float] = {}  # generation → when its import returned
    try:
        clients.wait_until_all_answer_from(first_generation, timeout=CONNECT_TIMEOUT)
        for k in range(1, DELTAS + 1):
            changes = delta(k)
            path = write(tmp_path / f"delta-{k:02d}.csv", [changes.header, *changes.rows])
            record = import_delta(store, changes.list_name, path)
            committed[record.generation] = time.time()
            assert record.generation == first_generation + k
            clients.wait_until_all_answer_from(record.generation, timeout=VISIBLE_WAIT)
    finally:
        clients.close()
        store.close()
    server.stop()
    log.finish()

    seen = clients.seen
    calls = sum(s.calls for s in seen)
    assert [f for s in seen for f in s.failures] == []
    assert [w for s in seen for w in s.wrong] == []
    assert calls > 10 * DELTAS

    # Generations never go back on a connection: one worker answers it, and its watcher
    # only swaps forward. (Each worker builds and swaps on its own, so two connections
    # may answer from two generations for the length of a build: no call waits for one.)
    for s in seen:
        for generations in s.by_connection.values():
            assert generations == sorted(generations)

    # Every connection answered from every generation.
    unseen = [
        (c, g)
        for g in committed
        for c in range(len(clients.channels))
        if clients.first_time(c, g) is None
    ]
    assert unseen == []

    # And so did every worker, by its own log: both pids switched past each generation.
    workers = log.serving_pids()
    switches = log.switches()
    assert len(workers) == WORKERS
    assert set(switches) == workers, "a worker got no connection or never switched"
    for pid in workers:
        for generation in committed:
            reached = [when for when, g in switches[pid] if g >= generation]
            assert reached, f"worker {pid} never answered from generation {generation}"
