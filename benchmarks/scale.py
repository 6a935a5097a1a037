"""The scale benchmark: `python -m benchmarks.scale --registered N [--compare-to M]`.

Issue 3's scale target: 1.2 x 10^9 registered IMEIs imported on this box in
≤ 10 minutes with ≤ 8 GiB RSS, the server SERVING ≤ 2 s after it starts, and
batch-1000 throughput within 20 % of the 10^8 figure.

For each scale (the `--compare-to` one first), one run:
1. generates the registry (runs of serials, never one array of every IMEI);
2. builds a store: the GSMA TAC database and the small lists (stolen, barred,
   barred TACs, golden, pairing) through DIRBS files and `import_file`, then the
   registration list fed straight from the generator's runs, one roaring bitmap
   per TAC, through `import_bitmaps` (a CSV of 10^9 rows is 90 GB);
3. starts one `imeireg serve` on CPU 0 and times it from exec to SERVING;
4. measures unary CheckImeis at batch 1,000 with run.py's load driver, one
   client process on CPU 1;
5. while that server runs, re-imports the registration list with 1 % of its rows
   changed (issue "Serving core redesign": a full re-import of the national list is
   answered from within 10 s of its commit, and the server's event loop stalls no more
   than 5 ms while its watcher builds the new state), and reads from the server's log
   when it answered from the new generation, how long its build took and the event
   loop's worst lag meanwhile.
Every phase is timed with the process's peak RSS (VmHWM, reset per phase). The
report goes to benchmarks/results/<timestamp>-scale/report.md and to stdout.
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import shlex
import shutil
import signal
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

import numpy as np
from pyroaring import BitMap

from benchmarks import answers, dirbs, load, machine, registry, workers, workload
from benchmarks.drivers import Job, System, expected_answers, prepare
from benchmarks.measurement import Measurement
from benchmarks.registry import SERIAL_SPACE, U32, U64, Registry, SerialRuns
from benchmarks.servers import imeireg_server
from benchmarks.storage import database_bytes
from imeireg.server.imports.full import import_bitmaps, import_file
from imeireg.server.model import ListName, SerialSet
from imeireg.server.serving.build import opened_state
from imeireg.server.store import Store

RESULTS = Path(__file__).parent / "results"
SERVER_CPUS = (0,)
CLIENT_CPUS = (1,)
BATCH_SIZE = 1_000
QUERIES = 1_000_000  # the workload pool, as in run.py's full mode
WARMUP = 3.0
DURATION = 10.0
CONCURRENCY = 4
CHANNELS = 4
TIME_LIMIT = 1_800.0  # seconds for the whole run

SCALE_TARGET = 1_200_000_000
IMPORT_TARGET_SECONDS = 600.0
RSS_TARGET_BYTES = 8 * 2**30
START_TARGET_SECONDS = 2.0
THROUGHPUT_TOLERANCE = 0.20
_GIB = 2**30
_MIB = 2**20


class Overtime(Exception):
    """The run's time limit passed; the phase under way was stopped."""


@dataclass
class Phase:
    name: str
    seconds: float
    peak_rss: int  # VmHWM while the phase ran, bytes
    max_rss: int  # getrusage's ru_maxrss at the phase's end, bytes


@dataclass
class Feed:
    """Where the registration import's time went, seen from the generators that feed it."""

    tacs: int = 0
    began_at: float = 0.0  # perf_counter when the import began
    building_seconds: float = 0.0  # building bitmaps from runs
    finished_at: float = 0.0  # when the store took the last (TAC, serials) pair
    ended_at: float = 0.0  # when the import had committed

    @property
    def writing_seconds(self) -> float:
        """Serializing the bitmaps and putting them in LMDB."""
        return self.finished_at - self.began_at - self.building_seconds

    @property
    def after_seconds(self) -> float:
        """Recomputing the fact-table segments of every touched TAC, and the commit."""
        return self.ended_at - self.finished_at


@dataclass
class Reimport:
    """The registration list re-imported while the server runs: what the server made of it."""

    rows_changed: int
    generation: int
    visible: float | None = None  # seconds from the commit to the server's switch
    build_ms: float | None = None  # the server's build of the new state, by its log
    loop_lag_ms: float | None = None  # the event loop's worst lag during that build


@dataclass
class ScaleRun:
    """Every figure of one scale."""

    registered: int  # complete registrations asked of the generator
    rows: int = 0  # rows of the registration list: complete and provisional
    runs: int = 0  # runs of serials of the complete registrations
    single_serials: int = 0
    phases: list[Phase] = field(default_factory=list)
    small_lists: dict[str, tuple[int, float]] = field(default_factory=dict)  # rows, seconds
    feed: Feed = field(default_factory=Feed)
    lmdb_bytes: int = 0
    databases: dict[str, int] = field(default_factory=dict)
    start_seconds: float = 0.0
    server_rss_started: int = 0
    server_rss_warm: int = 0
    measurement: Measurement | None = None
    load_average: str = ""  # of the machine right after the measured window
    reimport: Reimport | None = None
    interrupted: str = ""
    problems: list[str] = field(default_factory=list)

    def phase(self, name: str) -> Phase | None:
        return next((p for p in self.phases if p.name == name), None)

    @property
    def import_seconds(self) -> float:
        """The whole store build: small lists (files written and imported) and registration."""
        return sum(p.seconds for p in self.phases if p.name in _IMPORT_PHASES)

    @property
    def build_peak_rss(self) -> int:
        """The process's peak RSS while it generated and imported (the registry is held)."""
        return max(
            (p.peak_rss for p in self.phases if p.name in (_GENERATE, *_IMPORT_PHASES)), default=0
        )


_GENERATE = "generate the registry"
_SMALL_LISTS = "small lists: DIRBS files written and imported"
_REGISTRATION = "registration list fed to import_bitmaps"
_IMPORT_PHASES = (_SMALL_LISTS, _REGISTRATION)
_WRITING_FILES = "writing their DIRBS files"
_INDEX = "serving state built in this process (what serve does at start)"
_WORKLOAD = "workload and expected answers"
_SERVE = "imeireg serve: start and load"
_REIMPORT = "registration list re-imported while serving"
# Targets of issue "Serving core redesign" for a full re-import at 1.2 x 10^9.
REIMPORT_VISIBLE_SECONDS = 10.0
LOOP_LAG_TARGET_MS = 5.0
_SWITCH_TIMEOUT = 600.0  # seconds to wait for the server's switch before calling it missing


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.scale", *(argv or sys.argv[1:])])
    pinning = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    started = datetime.datetime.now(datetime.UTC)
    description = machine.describe()
    scales = [*([args.compare_to] if args.compare_to else []), args.registered]
    runs: list[ScaleRun] = []
    signal.signal(signal.SIGALRM, _overtime)
    signal.setitimer(signal.ITIMER_REAL, args.time_limit)
    try:
        for registered in scales:
            run = ScaleRun(registered)
            runs.append(run)
            _measure(run, args.seed, args.work_dir, pinning)
            if run.interrupted:
                break
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    description["load average at end"] = machine.load_average()
    text = markdown(
        runs,
        command=command,
        started=started,
        description=description,
        compared=args.compare_to is not None,
        pinning=pinning,
    )
    out = RESULTS / f"{started:%Y%m%d-%H%M%S}-scale"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(text)
    print(text)
    _say(f"report: {out / 'report.md'}")
    return 1 if any(run.interrupted for run in runs) else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    parser.add_argument("--registered", type=int, required=True, help="complete registrations")
    parser.add_argument("--seed", type=int, default=registry.DEFAULT_SEED)
    parser.add_argument("--work-dir", type=Path, help="scratch space (default: the temp dir)")
    parser.add_argument(
        "--compare-to", type=int, help="measure this scale first and compare the throughput"
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=TIME_LIMIT,
        help="seconds for the whole run; the phase under way then stops and is reported",
    )
    return parser


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _overtime(_signum: int, _frame: FrameType | None) -> None:
    raise Overtime


def _measure(run: ScaleRun, seed: int, work_dir: Path | None, pinning: bool) -> None:
    """Generate, import, serve and load one scale; an overrun, ^C or failure ends it with what
    it has."""
    phases = _Phases(run)
    try:
        with tempfile.TemporaryDirectory(prefix="imeireg-scale-", dir=work_dir) as scratch:
            _build_and_serve(run, phases, seed, Path(scratch), pinning)
    except (Overtime, KeyboardInterrupt) as reason:
        why = "time limit reached" if isinstance(reason, Overtime) else "interrupted"
        run.interrupted = f"{why} during '{phases.current}' after {phases.elapsed():.0f} s"
    except Exception as error:  # reported: the figures measured so far still go out
        run.interrupted = f"failed during '{phases.current}': {type(error).__name__}: {error}"
    if run.interrupted:
        _say(f"{run.registered:,}: {run.interrupted}")


def _build_and_serve(
    run: ScaleRun, phases: _Phases, seed: int, scratch: Path, pinning: bool
) -> None:
    _say(f"{run.registered:,}: generating the registry (seed {seed})")
    with phases(_GENERATE):
        reg = registry.generate(run.registered, seed)
    run.rows = reg.registered
    run.runs = len(reg.complete.lengths)
    run.single_serials = int(np.count_nonzero(reg.complete.lengths == 1))
    db = scratch / "registry"
    _say(f"{run.registered:,}: the GSMA TAC database and the small lists, from DIRBS files")
    with phases(_SMALL_LISTS):
        _import_small_lists(reg, scratch / "lists", db, run.small_lists)
    _say(f"{run.registered:,}: {run.rows:,} registrations fed TAC by TAC")
    with phases(_REGISTRATION):
        _import_registration(reg, db, run.feed, seed)
    run.lmdb_bytes = (db / "data.mdb").stat().st_size
    run.databases = database_bytes(db)

    _say(f"{run.registered:,}: the serving index, loaded in this process")
    with phases(_INDEX), opened_state(db):
        pass
    _say(f"{run.registered:,}: workload and expected answers")
    with phases(_WORKLOAD):
        pool = workload.generate(reg, QUERIES, seed)
        expected = answers.expected(db, reg, pool)
    if expected.disagreements:
        run.problems.append(
            f"imeireg's checker and the generator disagree on the registration of "
            f"{expected.disagreements} workload queries"
        )
    batches = pool.batches(BATCH_SIZE)
    job = Job(
        system=System.IMEIREG,
        target="",
        batch_size=BATCH_SIZE,
        concurrency=CONCURRENCY,
        channels=CHANNELS,
        warmup=WARMUP,
        duration=DURATION,
        cpus=CLIENT_CPUS if pinning else (),
        requests=prepare(System.IMEIREG, batches),
        expected=expected_answers(
            System.IMEIREG, BATCH_SIZE, len(batches), expected.statuses, expected.members
        ),
    )
    del pool, expected  # the server and the client need none of it; the re-import, `reg`

    _say(f"{run.registered:,}: imeireg serve")
    with (
        phases(_SERVE),
        imeireg_server(db, SERVER_CPUS if pinning else (), scratch / "server.log") as server,
    ):
        run.start_seconds = server.started_in
        run.server_rss_started = server.rss_bytes()
        _say(f"{run.registered:,}: SERVING in {server.started_in:.2f} s; batch {BATCH_SIZE:,}")
        measurement = load.run(replace(job, target=server.target))
        run.load_average = machine.load_average()
        run.server_rss_warm = server.rss_bytes()
        _say(f"{run.registered:,}: the registration list re-imported while serving")
        with phases(_REIMPORT):
            run.reimport = _reimport_while_serving(reg, db, seed, scratch / "server.log")
        _say(
            f"{run.registered:,}: generation {run.reimport.generation} answered "
            f"{_seconds(run.reimport.visible)} after its commit; build "
            f"{_ms(run.reimport.build_ms)}, event loop's worst lag {_ms(run.reimport.loop_lag_ms)}"
        )
    run.measurement = measurement
    latency = measurement.latencies_ms()
    _say(
        f"{run.registered:,}: {measurement.imeis_per_second:,.0f} IMEI/s, "
        f"p50 {latency[50.0]:.3f} ms, p99 {latency[99.0]:.3f} ms"
    )
    if measurement.errors or measurement.mismatches:
        run.problems.append(
            f"batch {BATCH_SIZE}: {measurement.errors} errors {measurement.first_error!r}, "
            f"{measurement.mismatches} wrong answers of {measurement.verified} verified"
        )


class _Phases:
    """Times named phases and the peak RSS of each (VmHWM, reset as a phase begins)."""

    def __init__(self, run: ScaleRun) -> None:
        self.run = run
        self.current = "setup"
        self._began = time.perf_counter()
        self._phase_began = self._began

    def elapsed(self) -> float:
        return time.perf_counter() - self._began

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.current = name
        _reset_peak_rss()
        self._phase_began = time.perf_counter()
        yield
        seconds = time.perf_counter() - self._phase_began
        peak = _status_bytes("VmHWM")
        max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.run.phases.append(Phase(name, seconds, peak, max_rss))
        _say(f"{self.run.registered:,}: {name}: {seconds:.1f} s, peak RSS {_gib(peak)}")


def _reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux's clear_refs 5), so each phase has its own peak."""
    with suppress(OSError):  # then VmHWM is the peak since the process began
        Path("/proc/self/clear_refs").write_text("5")


def _status_bytes(key: str) -> int:
    """A memory figure of this process from /proc/self/status, in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _import_small_lists(
    reg: Registry, directory: Path, db: Path, timings: dict[str, tuple[int, float]]
) -> None:
    """Every list but registration, written as DIRBS files and imported with `import_file`.

    They go in before the registration list: each import recomputes the fact-table
    segment of every TAC it touches from all serial sets, so a small list imported
    after 10^9 registrations would re-read nearly all of them. `timings` gets the rows
    and seconds of writing the files and of each import.
    """
    no_registrations = replace(
        reg,
        complete=SerialRuns(np.empty(0, np.uint64), np.empty(0, np.uint32), np.empty(0, np.uint32)),
        complete_whitelist=np.empty(0, np.bool_),
        provisional=np.empty(0, np.uint64),
    )
    began = time.perf_counter()
    files = dirbs.write_files(no_registrations, directory)
    timings[_WRITING_FILES] = (0, time.perf_counter() - began)
    store = Store.create(db)
    try:
        for name, path in files.items():
            if name is not ListName.REGISTRATION:
                began = time.perf_counter()
                record = import_file(store, name, path)
                timings[name.value] = (record.rows, time.perf_counter() - began)
    finally:
        store.close()


def _import_registration(reg: Registry, db: Path, feed: Feed, seed: int) -> int:
    """Import the registration list from the generator's runs; returns its generation."""
    store = Store.create(db)
    feed.began_at = time.perf_counter()
    try:
        record = import_bitmaps(
            store,
            ListName.REGISTRATION,
            {
                SerialSet.REGISTERED: _timed(
                    (
                        (tac, registered_serials(starts, lengths))
                        for tac, starts, lengths in reg.complete.by_tac()
                    ),
                    feed,
                ),
                SerialSet.PROVISIONAL: _timed(provisional_serials(reg.provisional), feed),
            },
            rows=reg.registered,
            source=f"benchmarks.scale generator, seed {seed}",
        )
        feed.ended_at = time.perf_counter()
    finally:
        store.close()
    return record.generation


def _reimport_while_serving(reg: Registry, db: Path, seed: int, log: Path) -> Reimport:
    """Re-import the registration list with 1 % of its complete registrations taken out,
    then wait for the server's log to say it answers from the new generation."""
    rng = np.random.default_rng(seed + 1)
    count = reg.complete.count
    # Drawn with repeats and then made distinct: a draw without repeats permutes all
    # `count` positions, 9.6 GB at 1.2 x 10^9.
    positions = np.sort(rng.integers(0, count, size=count // 100, dtype=np.uint64))
    positions = positions[np.r_[True, positions[1:] != positions[:-1]]]
    pieces, _ = reg.complete.without(reg.complete.body_at(positions))
    changed = replace(reg, complete=pieces)
    generation = _import_registration(changed, db, Feed(), seed)
    committed_at = time.time()
    reimport = Reimport(len(positions), generation)
    deadline = time.monotonic() + _SWITCH_TIMEOUT
    while time.monotonic() < deadline:
        switch = next((s for s in workers.switches(log) if s.generation >= generation), None)
        if switch is not None:
            reimport.visible = switch.at - committed_at
            reimport.build_ms, reimport.loop_lag_ms = switch.build_ms, switch.loop_lag_ms
            break
        time.sleep(0.05)
    return reimport


def registered_serials(starts: U32, lengths: U32) -> BitMap:
    """One TAC's serials from its runs: a range per factory block, the single ones at once."""
    single = lengths == 1
    serials = BitMap(array("I", starts[single].tobytes()))
    blocks = ~single
    for start, length in zip(starts[blocks].tolist(), lengths[blocks].tolist(), strict=True):
        serials.add_range(start, start + length)
    return serials


def provisional_serials(bodies: U64) -> Iterator[tuple[int, BitMap]]:
    """(TAC, serials) of IMEI bodies (tac * 10**6 + serial), in ascending TAC order."""
    ordered = np.sort(bodies)
    tacs = ordered // np.uint64(SERIAL_SPACE)
    serials = (ordered % np.uint64(SERIAL_SPACE)).astype(np.uint32)
    bounds = np.flatnonzero(np.r_[True, tacs[1:] != tacs[:-1], True])
    for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        yield int(tacs[start]), BitMap(array("I", serials[start:end].tobytes()))


def _timed(pairs: Iterator[tuple[int, BitMap]], feed: Feed) -> Iterator[tuple[int, BitMap]]:
    """`pairs`, counting the time spent producing them and when the store took the last."""
    while True:
        began = time.perf_counter()
        pair = next(pairs, None)
        feed.building_seconds += time.perf_counter() - began
        if pair is None:
            feed.finished_at = time.perf_counter()
            return
        feed.tacs += 1
        yield pair


# The report.


def markdown(
    runs: Sequence[ScaleRun],
    *,
    command: str,
    started: datetime.datetime,
    description: dict[str, str],
    compared: bool,
    pinning: bool,
) -> str:
    scale = runs[-1] if not compared or len(runs) > 1 else None
    reference = runs[0] if compared else None
    where = (
        "imeireg serve on CPU 0, the load driver's client process on CPU 1"
        if pinning
        else "no CPU pinning (taskset missing or one CPU)"
    )
    parts = [
        f"# imeireg scale benchmark, {started:%Y-%m-%d %H:%M:%S} UTC",
        f"Command: `{command}`",
        "Per scale: the registry generated (seed as in the command); the GSMA TAC database and "
        "the small lists written as DIRBS files and imported with `import_file`; the "
        "registration list fed straight from the generator's runs, one roaring bitmap per TAC, "
        "through `import_bitmaps` (one transaction, one generation); then one "
        f"`imeireg serve` process and unary `CheckImeis` at batch {BATCH_SIZE:,}, "
        f"{CONCURRENCY} calls in flight over {CHANNELS} connections, {WARMUP:g} s warm-up then "
        f"{DURATION:g} s measured, on a pool of {QUERIES:,} queries in run.py's mix; {where}. "
        "The store is in the page cache when the server starts (it was just written).",
        "## Targets of issue 3 (scale)",
        _targets(scale, reference),
        "## Figures",
        _figures(runs),
        "## Phases",
        "Wall time, and the peak RSS of this process: VmHWM while the phase ran (reset as it "
        "begins, with /proc/self/clear_refs), and getrusage's ru_maxrss at its end (the same "
        "high-water mark, but it also keeps the peak left by exited threads).",
        _phases(runs),
        "## Machine",
        _table(("", ""), [(key, value) for key, value in description.items()]),
        "## Problems",
        _problems(runs),
    ]
    return "\n\n".join(parts) + "\n"


def _targets(scale: ScaleRun | None, reference: ScaleRun | None) -> str:
    if scale is None:
        return "The run stopped before the scale under test was measured."
    judged = scale.registered >= SCALE_TARGET and not scale.interrupted
    note = "" if judged else f" (targets are for {SCALE_TARGET:,}; here {scale.registered:,})"

    def verdict(met: bool | None) -> str:
        if met is None:
            return "not measured"
        if not judged:
            return "-"
        return "met" if met else "**missed**"

    import_seconds = scale.import_seconds if scale.phase(_REGISTRATION) else None
    peak = scale.build_peak_rss or None
    start = scale.start_seconds or None
    rows = [
        (
            f"import ≤ {IMPORT_TARGET_SECONDS / 60:.0f} min{note}",
            _duration(import_seconds),
            verdict(None if import_seconds is None else import_seconds <= IMPORT_TARGET_SECONDS),
        ),
        (
            f"peak RSS of generation and import ≤ {RSS_TARGET_BYTES / _GIB:.0f} GiB",
            _gib(peak),
            verdict(None if peak is None else peak <= RSS_TARGET_BYTES),
        ),
        (
            f"SERVING ≤ {START_TARGET_SECONDS:g} s after start",
            _seconds(start),
            verdict(None if start is None else start <= START_TARGET_SECONDS),
        ),
    ]
    reimport = scale.reimport
    visible = reimport.visible if reimport else None
    lag = reimport.loop_lag_ms if reimport else None
    rows += [
        (
            f"full re-import answered ≤ {REIMPORT_VISIBLE_SECONDS:g} s after its commit",
            _seconds(visible),
            verdict(None if visible is None else visible <= REIMPORT_VISIBLE_SECONDS),
        ),
        (
            f"event loop's longest stall while it is built ≤ {LOOP_LAG_TARGET_MS:g} ms",
            _ms(lag),
            verdict(None if lag is None else lag <= LOOP_LAG_TARGET_MS),
        ),
    ]
    ratio = _throughput_ratio(scale, reference)
    label = (
        f"batch {BATCH_SIZE:,} throughput within {THROUGHPUT_TOLERANCE:.0%} of "
        f"{reference.registered:,}'s"
        if reference
        else f"batch {BATCH_SIZE:,} throughput within {THROUGHPUT_TOLERANCE:.0%} of 10^8's"
    )
    rows.append(
        (
            label,
            "no comparison run" if ratio is None else f"{ratio:.2f}x",
            verdict(None if ratio is None else ratio >= 1 - THROUGHPUT_TOLERANCE),
        )
    )
    return _table(("target", "measured", ""), rows)


def _throughput_ratio(scale: ScaleRun, reference: ScaleRun | None) -> float | None:
    if reference is None or reference is scale:
        return None
    if scale.measurement is None or reference.measurement is None:
        return None
    if not reference.measurement.imeis_per_second:
        return None
    return scale.measurement.imeis_per_second / reference.measurement.imeis_per_second


Figure = Callable[[ScaleRun], str]


def _figures(runs: Sequence[ScaleRun]) -> str:
    rows: list[tuple[str, Figure]] = [
        ("registration rows (complete + provisional)", lambda run: f"{run.rows:,}"),
        (
            "runs of serials (of which single serials)",
            lambda run: f"{run.runs:,} ({run.single_serials:,})",
        ),
        ("generate", _phase_time(_GENERATE)),
        ("import: small lists (files written and imported)", _phase_time(_SMALL_LISTS)),
        *((f"… {name}", _small_list(name)) for name in _small_list_names(runs)),
        ("import: registration list", _phase_time(_REGISTRATION)),
        ("… building bitmaps from runs", _feed_time(lambda feed: feed.building_seconds)),
        ("… serializing them and writing LMDB", _feed_time(lambda feed: feed.writing_seconds)),
        ("… then: fact-table segments and commit", _feed_time(lambda feed: feed.after_seconds)),
        ("import: total", lambda run: _duration(run.import_seconds or None)),
        ("import rate (registration rows / total)", _import_rate),
        ("peak RSS, generation and import (VmHWM)", lambda run: _gib(run.build_peak_rss)),
        ("data.mdb", lambda run: _mib(run.lmdb_bytes)),
        ("data.mdb per registered IMEI", lambda run: _per_imei(run.lmdb_bytes, run)),
        *((f"… LMDB pages of `{name}`", _database(name)) for name in _databases(runs)),
        ("imeireg serve: exec to SERVING", lambda run: _seconds(run.start_seconds or None)),
        ("… serving state build alone, timed in this process", _phase_time(_INDEX)),
        ("server RSS when SERVING", lambda run: _mib(run.server_rss_started)),
        ("server RSS after the load", lambda run: _mib(run.server_rss_warm)),
        (
            f"unary batch {BATCH_SIZE:,}",
            _measured(lambda m: f"{m.imeis_per_second / 1e6:.3f} M IMEI/s"),
        ),
        ("p50 per call", _measured(lambda m: f"{m.latencies_ms()[50.0]:.3f} ms")),
        ("p99 per call", _measured(lambda m: f"{m.latencies_ms()[99.0]:.3f} ms")),
        ("p99.9 per call", _measured(lambda m: f"{m.latencies_ms()[99.9]:.3f} ms")),
        ("client CPU share", _measured(lambda m: f"{m.client_cpu_share:.0%}")),
        ("load average after the window (1, 5, 15 min)", lambda run: run.load_average or "-"),
        (
            "verified answers ok",
            _measured(lambda m: f"{m.verified - m.mismatches}/{m.verified}, {m.errors} errors"),
        ),
        ("re-import while serving (1 % of rows taken out)", _phase_time(_REIMPORT)),
        (
            "… commit to the server answering from it",
            _reimported(lambda r: _seconds(r.visible)),
        ),
        ("… the server's build of the new state", _reimported(lambda r: _ms(r.build_ms))),
        ("… the event loop's worst lag meanwhile", _reimported(lambda r: _ms(r.loop_lag_ms))),
    ]
    header = ("", *(f"{run.registered:,} registered" for run in runs))
    return _table(header, [(label, *(show(run) for run in runs)) for label, show in rows])


def _phase_time(name: str) -> Figure:
    return lambda run: _duration(phase.seconds if (phase := run.phase(name)) else None)


def _feed_time(seconds: Callable[[Feed], float]) -> Figure:
    return lambda run: _duration(seconds(run.feed) if run.feed.ended_at else None)


def _small_list_names(runs: Sequence[ScaleRun]) -> list[str]:
    names: dict[str, None] = {}
    for run in runs:
        names.update(dict.fromkeys(run.small_lists))
    return list(names)


def _small_list(name: str) -> Figure:
    def show(run: ScaleRun) -> str:
        if name not in run.small_lists:
            return "-"
        rows, seconds = run.small_lists[name]
        return f"{_duration(seconds)} ({rows:,} rows)" if rows else _duration(seconds)

    return show


def _measured(show: Callable[[Measurement], str]) -> Figure:
    return lambda run: show(run.measurement) if run.measurement else "-"


def _database(name: str) -> Figure:
    def show(run: ScaleRun) -> str:
        size = run.databases.get(name, 0)
        return f"{_mib(size)} ({_per_imei(size, run)})" if size else "-"

    return show


def _per_imei(size: int, run: ScaleRun) -> str:
    return f"{size / run.rows:.3f} B" if size and run.rows else "-"


def _import_rate(run: ScaleRun) -> str:
    if not run.phase(_REGISTRATION):
        return "-"
    return f"{run.rows / run.import_seconds / 1e6:.2f} M rows/s"


def _databases(runs: Sequence[ScaleRun]) -> list[str]:
    names: dict[str, None] = {}
    for run in runs:
        names.update(dict.fromkeys(name for name, size in run.databases.items() if size))
    return list(names)


def _phases(runs: Sequence[ScaleRun]) -> str:
    rows = []
    for run in runs:
        for phase in run.phases:
            rows.append(
                (
                    f"{run.registered:,}",
                    phase.name,
                    _duration(phase.seconds),
                    _gib(phase.peak_rss),
                    _gib(phase.max_rss),
                )
            )
        if run.interrupted:
            rows.append((f"{run.registered:,}", f"**{run.interrupted}**", "", "", ""))
    return _table(("scale", "phase", "wall time", "VmHWM", "ru_maxrss"), rows)


def _problems(runs: Sequence[ScaleRun]) -> str:
    problems = [
        *(f"{run.registered:,}: {run.interrupted}" for run in runs if run.interrupted),
        *(f"{run.registered:,}: {problem}" for run in runs for problem in run.problems),
    ]
    return "\n".join(f"- {problem}" for problem in problems) if problems else "None."


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s ({int(seconds // 60)} min {seconds % 60:02.0f} s)"


def _seconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"


def _ms(milliseconds: float | None) -> str:
    return "-" if milliseconds is None else f"{milliseconds:.1f} ms"


def _reimported(show: Callable[[Reimport], str]) -> Figure:
    return lambda run: "-" if run.reimport is None else show(run.reimport)


def _gib(size: int | None) -> str:
    return "-" if not size else f"{size / _GIB:.2f} GiB"


def _mib(size: int | None) -> str:
    return "-" if not size else f"{size / _MIB:,.1f} MiB"


if __name__ == "__main__":
    sys.exit(main())
