"""Scale-out and failover: one client over three real `imeireg serve` replicas.

The client balances calls over every replica with gRPC's round_robin policy,
and a call whose replica dies before answering is retried on another.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import pytest
from support import (
    SMALL_REGISTRY_ANSWERS,
    ServerProcess,
    SmallRegistry,
    build_small_registry,
    free_port,
    imeireg_command,
    running_servers,
)

from imeireg.cli import main
from imeireg.cli_support import ExitCode
from imeireg.client import AsyncClient, Client, ImeiregError, Verdict
from imeireg.server.imports.full import import_file
from imeireg.server.model import ListName
from imeireg.server.store import Store
from imeireg.v1 import legality_pb2 as pb

R = SmallRegistry
Answer = tuple[str, str, tuple[str, ...]]
# Bounds of the waits for replicas to connect and for a load to reach a state: generous,
# for a loaded machine. A test waits up to one, polling; none asserts that a wait was short.
CONNECT_TIMEOUT = 60.0
LOAD_TIMEOUT = 60.0
# The deadline of each call of a load: a call waits on the frozen replica until it is
# killed, then is retried elsewhere, which may take a while on a loaded machine.
CALL_TIMEOUT = 60.0

# Facts of the small registry with their verdicts under the default policy.
EXPECTED = SMALL_REGISTRY_ANSWERS
# A home-network IMSI paired with none of these IMEIs: it changes none of their verdicts.
HOME_IMSI = R.paired_imsi


@dataclass(frozen=True)
class Batch:
    """One CheckImeis call of the load, and the answers it must get."""

    imeis: list[str]
    imsis: list[str] | None
    answers: list[Answer]


SMALL = Batch([imei for imei, _, _ in EXPECTED], None, EXPECTED)
FULL = Batch(SMALL.imeis * 1_000, [HOME_IMSI] * 10_000, EXPECTED * 1_000)


def answers(verdicts: list[Verdict]) -> list[Answer]:
    return [(v.imei, v.status, v.reasons) for v in verdicts]


def targets(replicas: Sequence[ServerProcess]) -> list[str]:
    return [replica.target for replica in replicas]


def until_every_replica_answers(generation: Callable[[], int], replicas: int = 3) -> None:
    """Calls `generation()` (the generation of one call's answer) until `replicas` of them
    have answered. round_robin sends calls only to the replicas it has connected to: once
    each has answered, all are connected, and calls take turns."""
    seen: set[int] = set()
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while len(seen) < replicas:
        if time.monotonic() > deadline:
            raise AssertionError(f"only generations {sorted(seen)} answered in {CONNECT_TIMEOUT} s")
        seen.add(generation())


@pytest.fixture
def replicas(small_registry: SmallRegistry) -> Iterator[list[ServerProcess]]:
    """Three servers answering from one store, as replicas of one snapshot do."""
    with running_servers([small_registry.db] * 3) as running:
        yield running


@pytest.fixture(scope="module")
def named_replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    """Three servers on copies of the small registry at generations 7, 8 and 9.

    A verdict's generation then names the replica that gave it.
    """
    dbs = []
    for extra_imports in range(3):
        directory = tmp_path_factory.mktemp(f"generation-{7 + extra_imports}")
        registry = build_small_registry(directory)
        store = Store.create(registry.db)
        try:
            for _ in range(extra_imports):
                import_file(store, ListName.BARRED, directory / "barred.csv")
        finally:
            store.close()
        dbs.append(registry.db)
    with running_servers(dbs) as running:
        yield running


def test_calls_are_spread_over_every_replica(named_replicas: list[ServerProcess]) -> None:
    with Client(targets(named_replicas)) as client:
        until_every_replica_answers(lambda: client.check([R.registered])[0].generation)
        generations = Counter(client.check([R.registered])[0].generation for _ in range(30))
    # pick_first, gRPC's default, would send all 30 to one replica.
    assert set(generations) == {7, 8, 9}
    assert min(generations.values()) >= 5


def test_async_client_spreads_calls_over_every_replica(
    named_replicas: list[ServerProcess],
) -> None:
    async def generations() -> Counter[int]:
        async with AsyncClient(targets(named_replicas)) as client:
            # Calls made before every replica is connected go to those that are, so the
            # calls are made one after another until all three have answered (or for
            # CONNECT_TIMEOUT s, however slow the connections are to come up).
            seen: Counter[int] = Counter()
            deadline = time.monotonic() + CONNECT_TIMEOUT
            while len(seen) < 3 and time.monotonic() < deadline:
                seen[(await client.check([R.registered]))[0].generation] += 1
            return seen

    # pick_first, gRPC's default, would send every call to one replica.
    assert set(asyncio.run(generations())) == {7, 8, 9}


def test_a_dns_name_is_a_target(named_replicas: list[ServerProcess]) -> None:
    port = named_replicas[0].target.rpartition(":")[2]
    with Client(f"dns:///localhost:{port}") as client:
        assert answers(client.check(SMALL.imeis)) == EXPECTED
        assert client.registry_info().generation == 7


def test_cli_takes_comma_separated_replicas_and_answers_with_one_down(
    named_replicas: list[ServerProcess],
) -> None:
    down = f"127.0.0.1:{free_port()}"
    finished = subprocess.run(
        imeireg_command("check", "--target", ",".join([down, *targets(named_replicas)]), R.barred),
        capture_output=True,
        text=True,
        check=False,
    )
    assert finished.returncode == ExitCode.NOT_WHITELISTED, finished.stderr
    assert finished.stdout.splitlines()[1].split() == [
        R.barred,
        "BLACKLISTED",
        "REGISTERED",
        "BARRED",
    ]


def test_cli_refuses_replicas_named_by_host_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["info", "--target", "registry-a.example:50051,registry-b.example:50051"])
    assert exited.value.code == ExitCode.USAGE
    assert "give one dns:///name:port target" in capsys.readouterr().err


@dataclass
class Tally:
    """What a load saw: calls answered, answers that were wrong, calls that failed."""

    answered: int = 0
    wrong: list[list[Answer]] = field(default_factory=list)
    failed: list[ImeiregError] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, batch: Batch, verdicts: list[Verdict]) -> None:
        with self._lock:
            self.answered += 1
            if answers(verdicts) != batch.answers:
                self.wrong.append(answers(verdicts))

    def fail(self, error: ImeiregError) -> None:
        with self._lock:
            self.failed.append(error)


def ask_until_stopped(client: Client, tally: Tally) -> None:
    while not tally.stopped.is_set():
        for batch in (SMALL, FULL):
            try:
                tally.record(batch, client.check(batch.imeis, batch.imsis))
            except ImeiregError as error:
                tally.fail(error)


async def ask_until_stopped_async(client: AsyncClient, tally: Tally) -> None:
    while not tally.stopped.is_set():
        for batch in (SMALL, FULL):
            try:
                tally.record(batch, await client.check(batch.imeis, batch.imsis))
            except ImeiregError as error:
                tally.fail(error)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = LOAD_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout} s")
        time.sleep(0.05)


def wait_for_stall(tally: Tally, quiet: float = 2.0, timeout: float = LOAD_TIMEOUT) -> int:
    """The count of answers once none has come for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    answered, since = tally.answered, time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError(f"the load kept being answered for {timeout} s")
        time.sleep(0.05)
        if tally.answered != answered:
            answered, since = tally.answered, time.monotonic()
    return answered


def kill_one_under_load(victim: ServerProcess, tally: Tally) -> None:
    """SIGKILL `victim` while every worker of the load has a call in flight on it.

    The victim is first frozen (SIGSTOP): round_robin keeps sending it calls,
    which wait there, until every worker waits on it and no answer comes. The
    kill then fails those calls mid-flight; they must be retried elsewhere.
    """
    wait_for(lambda: tally.answered >= 10, "answering")
    victim.process.send_signal(signal.SIGSTOP)
    try:
        answered_at_kill = wait_for_stall(tally)
    finally:
        victim.stop(signal.SIGKILL)  # a frozen process would ignore SIGTERM at teardown
    wait_for(lambda: tally.answered >= answered_at_kill + 20, "answering after the kill")
    tally.stopped.set()


def test_full_batch_with_imsis_is_over_grpcs_default_retry_buffer() -> None:
    # The reason the client raises grpc.per_rpc_retry_buffer_size: without it a
    # FULL batch in flight on a dying replica would fail instead of being retried.
    request = pb.CheckImeisRequest(imeis=FULL.imeis, imsis=FULL.imsis)
    assert request.ByteSize() > 256 << 10


def test_killing_a_replica_under_load_loses_no_answer(replicas: list[ServerProcess]) -> None:
    tally = Tally()
    with Client(targets(replicas), timeout=CALL_TIMEOUT) as client:
        workers = [
            threading.Thread(target=ask_until_stopped, args=(client, tally)) for _ in range(4)
        ]
        for worker in workers:
            worker.start()
        try:
            kill_one_under_load(replicas[1], tally)
        finally:
            tally.stopped.set()
            for worker in workers:
                worker.join()
    assert replicas[1].process.returncode == -signal.SIGKILL
    assert tally.failed == []
    assert tally.wrong == []
    assert tally.answered >= 30


def test_async_client_loses_no_answer_when_a_replica_is_killed(
    replicas: list[ServerProcess],
) -> None:
    tally = Tally()

    async def load() -> None:
        async with AsyncClient(targets(replicas), timeout=CALL_TIMEOUT) as client:
            await asyncio.gather(*(ask_until_stopped_async(client, tally) for _ in range(4)))

    # The load runs on its own event loop thread, so the kill is timed as for threads.
    loop_thread = threading.Thread(target=asyncio.run, args=(load(),))
    loop_thread.start()
    try:
        kill_one_under_load(replicas[1], tally)
    finally:
        tally.stopped.set()
        loop_thread.join()
    assert replicas[1].process.returncode == -signal.SIGKILL
    assert tally.failed == []
    assert tally.wrong == []
    assert tally.answered >= 30
