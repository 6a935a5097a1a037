"""The `imeireg` command line: serve, import and demo here; check, tac and info from the client.

Exit codes are `imeireg.client.exit_codes.ExitCode`, the same for every command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from imeireg.client import cli as client_cli
from imeireg.client.exit_codes import ExitCode
from imeireg.server import app
from imeireg.server.demo import build_demo
from imeireg.server.importers import ImportRefused, ImportRejected, import_file
from imeireg.server.policy import Policy, PolicyError
from imeireg.server.sources import SourceError
from imeireg.server.store import ListName, Store, StoreError

log = logging.getLogger("imeireg.server")

DEFAULT_DB = os.environ.get("IMEIREG_DB", "registry")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    app.configure_logging()
    try:
        code: int = args.func(args)
    except StoreError as error:
        return _fail(str(error), ExitCode.STORE)
    except PolicyError as error:
        return _fail(str(error), ExitCode.BAD_INPUT)
    except KeyboardInterrupt:
        return _fail("interrupted", ExitCode.UNAVAILABLE)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imeireg",
        description="National IMEI registry: import its lists, serve batch legality checks "
        "over gRPC, and query it.",
        epilog="Exit codes: " + "; ".join(f"{c.value} {c.name}" for c in ExitCode),
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    db_help = f"registry store directory (default: $IMEIREG_DB or {DEFAULT_DB!r})"

    serve = commands.add_parser("serve", help="serve the gRPC API from a registry store")
    serve.add_argument("--db", type=Path, default=Path(DEFAULT_DB), help=db_help)
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
    serve.set_defaults(func=_serve)

    imports = commands.add_parser(
        "import",
        help="replace one list of the registry with a DIRBS-format file",
        description="Validate the whole file, then replace the list in one transaction "
        "(a new generation). Any invalid row rejects the file and changes nothing.",
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
    imports.set_defaults(func=_import)

    demo = commands.add_parser("demo", help="build the deterministic demo registry")
    demo.add_argument("--db", type=Path, default=Path(DEFAULT_DB), help=db_help)
    demo.add_argument(
        "--registered",
        type=int,
        default=1_000_000,
        help="complete registrations, 1000 to 5000000 (default: 1000000)",
    )
    demo.set_defaults(func=_demo)

    client_cli.add_commands(commands)
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _fail(message: str, code: ExitCode) -> int:
    print(f"imeireg: {message}", file=sys.stderr)
    return code


def _serve(args: argparse.Namespace) -> int:
    if args.workers > 1 and args.port == 0:
        return _fail("--port 0 cannot be shared by several --workers", ExitCode.USAGE)
    policy = Policy.load(args.policy) if args.policy else None
    return app.run(
        app.ServeOptions(args.db, args.host, args.port, args.workers, policy, args.grace)
    )


def _import(args: argparse.Namespace) -> int:
    store = Store.create(args.db)
    try:
        record = import_file(
            store, args.list, args.file, force=args.force, show_progress=sys.stderr.isatty()
        )
    except (ImportRejected, SourceError) as error:
        return _fail(str(error), ExitCode.BAD_INPUT)
    except ImportRefused as error:
        return _fail(str(error), ExitCode.REFUSED)
    finally:
        store.close()
    log.info(
        "imported %s from %s: %d rows, generation %d (sha256 %s)",
        record.list_name,
        args.file,
        record.rows,
        record.generation,
        record.sha256,
    )
    return ExitCode.OK


def _demo(args: argparse.Namespace) -> int:
    try:
        summary = build_demo(args.db, registered=args.registered)
    except (ValueError, FileExistsError) as error:
        return _fail(str(error), ExitCode.USAGE)
    log.info("demo registry built in %s", args.db)
    print(summary.table())
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
