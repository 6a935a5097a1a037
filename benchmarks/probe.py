"""The generation probe: answers checked against the generation they report, and when each
connection first answers from each generation.

`Probes` are IMEIs whose answer is known at every generation: each changes at most
once, at a known generation (the delta that touches it), from its answer before to
its answer after. A probe process (`run`, started with `start`) keeps calling
CheckImeis with every probe IMEI on several connections of its own, a call every
`interval` seconds on each, until told to stop; it checks every answer, IMEI by
IMEI, against the generation the answer reports, and records the time each
connection first got an answer from each generation (wall-clock, comparable with
the importer's commit times).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from benchmarks.drivers import CHECK_METHOD
from imeireg.v1 import legality_pb2 as pb

U8 = npt.NDArray[np.uint8]
U32 = npt.NDArray[np.uint32]
I64 = npt.NDArray[np.int64]

NEVER = np.iinfo(np.int64).max
CALL_TIMEOUT = 60.0
_OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
_RESULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Probes:
    """IMEIs and their answers: `before` until generation `changes_at`, `after` from it on."""

    imeis: list[str]
    changes_at: I64  # NEVER for an IMEI no delta touches
    statuses_before: U8
    reasons_before: U32
    statuses_after: U8
    reasons_after: U32

    def expected(self, generation: int) -> tuple[U8, U32]:
        """Statuses and reason bits of every probe at `generation`."""
        changed = self.changes_at <= generation
        return (
            np.where(changed, self.statuses_after, self.statuses_before),
            np.where(changed, self.reasons_after, self.reasons_before),
        )

    def distinguishes(self, first: int, last: int) -> bool:
        """Whether the answers of generations first..last all differ from their neighbours',
        so that an answer right for the generation it reports is right for no other one."""
        return all(
            np.any(self.changes_at == generation) for generation in range(first + 1, last + 1)
        )


@dataclass
class ProbeFindings:
    """What the probe process saw."""

    connections: int
    calls: int = 0
    errors: int = 0
    first_error: str = ""
    answers_checked: int = 0  # calls whose every IMEI was compared with its generation's answer
    wrong: int = 0  # calls with an IMEI answered otherwise than its generation says
    first_wrong: str = ""
    backwards: int = 0  # answers from an older generation than the connection's previous one
    generations: list[int] = field(default_factory=list)  # distinct, in order of first sight
    # Per connection: generation → wall-clock time the connection first got an answer from it.
    first_seen: list[dict[int, float]] = field(default_factory=list)

    def first_at_or_after(self, connection: int, generation: int) -> float | None:
        """When `connection` first answered from `generation` or a later one."""
        seen = self.first_seen[connection]
        return min((when for g, when in seen.items() if g >= generation), default=None)


def start(
    target: str, probes: Probes, connections: int, interval: float, cpus: tuple[int, ...]
) -> tuple[BaseProcess, Event, multiprocessing.Queue[ProbeFindings]]:
    """Start the probe process, forked from the forkserver like the load's clients."""
    context = multiprocessing.get_context("forkserver")
    stop = context.Event()
    results: multiprocessing.Queue[ProbeFindings] = context.Queue()
    process = context.Process(
        target=run,
        args=(target, probes),
        kwargs={
            "connections": connections,
            "interval": interval,
            "cpus": cpus,
            "stop": stop,
            "results": results,
        },
        daemon=True,
    )
    process.start()
    return process, stop, results


def finish(
    process: BaseProcess, stop: Event, results: multiprocessing.Queue[ProbeFindings]
) -> ProbeFindings:
    """Stop the probe and return what it saw."""
    stop.set()
    try:
        return results.get(timeout=_RESULT_TIMEOUT)
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()


def run(
    target: str,
    probes: Probes,
    *,
    connections: int,
    interval: float,
    cpus: tuple[int, ...],
    stop: Event,
    results: multiprocessing.Queue[ProbeFindings],
) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    findings = ProbeFindings(connections, first_seen=[{} for _ in range(connections)])
    try:
        asyncio.run(_probe(target, probes, interval, stop, findings))
    except Exception as error:  # reported, not raised: the parent waits for a result
        findings.errors += 1
        findings.first_error = findings.first_error or f"{type(error).__name__}: {error}"
    results.put(findings)


async def _probe(
    target: str, probes: Probes, interval: float, stop: Event, findings: ProbeFindings
) -> None:
    request = pb.CheckImeisRequest(imeis=probes.imeis).SerializeToString()
    channels = [
        grpc.aio.insecure_channel(target, options=_OWN_CONNECTION)
        for _ in range(findings.connections)
    ]
    expected: dict[int, tuple[U8, U32]] = {}

    async def keep_probing(connection: int, channel: Any) -> None:
        call = channel.unary_unary(CHECK_METHOD)
        newest = -1
        seen = findings.first_seen[connection]
        while not stop.is_set():
            began = time.monotonic()
            try:
                raw = await call(request, timeout=CALL_TIMEOUT)
            except Exception as error:
                findings.errors += 1
                findings.first_error = findings.first_error or f"{error!r}"[:300]
                await asyncio.sleep(interval)
                continue
            answered = time.time()
            response = pb.CheckImeisResponse.FromString(raw)
            findings.calls += 1
            generation = response.snapshot.generation
            if generation not in seen:
                seen[generation] = answered
                if generation not in findings.generations:
                    findings.generations.append(generation)
            if generation < newest:
                findings.backwards += 1
            newest = max(newest, generation)
            if generation not in expected:
                expected[generation] = probes.expected(generation)
            _check(findings, probes, generation, response, expected[generation])
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - began)))

    try:
        await asyncio.gather(*(keep_probing(n, c) for n, c in enumerate(channels)))
    finally:
        for channel in channels:
            await channel.close()


def _check(
    findings: ProbeFindings,
    probes: Probes,
    generation: int,
    response: pb.CheckImeisResponse,
    expected: tuple[U8, U32],
) -> None:
    findings.answers_checked += 1
    statuses, reasons = expected
    got_statuses = np.array(response.statuses, dtype=np.uint8)
    got_reasons = np.array(response.reasons, dtype=np.uint32)
    if len(got_statuses) == len(statuses) and len(got_reasons) == len(reasons):
        differ = np.flatnonzero((got_statuses != statuses) | (got_reasons != reasons))
        if not len(differ):
            return
        at = int(differ[0])
        detail = (
            f"{probes.imeis[at]} answered status {got_statuses[at]} reasons {got_reasons[at]:#x}, "
            f"expected {statuses[at]} / {reasons[at]:#x} ({len(differ)} IMEIs differ)"
        )
    else:
        detail = f"{len(got_statuses)} statuses for {len(statuses)} IMEIs"
    findings.wrong += 1
    findings.first_wrong = findings.first_wrong or f"generation {generation}: {detail}"
