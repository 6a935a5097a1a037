"""The client commands of the `imeireg` CLI: check, tac and info, asked of a running service."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from itertools import tee
from typing import TextIO

import grpc

from imeireg.cli_support import ExitCode, fail, print_table, terminal_console
from imeireg.client.channel import DEFAULT_TARGET, channel_target
from imeireg.client.errors import ImeiregError
from imeireg.client.models import RegistryInfo, TacModel, Verdict
from imeireg.client.sync_client import Client

# The widest accepted IMEI spelling, "imeisv-" and 16 digits, and the widest status.
_IMEI_WIDTH = 23
_STATUS_WIDTH = 11
# Redrawing the progress bar for every IMEI would cost more than checking it.
_PROGRESS_EVERY = 1_000


class _InputFileError(Exception):
    """A line of an IMEI file that is not `imei[,imsi]`."""


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the client commands (check, tac, info) on the `imeireg` parser."""
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--target",
        type=_target,
        default=os.environ.get("IMEIREG_TARGET", DEFAULT_TARGET),
        help="the service's host:port; several replicas as IP:port,IP:port,... (calls are "
        "spread over them, and retried on another when one fails); or dns:///name:port "
        f"for every address of a name (default: $IMEIREG_TARGET, else {DEFAULT_TARGET})",
    )
    connection.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="deadline of each call, in seconds (default: 10); "
        "a --file check is one stream with no deadline",
    )

    check = subparsers.add_parser(
        "check",
        parents=[connection],
        help="check IMEIs against the registry",
        description="Check IMEIs against the registry. Exit status: 0 when every IMEI is "
        "WHITELISTED, 1 when one is GREYLISTED or BLACKLISTED, 3 when the service fails, "
        "4 when the input is unreadable or rejected.",
    )
    check.add_argument(
        "imeis",
        nargs="*",
        metavar="IMEI",
        help="IMEIs to check: 14-digit bodies, 15-digit IMEIs, 16-digit IMEISVs, "
        "or 5G PEIs imei-<15 digits> / imeisv-<16 digits>",
    )
    check.add_argument(
        "--imsi",
        action="extend",
        nargs="+",
        metavar="IMSI",
        help="the subscriber of each IMEI, one IMSI per IMEI in the same order "
        "(for pairing exceptions and inbound roamers)",
    )
    check.add_argument(
        "--file",
        metavar="FILE",
        help="check the IMEIs of FILE ('-' for stdin) over one stream: one IMEI per line, "
        "an optional IMSI as a second CSV column, an optional header line imei[,imsi]",
    )
    output = check.add_mutually_exclusive_group()
    output.add_argument(
        "--output",
        metavar="CSV",
        help="write the verdicts to CSV ('-' for stdout) with the columns "
        "imei,imei_body,status,reasons (reasons joined by '|') instead of a table",
    )
    output.add_argument(
        "--json",
        action="store_true",
        help="write the verdicts to stdout as JSON Lines, one object per IMEI with imei, "
        "imei_body, status, reasons (a list) and generation, instead of a table",
    )
    check.set_defaults(func=_check)

    tac = subparsers.add_parser(
        "tac", parents=[connection], help="show the GSMA model data of TACs"
    )
    tac.add_argument(
        "tacs", nargs="+", metavar="TAC", help="8-digit TACs (the first 8 digits of an IMEI)"
    )
    tac.set_defaults(func=_tac)

    info = subparsers.add_parser(
        "info",
        parents=[connection],
        help="describe the registry snapshot the service answers from",
    )
    info.set_defaults(func=_info)


def _target(value: str) -> str:
    """The gRPC target of a --target value: one target, or comma-separated replicas."""
    try:
        return channel_target(value.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _failed_call(error: ImeiregError) -> ExitCode:
    # The service only rejects arguments that came from the input, such as a malformed IMSI.
    if error.code is grpc.StatusCode.INVALID_ARGUMENT:
        return fail(str(error), ExitCode.BAD_INPUT)
    return fail(str(error), ExitCode.UNAVAILABLE)


def _check(args: argparse.Namespace) -> ExitCode:
    if args.file is not None and args.imeis:
        return fail("check takes IMEIs or --file, not both", ExitCode.USAGE)
    if args.file is None and not args.imeis:
        return fail("check needs IMEIs, or --file", ExitCode.USAGE)
    if args.imsi is not None:
        if args.file is not None:
            return fail("--imsi goes with IMEIs; a --file has its own IMSIs", ExitCode.USAGE)
        if len(args.imsi) != len(args.imeis):
            return fail(
                f"--imsi needs one IMSI per IMEI: {len(args.imeis)} IMEIs, {len(args.imsi)} IMSIs",
                ExitCode.USAGE,
            )
    tally: Counter[str] = Counter()
    try:
        with ExitStack() as stack:
            lines: Iterable[str] | None = None
            if args.file == "-":
                lines = sys.stdin
            elif args.file is not None:
                lines = stack.enter_context(open(args.file, encoding="utf-8", newline=""))
            out = sys.stdout
            if args.output not in (None, "-"):
                out = stack.enter_context(open(args.output, "w", encoding="utf-8", newline=""))
            client = stack.enter_context(Client(args.target, timeout=args.timeout))
            if lines is None:
                verdicts: Iterable[Verdict] = client.check(args.imeis, args.imsi)
            else:
                rows_for_imeis, rows_for_imsis = tee(_imei_rows(lines, args.file))
                verdicts = client.check_stream(
                    (imei for imei, _ in rows_for_imeis), (imsi for _, imsi in rows_for_imsis)
                )
                verdicts = _with_progress(verdicts, stack)
            _write_verdicts(_tallied(verdicts, tally), args, out)
    except ImeiregError as error:
        return _failed_call(error)
    except (OSError, UnicodeDecodeError, csv.Error, _InputFileError) as error:
        return fail(str(error), ExitCode.BAD_INPUT)
    checked = tally.total()
    if checked == 0:
        return fail(f"no IMEI in {args.file}", ExitCode.BAD_INPUT)
    if args.output not in (None, "-"):
        statuses = ", ".join(f"{count:,} {status}" for status, count in sorted(tally.items()))
        print(f"{checked:,} verdicts written to {args.output}: {statuses}")
    return ExitCode.OK if tally.keys() <= {"WHITELISTED"} else ExitCode.NOT_WHITELISTED


def _imei_rows(lines: Iterable[str], file_name: str) -> Iterator[tuple[str, str]]:
    """(imei, imsi) of each line of an IMEI file; imsi is '' when the line has none."""
    reader = csv.reader(lines)
    header_allowed = True
    for row in reader:
        fields = [field.strip() for field in row]
        if not any(fields):
            continue
        if header_allowed and fields[0].lower() == "imei":
            header_allowed = False
            continue
        header_allowed = False
        if len(fields) > 2:
            raise _InputFileError(
                f"{file_name}:{reader.line_num}: expected imei[,imsi], got {len(fields)} columns"
            )
        yield fields[0], fields[1] if len(fields) == 2 else ""


def _with_progress(verdicts: Iterable[Verdict], stack: ExitStack) -> Iterable[Verdict]:
    """`verdicts`, counted on a progress bar on stderr when it is a terminal and rich is there."""
    console = terminal_console(stderr=True)
    if console is None:
        return verdicts
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.completed:,} IMEIs checked"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        # Redirecting would send the verdicts written to stdout through the bar's console.
        redirect_stdout=False,
        redirect_stderr=False,
    )
    stack.enter_context(progress)
    task = progress.add_task("check", total=None)

    def advancing() -> Iterator[Verdict]:
        checked = 0
        for checked, verdict in enumerate(verdicts, 1):
            if checked % _PROGRESS_EVERY == 0:
                progress.update(task, completed=checked)
            yield verdict
        progress.update(task, completed=checked)

    return advancing()


def _tallied(verdicts: Iterable[Verdict], tally: Counter[str]) -> Iterator[Verdict]:
    for verdict in verdicts:
        tally[verdict.status] += 1
        yield verdict


def _write_verdicts(verdicts: Iterable[Verdict], args: argparse.Namespace, out: TextIO) -> None:
    if args.output is not None:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["imei", "imei_body", "status", "reasons"])
        writer.writerows((v.imei, v.body or "", v.status, "|".join(v.reasons)) for v in verdicts)
    elif args.json:
        for verdict in verdicts:
            record = {
                "imei": verdict.imei,
                "imei_body": verdict.body,
                "status": verdict.status,
                "reasons": list(verdict.reasons),
                "generation": verdict.generation,
            }
            out.write(json.dumps(record) + "\n")
    else:
        rows = ((v.imei, v.status, " ".join(v.reasons)) for v in verdicts)
        print_table(("IMEI", "STATUS", "REASONS"), rows, widths=(_IMEI_WIDTH, _STATUS_WIDTH))


def _tac(args: argparse.Namespace) -> ExitCode:
    try:
        with Client(args.target, timeout=args.timeout) as client:
            models = client.lookup_tacs(args.tacs)
    except ImeiregError as error:
        return _failed_call(error)
    print_table(
        ("TAC", "ALLOCATED", "BARRED", "MANUFACTURER", "MODEL", "BRAND", "TYPE", "SINCE", "BANDS"),
        [_tac_row(model) for model in models],
    )
    return ExitCode.OK


def _tac_row(model: TacModel) -> tuple[str, ...]:
    return (
        model.tac,
        "yes" if model.allocated else "no",
        "yes" if model.barred else "no",
        model.manufacturer,
        model.model_name,
        model.brand_name,
        model.device_type,
        model.allocation_date.isoformat() if model.allocation_date else "",
        model.bands,
    )


def _info(args: argparse.Namespace) -> ExitCode:
    try:
        with Client(args.target, timeout=args.timeout) as client:
            info = client.registry_info()
    except ImeiregError as error:
        return _failed_call(error)
    _print_info(info)
    return ExitCode.OK


def _print_info(info: RegistryInfo) -> None:
    committed = f"{info.commit_time:%Y-%m-%d %H:%M:%S} UTC" if info.commit_time else "never"
    print(f"snapshot: generation {info.generation}, committed {committed}")
    print(f"schema version: {info.schema_version}")
    print(f"allocated TACs: {info.tac_count:,}")
    print()
    print_table(("LIST", "ROWS"), [(name, f"{rows:,}") for name, rows in info.rows.items()])
    print()
    if not info.recent_imports:
        print("no imports yet")
        return
    print_table(
        ("GENERATION", "COMMITTED (UTC)", "LIST", "MODE", "ROWS", "FILE"),
        [
            (
                str(record.generation),
                f"{record.commit_time:%Y-%m-%d %H:%M:%S}",
                record.list_name or "*",  # a rollback: every list
                record.mode,
                f"{record.rows:,}",
                record.file_name,
            )
            for record in info.recent_imports
        ],
    )
