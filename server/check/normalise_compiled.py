"""Normalisation of a request's IMEIs in one compiled pass: `normalise.normalise_batch`
for a column of a request's bytes, without a numpy operation per step.

`imeireg.imei.parse_imei` is the reference; the tests hold this pass to it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from imeireg.imei import BODY_DIGITS, IMEI_DIGITS, IMEISV_DIGITS, TAC_DIGITS
from imeireg.server.check import facts
from imeireg.server.check.columns import TextColumn
from imeireg.server.check.normalise import SERIAL_BITS, ImeiBatch, normalise_one
from imeireg.server.compiled import BYTES, I64S, compiled

U8 = npt.NDArray[np.uint8]
U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

_ZERO = ord("0")
_DIGIT_LENGTHS = (BODY_DIGITS, IMEI_DIGITS, IMEISV_DIGITS)
_INVALID_FORMAT = facts.INVALID_FORMAT
_CHECK_DIGIT_MISMATCH = facts.CHECK_DIGIT_MISMATCH
_PEI_START = ord("i")  # of "imei-" and "imeisv-"


@compiled(f"Tuple((uint64[::1], uint32[::1], boolean[::1]))({BYTES}, {I64S}, {I64S})")
def _imei_keys(chars: U8, starts: I64, lengths: I64) -> tuple[U64, U32, Bools]:
    """Key and format flags of every string of a column, as `imei.parse_imei` reads it,
    and whether the row is left to it: a string that may be a PEI ("imei-...")."""
    count = len(starts)
    keys = np.zeros(count, np.uint64)
    flags = np.zeros(count, np.uint32)
    pei = np.zeros(count, np.bool_)
    for row in range(count):
        start = starts[row]
        length = lengths[row]
        not_digits = length not in _DIGIT_LENGTHS
        tac = serial = luhn = check = 0
        if not not_digits:
            # Digit pairs: a fixed count, so the loop unrolls and every test of `pair`
            # below is settled at compile time.
            for pair in range(BODY_DIGITS // 2):
                first = int(chars[start + 2 * pair]) - _ZERO
                second = int(chars[start + 2 * pair + 1]) - _ZERO
                not_digits |= (first < 0) | (first > 9) | (second < 0) | (second > 9)
                if pair < TAC_DIGITS // 2:
                    tac = tac * 100 + first * 10 + second
                else:
                    serial = serial * 100 + first * 10 + second
                # Every second digit is doubled; doubling 5 or more carries: 2d - 9.
                luhn += first + 2 * second - 9 * (second >= 5)
            for at in range(BODY_DIGITS, length):
                check = int(chars[start + at]) - _ZERO
                not_digits |= (check < 0) | (check > 9)
        if not_digits:
            if length > 0 and chars[start] == _PEI_START:
                pei[row] = True
            else:
                flags[row] = _INVALID_FORMAT
            continue
        keys[row] = np.uint64(tac << SERIAL_BITS | serial)
        if length == IMEI_DIGITS and (10 - luhn % 10) % 10 != check:
            flags[row] = _CHECK_DIGIT_MISMATCH
    return keys, flags, pei


def normalise_column(column: TextColumn) -> ImeiBatch:
    """`normalise.normalise_batch` for a request's IMEIs, in one compiled pass."""
    keys, flags, pei = _imei_keys(column.chars, column.starts, column.lengths)
    # PEI spellings, few if any: one by one.
    for row in np.flatnonzero(pei).tolist():
        keys[row], flags[row] = normalise_one(column[row])
    return ImeiBatch(keys, flags)
