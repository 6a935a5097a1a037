"""The watcher: one per serving process, it keeps `state` current without stopping the loop.

Every `POLL_SECONDS` it asks the store for its newest snapshot (one short read) and
resolves `--db` (a symlink a replica's `snapshot install` repoints). When either moved,
it builds the next `ServingState` on a thread — the previous state keeps answering
meanwhile — and swaps one reference. Handlers read `watcher.state` once per request and
never await before answering, so every answer comes from exactly one generation.

Builds run on one thread of their own, at the loop's priority. A niced build thread was
tried, and stalls of up to 793 ms were seen with it in the updates benchmark at load 9:
most likely a priority inversion, the starved thread holding the GIL the loop waited for.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from imeireg.server.check.policy import Policy
from imeireg.server.model import Snapshot
from imeireg.server.serving.build import first_state, next_state
from imeireg.server.serving.lag import LagProbe
from imeireg.server.serving.state import ServingState, release
from imeireg.server.store import Store

log = logging.getLogger("imeireg.server")
Built = TypeVar("Built")

#: How often the store and the `--db` link are looked at: a committed import is answered
#: within this plus its build (a delta at 10^7 IMEIs: tens of milliseconds).
POLL_SECONDS = 0.1


class Watcher:
    """The current serving state of one process, and the task that keeps it current."""

    def __init__(self, link: Path, policy: Policy, probe: LagProbe | None = None) -> None:
        self.link = link
        self.target = Path(os.path.realpath(link))
        # The first state is built before the process serves: nothing waits for it.
        self._store = Store.open(self.target)
        try:
            self.state: ServingState = first_state(self._store, policy)
        except BaseException:
            self._store.close()
            raise
        self._probe = probe
        self._builder = ThreadPoolExecutor(1, "state-build")
        self._rejected_target: Path | None = None
        self._failed_snapshot: Snapshot | None = None

    def close(self) -> None:
        self._builder.shutdown(wait=True, cancel_futures=True)
        self.state.close()
        self._store.close()

    async def run(self) -> None:
        """Keep `state` current until cancelled."""
        while True:
            await asyncio.sleep(POLL_SECONDS)
            target = Path(os.path.realpath(self.link))
            if target not in (self.target, self._rejected_target):
                await self._switch_store(target)
            elif (snapshot := self._store.current_snapshot()) not in (
                self.state.snapshot,
                self._failed_snapshot,
            ):
                await self._catch_up(snapshot)

    async def _catch_up(self, snapshot: Snapshot) -> None:
        """Build the state of the store's newest snapshot from the current one, then swap."""
        previous = self.state
        began = self._begin_build()
        try:
            built = await self._on_builder(next_state, self._store, previous)
        except Exception:  # whatever broke the build, keep answering from the old state
            log.exception(
                "could not build generation %d; still answering from generation %d",
                snapshot.generation,
                previous.snapshot.generation,
            )
            self._failed_snapshot = snapshot
            return
        if built is None:
            return
        self.state = built
        release(previous, built)
        self._failed_snapshot = None
        self._report("now answering from generation %d (was %d)", built, previous, began)

    async def _switch_store(self, target: Path) -> None:
        """Open the store `--db` now resolves to, build its state, then swap both."""
        previous, previous_store = self.state, self._store
        began = self._begin_build()
        try:
            store, built = await self._on_builder(_opened, target, previous.policy)
        except Exception as error:  # whatever is wrong with it, keep serving the old snapshot
            log.error(
                "not switching to snapshot %s (still serving %s generation %d): %s",
                target,
                self.target,
                previous.snapshot.generation,
                error,
            )
            self._rejected_target = target
            return
        self.state, self._store, self.target = built, store, target
        self._rejected_target = self._failed_snapshot = None
        previous.close()
        previous_store.close()
        self._report(
            f"switched to snapshot {target} generation %d (was %d)", built, previous, began
        )

    async def _on_builder(self, build: Callable[..., Built], *args: Any) -> Built:
        """`build(*args)` on the build thread; the loop goes on meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self._builder, build, *args)

    def _begin_build(self) -> float:
        if self._probe is not None:
            self._probe.take_worst()
        return time.perf_counter()

    def _report(self, what: str, built: ServingState, previous: ServingState, began: float) -> None:
        lag = ""
        if self._probe is not None:
            lag = f"; the event loop's worst lag meanwhile {self._probe.take_worst() * 1e3:.1f} ms"
        log.info(
            what + ": built in %.0f ms" + lag,
            built.snapshot.generation,
            previous.snapshot.generation,
            (time.perf_counter() - began) * 1e3,
        )


def _opened(target: Path, policy: Policy) -> tuple[Store, ServingState]:
    store = Store.open(target)
    try:
        return store, first_state(store, policy)
    except BaseException:
        store.close()
        raise
