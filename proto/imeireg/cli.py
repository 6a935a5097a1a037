"""The `imeireg` command: one parser for the client's commands and, when installed, the server's.

check, tac and info (`imeireg.client.cli`) work in every install. serve, import, history,
rollback, demo and snapshot (`imeireg.server.cli`) need `pip install 'imeireg[server]'`;
without it they are still listed, and say in one line what to install. Exit codes are
`imeireg.cli_support.ExitCode`, the same for every command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from imeireg.cli_support import ExitCode, fail
from imeireg.client import cli as client_cli

SERVER_COMMANDS = ("serve", "import", "history", "rollback", "demo", "snapshot")
"""The commands `imeireg.server.cli` registers, in order; a test holds the two to each other."""

SERVER_EXTRA = "pip install 'imeireg[server]'"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `imeireg` command line (default: this process's) and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging()
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return fail("interrupted", ExitCode.UNAVAILABLE)
    except BrokenPipeError:
        # The reader of our output went away (`imeireg history | head`): stop quietly,
        # and keep Python from reporting the pipe again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK
    return code


def build_parser() -> argparse.ArgumentParser:
    """The `imeireg` parser: the server's commands (or their stand-ins), then the client's."""
    parser = argparse.ArgumentParser(
        prog="imeireg",
        description="National IMEI registry: import its lists, serve batch legality checks "
        "over gRPC, and query it.",
        epilog="Exit codes: " + "; ".join(f"{c.value} {c.name}" for c in ExitCode),
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    try:
        from imeireg.server import cli as server_cli
    except ModuleNotFoundError as error:
        # The plain install holds the server's code but not its dependencies (lmdb, numpy,
        # ...). A module of our own missing is a bug, not an install without the extra.
        if error.name is None or error.name.split(".")[0] == "imeireg":
            raise
        _add_absent_server_commands(commands, error.name)
    else:
        server_cli.add_commands(commands)
    client_cli.add_commands(commands)
    return parser


def _add_absent_server_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], missing: str
) -> None:
    """List the server's commands, each taking any arguments and naming the extra to install."""
    for name in SERVER_COMMANDS:
        command = commands.add_parser(
            name,
            help=f"needs the server: {SERVER_EXTRA}",
            add_help=False,
            # No prefix character: every argument, even --help, is taken as a word, so the
            # command itself answers instead of argparse rejecting an option it never heard of.
            prefix_chars="\0",
        )
        command.add_argument("words", nargs="*", help=argparse.SUPPRESS)
        command.set_defaults(func=_needs_server, command=name, missing=missing)


def _needs_server(args: argparse.Namespace) -> int:
    return fail(
        f"the {args.command} command needs the server: {SERVER_EXTRA} "
        f"(no module named {args.missing!r})",
        ExitCode.USAGE,
    )


def _configure_logging() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s imeireg[%(process)d] %(message)s",
    )


if __name__ == "__main__":
    sys.exit(main())
