"""The watcher (`imeireg.server.serving.watcher`), in process, on a real store: it builds the
next serving state on a thread while the event loop keeps answering from the current one,
then swaps; it never swaps backwards, and a store it cannot open leaves it serving."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from support import SmallRegistry, imeireg_command, write

from imeireg.server.check.policy import Policy
from imeireg.server.check.verdict import check
from imeireg.server.serving import build, watcher
from imeireg.server.serving.lag import LagProbe
from imeireg.server.serving.state import ServingState
from imeireg.server.serving.watcher import Watcher
from imeireg.server.store import Store
from imeireg.v1 import legality_pb2 as pb

R = SmallRegistry
WHITELISTED = pb.EQUIPMENT_STATUS_WHITELISTED
BLACKLISTED = pb.EQUIPMENT_STATUS_BLACKLISTED
# Bounds for what a busy machine may take; only a broken watcher needs them.
WAIT = 60.0


def import_stolen(db: Path, tmp_path: Path, imei: str) -> None:
    """Report `imei` stolen (a full import of the stolen list), from another process, as an
    operator would: LMDB opens an environment once per process, and the watcher has it."""
    path = write(tmp_path / f"stolen-{imei}.csv", ["imei,reporting_date,status", f"{imei},,"])
    command = imeireg_command("import", "stolen", str(path), "--force", "--db", str(db))
    done = subprocess.run(command, capture_output=True, text=True, timeout=WAIT, check=False)
    assert done.returncode == 0, done.stderr


async def until(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0.01)


def run_with_watcher(db: Path, test: Callable[[Watcher], Awaitable[None]]) -> None:
    """Run `test` on an event loop with a watcher of `db` keeping its state current."""

    async def main() -> None:
        probe = LagProbe()
        probe.start()
        keeper = Watcher(db, Policy.default(), probe)
        task = asyncio.create_task(keeper.run())
        try:
            await test(keeper)
        finally:
            task.cancel()
            probe.stop()
            keeper.close()

    asyncio.run(main())


def statuses(state: ServingState, *imeis: str) -> list[int]:
    found: list[int] = check(state, list(imeis)).statuses.tolist()
    return found


def test_a_committed_import_is_built_and_swapped_in(
    tmp_path: Path, small_registry: SmallRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="imeireg.server")

    async def test(keeper: Watcher) -> None:
        first = keeper.state
        assert statuses(first, R.registered) == [WHITELISTED]
        generation = first.snapshot.generation + 1
        await asyncio.to_thread(import_stolen, small_registry.db, tmp_path, R.registered)
        await until(lambda: keeper.state.snapshot.generation == generation, "the new generation")
        assert statuses(keeper.state, R.registered) == [BLACKLISTED]
        assert check(keeper.state, [R.registered]).snapshot.generation == generation

    run_with_watcher(small_registry.db, test)
    assert any(
        "now answering from generation 8 (was 7): built in" in r.message
        and "the event loop's worst lag meanwhile" in r.message
        for r in caplog.records
    )


def test_the_loop_answers_from_the_old_state_while_the_next_one_is_built(
    tmp_path: Path, small_registry: SmallRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build is held on its thread until the loop has answered from the old state: were
    the build on the loop, the loop could not answer, and the test would time out."""
    building, release_build = threading.Event(), threading.Event()
    real_next_state = build.next_state

    def held_next_state(store: Store, previous: ServingState) -> ServingState | None:
        building.set()
        release_build.wait(WAIT)
        return real_next_state(store, previous)

    monkeypatch.setattr(watcher, "next_state", held_next_state)

    async def test(keeper: Watcher) -> None:
        old = keeper.state
        generation = old.snapshot.generation + 1
        await asyncio.to_thread(import_stolen, small_registry.db, tmp_path, R.registered)
        await until(building.is_set, "the build to start")
        for _ in range(3):  # the loop runs, and answers from the state it has
            await asyncio.sleep(0.01)
            assert keeper.state is old
            assert statuses(keeper.state, R.registered) == [WHITELISTED]
        release_build.set()
        await until(lambda: keeper.state.snapshot.generation == generation, "the swap")
        assert statuses(keeper.state, R.registered) == [BLACKLISTED]
        # The old state is closed once swapped out: its view no longer reads.
        with pytest.raises(Exception):  # noqa: B017 (py-lmdb's error for a closed transaction)
            old.view.snapshot()

    run_with_watcher(small_registry.db, test)


def test_a_repointed_link_switches_stores_and_an_unusable_one_is_ignored(
    tmp_path: Path, small_registry: SmallRegistry
) -> None:
    link = tmp_path / "current"
    os.symlink(small_registry.db, link)
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.mdb").write_bytes(b"not an LMDB file")

    async def test(keeper: Watcher) -> None:
        generation = keeper.state.snapshot.generation
        # A directory holding no usable store: the watcher keeps the store it has.
        os.unlink(link)
        os.symlink(other, link)
        await until(lambda: keeper._rejected_target == other.resolve(), "the rejection")
        assert keeper.state.snapshot.generation == generation
        assert statuses(keeper.state, R.registered) == [WHITELISTED]
        # A copy of the registry with one more generation: the watcher switches to it.
        copy = tmp_path / "copy"
        copy.mkdir()
        (copy / "data.mdb").write_bytes((small_registry.db / "data.mdb").read_bytes())
        await asyncio.to_thread(import_stolen, copy, tmp_path, R.registered)
        os.unlink(link)
        os.symlink(copy, link)
        await until(lambda: keeper.target == copy.resolve(), "the switch")
        assert keeper.state.snapshot.generation == generation + 1
        assert statuses(keeper.state, R.registered) == [BLACKLISTED]

    run_with_watcher(link, test)
