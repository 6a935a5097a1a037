"""The report of a run: report.md (tables, the targets of issue 3, the machine) and PNG plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from benchmarks.drivers import System
from benchmarks.findings import Findings, StorageFigures
from benchmarks.measurement import PERCENTILES, Measurement

WORKERS_LABEL = "imeireg --workers 2"
THROUGHPUT_SYSTEMS = (
    System.CEILING,
    System.IMEIREG,
    System.IMEIREG_STREAM,
    System.EMPTY_HANDLER,
    System.EMPTY_HANDLER_STREAM,
    System.REDIS,
    System.POSTGRES,
)
HEADLINE_BATCH = 1_000
# The target for the handler's own work (≤ 200 µs a 1000-IMEI call), as ratios to
# the empty handler's throughput at HEADLINE_BATCH, in the same run.
FLOOR_TARGETS = {System.IMEIREG: 0.7, System.IMEIREG_STREAM: 0.85}
HANDLER_TARGET_US = 200
# From this client CPU share in the empty handler's run, the client, not the server, is
# taken to have set the floor.
CLIENT_BOUND = 0.9
# Calls in flight at which batch-1000 latency is also measured: one server process on one
# CPU serves calls one after another, so a call's latency is at least its service time
# times the calls ahead of it.
LATENCY_IN_FLIGHT = 2
GSMA_DATABASE = "gsma"
_SPECTRUM = (0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99, 100.0)
_MIB = 2**20


def baseline_name(system: System, ref: str) -> str:
    """What a baseline's measurements of `system` are named: "imeireg (baseline 3ed2e0c)"."""
    return f"{system.value} (baseline {ref})"


def write(findings: Findings, directory: Path) -> None:
    """report.md, throughput.png and latency.png in `directory`."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    _plot_throughput(findings, directory / "throughput.png")
    _plot_latency(findings, directory / "latency.png")
    (directory / "report.md").write_text(markdown(findings))


def markdown(findings: Findings) -> str:
    settings = findings.settings
    sections = [
        f"# imeireg benchmark — {findings.mode} run, {findings.started}\n",
        f"Command: `{findings.command}`\n",
        f"Registry: {findings.storage.registered_rows:,} IMEIs on the registration list "
        f"({findings.lists.get('registration', 0):,} rows imported; "
        f"{', '.join(f'{name} {rows:,}' for name, rows in findings.lists.items())}). "
        f"Workload: a pool of {settings['queries']:,} queries in the mix below, cycled. "
        f"Each run: {settings['warmup']} s warm-up, then {settings['duration']} s measured; "
        f"{settings['processes']} client process(es) with {settings['concurrency']} calls in "
        f"flight each (gRPC over {settings['channels']} connections); the in-process ceiling "
        "runs one call at a time.\n",
        "Peers answer **membership only** (is this 14-digit body on the registration list?); "
        "imeireg answers the **full policy** for every IMEI (format and check digit, GSMA TAC, "
        "registration, stolen, barred, golden, pairing, inbound roamer → 3GPP status and "
        "reasons).\n",
        "Every client sends requests built before the run: imeireg's protobuf messages "
        "serialized once and sent as bytes through generic gRPC callables; Redis's SMISMEMBER "
        "commands packed once with hiredis and sent on redis-py connections (hiredis parses "
        "the replies); PostgreSQL's query prepared once, its key array adapted by psycopg 3 at "
        "each call. The server under test runs on CPU 0, the client on CPU 1.\n",
        "![throughput](throughput.png)\n\n![latency](latency.png)\n",
        _targets(findings),
        _throughput_table(findings),
        _floor(findings),
        _baseline(findings),
        _latency_table(findings),
        _single_imei(findings),
        _stream_vs_unary(findings),
        _workers(findings),
        _storage(findings),
        _imports(findings),
        _workload(findings),
        _machine(findings),
        _problems(findings),
    ]
    return "\n".join(sections)


def _rate(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    if value >= 1e3:
        return f"{value / 1e3:.1f} k"
    return f"{value:.0f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _throughput(findings: Findings, system: str, batch: int) -> Measurement | None:
    concurrency = 1 if system == System.CEILING else findings.settings["concurrency"]
    return findings.find(system, batch, concurrency)


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.1f}x" if denominator else "-"


def _throughput_names(findings: Findings) -> list[str]:
    """The systems of the throughput table and plots, a baseline's after this tree's."""
    names = [system.value for system in THROUGHPUT_SYSTEMS]
    if findings.baseline:
        after = names.index(System.IMEIREG_STREAM) + 1
        names[after:after] = [findings.baseline.unary, findings.baseline.stream]
    return names


def _throughput_table(findings: Findings) -> str:
    batches = findings.settings["batch_sizes"]
    rows = []
    for name in _throughput_names(findings):
        cells = [_throughput(findings, name, b) for b in batches]
        if any(cells):
            rows.append([name, *(_rate(m.imeis_per_second) if m else "-" for m in cells)])
    imeireg = [_throughput(findings, System.IMEIREG, b) for b in batches]
    for peer in (System.REDIS, System.POSTGRES):
        peers = [_throughput(findings, peer, b) for b in batches]
        if any(peers):
            rows.append(
                [
                    f"imeireg ÷ {peer.value}",
                    *(
                        _ratio(i.imeis_per_second, p.imeis_per_second) if i and p else "-"
                        for i, p in zip(imeireg, peers, strict=True)
                    ),
                ]
            )
    floor = _throughput(findings, System.FLOOR, 1)
    note = (
        f"\nThe empty gRPC method (health Check, the per-RPC floor) answers "
        f"{_rate(floor.calls_per_second)} calls/s at the same concurrency.\n"
        if floor
        else ""
    )
    return (
        "## Throughput (IMEI/s) by batch size\n\n"
        + _table(["system", *(f"batch {b:,}" for b in batches)], rows)
        + note
    )


def _floor_points(
    findings: Findings,
) -> list[tuple[str, int, Measurement, Measurement, float | None]]:
    """(call, batch, imeireg's run, the empty handler's run, the target ratio) for each point
    at which both were measured."""
    points = []
    for call, system, empty, batch in (
        ("unary", System.IMEIREG, System.EMPTY_HANDLER, 1),
        ("unary", System.IMEIREG, System.EMPTY_HANDLER, HEADLINE_BATCH),
        ("stream", System.IMEIREG_STREAM, System.EMPTY_HANDLER_STREAM, HEADLINE_BATCH),
    ):
        imeireg, floor = _throughput(findings, system, batch), _throughput(findings, empty, batch)
        if imeireg and floor and imeireg.calls and floor.calls:
            target = FLOOR_TARGETS.get(system) if batch == HEADLINE_BATCH else None
            points.append((call, batch, imeireg, floor, target))
    return points


def _client_bound(floor: Measurement) -> bool:
    return floor.client_cpu_share >= CLIENT_BOUND


def _handler_cell(imeireg: Measurement, floor: Measurement) -> str:
    # Under a client-bound floor the empty server's own cost per call is below the time
    # per call measured: imeireg's handler costs at least the difference.
    bound = "≥ " if _client_bound(floor) else ""
    return f"{bound}{handler_us(imeireg, floor):.0f} µs"


def handler_us(imeireg: Measurement, floor: Measurement) -> float:
    """The handler's own time per call, in µs: one server process on one saturated CPU
    spends 1 / (calls/s) of CPU per call, so this is what imeireg's call costs over the
    empty handler's."""
    return (1 / imeireg.calls_per_second - 1 / floor.calls_per_second) * 1e6


def _floor(findings: Findings) -> str:
    rows = [
        [
            call,
            f"{batch:,}",
            f"{_rate(floor.imeis_per_second)} ({_rate(floor.calls_per_second)} calls/s)",
            f"{_rate(imeireg.imeis_per_second)} ({_rate(imeireg.calls_per_second)} calls/s)",
            f"**{imeireg.imeis_per_second / floor.imeis_per_second:.2f}x**"
            + (" (floor client-bound)" if _client_bound(floor) else ""),
            "-" if target is None else f"≥ {target}x",
            _handler_cell(imeireg, floor),
            f"{floor.client_cpu_share:.0%} / {imeireg.client_cpu_share:.0%}",
        ]
        for call, batch, imeireg, floor, target in _floor_points(findings)
    ]
    if not rows:
        return ""
    header = [
        "call", "batch", "empty handler IMEI/s", "imeireg IMEI/s", "imeireg ÷ empty", "target",
        "handler's own time a call", "client CPU (empty / imeireg)",
    ]  # fmt: skip
    return (
        "## Floor: imeireg against the empty handler\n\n"
        "The empty handler (`benchmarks/empty_server.py`) is imeireg's server with nothing in "
        "its check RPCs: a grpc.aio server with imeireg's options, `CheckImeis` and "
        "`StreamCheckImeis` registered by name with raw bytes in and out, answering a canned "
        "response of the batch's size (its answers are checked to parse and to hold one "
        "status per IMEI). It is sent the same request bytes as imeireg, from the same "
        f"client, at the same concurrency. Target: the handler's own work ≤ "
        f"{HANDLER_TARGET_US} µs a {HEADLINE_BATCH:,}-IMEI call, i.e. unary ≥ "
        f"{FLOOR_TARGETS[System.IMEIREG]}x and stream ≥ {FLOOR_TARGETS[System.IMEIREG_STREAM]}x "
        "the empty handler's IMEI/s.\n\n"
        + _table(header, rows)
        + "\n`handler's own time a call` is 1 / imeireg's calls/s - 1 / the empty handler's: "
        "the server is one process pinned to one CPU, so while that CPU is saturated the "
        "time a call takes it is its CPU time. At a client CPU share of "
        f"{CLIENT_BOUND:.0%} or more in the empty handler's run, the client, not the server, "
        "set the floor (`floor client-bound`): the empty server could answer more, so the "
        "ratio overstates imeireg and its handler's time is a lower bound.\n"
    )


def _baseline(findings: Findings) -> str:
    baseline = findings.baseline
    if baseline is None:
        return ""
    rows = []
    for call, system, name, batch in (
        ("unary", System.IMEIREG, baseline.unary, 1),
        ("unary", System.IMEIREG, baseline.unary, HEADLINE_BATCH),
        ("stream", System.IMEIREG_STREAM, baseline.stream, HEADLINE_BATCH),
    ):
        new, old = _throughput(findings, system, batch), _throughput(findings, name, batch)
        if new and old and old.calls:
            rows.append(
                [
                    call,
                    f"{batch:,}",
                    _rate(old.imeis_per_second),
                    _rate(new.imeis_per_second),
                    f"**{new.imeis_per_second / old.imeis_per_second:.2f}x**",
                    f"{old.latencies_ms()[99.0]:.2f} / {new.latencies_ms()[99.0]:.2f}",
                ]
            )
    header = [
        "call", "batch", f"baseline {baseline.ref} IMEI/s", "this tree IMEI/s",
        "this tree ÷ baseline", "p99 ms, baseline / this tree",
    ]  # fmt: skip
    return (
        f"## This tree against the baseline {baseline.ref} ({baseline.commit})\n\n"
        f"imeireg as of {baseline.commit}, from a git worktree installed in a venv of its own "
        "with this environment's dependency versions, served the same store and was sent the "
        "same workload, right after this tree's imeireg (git "
        f"`{findings.machine.get('git', 'unknown')}`; `-dirty`: with uncommitted changes), "
        "one server process on CPU 0 each.\n\n" + _table(header, rows)
    )


def _latency_table(findings: Findings) -> str:
    rows = []
    for m in findings.measurements:
        latency = m.latencies_ms()
        rows.append(
            [
                m.system,
                f"{m.batch_size:,}",
                str(m.concurrency),
                _rate(m.imeis_per_second),
                _rate(m.calls_per_second),
                *(f"{latency[p]:.3f}" for p in PERCENTILES),
                f"{m.client_cpu_share:.0%}",
                f"{m.verified - m.mismatches}/{m.verified}",
                str(m.errors),
            ]
        )
    header = [
        "system", "batch", "in flight", "IMEI/s", "calls/s",
        *(f"p{p:g} ms" for p in PERCENTILES), "client CPU", "verified ok", "errors",
    ]  # fmt: skip
    return (
        "## Every run: latency per call (batch), HDR histogram\n\n"
        + _table(header, rows)
        + "\n`client CPU`: CPU time of the client process over the measured window (for the "
        "ceiling, the checker itself); well below 100 %, the client is not what limits the run. "
        "`verified ok`: sampled answers (one call in 64) equal to the in-process checker's "
        "(imeireg: every status; peers: every membership).\n"
    )


def _single_imei(findings: Findings) -> str:
    single = findings.find(System.IMEIREG, 1, 1)
    floor = findings.find(System.FLOOR, 1, 1)
    if not (single and floor):
        return ""
    s, f = single.latencies_ms()[50.0], floor.latencies_ms()[50.0]
    return (
        "## Single-IMEI check vs the empty gRPC method (one call in flight)\n\n"
        + _table(
            ["call", "p50 ms", "p99 ms"],
            [
                ["CheckImeis, 1 IMEI", f"{s:.3f}", f"{single.latencies_ms()[99.0]:.3f}"],
                ["grpc.health.v1.Health/Check", f"{f:.3f}", f"{floor.latencies_ms()[99.0]:.3f}"],
            ],
        )
        + f"\nMedian ratio: **{s / f:.2f}** (target ≤ 1.15).\n"
    )


def _stream_vs_unary(findings: Findings) -> str:
    rows = []
    for batch in findings.settings["batch_sizes"]:
        unary = _throughput(findings, System.IMEIREG, batch)
        stream = _throughput(findings, System.IMEIREG_STREAM, batch)
        if unary and stream:
            rows.append(
                [
                    f"{batch:,}",
                    _rate(unary.imeis_per_second),
                    _rate(stream.imeis_per_second),
                    _ratio(stream.imeis_per_second, unary.imeis_per_second),
                ]
            )
    return (
        "## Stream vs unary at the same batch size\n\n"
        + _table(["batch", "unary IMEI/s", "stream IMEI/s", "stream ÷ unary"], rows)
        + "\nThe stream runs keep one bidirectional stream per in-flight slot, each sending a "
        "batch and reading its answer before the next.\n"
    )


def _workers(findings: Findings) -> str:
    rows = []
    for m in findings.measurements:
        if m.system != WORKERS_LABEL:
            continue
        one = _throughput(findings, System.IMEIREG, m.batch_size)
        if one:
            rows.append(
                [
                    f"{m.batch_size:,}",
                    _rate(one.imeis_per_second),
                    _rate(m.imeis_per_second),
                    _ratio(m.imeis_per_second, one.imeis_per_second),
                ]
            )
    return (
        "## `--workers N` scaling (client in one process)\n\n"
        + _table(["batch", "1 worker IMEI/s", "2 workers IMEI/s", "2 ÷ 1"], rows)
        + "\nOne worker runs on CPU 0 with the client on CPU 1. This machine has two cores, so "
        "two workers (pinned to CPUs 0 and 1) share CPU 1 with the client process: the second "
        "worker can only use what the client leaves idle, and the Python client, which also "
        "spends per-call CPU on gRPC, is then a competitor rather than a bystander. Scaling "
        "beyond one core needs more cores than client + server on this box.\n"
    )


def _per_imei(total: int, count: int) -> str:
    return f"{total / count:.2f}" if count else "-"


def without_gsma(storage: StorageFigures) -> int:
    """LMDB pages in use, but for the GSMA model records (the same whatever the registry size)."""
    return sum(size for name, size in storage.databases.items() if name != GSMA_DATABASE)


def _storage(findings: Findings) -> str:
    s = findings.storage
    n = s.registered_rows
    rows = [
        ["imeireg LMDB data.mdb file", _mib(s.lmdb_bytes), _per_imei(s.lmdb_bytes, n)],
        ["imeireg LMDB pages in use but the GSMA records", _mib(without_gsma(s)),
         _per_imei(without_gsma(s), n)],
        *(
            [f"&nbsp;&nbsp;database `{name}`", _mib(size), _per_imei(size, n)]
            for name, size in sorted(s.databases.items(), key=lambda item: -item[1])
        ),
        ["imeireg server RSS after start (no query yet)", _mib(s.server_rss_loaded),
         _per_imei(s.server_rss_loaded, n)],
        ["imeireg server RSS after the imeireg runs", _mib(s.server_rss_warm),
         _per_imei(s.server_rss_warm, n)],
        ["imeireg server RSS on an empty store", _mib(s.server_rss_empty), "-"],
        ["imeireg server RSS growth over an empty store, after the runs",
         _mib(s.server_rss_warm - s.server_rss_empty),
         _per_imei(s.server_rss_warm - s.server_rss_empty, n)],
    ]  # fmt: skip
    if s.redis_members:
        rows.append(["Redis used_memory (the set)", _mib(s.redis_bytes),
                     _per_imei(s.redis_bytes, s.redis_members)])  # fmt: skip
    if s.postgres_rows:
        rows.append(["PostgreSQL pg_total_relation_size", _mib(s.postgres_bytes),
                     _per_imei(s.postgres_bytes, s.postgres_rows)])  # fmt: skip
    return (
        f"## Storage ({n:,} IMEIs on the registration list)\n\n"
        + _table(["what", "size", "bytes per IMEI"], rows)
        + f"\nimeireg server ready (health SERVING) {s.server_start_seconds:.2f} s after exec. "
        "RSS includes the Python interpreter, gRPC and numpy, which the same server on an "
        "empty store measures. The "
        "PostgreSQL table is `registration_list(imei_norm text primary key, status text)`.\n"
    )


def _mib(size: int) -> str:
    return f"{size / _MIB:.2f} MiB"


def _imports(findings: Findings) -> str:
    cli = findings.cli_import
    text = "## Import\n\n"
    if cli:
        text += (
            f"`imeireg import registration` (a subprocess on both CPUs, interpreter start "
            f"included) of a "
            f"{cli.file_bytes / _MIB:.0f} MiB CSV of {cli.rows:,} rows into a new store: "
            f"{cli.seconds:.2f} s (median of {len(cli.runs)} runs: "
            f"{', '.join(f'{run:.2f}' for run in cli.runs)} s), "
            f"**{_rate(cli.rows_per_second)} rows/s**; data.mdb after: "
            f"{cli.lmdb_bytes / _MIB:.1f} MiB ({_per_imei(cli.lmdb_bytes, cli.rows)} B/IMEI).\n\n"
        )
    rows = [
        [
            entry["list"],
            f"{entry['rows']:,}",
            f"{entry['file_bytes'] / _MIB:.1f} MiB",
            f"{entry['seconds']:.2f}",
            _rate(entry["rows_per_second"]),
        ]
        for entry in findings.list_imports
    ]
    steps = ", ".join(f"{name} {sec:.1f} s" for name, sec in findings.generation_seconds.items())
    return (
        text
        + "Every list through `import_file`, in process, one generation each:\n\n"
        + _table(["list", "rows", "file", "seconds", "rows/s"], rows)
        + f"\nSet-up steps: {steps}.\n"
    )


def _workload(findings: Findings) -> str:
    statuses = ("WHITELISTED", "GREYLISTED", "BLACKLISTED")
    rows = [
        [
            kind,
            f"{findings.workload_mix.get(kind, 0.0):.1%}",
            *(f"{counts.get(status, 0):,}" for status in statuses),
        ]
        for kind, counts in findings.answers_by_kind.items()
    ]
    return (
        "## Workload: mix and imeireg's answers (default policy)\n\n"
        + _table(["query kind", "share", *statuses], rows)
        + f"\nThe checker and the generator disagree on {findings.truth_disagreements} "
        "queries' registration. Queries are 15-digit IMEIs with one malformed string in a "
        "hundred, so batches mix spellings; roamers carry a foreign IMSI (empty elsewhere).\n"
    )


def _machine(findings: Findings) -> str:
    peers = [[name, status] for name, status in findings.peers.items()]
    return (
        "## Machine and versions\n\n"
        + _table(["", ""], [[key, value] for key, value in findings.machine.items()])
        + "\n"
        + _table(["server under test", "status"], peers)
    )


def _problems(findings: Findings) -> str:
    if not findings.problems:
        return "## Problems\n\nNone: every run completed with no error and no wrong answer.\n"
    return "## Problems\n\n" + "".join(f"- {problem}\n" for problem in findings.problems)


def _targets(findings: Findings) -> str:
    rows: list[list[str]] = []

    def target(name: str, measured: str, met: bool | None) -> None:
        rows.append([name, measured, "-" if met is None else ("met" if met else "**missed**")])

    unary = _throughput(findings, System.IMEIREG, HEADLINE_BATCH)
    redis = _throughput(findings, System.REDIS, HEADLINE_BATCH)
    postgres = _throughput(findings, System.POSTGRES, HEADLINE_BATCH)
    stream = _throughput(findings, System.IMEIREG_STREAM, HEADLINE_BATCH)
    if unary:
        rate = unary.imeis_per_second
        target("batch 1000 unary ≥ 1.0 M IMEI/s", f"{_rate(rate)} IMEI/s", rate >= 1e6)
        p99 = unary.latencies_ms()[99.0]
        measured = f"{p99:.2f} ms at {unary.concurrency} in flight"
        met = rate >= 1e6 and p99 <= 3.0
        fewer = findings.find(System.IMEIREG, HEADLINE_BATCH, LATENCY_IN_FLIGHT)
        if fewer:
            fewer_p99 = fewer.latencies_ms()[99.0]
            measured += (
                f"; {fewer_p99:.2f} ms at {LATENCY_IN_FLIGHT} in flight, "
                f"{_rate(fewer.imeis_per_second)} IMEI/s"
            )
            met = met or (fewer.imeis_per_second >= 1e6 and fewer_p99 <= 3.0)
        # Met when one operating point gives both: the throughput and the latency.
        target("batch 1000 p99 ≤ 3 ms, at ≥ 1.0 M IMEI/s", measured, met)
        if redis:
            ratio = rate / redis.imeis_per_second
            target("≥ 4x Redis at batch 1000", f"{ratio:.1f}x", ratio >= 4)
        if postgres:
            ratio = rate / postgres.imeis_per_second
            target("≥ 18x PostgreSQL at batch 1000", f"{ratio:.1f}x", ratio >= 18)
        if stream:
            ratio = stream.imeis_per_second / rate
            target("stream ≥ unary at batch 1000", f"{ratio:.2f}x", ratio >= 1)
    for call, _, imeireg, empty, wanted in _floor_points(findings):
        if wanted is None:
            continue
        if call == "unary":
            # The issue states the target in µs and as a ratio; the two agree only for
            # an empty handler's call of about 470 µs, so both are judged.
            spent = handler_us(imeireg, empty)
            target(
                f"handler's own work ≤ {HANDLER_TARGET_US} µs a 1000-IMEI unary call",
                _handler_cell(imeireg, empty) + f" (the empty handler's call: "
                f"{1e6 / empty.calls_per_second:.0f} µs)",
                spent <= HANDLER_TARGET_US,
            )
        ratio = imeireg.imeis_per_second / empty.imeis_per_second
        target(
            f"batch 1000 {call} ≥ {wanted}x the empty handler's IMEI/s",
            f"{ratio:.2f}x" + (" (floor client-bound)" if _client_bound(empty) else ""),
            ratio >= wanted,
        )
    single = findings.find(System.IMEIREG, 1, 1)
    floor = findings.find(System.FLOOR, 1, 1)
    if single and floor:
        ratio = single.latencies_ms()[50.0] / floor.latencies_ms()[50.0]
        target("single-IMEI median ≤ 1.15 x empty method", f"{ratio:.2f}x", ratio <= 1.15)
    s = findings.storage
    n = s.registered_rows
    target(
        f"≤ 0.5 B per registered IMEI (target at 10^8; here {n:,})",
        f"data.mdb {s.lmdb_bytes / n:.2f} B, without GSMA records {without_gsma(s) / n:.2f} B, "
        f"RSS {s.server_rss_warm / n:.2f} B (over an empty store's "
        f"{(s.server_rss_warm - s.server_rss_empty) / n:.2f} B)",
        None,
    )
    if findings.cli_import:
        rate = findings.cli_import.rows_per_second
        target(
            f"import ≥ 2 M rows/s (target at 10^7 rows; here {findings.cli_import.rows:,})",
            f"{_rate(rate)} rows/s",
            rate >= 2e6,
        )
    return (
        "## Targets of issue 3 (one server process, one client process)\n\n"
        + _table(["target", "measured", ""], rows)
        + "\nThe storage figure is judged at 10^8 IMEIs, the 1.2 x 10^9 scale run is separate "
        "(it needs the direct store feed).\n"
    )


def _plot_throughput(findings: Findings, path: Path) -> None:
    import matplotlib.pyplot as plt

    batches = findings.settings["batch_sizes"]
    figure, axes = plt.subplots(figsize=(8, 5))
    for name in _throughput_names(findings):
        points = [(b, _throughput(findings, name, b)) for b in batches]
        xs = [b for b, m in points if m]
        ys = [m.imeis_per_second for _, m in points if m]
        if xs:
            axes.plot(xs, ys, marker="o", label=name)
    workers = [m for m in findings.measurements if m.system == WORKERS_LABEL]
    if workers:
        axes.plot(
            [m.batch_size for m in workers],
            [m.imeis_per_second for m in workers],
            marker="s",
            linestyle="--",
            label=WORKERS_LABEL,
        )
    floor = _throughput(findings, System.FLOOR, 1)
    if floor:
        axes.plot(
            [1], [floor.calls_per_second], marker="*", markersize=12, linestyle="none",
            label=f"{System.FLOOR.value} (calls/s)",
        )  # fmt: skip
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("IMEIs per call (batch size)")
    axes.set_ylabel("IMEIs answered per second")
    axes.set_title(f"Throughput by batch size ({findings.storage.registered_rows:,} registered)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _plot_latency(findings: Findings, path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogFormatter

    figure, (spectrum, by_batch) = plt.subplots(1, 2, figsize=(12, 5))
    for name in _throughput_names(findings):
        m = _throughput(findings, name, HEADLINE_BATCH)
        if m is None:
            continue
        histogram = m.decoded()
        xs = [1 / (1 - p / 100) if p < 100 else 1e5 for p in _SPECTRUM]
        ys = [histogram.get_value_at_percentile(p) / 1000 for p in _SPECTRUM]
        spectrum.plot(xs, ys, marker=".", label=name)
    ticks = [1 / (1 - p / 100) for p in (0.0, 50.0, 90.0, 99.0, 99.9, 99.99)]
    spectrum.set_xscale("log")
    spectrum.set_yscale("log")
    spectrum.set_xticks(ticks, ["0", "50", "90", "99", "99.9", "99.99"])
    spectrum.set_xlabel("percentile")
    spectrum.set_ylabel("ms per call")
    spectrum.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    spectrum.set_title(f"Latency distribution at batch {HEADLINE_BATCH:,}")
    spectrum.grid(True, which="both", alpha=0.3)
    spectrum.legend()

    batches = findings.settings["batch_sizes"]
    for name in _throughput_names(findings):
        points = [(b, _throughput(findings, name, b)) for b in batches]
        present = [(b, m) for b, m in points if m]
        if present:
            line = by_batch.plot(
                [b for b, _ in present],
                [m.latencies_ms()[50.0] for _, m in present],
                marker="o",
                label=f"{name} p50",
            )[0]
            by_batch.plot(
                [b for b, _ in present],
                [m.latencies_ms()[99.0] for _, m in present],
                marker="x",
                linestyle=":",
                color=line.get_color(),
                label=f"{name} p99",
            )
    by_batch.set_xscale("log")
    by_batch.set_yscale("log")
    by_batch.set_xlabel("IMEIs per call (batch size)")
    by_batch.set_ylabel("ms per call")
    by_batch.set_title("p50 (solid) and p99 (dotted) by batch size")
    by_batch.grid(True, which="both", alpha=0.3)
    by_batch.legend(fontsize="x-small", ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
