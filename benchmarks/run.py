"""The benchmark: `python -m benchmarks.run --quick` (≤ 2 minutes) or `--full`.

One run generates a registry, writes its DIRBS files and imports them with
imeireg's importers, times the `imeireg import` command, then measures on the
same data and the same workload: the in-process ceiling, imeireg over gRPC
(unary and stream, one and two server processes), the empty gRPC method (health
Check), the empty handler (imeireg's check RPCs answering canned bytes: the floor
of a check call), imeireg at a --baseline commit if given, Redis and PostgreSQL.
The server side runs on CPU 0 and the clients on CPU 1. The report goes to
benchmarks/results/<timestamp>-<mode>/.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks import answers, dirbs, load, machine, registry, report, workload
from benchmarks.drivers import Job, System, expected_answers, prepare
from benchmarks.findings import BaselineFigures, Findings, ImportFigures, StorageFigures
from benchmarks.measurement import Measurement
from benchmarks.postgres_peer import PostgresPeer, binaries, postgres_server
from benchmarks.redis_peer import RedisPeer, redis_server
from benchmarks.report import HEADLINE_BATCH, LATENCY_IN_FLIGHT, WORKERS_LABEL, baseline_name
from benchmarks.servers import (
    ImeiregServer,
    Installation,
    empty_handler_server,
    imeireg_server,
    installation_at,
)
from benchmarks.storage import database_bytes
from imeireg.server.model import ListName
from imeireg.server.store import Store

RESULTS = Path(__file__).parent / "results"
BATCH_SIZES = (1, 100, 1_000, 10_000)
WORKER_BATCH_SIZES = (1, 1_000)
# The unary batch sizes at which the empty handler and a baseline are measured (their
# stream at HEADLINE_BATCH only).
FLOOR_BATCH_SIZES = (1, HEADLINE_BATCH)
# A baseline's first start compiles its request path into its new venv's numba cache.
BASELINE_START_TIMEOUT = 600.0
SERVER_CPUS = (0,)
CLIENT_CPUS = (1,)
IMPORT_RUNS = 3


@dataclass(frozen=True)
class Settings:
    registered: int
    queries: int  # the workload's pool, cycled
    warmup: float  # seconds per run
    duration: float
    concurrency: int  # calls in flight per client process
    processes: int  # client processes
    channels: int  # gRPC connections per client process


MODES = {
    "quick": Settings(10**6, 100_000, 0.5, 2.0, 4, 1, 4),
    "full": Settings(10**7, 1_000_000, 3.0, 10.0, 4, 1, 4),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    mode = "quick" if args.quick else "full"
    settings = MODES[mode]
    if args.registered:
        settings = replace(settings, registered=args.registered)
    command = shlex.join(["python", "-m", "benchmarks.run", *(argv or sys.argv[1:])])
    if not args.skip_peers:
        _install_peers()
    pinning = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    if pinning:
        os.sched_setaffinity(0, CLIENT_CPUS)
    started = datetime.datetime.now(datetime.UTC)
    out = args.out / f"{started:%Y%m%d-%H%M%S}-{mode}"
    with (
        tempfile.TemporaryDirectory(prefix="imeireg-bench-", dir=args.work_dir) as scratch,
        _baseline(args.baseline, Path(scratch)) as baseline,
    ):
        findings = _run(
            mode=mode,
            settings=settings,
            command=command,
            started=started,
            scratch=Path(scratch),
            seed=args.seed,
            pinning=pinning,
            baseline=baseline,
            skip_peers=args.skip_peers,
        )
    out.mkdir(parents=True, exist_ok=True)
    findings.save(out / "results.json")
    report.write(findings, out)
    _say(f"report: {out / 'report.md'}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--quick", action="store_true", help="10^6 registered IMEIs, short runs")
    which.add_argument("--full", action="store_true", help="10^7 registered IMEIs, longer runs")
    parser.add_argument("--registered", type=int, help="registered IMEIs instead of the mode's")
    parser.add_argument("--seed", type=int, default=registry.DEFAULT_SEED)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where reports go")
    parser.add_argument("--work-dir", type=Path, help="scratch space (default: the temp dir)")
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also measure imeireg at git REF (a worktree of it installed in a venv in the "
        "scratch space), right after this tree's, and report new / baseline",
    )
    parser.add_argument(
        "--skip-peers",
        action="store_true",
        help="do not measure Redis and PostgreSQL (imeireg, its floors and a baseline only)",
    )
    return parser


def _baseline(ref: str | None, scratch: Path) -> AbstractContextManager[Installation | None]:
    """imeireg at `ref` installed in `scratch`, first of all: a ref that does not install
    fails the run before any time is spent on it."""
    if ref is None:
        return nullcontext()
    _say(f"installing imeireg at {ref} (worktree and venv in {scratch})")
    return installation_at(ref, scratch)


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _install_peers() -> None:
    """Install Debian's redis-server and postgresql when missing, if this process may."""
    missing = [
        package
        for package, present in (
            ("redis-server", shutil.which("redis-server") is not None),
            ("postgresql", binaries() is not None),
        )
        if not present
    ]
    if not missing or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    _say(f"installing {' '.join(missing)} with apt-get")
    subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *missing],
        check=False,
        timeout=600,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def _run(
    *,
    mode: str,
    settings: Settings,
    command: str,
    started: datetime.datetime,
    scratch: Path,
    seed: int,
    pinning: bool,
    baseline: Installation | None,
    skip_peers: bool,
) -> Findings:
    server_cpus = SERVER_CPUS if pinning else ()
    client_cpus = CLIENT_CPUS if pinning else ()
    timer = _Timer()

    _say(f"generating a registry of {settings.registered:,} registered IMEIs (seed {seed})")
    with timer("generate"):
        reg = registry.generate(settings.registered, seed)
    with timer("write files"):
        files = dirbs.write_files(reg, scratch / "lists")
    _say("importing every list with import_file")
    db = scratch / "registry"
    with timer("import"):
        timings = dirbs.import_files(files, db)
    _say("timing `imeireg import registration`")
    cli_import = _time_cli_import(files[ListName.REGISTRATION], scratch / "cli-imports")

    pool = workload.generate(reg, settings.queries, seed)
    with timer("expected answers"):
        expected = answers.expected(db, reg, pool)
    lmdb_bytes = (db / "data.mdb").stat().st_size
    findings = Findings(
        mode=mode,
        command=command,
        started=f"{started:%Y-%m-%d %H:%M:%S} UTC",
        machine=machine.describe(),
        settings={
            **asdict(settings),
            "batch_sizes": list(BATCH_SIZES),
            "pinning": pinning,
            "skip_peers": skip_peers,
        },
        lists={t.list_name.value: t.rows for t in timings},
        list_imports=[
            {
                "list": t.list_name.value,
                "rows": t.rows,
                "file_bytes": t.file_bytes,
                "seconds": round(t.seconds, 3),
                "rows_per_second": round(t.rows_per_second),
            }
            for t in timings
        ],
        generation_seconds=timer.seconds,
        workload_mix={kind.name.lower(): share for kind, share in pool.shares().items()},
        answers_by_kind=expected.by_kind,
        truth_disagreements=expected.disagreements,
        storage=StorageFigures(reg.registered, lmdb_bytes, database_bytes(db)),
        cli_import=cli_import,
    )
    if expected.disagreements:
        findings.problems.append(
            f"imeireg's checker and the generator disagree on the registration of "
            f"{expected.disagreements} workload queries"
        )
    bench = _Bench(
        settings=settings,
        generated=reg,
        pool=pool,
        expected=expected,
        findings=findings,
        client_cpus=client_cpus,
    )

    _say("in-process ceiling")
    for size in BATCH_SIZES:
        bench.measure(System.CEILING, str(db), size, cpus=server_cpus)

    log = scratch / "server.log"
    _peer(
        findings,
        "imeireg (empty store)",
        lambda: _empty_server(scratch, server_cpus, log),
        bench.rss_empty,
    )
    _peer(
        findings,
        "empty handler",
        lambda: empty_handler_server(server_cpus, log),
        bench.empty_handler,
    )
    _peer(findings, "imeireg", lambda: imeireg_server(db, server_cpus, log), bench.imeireg)
    if baseline:
        figures = BaselineFigures(
            ref=baseline.ref,
            commit=baseline.commit,
            unary=baseline_name(System.IMEIREG, baseline.ref),
            stream=baseline_name(System.IMEIREG_STREAM, baseline.ref),
        )
        findings.baseline = figures
        program = baseline.program
        _peer(
            findings,
            figures.unary,
            lambda: imeireg_server(
                db, server_cpus, log, program=program, start_timeout=BASELINE_START_TIMEOUT
            ),
            lambda server: bench.baseline(server, figures),
        )
    _peer(
        findings,
        "imeireg --workers 2",
        lambda: imeireg_server(db, server_cpus and (0, 1), log, workers=2),
        bench.imeireg_workers,
    )
    if skip_peers:
        for name in ("Redis", "PostgreSQL"):
            findings.peers[name] = "skipped (--skip-peers)"
    else:
        _peer(findings, "Redis", lambda: redis_server(server_cpus), bench.redis)
        _peer(findings, "PostgreSQL", lambda: postgres_server(server_cpus), bench.postgres)
    findings.machine["load average at end"] = machine.load_average()
    return findings


@contextmanager
def _empty_server(scratch: Path, cpus: tuple[int, ...], log: Path) -> Iterator[ImeiregServer]:
    """imeireg serving a store with no list at all: what the process costs by itself."""
    empty = scratch / "empty-registry"
    Store.create(empty).close()
    with imeireg_server(empty, cpus, log) as server:
        yield server


def _peer(
    findings: Findings,
    name: str,
    start: Callable[[], AbstractContextManager[Any]],
    use: Callable[[Any], None],
) -> None:
    """Start a server under test and measure it; if it cannot run, say so and go on."""
    _say(name)
    try:
        with start() as peer:
            use(peer)
        findings.peers[name] = "ok"
    except Exception as error:
        findings.peers[name] = f"could not run: {type(error).__name__}: {error}"
        findings.problems.append(f"{name} {findings.peers[name]}")
        _say(f"{name} {findings.peers[name]}")


class _Bench:
    """Runs one measurement after another on the same workload and collects them."""

    def __init__(
        self,
        *,
        settings: Settings,
        generated: registry.Registry,
        pool: workload.Workload,
        expected: answers.Answers,
        findings: Findings,
        client_cpus: tuple[int, ...],
    ) -> None:
        self.settings = settings
        self.registry = generated
        self.pool = pool
        self.expected = expected
        self.findings = findings
        self.client_cpus = client_cpus
        self._batches = {size: pool.batches(size) for size in BATCH_SIZES}

    def measure(
        self,
        system: System,
        target: str,
        batch_size: int,
        *,
        concurrency: int | None = None,
        cpus: tuple[int, ...] | None = None,
        label: str | None = None,
    ) -> Measurement:
        settings = self.settings
        batches = self._batches[batch_size]
        in_flight = concurrency or (1 if system is System.CEILING else settings.concurrency)
        job = Job(
            system=system,
            target=target,
            batch_size=batch_size,
            concurrency=in_flight,
            channels=settings.channels,
            warmup=settings.warmup,
            duration=settings.duration,
            cpus=self.client_cpus if cpus is None else cpus,
            requests=prepare(system, batches),
            expected=expected_answers(
                system, batch_size, len(batches), self.expected.statuses, self.expected.members
            ),
        )
        processes = 1 if system is System.CEILING else settings.processes
        measurement = load.run(job, processes)
        if label:
            measurement.system = label
        self.findings.measurements.append(measurement)
        latency = measurement.latencies_ms()
        _say(
            f"  {measurement.system:<22} batch {batch_size:>6,} x{in_flight}: "
            f"{measurement.imeis_per_second:>12,.0f} IMEI/s, p50 {latency[50.0]:.3f} ms, "
            f"p99 {latency[99.0]:.3f} ms"
            + (
                f", {measurement.errors} errors ({measurement.first_error})"
                if measurement.errors
                else ""
            )
            + (f", {measurement.mismatches} WRONG answers" if measurement.mismatches else "")
        )
        if measurement.errors or measurement.mismatches:
            self.findings.problems.append(
                f"{measurement.system} at batch {batch_size}: {measurement.errors} errors "
                f"{measurement.first_error!r}, {measurement.mismatches} wrong answers of "
                f"{measurement.verified} verified"
            )
        return measurement

    def imeireg(self, server: ImeiregServer) -> None:
        storage = self.findings.storage
        storage.server_start_seconds = server.started_in
        storage.server_rss_loaded = server.rss_bytes()
        self.measure(System.FLOOR, server.target, 1)
        self.measure(System.FLOOR, server.target, 1, concurrency=1)
        self.measure(System.IMEIREG, server.target, 1, concurrency=1)
        for size in BATCH_SIZES:
            self.measure(System.IMEIREG, server.target, size)
        self.measure(System.IMEIREG, server.target, HEADLINE_BATCH, concurrency=LATENCY_IN_FLIGHT)
        for size in BATCH_SIZES:
            self.measure(System.IMEIREG_STREAM, server.target, size)
        storage.server_rss_warm = server.rss_bytes()

    def empty_handler(self, server: ImeiregServer) -> None:
        for size in FLOOR_BATCH_SIZES:
            self.measure(System.EMPTY_HANDLER, server.target, size)
        self.measure(System.EMPTY_HANDLER_STREAM, server.target, HEADLINE_BATCH)

    def baseline(self, server: ImeiregServer, figures: BaselineFigures) -> None:
        for size in FLOOR_BATCH_SIZES:
            self.measure(System.IMEIREG, server.target, size, label=figures.unary)
        self.measure(System.IMEIREG_STREAM, server.target, HEADLINE_BATCH, label=figures.stream)

    def rss_empty(self, server: ImeiregServer) -> None:
        self.findings.storage.server_rss_empty = server.rss_bytes()

    def imeireg_workers(self, server: ImeiregServer) -> None:
        for size in WORKER_BATCH_SIZES:
            self.measure(System.IMEIREG, server.target, size, label=WORKERS_LABEL)

    def redis(self, peer: RedisPeer) -> None:
        before = peer.used_memory()
        peer.load(self.registry)
        self.findings.storage.redis_bytes = peer.used_memory() - before
        self.findings.storage.redis_members = peer.members
        self.findings.settings["redis_load_seconds"] = round(peer.load_seconds, 2)
        self.findings.machine["redis-server"] = peer.version
        for size in BATCH_SIZES:
            self.measure(System.REDIS, peer.target, size)

    def postgres(self, peer: PostgresPeer) -> None:
        peer.load(self.registry)
        self.findings.storage.postgres_bytes = peer.table_bytes()
        self.findings.storage.postgres_rows = peer.rows
        self.findings.settings["postgres_load_seconds"] = round(peer.load_seconds, 2)
        self.findings.machine["postgres"] = peer.version
        for size in BATCH_SIZES:
            self.measure(System.POSTGRES, peer.conninfo, size)


def _time_cli_import(path: Path, work_dir: Path) -> ImportFigures:
    """Time `imeireg import registration FILE --db DB` (a new store) as an operator runs it:
    on the whole machine, nothing else running (its CSV reader parses on every core).
    Timed IMPORT_RUNS times, each into a new store: one run varies by ±20 % here."""
    runs = []
    for run in range(IMPORT_RUNS):
        db = work_dir / f"run-{run}"
        command = [
            sys.executable, "-m", "imeireg.cli", "import", "registration", str(path),
            "--db", str(db),
        ]  # fmt: skip
        # The files just written are flushed first: their write-back would be timed too.
        os.sync()
        began = time.perf_counter()
        result = subprocess.run(
            command,
            check=False,
            capture_output=True,
            text=True,
            timeout=3600,
            # This process is pinned to the client's CPU; the import is given them all.
            preexec_fn=_on_every_cpu,
        )
        runs.append(round(time.perf_counter() - began, 3))
        if result.returncode != 0:
            raise RuntimeError(
                f"imeireg import failed ({result.returncode}): {result.stderr[-500:]}"
            )
    store = Store.open(db)
    try:
        with store.read() as view:
            rows = view.rows()[ListName.REGISTRATION]
    finally:
        store.close()
    return ImportFigures(
        rows,
        statistics.median(runs),
        path.stat().st_size,
        (db / "data.mdb").stat().st_size,
        runs,
    )


def _on_every_cpu() -> None:
    os.sched_setaffinity(0, range(os.cpu_count() or 1))


class _Timer:
    """Wall-clock seconds of named steps."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - began, 3)


if __name__ == "__main__":
    sys.exit(main())
