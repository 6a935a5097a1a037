"""The load driver: client processes that keep calls in flight, warm up, then measure.

`run(job, processes)` starts `processes` client processes (forked from a
forkserver that has already imported every driver, so a run starts in
milliseconds); each keeps `job.concurrency` calls in flight on one asyncio loop,
calls for `job.warmup` seconds unmeasured, then for `job.duration` seconds
records every call's latency in an HDR histogram. Every call is bounded in time
and every loop in count. One call in `VERIFY_EVERY` has its answer parsed and
compared with the expected one, so the client stays cheap.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import threading
import time
from multiprocessing.context import ForkServerContext
from multiprocessing.synchronize import Barrier

from benchmarks.drivers import Job, driver_for
from benchmarks.measurement import Measurement, new_histogram

VERIFY_EVERY = 64
MAX_CALLS_PER_SLOT = 100_000_000
MAX_ERRORS = 100
CONNECT_TIMEOUT = 20.0
SETUP_TIMEOUT = 60.0


def client_context() -> ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    # Every import a client needs (numpy, grpc, redis, psycopg, imeireg) is done once, in
    # the forkserver; a client only re-runs the main module's own code (as __mp_main__).
    context.set_forkserver_preload(["benchmarks.drivers"])
    return context


def run(job: Job, processes: int = 1) -> Measurement:
    """Run `job` in `processes` client processes at once; their measurements summed."""
    context = client_context()
    results: multiprocessing.Queue[Measurement] = context.Queue()
    start = context.Barrier(processes + 1, timeout=SETUP_TIMEOUT)
    workers = [
        context.Process(target=_client, args=(job, processes, start, results), daemon=True)
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    total = Measurement(job.system, job.batch_size, job.concurrency, processes)
    deadline = time.monotonic() + SETUP_TIMEOUT
    try:
        start.wait()
        deadline += job.warmup + job.duration
    except threading.BrokenBarrierError:
        deadline = time.monotonic() + 5  # a client failed to start: collect why
    try:
        for _ in workers:
            total.add(results.get(timeout=max(1.0, deadline - time.monotonic())))
    except queue.Empty:
        total.errors += 1
        total.first_error = total.first_error or "a client process gave no result in time"
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
    return total


def _client(
    job: Job, processes: int, start: Barrier, results: multiprocessing.Queue[Measurement]
) -> None:
    if job.cpus:
        os.sched_setaffinity(0, job.cpus)
    try:
        measurement = asyncio.run(_drive(job, processes, start))
    except Exception as error:  # reported, not raised: the parent waits for a result
        start.abort()  # nobody waits for a client that cannot start
        measurement = Measurement(job.system, job.batch_size, job.concurrency, 1)
        measurement.errors = 1
        measurement.first_error = f"{type(error).__name__}: {error}"
    results.put(measurement)


async def _drive(job: Job, processes: int, start: Barrier) -> Measurement:
    driver = driver_for(job)
    try:
        await asyncio.wait_for(driver.open(), CONNECT_TIMEOUT)
    except TimeoutError:
        raise RuntimeError(f"no connection to {job.target} in {CONNECT_TIMEOUT:.0f} s") from None
    start.wait()  # every process connected: warm up and measure together
    measurement = Measurement(job.system, job.batch_size, job.concurrency, processes)
    histogram = new_histogram()
    requests, expected = job.requests, job.expected
    count = len(requests)
    measure_from = time.perf_counter() + job.warmup
    stop_at = measure_from + job.duration
    cpu_at_start: list[float] = []

    async def keep_calling(slot: int) -> None:
        index = slot
        for made in range(MAX_CALLS_PER_SLOT):
            began = time.perf_counter()
            if began >= stop_at or measurement.errors >= MAX_ERRORS:
                return
            request = requests[index % count]
            try:
                response = await driver.call(slot, request)
            except Exception as error:
                measurement.errors += 1
                measurement.first_error = measurement.first_error or f"{error!r}"[:300]
                continue
            ended = time.perf_counter()
            if not cpu_at_start and ended >= measure_from:
                cpu_at_start.append(time.process_time())
            if began >= measure_from:
                measurement.calls += 1
                histogram.record_value(max(1, round((ended - began) * 1e6)))
            if made % VERIFY_EVERY == 0:
                measurement.verified += 1
                if not driver.verify(request, response, expected[index % len(expected)]):
                    measurement.mismatches += 1
            index += job.concurrency

    try:
        await asyncio.gather(*(keep_calling(slot) for slot in range(job.concurrency)))
    finally:
        await driver.close()
    measurement.seconds = time.perf_counter() - measure_from
    if cpu_at_start:
        measurement.client_cpu_seconds = time.process_time() - cpu_at_start[0]
    measurement.imeis = measurement.calls * job.batch_size
    measurement.histogram = histogram.encode()
    return measurement
