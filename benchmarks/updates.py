"""The updates benchmark: `python -m benchmarks.updates [--registered N] [--deltas 100] ...`.

Issue "Live registry operations", updates under load with nothing dropped: while
the load driver runs against `imeireg serve --workers N`, apply `--deltas`
consecutive delta imports of `--delta-size` IMEIs each, and show 0 failed requests,
every answer consistent with exactly the generation it reports, each commit
visible to every worker within 1 s, and throughput during the updates within 20 %
of the steady figure. One run:
1. generates the registry, writes its DIRBS files and imports them, one generation
   per list (dirbs.py), and builds run.py's workload pool with its expected answers;
2. draws the deltas from the registry, none touching a workload query (delta_files.py):
   registrations added and removed, stolen reports added;
3. picks probe IMEIs, one of each kind of change of each delta and some untouched
   ones, whose answer at every generation follows from their answer now (imeireg's
   checker in this process) and the one change a delta makes to their facts;
4. starts `imeireg serve --workers N`, the probe process (probe.py: every answer
   checked against its generation, the time each of its connections first answers
   from each generation) and the load (phased_load.py: unary CheckImeis at batch
   1,000 on the same connections throughout), then runs the phases: warm-up, steady,
   updates (the deltas back to back, `import_delta` in this process), steady after;
5. reads each worker's switch times from the server's log (workers.py) and checks
   the probes' final answers against a checker on the final store.
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
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import answers, delta_files, dirbs, machine, probe, registry, workers, workload
from benchmarks.delta_files import Change, Delta
from benchmarks.drivers import Job, System, expected_answers, prepare
from benchmarks.measurement import Measurement
from benchmarks.phased_load import WARM_UP, PhasedLoad
from benchmarks.probe import NEVER, ProbeFindings, Probes
from benchmarks.servers import imeireg_server
from benchmarks.textrows import luhn_imeis
from imeireg.server.deltas import import_delta
from imeireg.server.index import RegistryIndex
from imeireg.server.legality import LegalityChecker
from imeireg.server.policy import Policy
from imeireg.server.segments import SEGMENT_DTYPE
from imeireg.server.store import Store

RESULTS = Path(__file__).parent / "results"
SERVER_CPUS = (0, 1)
CLIENT_CPUS = (1,)  # the load's client process and the probe
IMPORTER_CPUS = (0,)  # this process while it imports: a server CPU, as on a registry host
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
SERVING_TIMEOUT = 60.0

STEADY = "steady"
UPDATES = "updates"
AFTER = "steady after"
PHASES = (STEADY, UPDATES, AFTER)
_MIB = 2**20


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
    importer_cpu_seconds: float = 0.0  # this process's, while it imported the deltas
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
    started = datetime.datetime.now(datetime.UTC)
    description = machine.describe()
    description["cpu pinning"] = (
        f"imeireg serve's workers on CPUs {_cpus(SERVER_CPUS)}, the load's client process and "
        f"the probe on CPU {_cpus(CLIENT_CPUS)}, the importer on CPU {_cpus(IMPORTER_CPUS)}"
        if pinning
        else "none (taskset missing or one CPU)"
    )
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
            "pinning": pinning,
        },
    )
    step = ["setup"]
    try:
        with tempfile.TemporaryDirectory(prefix="imeireg-updates-", dir=args.work_dir) as scratch:
            _measure(run, args, Path(scratch), pinning, step)
    except (Exception, KeyboardInterrupt) as error:  # reported: what was measured still goes out
        run.failed = f"failed during '{step[0]}': {type(error).__name__}: {error}"
        _say(run.failed)
    run.machine["load average at end"] = machine.load_average()
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
    parser.add_argument("--seed", type=int, default=registry.DEFAULT_SEED)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where reports go")
    parser.add_argument("--work-dir", type=Path, help="scratch space (default: the temp dir)")
    return parser


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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
    """What the phases under load need: the store, the deltas, the probes, the load's job."""

    db: Path
    deltas: list[Delta]
    probes: Probes
    job: Job


def _measure(
    run: UpdatesRun, args: argparse.Namespace, scratch: Path, pinning: bool, step: list[str]
) -> None:
    prepared = _prepare(run, args, scratch, pinning, step)
    log = scratch / "server.log"
    step[0] = f"imeireg serve --workers {args.workers} under load"
    pids = _under_load(run, args, prepared, log, pinning)
    committed = {i.generation: i.committed_at for i in run.imports}
    run.worker_lags = workers.visible_after(workers.switches(log), pids, committed)
    run.probe_lags = _probe_lags(run.probe, committed)
    step[0] = "checking the probes' final answers"
    run.segment_points_after = _segment_points(prepared.db)
    _check_final_answers(
        run, prepared.db, prepared.probes, run.base_generation + len(prepared.deltas)
    )


def _prepare(
    run: UpdatesRun, args: argparse.Namespace, scratch: Path, pinning: bool, step: list[str]
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
    with _step(run, step, f"write {args.deltas} deltas of {args.delta_size:,} IMEIs"):
        deltas = delta_files.plan(
            reg,
            count=args.deltas,
            size=args.delta_size,
            keep=_query_bodies(pool),
            directory=scratch / "deltas",
            seed=args.seed,
        )
    with _step(run, step, "probe IMEIs and their answers before and after"):
        store = Store.open(db)
        with store.read() as txn:
            run.base_generation = store.snapshot(txn).generation
        store.close()
        run.segment_points_before = _segment_points(db)
        probes = _probes(db, deltas, pool, run.base_generation)
    run.probe_imeis = len(probes.imeis)
    run.touched_probes = int(np.count_nonzero(probes.changes_at != NEVER))
    if not probes.distinguishes(run.base_generation, run.base_generation + len(deltas)):
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
        cpus=CLIENT_CPUS if pinning else (),
        requests=prepare(System.IMEIREG, batches),
        expected=expected_answers(
            System.IMEIREG, BATCH_SIZE, len(batches), expected.statuses, expected.members
        ),
    )
    return _Prepared(db, deltas, probes, job)


def _under_load(
    run: UpdatesRun, args: argparse.Namespace, prepared: _Prepared, log: Path, pinning: bool
) -> set[int]:
    """The phases: warm-up, steady, the deltas applied, steady after; the workers' pids."""
    db, deltas, probes, job = prepared.db, prepared.deltas, prepared.probes, prepared.job
    with imeireg_server(db, SERVER_CPUS if pinning else (), log, workers=args.workers) as server:
        pids = workers.wait_serving(log, args.workers, SERVING_TIMEOUT)
        run.server_rss_before = server.rss_bytes()
        run.server_anonymous_before = workers.anonymous_bytes(pids)
        port = int(server.target.rsplit(":", 1)[1])
        with PhasedLoad(replace(job, target=server.target), PHASES) as load:
            run.worker_connections = workers.connections(pids, port)  # the load's, so far
            prober = probe.start(server.target, probes, PROBE_CONNECTIONS, PROBE_INTERVAL, job.cpus)
            try:
                cpu = _WorkerCpu(pids, run)
                _say(f"warm-up, {WARMUP:g} s")
                time.sleep(WARMUP)
                cpu.enter(STEADY)
                load.enter(STEADY)
                _say(f"steady, {args.seconds_steady:g} s")
                time.sleep(args.seconds_steady)
                cpu.enter(UPDATES)
                load.enter(UPDATES)
                _say(f"updates: {len(deltas)} deltas {_pace(args.interval)}")
                began = time.process_time()
                _apply(deltas, db, run, IMPORTER_CPUS if pinning else (), args)
                run.importer_cpu_seconds = round(time.process_time() - began, 3)
                cpu.enter(AFTER)
                load.enter(AFTER)
                _say(f"steady after, {args.seconds_steady:g} s")
                time.sleep(args.seconds_steady)
                cpu.enter("")
                run.phases = load.finish()
            finally:
                run.probe = probe.finish(*prober)
        run.server_rss_after = server.rss_bytes()
        run.server_anonymous_after = workers.anonymous_bytes(pids)
    return pids


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
        with store.read() as txn:
            segments = store.segments_by_tac(txn)
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
    index = RegistryIndex(Store.open(db))
    policy = Policy.default()
    try:
        verdict = LegalityChecker(index, policy).check(imeis)
    finally:
        index.close()
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


def _apply(
    deltas: list[Delta],
    db: Path,
    run: UpdatesRun,
    cpus: tuple[int, ...],
    args: argparse.Namespace,
) -> None:
    """Import the deltas one after the other (or one every `--interval` seconds), this
    thread pinned to `cpus` and at `--importer-nice` meanwhile."""
    pinned_before = os.sched_getaffinity(0)
    nice_before = os.getpriority(os.PRIO_PROCESS, 0)
    if cpus:
        os.sched_setaffinity(0, cpus)
    os.setpriority(os.PRIO_PROCESS, 0, args.importer_nice)  # on Linux: this thread
    store = Store.create(db)  # the importer's own handle: the workers only read
    start = time.perf_counter()
    try:
        for delta in deltas:
            wait = start + (delta.number - 1) * args.interval - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            began = time.perf_counter()
            record = import_delta(store, delta.list_name, delta.path)
            seconds, committed_at = time.perf_counter() - began, time.time()
            run.imports.append(
                DeltaImport(
                    number=delta.number,
                    list_name=delta.list_name.value,
                    rows=record.rows,
                    added=record.added,
                    removed=record.removed,
                    generation=record.generation,
                    seconds=round(seconds, 4),
                    committed_at=committed_at,
                )
            )
            if record.generation != run.base_generation + delta.number:
                run.problems.append(
                    f"delta {delta.number} committed generation {record.generation}, "
                    f"not {run.base_generation + delta.number}: another writer?"
                )
    finally:
        store.close()
        os.sched_setaffinity(0, pinned_before)
        if os.getuid() == 0 or args.importer_nice <= nice_before:
            os.setpriority(os.PRIO_PROCESS, 0, nice_before)


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
    index = RegistryIndex(Store.open(db))
    try:
        verdict = LegalityChecker(index, Policy.default()).check(probes.imeis)
    finally:
        index.close()
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
        f"(`import_delta`, one generation each, the importer at nice "
        f"{settings.get('importer_nice', 0)}), alternately a registration delta (half new "
        "registrations, 1 in "
        f"{delta_files.PROVISIONAL_EVERY} provisional, half registrations removed) and a stolen "
        "delta (reports of registered phones); no delta touches a workload query, so the "
        "load's expected answers hold at every generation.",
        f"The probe: {run.probe_imeis} IMEIs in every call ({run.touched_probes} touched by the "
        "deltas, one of each kind of change of each delta, and the rest workload queries), "
        f"on {settings['probe_connections']} connections of its own, a call every "
        f"{settings['probe_interval']:g} s on each; every answer is checked, IMEI by IMEI, "
        "against the generation it reports. Each generation changes some probe's answer, so "
        "an answer right for its generation is right for no other one. Visibility per worker "
        "comes from the workers' own log lines (`now answering from generation N`, with the "
        "pid, to the millisecond): from the importer's commit to the worker's first request "
        "answered from that generation or a later one.",
        "## Targets",
        _targets(run),
        "## Throughput and latency per phase",
        _phase_table(run),
        "## Visibility of each commit",
        _visibility(run),
        "## Delta imports",
        _imports(run),
        "## Setup",
        _table(("step", "wall time"), [(name, f"{s:.1f} s") for name, s in run.steps.items()])
        + f"\n\nServer RSS (all workers): {_mib(run.server_rss_before)} before the load, "
        f"{_mib(run.server_rss_after)} after; of which their own memory (RssAnon, not the "
        f"pages of the store they map): {_mib(run.server_anonymous_before)} before, "
        f"{_mib(run.server_anonymous_after)} after. Fact-table rows in the store's segments: "
        f"{run.segment_points_before:,} before the deltas, {run.segment_points_after:,} after.",
        "## Machine",
        "On 2 cores the importer competes for CPU with the server's workers and the client: "
        "its CPU time during the updates is taken from them, which the throughput during "
        "the updates includes.",
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
            f"a commit visible to every worker within {VISIBLE_WITHIN:g} s",
            f"max {_lag(worker_lag)} over {len(run.worker_lags)} workers "
            f"(probe connections: max {_lag(probe_lag)})",
            _verdict(None if worker_lag is None else worker_lag <= VISIBLE_WITHIN),
        ),
        (
            f"throughput during updates within {THROUGHPUT_TOLERANCE:.0%} of steady",
            "-" if ratio is None else f"{ratio:.2f}x",
            _verdict(None if ratio is None else ratio >= 1 - THROUGHPUT_TOLERANCE),
        ),
    ]
    return _table(("target", "measured", ""), rows)


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
            f" During the updates, the importer (this process) used "
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


def _mib(size: int) -> str:
    return f"{size / _MIB:,.0f} MiB" if size else "-"


if __name__ == "__main__":
    sys.exit(main())
