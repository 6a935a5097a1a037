"""The updates benchmark: `python -m benchmarks.updates [--registered N] [--deltas 100] ...`.

Issue "Live registry operations", updates under load with nothing dropped: while
the load driver runs against `imeireg serve --workers N`, apply `--deltas`
consecutive delta imports of `--delta-size` IMEIs each, and show 0 failed requests,
every answer consistent with exactly the generation it reports, each commit
answered from by every worker within 1 s, throughput during the updates within 20 %
of the steady figure, and the event loop of no worker stalled more than 5 ms by a
generation switch. One run:
1. generates the registry, writes its DIRBS files and imports them, one generation
   per list (dirbs.py), and builds run.py's workload pool with its expected answers;
2. draws the deltas from the registry, none touching a workload query (delta_files.py):
   registrations added and removed, stolen reports added; with `--full-reimport`, one
   more registration change of 1 % of the list's rows, written as the whole
   registration list after every delta (a full file of 10^7 rows at 10^7);
3. picks probe IMEIs, one of each kind of change of each delta and some untouched
   ones, whose answer at every generation follows from their answer now (imeireg's
   checker in this process) and the one change a delta makes to their facts;
4. starts `imeireg serve --workers N`, the probe process (probe.py: every answer
   checked against its generation, the time each of its connections first answers
   from each generation) and the load (phased_load.py: unary CheckImeis at batch
   1,000 on the same connections throughout), then runs the phases: warm-up, steady,
   updates (the deltas back to back, `import_delta` in an importer process pinned to
   the importer's CPU), steady after, and with `--full-reimport` the full re-import
   (`import_file`, until every worker answers from it); the workers share both CPUs
   with the importer on CPU 0, as on a registry host, or with `--split-cpus` have
   CPU 0 to themselves (the issue's setting for the event loop's stalls);
5. reads from the server's log when each worker switched to each generation, how long
   it took to build that generation's state and the event loop's worst lag meanwhile
   (workers.py), and checks the probes' final answers against a checker on the final
   store.
The report goes to benchmarks/results/<timestamp>-updates/ (report.md, results.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import answers, delta_files, dirbs, machine, probe, registry, workers, workload
from benchmarks.delta_files import Change, Delta
from benchmarks.drivers import Job, System, expected_answers, prepare
from benchmarks.load import client_context
from benchmarks.measurement import Measurement
from benchmarks.phased_load import WARM_UP, PhasedLoad
from benchmarks.probe import NEVER, ProbeFindings, Probes
from benchmarks.servers import imeireg_server
from benchmarks.textrows import luhn_imeis
from benchmarks.workers import Switch
from imeireg.server.check.fact_table import SEGMENT_DTYPE
from imeireg.server.check.policy import Policy
from imeireg.server.check.verdict import check
from imeireg.server.imports.delta import import_delta
from imeireg.server.imports.full import import_file
from imeireg.server.model import ImportRecord, ListName
from imeireg.server.serving.build import opened_state
from imeireg.server.store import Store

RESULTS = Path(__file__).parent / "results"
BATCH_SIZE = 1_000
CONCURRENCY = 4
CHANNELS = 4
MAX_QUERIES = 1_000_000  # the workload pool, at most a tenth of the registrations
WARMUP = 3.0
LOAD_BOUND = 3_600.0  # seconds the load may run at most, should this process never stop it
PROBE_CONNECTIONS = 8
PROBE_INTERVAL = 0.1  # seconds between two probe calls on one connection
UNTOUCHED_PROBES = 56
VISIBLE_WITHIN = 1.0
THROUGHPUT_TOLERANCE = 0.20
LOOP_STALL_MS = 5.0  # the longest the event loop may run late during a generation switch
SERVING_TIMEOUT = 60.0
REIMPORT_CHANGE = 0.01  # of the registration list's rows, changed by the full re-import
REIMPORT_SWITCH_TIMEOUT = 120.0  # seconds from its commit for every worker to answer from it

STEADY = "steady"
UPDATES = "updates"
AFTER = "steady after"
REIMPORT = "full re-import"
PHASES = (STEADY, UPDATES, AFTER)
_MIB = 2**20


@dataclass(frozen=True)
class Cpus:
    """Where each process runs: the server's workers, the load's client process and the
    probe, and the importer process."""

    server: tuple[int, ...]
    client: tuple[int, ...]
    importer: tuple[int, ...]

    def describe(self) -> str:
        if not self.server:
            return "none (taskset missing or one CPU)"
        return (
            f"imeireg serve's workers on CPU {_cpus(self.server)}, the load's client process "
            f"and the probe on CPU {_cpus(self.client)}, the importer on CPU "
            f"{_cpus(self.importer)}"
        )


# A registry host that imports and serves: on 2 cores, what the importer and the switches
# cost is taken from serving.
SHARED_CPUS = Cpus(server=(0, 1), client=(1,), importer=(0,))
# The setting for the event loop's stalls: the server alone on one CPU, the importer
# with the clients on the other, so that a stall is the server's own and not preemption.
SPLIT_CPUS = Cpus(server=(0,), client=(1,), importer=(1,))
UNPINNED = Cpus(server=(), client=(), importer=())


@dataclass(frozen=True)
class DeltaImport:
    """One delta imported under load."""

    number: int
    list_name: str
    rows: int
    added: int
    removed: int
    generation: int
    seconds: float  # import_delta, from reading the file to the commit
    committed_at: float  # Unix time when import_delta returned


@dataclass
class FullReimport:
    """The registration list imported in full under load, `changed` of its rows changed."""

    rows: int  # of the file
    changed: int  # registrations added and removed since the list after the deltas
    file_bytes: int
    generation: int = 0
    added: int = 0
    removed: int = 0
    seconds: float = 0.0  # import_file, from reading the file to the commit
    cpu_seconds: float = 0.0  # the importer process's
    committed_at: float = 0.0  # Unix time when import_file returned
    # pid → seconds from the commit to the worker answering from it (None: never)
    worker_lags: dict[int, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class SwitchFigures:
    """The workers' switches to some generations: build times and the loop's worst lag."""

    switches: int
    build_ms_p50: float | None
    build_ms_p99: float | None
    build_ms_max: float | None
    loop_lag_ms_p50: float | None
    loop_lag_ms_p99: float | None
    loop_lag_ms_max: float | None

    @classmethod
    def of(cls, switches: Sequence[Switch]) -> SwitchFigures:
        builds = _spread([s.build_ms for s in switches])
        lags = _spread([s.loop_lag_ms for s in switches])
        return cls(len(switches), *builds, *lags)


def _spread(values: Sequence[float | None]) -> tuple[float | None, float | None, float | None]:
    """p50, p99 and max of the values logged (None: none was)."""
    logged = [value for value in values if value is not None]
    if not logged:
        return None, None, None
    p50, p99 = np.percentile(logged, [50, 99]).tolist()
    return round(p50, 2), round(p99, 2), max(logged)


@dataclass
class UpdatesRun:
    """Every figure of one run: results.json, and what report.md shows."""

    command: str
    started: str
    machine: dict[str, str]
    settings: dict[str, Any]
    registered_rows: int = 0
    steps: dict[str, float] = field(default_factory=dict)  # setup step → seconds
    base_generation: int = 0
    probe_imeis: int = 0
    touched_probes: int = 0
    phases: dict[str, Measurement] = field(default_factory=dict)
    imports: list[DeltaImport] = field(default_factory=list)
    worker_connections: dict[int, int] = field(default_factory=dict)  # pid → load connections
    # pid → generation → seconds from the commit to the worker answering from it (None: never)
    worker_lags: dict[int, dict[int, float | None]] = field(default_factory=dict)
    # generation → seconds from the commit to the last probe connection answering from it
    probe_lags: dict[int, float | None] = field(default_factory=dict)
    probe: ProbeFindings | None = None
    worker_cpu_seconds: dict[str, float] = field(default_factory=dict)  # phase → all workers'
    importer_cpu_seconds: float = 0.0  # the importer process's, for the deltas
    # Every switch of a worker to a newer generation, as the workers logged it.
    switches: list[Switch] = field(default_factory=list)
    switch_figures: dict[str, SwitchFigures] = field(default_factory=dict)  # deltas, re-import
    reimport: FullReimport | None = None
    server_rss_before: int = 0  # all workers, as the load begins
    server_rss_after: int = 0
    server_anonymous_before: int = 0  # of which their own memory, not the mapped store's pages
    server_anonymous_after: int = 0
    segment_points_before: int = 0  # the fact table's rows, from the store's segments
    segment_points_after: int = 0
    failed: str = ""
    problems: list[str] = field(default_factory=list)

    def save(self, path: Path) -> None:
        record = asdict(self)
        for measurement in record["phases"].values():
            measurement["histogram"] = measurement["histogram"].decode("ascii")  # HDR's base64
        path.write_text(json.dumps(record, indent=1) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.updates", *(argv or sys.argv[1:])])
    pinning = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    cpus = (SPLIT_CPUS if args.split_cpus else SHARED_CPUS) if pinning else UNPINNED
    started = datetime.datetime.now(datetime.UTC)
    description = machine.describe()
    description["cpu pinning"] = cpus.describe()
    description["cpu pressure at start"] = _cpu_pressure()
    run = UpdatesRun(
        command=command,
        started=f"{started:%Y-%m-%d %H:%M:%S} UTC",
        machine=description,
        settings={
            "registered": args.registered,
            "deltas": args.deltas,
            "delta_size": args.delta_size,
            "workers": args.workers,
            "seconds_steady": args.seconds_steady,
            "interval": args.interval,
            "importer_nice": args.importer_nice,
            "seed": args.seed,
            "queries": min(MAX_QUERIES, args.registered // 10),
            "batch_size": BATCH_SIZE,
            "concurrency": CONCURRENCY,
            "channels": CHANNELS,
            "warmup": WARMUP,
            "probe_connections": PROBE_CONNECTIONS,
            "probe_interval": PROBE_INTERVAL,
            "full_reimport": args.full_reimport,
            "reimport_change": REIMPORT_CHANGE,
            "split_cpus": args.split_cpus,
            "pinning": pinning,
        },
    )
    step = ["setup"]
    try:
        with tempfile.TemporaryDirectory(prefix="imeireg-updates-", dir=args.work_dir) as scratch:
            _measure(run, args, Path(scratch), cpus, step)
    except (Exception, KeyboardInterrupt) as error:  # reported: what was measured still goes out
        run.failed = f"failed during '{step[0]}': {type(error).__name__}: {error}"
        _say(run.failed)
    run.machine["load average at end"] = machine.load_average()
    run.machine["cpu pressure at end"] = _cpu_pressure()
    _judge(run)
    out = args.out / f"{started:%Y%m%d-%H%M%S}-updates"
    out.mkdir(parents=True, exist_ok=True)
    run.save(out / "results.json")
    text = markdown(run)
    (out / "report.md").write_text(text)
    print(text)
    _say(f"report: {out / 'report.md'}")
    return 1 if run.failed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.updates", description=__doc__)
    parser.add_argument("--registered", type=int, default=10_000_000, help="registrations")
    parser.add_argument("--deltas", type=int, default=100, help="delta imports under load")
    parser.add_argument("--delta-size", type=int, default=10_000, help="IMEIs per delta")
    parser.add_argument("--workers", type=int, default=2, help="imeireg serve --workers")
    parser.add_argument(
        "--seconds-steady",
        type=float,
        default=10.0,
        help="seconds measured before the updates, and again after them",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=0.0,
        help="start a delta every this many seconds (default: 0, back to back)",
    )
    parser.add_argument(
        "--importer-nice",
        type=int,
        default=0,
        help="the importer's nice value, as an operator would run imports beside serving "
        "(default: 0)",
    )
    parser.add_argument(
        "--full-reimport",
        action="store_true",
        help=f"after the deltas, import the whole registration list again with "
        f"{REIMPORT_CHANGE * 100:g} %% of its rows changed",
    )
    parser.add_argument(
        "--split-cpus",
        action="store_true",
        help="run the server alone on CPU 0, the importer with the client and the probe on "
        "CPU 1 (default: the workers on both CPUs, the importer on CPU 0, as on a registry "
        "host that imports and serves)",
    )
    parser.add_argument("--seed", type=int, default=registry.DEFAULT_SEED)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where reports go")
    parser.add_argument("--work-dir", type=Path, help="scratch space (default: the temp dir)")
    return parser


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _cpu_pressure() -> str:
    """The share of time some runnable task waited for a CPU (Linux PSI): other work on the
    machine takes CPU from the workers, and shows as event-loop lag."""
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0].split()[1:3]
    except (OSError, IndexError):
        return "unknown"
    return "some " + ", ".join(f"{field.replace('=', ' ')} %" for field in some)


def _cpus(cpus: Sequence[int]) -> str:
    return ",".join(map(str, cpus))


@contextmanager
def _step(run: UpdatesRun, current: list[str], name: str) -> Iterator[None]:
    current[0] = name
    _say(name)
    began = time.perf_counter()
    yield
    run.steps[name] = round(time.perf_counter() - began, 3)


@dataclass(frozen=True)
class _Prepared:
    """What the phases under load need: the store, the deltas, the full re-import (its path the
    whole registration file), the probes, the load's job."""

    db: Path
    deltas: list[Delta]
    reimport: Delta | None
    probes: Probes
    job: Job


def _measure(
    run: UpdatesRun, args: argparse.Namespace, scratch: Path, cpus: Cpus, step: list[str]
) -> None:
    prepared = _prepare(run, args, scratch, cpus, step)
    log = scratch / "server.log"
    step[0] = f"imeireg serve --workers {args.workers} under load"
    pids = _under_load(run, args, prepared, log, cpus)
    _read_switches(run, log, pids)
    step[0] = "checking the probes' final answers"
    run.segment_points_after = _segment_points(prepared.db)
    changes = len(prepared.deltas) + (prepared.reimport is not None)
    _check_final_answers(run, prepared.db, prepared.probes, run.base_generation + changes)


def _prepare(
    run: UpdatesRun, args: argparse.Namespace, scratch: Path, cpus: Cpus, step: list[str]
) -> _Prepared:
    settings = run.settings
    with _step(run, step, f"generate a registry of {args.registered:,} registrations"):
        reg = registry.generate(args.registered, args.seed)
    run.registered_rows = reg.registered
    db = scratch / "registry"
    with _step(run, step, "write the lists as DIRBS files and import them"):
        dirbs.import_files(dirbs.write_files(reg, scratch / "lists"), db)
    with _step(run, step, f"workload of {settings['queries']:,} queries, expected answers"):
        pool = workload.generate(reg, settings["queries"], args.seed)
        expected = answers.expected(db, reg, pool)
    keep = _query_bodies(pool)
    with _step(run, step, f"write {args.deltas} deltas of {args.delta_size:,} IMEIs"):
        deltas = delta_files.plan(
            reg,
            count=args.deltas,
            size=args.delta_size,
            keep=keep,
            directory=scratch / "deltas",
            seed=args.seed,
        )
    reimport = None
    if args.full_reimport:
        what = f"write the registration list after the deltas, {REIMPORT_CHANGE:.0%} changed"
        with _step(run, step, what):
            reimport = _plan_reimport(
                run, reg, deltas, keep=keep, directory=scratch / "reimport", seed=args.seed
            )
    changes = [*deltas, *([reimport] if reimport else [])]
    with _step(run, step, "probe IMEIs and their answers before and after"):
        store = Store.open(db)
        with store.read() as view:
            run.base_generation = view.snapshot().generation
        store.close()
        run.segment_points_before = _segment_points(db)
        probes = _probes(db, changes, pool, run.base_generation)
    run.probe_imeis = len(probes.imeis)
    run.touched_probes = int(np.count_nonzero(probes.changes_at != NEVER))
    if not probes.distinguishes(run.base_generation, run.base_generation + len(changes)):
        run.problems.append("some generation changes no probe's answer")
    batches = pool.batches(BATCH_SIZE)
    job = Job(
        system=System.IMEIREG,
        target="",
        batch_size=BATCH_SIZE,
        concurrency=CONCURRENCY,
        channels=CHANNELS,
        warmup=0.0,
        duration=LOAD_BOUND,
        cpus=cpus.client,
        requests=prepare(System.IMEIREG, batches),
        expected=expected_answers(
            System.IMEIREG, BATCH_SIZE, len(batches), expected.statuses, expected.members
        ),
    )
    return _Prepared(db, deltas, reimport, probes, job)


def _plan_reimport(
    run: UpdatesRun,
    reg: registry.Registry,
    deltas: list[Delta],
    *,
    keep: registry.U64,
    directory: Path,
    seed: int,
) -> Delta:
    """The full re-import: one more registration change, of REIMPORT_CHANGE of the list's
    rows, on no IMEI a delta or the load touches, written as the whole registration list
    after every delta and it. Its number is the deltas' count + 1."""
    size = round(reg.registered * REIMPORT_CHANGE)
    # Drawn as a plan of one delta, from a seed of its own so that the deltas stay those
    # of a run without it; that delta's own file goes unused.
    touched = np.concatenate([keep, *(delta.bodies for delta in deltas)])
    change = delta_files.plan(
        reg, count=1, size=size, keep=touched, directory=directory, seed=seed + 1
    )[0]
    registrations = [d for d in (*deltas, change) if d.list_name is ListName.REGISTRATION]
    bodies = np.concatenate([d.bodies for d in registrations])
    kinds = np.concatenate([d.changes for d in registrations])
    after = reg.with_registrations(
        removed=bodies[kinds == Change.DEREGISTERED],
        complete=bodies[kinds == Change.REGISTERED],
        provisional=bodies[kinds == Change.PROVISIONAL],
    )
    # write_files writes every list; only the registration list is imported again.
    path = dirbs.write_files(after, directory / "lists")[ListName.REGISTRATION]
    run.reimport = FullReimport(rows=after.registered, changed=size, file_bytes=path.stat().st_size)
    return replace(change, number=len(deltas) + 1, path=path)


def _under_load(
    run: UpdatesRun, args: argparse.Namespace, prepared: _Prepared, log: Path, cpus: Cpus
) -> set[int]:
    """The phases under load, from the warm-up on; the workers' pids."""
    phases = PHASES + ((REIMPORT,) if prepared.reimport else ())
    with (
        _Importer(prepared.db, cpus.importer, args.importer_nice) as importer,
        imeireg_server(prepared.db, cpus.server, log, workers=args.workers) as server,
    ):
        pids = workers.wait_serving(log, args.workers, SERVING_TIMEOUT)
        run.server_rss_before = server.rss_bytes()
        run.server_anonymous_before = workers.anonymous_bytes(pids)
        port = int(server.target.rsplit(":", 1)[1])
        job = replace(prepared.job, target=server.target)
        with PhasedLoad(job, phases) as load:
            run.worker_connections = workers.connections(pids, port)  # the load's, so far
            prober = probe.start(
                server.target, prepared.probes, PROBE_CONNECTIONS, PROBE_INTERVAL, job.cpus
            )
            try:
                _phases(run, args, prepared, importer=importer, load=load, pids=pids, log=log)
                run.phases = load.finish()
            finally:
                run.probe = probe.finish(*prober)
        run.server_rss_after = server.rss_bytes()
        run.server_anonymous_after = workers.anonymous_bytes(pids)
    return pids


def _phases(
    run: UpdatesRun,
    args: argparse.Namespace,
    prepared: _Prepared,
    *,
    importer: _Importer,
    load: PhasedLoad,
    pids: set[int],
    log: Path,
) -> None:
    """Warm-up, steady, the deltas applied, steady after, and the full re-import if any."""
    cpu = _WorkerCpu(pids, run)

    def enter(phase: str) -> None:
        cpu.enter(phase)
        load.enter(phase)

    _say(f"warm-up, {WARMUP:g} s")
    time.sleep(WARMUP)
    enter(STEADY)
    _say(f"steady, {args.seconds_steady:g} s")
    time.sleep(args.seconds_steady)
    enter(UPDATES)
    _say(f"updates: {len(prepared.deltas)} deltas {_pace(args.interval)}")
    _apply(prepared.deltas, importer, run, args.interval)
    enter(AFTER)
    _say(f"steady after, {args.seconds_steady:g} s")
    time.sleep(args.seconds_steady)
    if prepared.reimport:
        enter(REIMPORT)
        _say("full re-import of the registration list, until every worker answers from it")
        _reimport(prepared.reimport, importer, run, pids, log)
    cpu.enter("")


class _WorkerCpu:
    """The server workers' CPU seconds in each phase, read as the phase begins and ends."""

    def __init__(self, pids: set[int], run: UpdatesRun) -> None:
        self.pids = pids
        self.run = run
        self.phase = ""
        self.at = 0.0

    def enter(self, phase: str) -> None:
        """End the current phase (if any) and begin `phase` ("" for none)."""
        now = workers.cpu_seconds(self.pids)
        if self.phase:
            self.run.worker_cpu_seconds[self.phase] = round(now - self.at, 3)
        self.phase, self.at = phase, now


def _segment_points(db: Path) -> int:
    """Rows of the fact table the store's segments make (without the TACs' end markers)."""
    store = Store.open(db)
    try:
        with store.read() as view:
            segments = view.segments_by_tac()
    finally:
        store.close()
    return sum(map(len, segments.values())) // SEGMENT_DTYPE.itemsize


def _query_bodies(pool: workload.Workload) -> registry.U64:
    """The 14-digit bodies of the pool's well-formed queries: IMEIs no delta may touch."""
    bodies = [int(imei[:14]) for imei in pool.imeis if len(imei) == 15 and imei.isdigit()]
    return np.unique(np.array(bodies, dtype=np.uint64))


def _probes(db: Path, deltas: list[Delta], pool: workload.Workload, base: int) -> Probes:
    """One IMEI of each kind of change of each delta, and some of the pool's queries."""
    touched, changes, changes_at = [], [], []
    for delta in deltas:
        for change in Change:
            at = np.flatnonzero(delta.changes == change)
            if len(at):
                touched.append(int(delta.bodies[at[0]]))
                changes.append(int(change))
                changes_at.append(base + delta.number)
    untouched = [imei for imei, imsi in zip(pool.imeis, pool.imsis, strict=True) if not imsi]
    imeis = [
        f"{imei:015d}" for imei in luhn_imeis(np.array(touched, dtype=np.uint64)).tolist()
    ] + untouched[:UNTOUCHED_PROBES]
    policy = Policy.default()
    with opened_state(db, policy) as state:
        verdict = check(state, imeis)
    reasons_after = verdict.reasons.copy()
    reasons_after[: len(touched)] = delta_files.facts_after(
        verdict.reasons[: len(touched)], np.array(changes, dtype=np.uint8)
    )
    return Probes(
        imeis=imeis,
        changes_at=np.array(changes_at + [NEVER] * (len(imeis) - len(touched)), dtype=np.int64),
        statuses_before=verdict.statuses,
        reasons_before=verdict.reasons,
        statuses_after=policy.decide(reasons_after),
        reasons_after=reasons_after,
    )


def _pace(interval: float) -> str:
    return f"one every {interval:g} s" if interval else "back to back"


def _apply(deltas: list[Delta], importer: _Importer, run: UpdatesRun, interval: float) -> None:
    """Import the deltas one after the other (or one every `interval` seconds)."""
    start = time.perf_counter()
    for delta in deltas:
        wait = start + (delta.number - 1) * interval - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        done = importer.run(delta.list_name, delta.path, full=False)
        record = done.record
        run.imports.append(
            DeltaImport(
                number=delta.number,
                list_name=delta.list_name.value,
                rows=record.rows,
                added=record.added,
                removed=record.removed,
                generation=record.generation,
                seconds=round(done.seconds, 4),
                committed_at=done.committed_at,
            )
        )
        run.importer_cpu_seconds = round(run.importer_cpu_seconds + done.cpu_seconds, 3)
        if record.generation != run.base_generation + delta.number:
            run.problems.append(
                f"delta {delta.number} committed generation {record.generation}, "
                f"not {run.base_generation + delta.number}: another writer?"
            )


def _reimport(
    change: Delta, importer: _Importer, run: UpdatesRun, pids: set[int], log: Path
) -> None:
    """Import the whole registration list again; return once every worker answers from it."""
    done = importer.run(ListName.REGISTRATION, change.path, full=True)
    record, figures = done.record, run.reimport
    assert figures is not None
    figures.generation = record.generation
    figures.added, figures.removed = record.added, record.removed
    figures.seconds = round(done.seconds, 3)
    figures.cpu_seconds = round(done.cpu_seconds, 3)
    figures.committed_at = done.committed_at
    if record.generation != run.base_generation + change.number:
        run.problems.append(
            f"the full re-import committed generation {record.generation}, "
            f"not {run.base_generation + change.number}: another writer?"
        )
    deadline = time.monotonic() + REIMPORT_SWITCH_TIMEOUT
    while not pids <= {s.pid for s in workers.switches(log) if s.generation >= record.generation}:
        if time.monotonic() >= deadline:
            run.problems.append(
                "not every worker answered from the full re-import within "
                f"{REIMPORT_SWITCH_TIMEOUT:.0f} s of its commit"
            )
            return
        time.sleep(0.02)


@dataclass(frozen=True)
class _Imported:
    """One import done by the importer process."""

    record: ImportRecord
    seconds: float  # from reading the file to the commit
    committed_at: float  # Unix time
    cpu_seconds: float  # the importer process's, every thread


class _Importer:
    """A process of its own that imports into the store, pinned to the importer's CPUs at the
    importer's nice value from its start, so that every thread it starts (pyarrow's readers,
    the hasher) inherits both. Pinning a thread of this process would not do: pyarrow's
    thread pool, started by the imports before the load, would stay on every CPU."""

    def __init__(self, db: Path, cpus: tuple[int, ...], nice: int) -> None:
        self.db = db
        self._pool = ProcessPoolExecutor(
            1, mp_context=client_context(), initializer=_settle_importer, initargs=(cpus, nice)
        )

    def __enter__(self) -> _Importer:
        self._pool.submit(os.getpid).result()  # started, its imports done, before the load
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown()

    def run(self, list_name: ListName, path: Path, *, full: bool) -> _Imported:
        return self._pool.submit(_import, self.db, list_name, path, full).result()


def _settle_importer(cpus: tuple[int, ...], nice: int) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    if nice != os.getpriority(os.PRIO_PROCESS, 0):
        os.setpriority(os.PRIO_PROCESS, 0, nice)  # on Linux: this thread, and those it starts


def _import(db: Path, list_name: ListName, path: Path, full: bool) -> _Imported:
    """In the importer process: a full or delta import, timed to its commit."""
    store = Store.create(db)  # the importer's own handle: the workers only read
    try:
        cpu, began = time.process_time(), time.perf_counter()
        if full:
            record = import_file(store, list_name, path)
        else:
            record = import_delta(store, list_name, path)
        seconds, committed_at = time.perf_counter() - began, time.time()
        return _Imported(record, seconds, committed_at, time.process_time() - cpu)
    finally:
        store.close()


def _read_switches(run: UpdatesRun, log: Path, pids: set[int]) -> None:
    """Each worker's switches from its log, and from them how soon each commit was answered
    from, and what the switches cost: the deltas', the full re-import's."""
    run.switches = workers.switches(log)
    committed = {i.generation: i.committed_at for i in run.imports}
    run.worker_lags = workers.visible_after(run.switches, pids, committed)
    run.probe_lags = _probe_lags(run.probe, committed)
    run.switch_figures[UPDATES] = SwitchFigures.of(
        [s for s in run.switches if s.generation in committed]
    )
    reimport = run.reimport
    if reimport is not None and reimport.generation:
        generation = reimport.generation
        lags = workers.visible_after(run.switches, pids, {generation: reimport.committed_at})
        reimport.worker_lags = {pid: lags[pid][generation] for pid in lags}
        run.switch_figures[REIMPORT] = SwitchFigures.of(
            [s for s in run.switches if s.generation == generation]
        )


def _probe_lags(
    found: ProbeFindings | None, committed: dict[int, float]
) -> dict[int, float | None]:
    """Per generation: seconds from its commit until the last probe connection answered from it
    (or a later one); None when a connection never did."""
    if found is None:
        return {}
    lags: dict[int, float | None] = {}
    for generation, at in sorted(committed.items()):
        firsts = [found.first_at_or_after(c, generation) for c in range(found.connections)]
        lags[generation] = None if None in firsts else max(f for f in firsts if f) - at
    return lags


def _check_final_answers(run: UpdatesRun, db: Path, probes: Probes, generation: int) -> None:
    """The probes' answers on the final store, in this process, must be their `after` ones:
    a check of the model the probe judged the server's answers by."""
    with opened_state(db) as state:
        verdict = check(state, probes.imeis)
    statuses, reasons = probes.expected(generation)
    if verdict.snapshot.generation != generation:
        run.problems.append(
            f"the final store is at generation {verdict.snapshot.generation}, not {generation}"
        )
    differ = np.count_nonzero((verdict.statuses != statuses) | (verdict.reasons != reasons))
    if differ:
        run.problems.append(
            f"{differ} probe IMEIs answer otherwise on the final store than the probe expected"
        )


# Verdicts on the targets.


def _failed_requests(run: UpdatesRun) -> int:
    return sum(m.errors for m in run.phases.values()) + (run.probe.errors if run.probe else 0)


def _throughput_ratio(run: UpdatesRun) -> float | None:
    steady, updates = run.phases.get(STEADY), run.phases.get(UPDATES)
    if not steady or not updates or not steady.imeis_per_second:
        return None
    return updates.imeis_per_second / steady.imeis_per_second


def _max_lag(lags: Iterable[float | None]) -> float | None:
    """The largest lag; infinite when a generation was never seen."""
    values = [float("inf") if lag is None else lag for lag in lags]
    return max(values) if values else None


def _worker_max_lag(run: UpdatesRun) -> float | None:
    return _max_lag(lag for lags in run.worker_lags.values() for lag in lags.values())


def _judge(run: UpdatesRun) -> None:
    """Name every problem the figures show."""
    for name, measurement in run.phases.items():
        if measurement.errors or measurement.mismatches:
            run.problems.append(
                f"load, {name}: {measurement.errors} failed calls {measurement.first_error!r}, "
                f"{measurement.mismatches} wrong answers of {measurement.verified} verified"
            )
    found = run.probe
    if found and (found.errors or found.wrong or found.backwards):
        run.problems.append(
            f"probe: {found.errors} failed calls {found.first_error!r}, {found.wrong} answers "
            f"not those of their generation {found.first_wrong!r}, {found.backwards} answers "
            "older than an earlier one on the same connection"
        )
    settings = run.settings
    if len(run.worker_lags) != settings["workers"]:
        run.problems.append(f"{len(run.worker_lags)} of {settings['workers']} workers seen")
    for pid, lags in run.worker_lags.items():
        never = [generation for generation, lag in lags.items() if lag is None]
        if never:
            run.problems.append(
                f"worker {pid} never answered from generation(s) {never[:5]} (or later ones)"
            )
    if run.imports and len(run.imports) != settings["deltas"]:
        run.problems.append(f"{len(run.imports)} of {settings['deltas']} deltas imported")
    reimport = run.reimport
    if reimport is not None and reimport.generation:
        never = [pid for pid, lag in reimport.worker_lags.items() if lag is None]
        if never:
            run.problems.append(f"worker(s) {never} never answered from the full re-import")
    if run.switches and all(s.loop_lag_ms is None for s in run.switches):
        run.problems.append("the workers logged no event-loop lag with their switches")


# The report.


def markdown(run: UpdatesRun) -> str:
    settings = run.settings
    parts = [
        f"# imeireg updates under load, {run.started}",
        f"Command: `{run.command}`",
        f"Registry of {settings['registered']:,} complete registrations "
        f"({run.registered_rows:,} rows on the registration list), generated with seed "
        f"{settings['seed']} and imported from DIRBS files (generation {run.base_generation}). "
        f"`imeireg serve --workers {settings['workers']}`; the load: unary `CheckImeis` at batch "
        f"{settings['batch_size']:,}, {settings['concurrency']} calls in flight over "
        f"{settings['channels']} connections kept from start to end, on run.py's workload "
        f"({settings['queries']:,} queries, one answer in 64 verified), {settings['warmup']:g} s "
        f"warm-up, then {settings['seconds_steady']:g} s steady, the updates, and "
        f"{settings['seconds_steady']:g} s steady again. The updates: {settings['deltas']} delta "
        f"imports of {settings['delta_size']:,} IMEIs {_pace(settings.get('interval', 0))} "
        f"(`import_delta` in an importer process of its own, one generation each, at nice "
        f"{settings.get('importer_nice', 0)}), alternately a registration delta (half new "
        "registrations, 1 in "
        f"{delta_files.PROVISIONAL_EVERY} provisional, half registrations removed) and a stolen "
        "delta (reports of registered phones); no delta touches a workload query, so the "
        "load's expected answers hold at every generation."
        + _reimport_summary(run)
        + f" CPUs: {run.machine.get('cpu pinning', '-')}.",
        f"The probe: {run.probe_imeis} IMEIs in every call ({run.touched_probes} touched by the "
        "changes, one of each kind of change of each, and the rest workload queries), "
        f"on {settings['probe_connections']} connections of its own, a call every "
        f"{settings['probe_interval']:g} s on each; every answer is checked, IMEI by IMEI, "
        "against the generation it reports. Each generation changes some probe's answer, so "
        "an answer right for its generation is right for no other one. Visibility per worker "
        "comes from the workers' own log lines (`now answering from generation N (was M): "
        "built in B ms; the event loop's worst lag meanwhile L ms`, with the pid, to the "
        "millisecond, written once the new state is swapped in): from the importer's commit "
        "to the worker's switch to that generation or a later one.",
        "## Targets",
        _targets(run),
        "## Throughput and latency per phase",
        _phase_table(run),
        "## Visibility of each commit",
        _visibility(run),
        "## Generation switches",
        _switch_table(run),
        "## Delta imports",
        _imports(run),
        *(["## Full re-import", _reimport_section(run)] if run.reimport else []),
        "## Setup",
        _table(("step", "wall time"), [(name, f"{s:.1f} s") for name, s in run.steps.items()])
        + f"\n\nServer RSS (all workers): {_mib(run.server_rss_before)} before the load, "
        f"{_mib(run.server_rss_after)} after; of which their own memory (RssAnon, not the "
        f"pages of the store they map): {_mib(run.server_anonymous_before)} before, "
        f"{_mib(run.server_anonymous_after)} after. Fact-table rows in the store's segments: "
        f"{run.segment_points_before:,} before the deltas, {run.segment_points_after:,} after.",
        "## Machine",
        (
            "The importer shares CPU 1 with the load's client and the probe; the server has "
            "CPU 0 to itself, so what a switch costs shows in its own figures."
            if settings.get("split_cpus")
            else "On 2 cores the importer competes for CPU with the server's workers and the "
            "client: its CPU time during the updates is taken from them, which the throughput "
            "during the updates includes."
        ),
        _table(("", ""), list(run.machine.items())),
        "## Problems",
        _problems(run),
    ]
    return "\n\n".join(parts) + "\n"


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else "met" if met else "**missed**"


def _targets(run: UpdatesRun) -> str:
    measured = bool(run.phases)
    failed = _failed_requests(run)
    found = run.probe
    calls = failed + sum(m.calls for m in run.phases.values()) + (found.calls if found else 0)
    wrong = (found.wrong if found else 0) + sum(m.mismatches for m in run.phases.values())
    checked = (found.answers_checked if found else 0) + sum(m.verified for m in run.phases.values())
    worker_lag = _worker_max_lag(run)
    probe_lag = _max_lag(run.probe_lags.values())
    ratio = _throughput_ratio(run)
    rows = [
        (
            "0 failed requests",
            f"{failed} failed of {calls:,} (load and probe)",
            _verdict(failed == 0 if measured else None),
        ),
        (
            "every answer consistent with exactly the generation it reports",
            f"{wrong} wrong of {checked:,} checked; "
            f"{found.backwards if found else 0} older than an earlier one on a connection",
            _verdict(
                wrong == 0 and found.backwards == 0 and found.answers_checked > 0 if found else None
            ),
        ),
        (
            f"a committed delta answered from by every worker within {VISIBLE_WITHIN:g} s "
            f"(at {run.settings['registered']:,} registrations)",
            f"max {_lag(worker_lag)} over {_count(len(run.worker_lags), 'worker', 'workers')} "
            f"(probe connections: max {_lag(probe_lag)})",
            _verdict(None if worker_lag is None else worker_lag <= VISIBLE_WITHIN),
        ),
        *(_stall_target(run, kind) for kind in run.switch_figures),
        (
            f"throughput during updates within {THROUGHPUT_TOLERANCE:.0%} of steady",
            "-" if ratio is None else f"{ratio:.2f}x",
            _verdict(None if ratio is None else ratio >= 1 - THROUGHPUT_TOLERANCE),
        ),
    ]
    return _table(("target", "measured", ""), rows)


def _stall_target(run: UpdatesRun, kind: str) -> tuple[str, str, str]:
    figures = run.switch_figures[kind]
    worst = figures.loop_lag_ms_max
    return (
        f"the event loop's longest stall during a generation switch ≤ {LOOP_STALL_MS:g} ms "
        f"({_SWITCH_KINDS[kind]})",
        "-"
        if worst is None
        else f"max {worst:.1f} ms, p99 {figures.loop_lag_ms_p99:.1f} ms "
        f"over {_count(figures.switches, 'switch', 'switches')}",
        _verdict(None if worst is None else worst <= LOOP_STALL_MS),
    )


_SWITCH_KINDS = {UPDATES: "deltas", REIMPORT: "full re-import"}


def _reimport_summary(run: UpdatesRun) -> str:
    reimport = run.reimport
    if reimport is None:
        return ""
    return (
        f" Then, after the steady phase that follows the deltas, a full re-import of the "
        f"registration list ({reimport.rows:,} rows, {reimport.changed:,} of them changed: half "
        "new registrations, half registrations removed, none a workload query or a delta's "
        "IMEI), `import_file` in the same importer process, measured until every worker "
        "answers from it."
    )


def _switch_table(run: UpdatesRun) -> str:
    rows = []
    for kind, figures in run.switch_figures.items():
        rows.append(
            (
                _SWITCH_KINDS[kind],
                f"{figures.switches}",
                _ms(figures.build_ms_p50, figures.build_ms_p99, figures.build_ms_max),
                _ms(figures.loop_lag_ms_p50, figures.loop_lag_ms_p99, figures.loop_lag_ms_max),
            )
        )
    header = (
        "switches to",
        "switches",
        "build p50 / p99 / max",
        "loop's worst lag p50 / p99 / max",
    )
    note = (
        "Per switch, each worker logs how long it took to build the new serving state (on a "
        "thread, the old state answering meanwhile: mapping a saved fact table, applying a "
        "delta's edits, or splicing changed TACs) and the worst lateness of a 1 ms timer on "
        "its event loop from the start of the build to the swap. That lateness is whatever "
        "kept the loop from running: the calls it answers meanwhile (a batch of 1,000 is about "
        "a millisecond of CPU), the build thread holding the GIL, and other processes on the "
        "worker's CPU."
    )
    return _table(header, rows) + "\n\n" + note if rows else "None logged."


def _ms(*values: float | None) -> str:
    return " / ".join("-" if value is None else f"{value:.1f}" for value in values) + " ms"


def _reimport_section(run: UpdatesRun) -> str:
    reimport = run.reimport
    assert reimport is not None
    if not reimport.generation:
        return "Not imported."
    switches = {s.pid: s for s in run.switches if s.generation == reimport.generation}
    rows = []
    for pid, lag in reimport.worker_lags.items():
        switch = switches.get(pid)
        rows.append(
            (
                f"worker {pid}",
                _lag(lag),
                "-" if switch is None else _ms(switch.build_ms),
                "-" if switch is None else _ms(switch.loop_lag_ms),
            )
        )
    measured = run.phases.get(REIMPORT)
    steady = run.phases.get(STEADY)
    during = (
        f" The load answered {measured.imeis_per_second / 1e3:,.0f} k IMEI/s over the "
        f"{measured.seconds:.1f} s from the import's start to the last worker's switch"
        + (
            f" ({measured.imeis_per_second / steady.imeis_per_second:.2f}x steady)."
            if steady and steady.imeis_per_second
            else "."
        )
        if measured and measured.seconds
        else ""
    )
    text = (
        f"Generation {reimport.generation}: `import_file` read {reimport.rows:,} rows "
        f"({_mib(reimport.file_bytes)}) and committed in {reimport.seconds:.2f} s "
        f"({reimport.rows / reimport.seconds / 1e6:.2f} M rows/s under load, "
        f"{reimport.cpu_seconds:.1f} CPU-s of the importer process), {reimport.added:,} "
        f"registrations added and {reimport.removed:,} removed." + during
    )
    header = ("", "commit to answering from it", "build", "loop's worst lag meanwhile")
    return text + "\n\n" + _table(header, rows)


def _phase_table(run: UpdatesRun) -> str:
    rows = []
    for name, m in run.phases.items():
        latency = m.latencies_ms()
        server_cpu = run.worker_cpu_seconds.get(name)
        measured = name != WARM_UP and m.seconds > 0
        rows.append(
            (
                name,
                f"{m.seconds:.1f} s",
                f"{m.calls:,}",
                f"{m.imeis_per_second / 1e3:,.1f} k" if measured else "-",
                f"{latency[50.0]:.1f} / {latency[99.0]:.1f} / {latency[99.9]:.1f} ms",
                f"{m.errors}",
                f"{m.verified - m.mismatches}/{m.verified}",
                f"{m.client_cpu_share:.0%}",
                f"{server_cpu / m.seconds:.2f}" if server_cpu and measured else "-",
                f"{m.imeis / server_cpu / 1e3:,.0f} k" if server_cpu and measured else "-",
            )
        )
    header = (
        "phase", "seconds", "calls", "IMEI/s", "p50 / p99 / p99.9", "failed",
        "verified ok", "client CPU", "server CPUs", "IMEI per server CPU-s",
    )  # fmt: skip
    updates = run.phases.get(UPDATES)
    note = (
        "Server CPUs: the workers' user and system time over the phase (from /proc), "
        "divided by its length; the last column is the IMEIs answered per CPU-second of the "
        "workers, which includes what each worker spends switching to each new generation."
    )
    note += _switching_cost(run)
    if updates and updates.seconds:
        note += (
            f" During the updates, the importer process used "
            f"{run.importer_cpu_seconds:.1f} CPU-s in {updates.seconds:.1f} s "
            f"({run.importer_cpu_seconds / updates.seconds:.2f} CPUs)."
        )
    return _table(header, rows) + "\n\n" + note


def _switching_cost(run: UpdatesRun) -> str:
    """The workers' CPU during the updates beyond what its calls cost at the steady rate:
    what switching to each new generation cost them."""
    steady, updates = run.phases.get(STEADY), run.phases.get(UPDATES)
    steady_cpu = run.worker_cpu_seconds.get(STEADY)
    updates_cpu = run.worker_cpu_seconds.get(UPDATES)
    if not (steady and updates and steady.calls and steady_cpu and updates_cpu and run.imports):
        return ""
    beyond = updates_cpu - updates.calls * steady_cpu / steady.calls
    per_switch = beyond / len(run.imports) / run.settings["workers"]
    return (
        f" Had each call of the updates phase cost the workers what it did in the steady "
        f"phase, {beyond:.1f} of their {updates_cpu:.1f} CPU-s went elsewhere: about "
        f"{per_switch * 1e3:.0f} ms of CPU per worker per delta, switching generation."
    )


def _visibility(run: UpdatesRun) -> str:
    rows = []
    for pid, lags in run.worker_lags.items():
        seen = [lag for lag in lags.values() if lag is not None]
        rows.append(
            (
                f"worker {pid}",
                f"{run.worker_connections.get(pid, 0)}",
                f"{len(seen)}/{len(lags)}",
                *_quantiles(seen),
            )
        )
    seen = [lag for lag in run.probe_lags.values() if lag is not None]
    found = run.probe
    rows.append(
        (
            f"probe, last of {found.connections if found else 0} connections",
            "-",
            f"{len(seen)}/{len(run.probe_lags)}",
            *_quantiles(seen),
        )
    )
    note = (
        "Connections: how many of the load's connections each worker holds (the kernel "
        "spreads connections over the workers' shared port; counted before the probe "
        "connects). Lags below 0 are a worker that switched between the LMDB commit and the "
        "importer reading the clock. The probe's figure includes its call interval and the "
        "call's latency under load."
    )
    header = ("", "connections", "generations seen", "lag p50", "p99", "max")
    return _table(header, rows) + "\n\n" + note


def _quantiles(lags: list[float]) -> tuple[str, str, str]:
    if not lags:
        return "-", "-", "-"
    p50, p99 = np.percentile(lags, [50, 99]).tolist()
    return _lag(p50), _lag(p99), _lag(max(lags))


def _lag(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return "never" if seconds == float("inf") else f"{seconds * 1e3:.0f} ms"


def _imports(run: UpdatesRun) -> str:
    if not run.imports:
        return "None imported."
    rows = []
    for list_name in sorted({i.list_name for i in run.imports}):
        done = [i for i in run.imports if i.list_name == list_name]
        seconds = [i.seconds for i in done]
        p50, p90 = np.percentile(seconds, [50, 90]).tolist()
        rows.append(
            (
                list_name,
                f"{len(done)}",
                f"{sum(i.added for i in done):,} / {sum(i.removed for i in done):,}",
                f"{p50 * 1e3:.0f} / {p90 * 1e3:.0f} / {max(seconds) * 1e3:.0f} ms",
                f"{sum(seconds):.1f} s",
            )
        )
    updates = run.phases.get(UPDATES)
    total = sum(i.seconds for i in run.imports)
    rows_total = sum(i.rows for i in run.imports)
    note = (
        f"{len(run.imports)} deltas, {rows_total:,} rows, in {total:.1f} s of import_delta "
        f"({rows_total / total:,.0f} rows/s)"
        + (f"; the updates phase lasted {updates.seconds:.1f} s." if updates else ".")
        + " Each import: read and validate the file, check every key against the list, "
        "update the roaring bitmaps and the TACs' fact-table segments, commit (fsync)."
    )
    header = ("list", "deltas", "added / removed", "p50 / p90 / max", "total")
    return _table(header, rows) + "\n\n" + note


def _problems(run: UpdatesRun) -> str:
    problems = [*([run.failed] if run.failed else []), *run.problems]
    return "\n".join(f"- {problem}" for problem in problems) if problems else "None."


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _count(number: int, one: str, many: str) -> str:
    return f"{number:,} {one if number == 1 else many}"


def _mib(size: int) -> str:
    return f"{size / _MIB:,.0f} MiB" if size else "-"


if __name__ == "__main__":
    sys.exit(main())
