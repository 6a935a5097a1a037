"""The server's `imeireg` commands, run on the registry's own machine: serve, import,
history, rollback and demo here, snapshot in cli_snapshot.py.

`imeireg.cli` puts them on the one `imeireg` parser beside the client's check, tac and info;
this package never imports the client.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from imeireg.cli_support import ExitCode, fail, print_table
from imeireg.server import cli_snapshot
from imeireg.server.check.policy import Policy, PolicyError
from imeireg.server.model import ListName
from imeireg.server.store import HISTORY_GENERATIONS, Store, StoreError

# What one command alone needs is imported by that command: `serve` has no use for the
# importers' pyarrow, nor an import for grpc's server and numba's compiled request path,
# and each would add a fraction of a second to every start.

log = logging.getLogger("imeireg.server")

DEFAULT_DB = os.environ.get("IMEIREG_DB", "registry")

Command = Callable[[argparse.Namespace], int]


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register serve, import, history, rollback, demo and snapshot on the `imeireg` parser."""
    db_help = f"registry store directory (default: $IMEIREG_DB or {DEFAULT_DB!r})"

    serve = commands.add_parser("serve", help="serve the gRPC API from a registry store")
    serve.add_argument(
        "--db",
        type=Path,
        default=Path(DEFAULT_DB),
        help=db_help + "; a symlink to a snapshot is followed when `snapshot install` repoints it",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1; 0.0.0.0 or [::] for all)",
    )
    serve.add_argument("--port", type=int, default=50051, help="TCP port (default: 50051)")
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="server processes sharing the port (default: 1)",
    )
    serve.add_argument(
        "--policy", type=Path, help="policy TOML file (default: the bundled whitelist model)"
    )
    serve.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="seconds to drain in-flight calls on SIGTERM (default: 10)",
    )
    serve.set_defaults(func=_reported(_serve))

    imports = commands.add_parser(
        "import",
        help="replace one list of the registry with a DIRBS-format file, or apply a delta",
        description="Validate the whole file, then replace the list (or, with --delta, add, "
        "remove and update its entries) in one transaction: a new generation. Any invalid "
        "row rejects the file and changes nothing.",
    )
    imports.add_argument(
        "list",
        type=ListName,
        choices=list(ListName),
        metavar="LIST",
        help="one of: " + ", ".join(ListName),
    )
    imports.add_argument(
        "file", type=Path, metavar="FILE", help=".csv, .csv.gz or .zip holding one CSV"
    )
    imports.add_argument(
        "--db", type=Path, default=Path(DEFAULT_DB), help=db_help + "; created if absent"
    )
    imports.add_argument(
        "--force",
        action="store_true",
        help="import even if the file has fewer than 75%% of the current rows",
    )
    deltas = imports.add_argument_group(
        "delta imports",
        "A delta file has the list's columns plus change_type (add, remove or update). "
        "By default it is rejected whole when an add already exists, a remove or update "
        "does not, or one key has two change types; each flag relaxes one check.",
    )
    deltas.add_argument(
        "--delta", action="store_true", help="apply FILE as a delta instead of a full list"
    )
    deltas.add_argument(
        "--allow-existing-adds",
        action="store_true",
        help="an add of an entry the list has sets it, like an update",
    )
    deltas.add_argument(
        "--allow-missing",
        action="store_true",
        help="a remove of an entry the list lacks does nothing; an update of one adds it",
    )
    deltas.add_argument(
        "--allow-conflicts",
        action="store_true",
        help="a key given several change types takes its last row's",
    )
    imports.set_defaults(func=_reported(_import))

    history = commands.add_parser(
        "history",
        help="list the imports and rollbacks that made the registry, newest first",
    )
    history.add_argument("--db", type=Path, default=Path(DEFAULT_DB), help=db_help)
    history.add_argument(
        "--limit", type=_positive, default=50, help="at most this many (default: 50)"
    )
    history.set_defaults(func=_reported(_history))

    rollback = commands.add_parser(
        "rollback",
        help="return the registry to its state before a generation, as a new generation",
        description="Undo the import that committed GENERATION and every later one. The "
        "rollback is a new generation (servers switch to it with no restart), is logged, "
        f"and can itself be rolled back. The last {HISTORY_GENERATIONS} generations can be.",
    )
    rollback.add_argument(
        "generation",
        type=_positive,
        metavar="GENERATION",
        help="the generation to undo, with all later ones (see `imeireg history`)",
    )
    rollback.add_argument("--db", type=Path, default=Path(DEFAULT_DB), help=db_help)
    rollback.set_defaults(func=_reported(_rollback))

    demo = commands.add_parser("demo", help="build the deterministic demo registry")
    demo.add_argument("--db", type=Path, default=Path(DEFAULT_DB), help=db_help)
    demo.add_argument(
        "--registered",
        type=int,
        default=1_000_000,
        help="complete registrations, 1000 to 5000000 (default: 1000000)",
    )
    demo.set_defaults(func=_reported(_demo))

    cli_snapshot.add_commands(commands, Path(DEFAULT_DB))


def _reported(command: Command) -> Command:
    """`command`, with a store or policy error reported in one line and its exit code."""

    @functools.wraps(command)
    def reported(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except StoreError as error:
            return fail(str(error), ExitCode.STORE)
        except PolicyError as error:
            return fail(str(error), ExitCode.BAD_INPUT)

    return reported


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _serve(args: argparse.Namespace) -> int:
    if args.workers > 1 and args.port == 0:
        return fail("--port 0 cannot be shared by several --workers", ExitCode.USAGE)
    policy = Policy.load(args.policy) if args.policy else None
    from imeireg.server.serving import process

    return process.run(
        process.ServeOptions(args.db, args.host, args.port, args.workers, policy, args.grace)
    )


def _import(args: argparse.Namespace) -> int:
    from imeireg.server.imports.delta import DeltaChecks, import_delta
    from imeireg.server.imports.full import ImportRefused, import_file
    from imeireg.server.imports.rows import ImportRejected
    from imeireg.server.imports.sources import SourceError

    relaxed = args.allow_existing_adds or args.allow_missing or args.allow_conflicts
    if relaxed and not args.delta:
        return fail("--allow-* flags apply to --delta imports only", ExitCode.USAGE)
    if args.delta and args.force:
        return fail("--force applies to full imports only", ExitCode.USAGE)
    store = Store.create(args.db)
    try:
        if args.delta:
            checks = DeltaChecks(args.allow_existing_adds, args.allow_missing, args.allow_conflicts)
            record = import_delta(
                store, args.list, args.file, checks=checks, show_progress=sys.stderr.isatty()
            )
        else:
            record = import_file(
                store, args.list, args.file, force=args.force, show_progress=sys.stderr.isatty()
            )
    except (ImportRejected, SourceError) as error:
        return fail(str(error), ExitCode.BAD_INPUT)
    except ImportRefused as error:
        return fail(str(error), ExitCode.REFUSED)
    finally:
        store.close()
    log.info(
        "imported %s (%s) from %s: %d rows (%d added, %d removed, %d updated), "
        "generation %d (sha256 %s)",
        record.list_name,
        record.mode,
        args.file,
        record.rows,
        record.added,
        record.removed,
        record.updated,
        record.generation,
        record.sha256,
    )
    return ExitCode.OK


def _history(args: argparse.Namespace) -> int:
    store = Store.open(args.db)
    try:
        with store.read() as view:
            records = view.import_log(args.limit)
            kept = view.history_kept()
    finally:
        store.close()
    header = ("GEN", "COMMITTED (UTC)", "LIST", "MODE", "ROWS", "ADDED", "REMOVED", "UPDATED")
    rows = [
        (
            str(r.generation),
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.committed_at)),
            r.list_name or "*",  # a rollback: every list
            r.mode,
            f"{r.rows:,}",
            f"{r.added:,}",
            f"{r.removed:,}",
            f"{r.updated:,}",
            r.file_name,
            r.sha256 or "-",
        )
        for r in records
    ]
    print_table((*header, "FILE", "SHA-256"), rows)
    if kept:
        print(f"rollback possible to the state before any generation from {kept} on")
    return ExitCode.OK


def _rollback(args: argparse.Namespace) -> int:
    from imeireg.server.imports.rollback import roll_back

    store = Store.open(args.db, readonly=False)
    try:
        record = roll_back(store, args.generation)
    finally:
        store.close()
    log.info(
        "rolled back to the state before generation %d: generation %d (%d entries restored)",
        args.generation,
        record.generation,
        record.rows,
    )
    return ExitCode.OK


def _demo(args: argparse.Namespace) -> int:
    from imeireg.server.imports.demo import build_demo

    try:
        summary = build_demo(args.db, registered=args.registered)
    except (ValueError, FileExistsError) as error:
        return fail(str(error), ExitCode.USAGE)
    log.info("demo registry built in %s", args.db)
    print(summary.table())
    return ExitCode.OK
