"""IMSI checks over a column of a request's bytes, compiled: which rows are not IMSIs, and
whether a subscriber is a roamer."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from imeireg.imei import MCC_DIGITS
from imeireg.server.check.columns import TextColumn
from imeireg.server.compiled import BYTES, I64S, compiled

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]

_ZERO = ord("0")
#: The lengths of an IMSI: MCC and MNC, then at least one digit of the MSIN.
IMSI_LENGTHS = range(6, 16)


@compiled(f"int64[::1]({BYTES}, {I64S}, {I64S}, int64, int64)")
def _invalid_imsis(chars: U8, starts: I64, lengths: I64, shortest: int, longest: int) -> I64:
    invalid = np.empty(len(starts), np.int64)
    count = 0
    for row in range(len(starts)):
        length = lengths[row]
        bad = length != 0 and (length < shortest or length > longest)
        for at in range(starts[row], starts[row] + length):
            digit = int(chars[at]) - _ZERO
            bad |= (digit < 0) | (digit > 9)
        invalid[count] = row
        count += bad
    return invalid[:count]


def invalid_imsis(column: TextColumn, digits: range) -> list[int]:
    """The rows of `column` that are neither empty (no IMSI) nor an IMSI of `digits` digits."""
    rows: I64 = _invalid_imsis(column.chars, column.starts, column.lengths, digits[0], digits[-1])
    invalid: list[int] = rows.tolist()
    return invalid


@compiled(f"boolean({BYTES}, int64, int64, {I64S})")
def is_foreign(chars: U8, start: int, length: int, home_mccs: I64) -> bool:
    """Whether the IMSI at `start` (`length` bytes, not empty) is not of a home MCC; one
    too short to hold an MCC is."""
    if length < MCC_DIGITS:
        return True
    mcc = 0
    for at in range(start, start + MCC_DIGITS):
        mcc = mcc * 10 + int(chars[at]) - _ZERO
    return mcc not in home_mccs
