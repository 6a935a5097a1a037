"""The exit codes of every `imeireg` command, client and server alike."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What an `imeireg` command's exit status means; scripts may rely on these numbers."""

    OK = 0
    """Success; for `check`, every IMEI is WHITELISTED."""
    NOT_WHITELISTED = 1
    """`check` succeeded and at least one IMEI is GREYLISTED or BLACKLISTED."""
    USAGE = 2
    """The command line is wrong (argparse also exits with 2)."""
    UNAVAILABLE = 3
    """The service is unreachable or the call failed."""
    BAD_INPUT = 4
    """An input, import or policy file is unreadable or was rejected."""
    REFUSED = 5
    """A full import was refused by the 75 % safety rule; --force overrides it."""
    STORE = 6
    """The registry store is missing, corrupt or not writable."""
