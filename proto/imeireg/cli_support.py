"""What every `imeireg` command shares, client and server alike: the exit codes, the one-line
error report and the table printer.

It imports neither `imeireg.client` nor `imeireg.server`, so both can import it, and it needs
nothing the plain install lacks: rich comes with `imeireg[server]`, and without it a terminal
gets the plain columns a pipe gets.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


class ExitCode(IntEnum):
    """What an `imeireg` command's exit status means; scripts may rely on these numbers."""

    OK = 0
    """Success; for `check`, every IMEI is WHITELISTED."""
    NOT_WHITELISTED = 1
    """`check` succeeded and at least one IMEI is GREYLISTED or BLACKLISTED."""
    USAGE = 2
    """The command line is wrong (argparse also exits with 2), or names a server command
    in an install without the server."""
    UNAVAILABLE = 3
    """The service is unreachable or the call failed."""
    BAD_INPUT = 4
    """An input, import or policy file is unreadable or was rejected."""
    REFUSED = 5
    """A full import was refused by the 75 % safety rule; --force overrides it."""
    STORE = 6
    """The registry store is missing, corrupt or not writable."""


def fail(message: str, code: ExitCode) -> ExitCode:
    """Report `message` as one `imeireg: ...` line on stderr; return `code` to exit with."""
    print(f"imeireg: {message}", file=sys.stderr)
    return code


def terminal_console(*, stderr: bool = False) -> Console | None:
    """A rich console on stdout (or stderr) when it is a terminal and rich is installed."""
    try:
        from rich.console import Console
    except ModuleNotFoundError:
        return None
    console = Console(stderr=stderr)
    return console if console.is_terminal else None


def print_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], widths: Sequence[int] | None = None
) -> None:
    """A rich table on a terminal; otherwise plain columns, one row per line.

    With `widths` (of every column but the last) plain rows are printed as
    they come, so a million verdicts stream; without, widths fit the rows.
    """
    console = terminal_console()
    if console is not None:
        from rich.table import Table
        from rich.text import Text

        rows = list(rows)
        table = Table(*headers)
        # A narrow terminal squeezes the other columns, never the one that names each row.
        table.columns[0].no_wrap = True
        table.columns[0].min_width = max(len(row[0]) for row in [headers, *rows])
        for row in rows:
            table.add_row(*map(Text, row))  # Text: an input like "[red]" is not markup
        console.print(table)
        return
    if widths is None:
        rows = list(rows)
        widths = [max(map(len, column)) for column in zip(headers, *rows, strict=True)][:-1]
    template = "".join(f"{{:<{width}}} " for width in widths) + "{}"
    for number, row in enumerate(rows):
        if number == 0:  # not before: an input that fails early prints no stray header
            sys.stdout.write(template.format(*headers).rstrip() + "\n")
        sys.stdout.write(template.format(*row).rstrip() + "\n")
