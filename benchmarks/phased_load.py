"""The load driver through phases: one continuous load, its calls counted per phase.

Like load.py's `run`, `PhasedLoad` starts client processes forked from the
forkserver, each keeping `job.concurrency` calls in flight over `job.channels`
connections, verifying one answer in `VERIFY_EVERY`. Unlike it, the clients keep
the same connections from start to end while the parent moves them from one named
phase to the next (`enter`), after an unmeasured warm-up. A call counts in the
phase in which it began, and a phase lasts from the parent's `enter` to the next,
so two phases' figures differ only by what happened on the server meanwhile.
`job.warmup` is unused (the parent decides when to enter the first phase) and
`job.duration` bounds the whole load, should the parent never stop it.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier
from types import TracebackType

from benchmarks.drivers import Job, driver_for
from benchmarks.load import (
    CONNECT_TIMEOUT,
    MAX_CALLS_PER_SLOT,
    MAX_ERRORS,
    SETUP_TIMEOUT,
    VERIFY_EVERY,
    client_context,
)
from benchmarks.measurement import Measurement, new_histogram

WARM_UP = "warm-up"
_RESULT_TIMEOUT = 60.0


class PhasedLoad:
    """`processes` client processes running `job` through `phases`; a context manager."""

    def __init__(self, job: Job, phases: Sequence[str], processes: int = 1) -> None:
        self.job = job
        self.phases = [WARM_UP, *phases]
        context = client_context()
        # The phase number the clients are in; past the last phase, they stop.
        self._phase: Synchronized[int] = context.Value("i", 0)
        self._results: multiprocessing.Queue[list[Measurement]] = context.Queue()
        self._start = context.Barrier(processes + 1, timeout=SETUP_TIMEOUT)
        self._clients: list[BaseProcess] = [
            context.Process(
                target=_client,
                args=(job, self.phases),
                kwargs={
                    "processes": processes,
                    "phase": self._phase,
                    "start": self._start,
                    "results": self._results,
                },
                daemon=True,
            )
            for _ in range(processes)
        ]
        self._entered: list[float] = []

    def __enter__(self) -> PhasedLoad:
        for client in self._clients:
            client.start()
        # Once every client has connected, the warm-up begins; should one fail to start,
        # the barrier breaks and finish() reports why.
        with suppress(threading.BrokenBarrierError):
            self._start.wait()
        self._entered.append(time.perf_counter())
        return self

    def enter(self, phase: str) -> None:
        """Count the calls that begin from now on in `phase` (the phases in their order)."""
        number = self.phases.index(phase)
        if number != len(self._entered):
            raise ValueError(f"phase {phase!r} entered out of order")
        self._entered.append(time.perf_counter())
        self._phase.value = number

    def finish(self) -> dict[str, Measurement]:
        """Stop the clients; per phase (the warm-up too), its Measurement summed over them."""
        ended = time.perf_counter()
        self._phase.value = len(self.phases)
        job = self.job
        totals = [
            Measurement(job.system, job.batch_size, job.concurrency, len(self._clients))
            for _ in self.phases
        ]
        try:
            for _ in self._clients:
                for total, part in zip(
                    totals, self._results.get(timeout=_RESULT_TIMEOUT), strict=True
                ):
                    total.add(part)
        except queue.Empty:
            totals[0].errors += 1
            totals[0].first_error = totals[0].first_error or "a client process gave no result"
        bounds = [*self._entered, ended]
        for total, (began, until) in zip(totals, itertools.pairwise(bounds), strict=False):
            total.seconds = until - began
            total.imeis = total.calls * job.batch_size
        return dict(zip(self.phases, totals, strict=True))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._phase.value = len(self.phases)
        for client in self._clients:
            client.join(timeout=10)
            if client.is_alive():
                client.kill()


def _client(
    job: Job,
    phases: list[str],
    *,
    processes: int,
    phase: Synchronized[int],
    start: Barrier,
    results: multiprocessing.Queue[list[Measurement]],
) -> None:
    if job.cpus:
        os.sched_setaffinity(0, job.cpus)
    measurements = [
        Measurement(job.system, job.batch_size, job.concurrency, processes) for _ in phases
    ]
    try:
        asyncio.run(_drive(job, phase, start, measurements))
    except Exception as error:  # reported, not raised: the parent waits for a result
        start.abort()  # nobody waits for a client that cannot start
        measurements[0].errors += 1
        measurements[0].first_error = f"{type(error).__name__}: {error}"
    results.put(measurements)


async def _drive(
    job: Job, phase: Synchronized[int], start: Barrier, measurements: list[Measurement]
) -> None:
    driver = driver_for(job)
    try:
        await asyncio.wait_for(driver.open(), CONNECT_TIMEOUT)
    except TimeoutError:
        raise RuntimeError(f"no connection to {job.target} in {CONNECT_TIMEOUT:.0f} s") from None
    start.wait()
    last = len(measurements) - 1
    give_up_at = time.perf_counter() + job.duration
    histograms = [new_histogram() for _ in measurements]
    cpu_at: dict[int, float] = {0: time.process_time()}  # phase → CPU time as it began
    requests, expected = job.requests, job.expected
    count = len(requests)
    errors = 0

    async def keep_calling(slot: int) -> None:
        nonlocal errors
        index = slot
        for made in range(MAX_CALLS_PER_SLOT):
            now = phase.value
            if now > last or errors >= MAX_ERRORS or time.perf_counter() >= give_up_at:
                return
            cpu_at.setdefault(now, time.process_time())
            measurement = measurements[now]
            request = requests[index % count]
            began = time.perf_counter()
            try:
                response = await driver.call(slot, request)
            except Exception as error:
                errors += 1
                measurement.errors += 1
                measurement.first_error = measurement.first_error or f"{error!r}"[:300]
                continue
            ended = time.perf_counter()
            measurement.calls += 1
            histograms[now].record_value(max(1, round((ended - began) * 1e6)))
            if made % VERIFY_EVERY == 0:
                measurement.verified += 1
                if not driver.verify(request, response, expected[index % len(expected)]):
                    measurement.mismatches += 1
            index += job.concurrency

    try:
        await asyncio.gather(*(keep_calling(slot) for slot in range(job.concurrency)))
    finally:
        await driver.close()
    cpu_at.setdefault(last + 1, time.process_time())
    marks = sorted(cpu_at.items())
    for (number, began), (_, until) in itertools.pairwise(marks):
        measurements[number].client_cpu_seconds = until - began
    for measurement, histogram in zip(measurements, histograms, strict=True):
        measurement.histogram = histogram.encode()
