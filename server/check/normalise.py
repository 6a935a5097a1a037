"""Batch IMEI normalisation: a request's IMEI strings → TAC and serial columns plus format facts.

IMEIs spelt as 14, 15 or 16 digits are parsed in a few numpy operations over the
batch's bytes (columns.py), Luhn check included; the few others of a batch (PEI
spellings, malformed strings) go through `imei.parse_imei` one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from imeireg.imei import BODY_DIGITS, IMEI_DIGITS, IMEISV_DIGITS, TAC_DIGITS, parse_imei
from imeireg.server.check import facts
from imeireg.server.check.columns import TextColumn

U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]

#: An IMEI's key is ``tac << SERIAL_BITS | serial``: serials are < 10**6 < 2**20.
SERIAL_BITS = 20

# Weights of each digit position (rows) in the key, the Luhn sum (every second digit
# doubled, from the 2nd) and the check digit (columns).
_KEY, _LUHN, _CHECK = range(3)
_COLUMNS = np.zeros((IMEISV_DIGITS, 3), dtype=np.float64)
_COLUMNS[:TAC_DIGITS, _KEY] = 10.0 ** np.arange(TAC_DIGITS - 1, -1, -1) * (1 << SERIAL_BITS)
_COLUMNS[TAC_DIGITS:BODY_DIGITS, _KEY] = 10.0 ** np.arange(BODY_DIGITS - TAC_DIGITS - 1, -1, -1)
_COLUMNS[:BODY_DIGITS, _LUHN] = np.resize([1.0, 2.0], BODY_DIGITS)
_COLUMNS[BODY_DIGITS, _CHECK] = 1.0
_DOUBLED = np.zeros(IMEI_DIGITS, dtype=np.float64)
_DOUBLED[1:BODY_DIGITS:2] = 1.0
_DIGIT_LENGTHS = (BODY_DIGITS, IMEI_DIGITS, IMEISV_DIGITS)


@dataclass(frozen=True, slots=True)
class ImeiBatch:
    """Aligned columns for one batch; the key is 0 where the IMEI is invalid."""

    keys: U64  # tac << SERIAL_BITS | serial
    flags: U32  # INVALID_FORMAT and CHECK_DIGIT_MISMATCH bits

    @property
    def tacs(self) -> U32:
        return (self.keys >> np.uint64(SERIAL_BITS)).astype(np.uint32)

    @property
    def serials(self) -> U32:
        return (self.keys & np.uint64((1 << SERIAL_BITS) - 1)).astype(np.uint32)

    @property
    def valid(self) -> npt.NDArray[np.bool_]:
        valid: npt.NDArray[np.bool_] = (self.flags & facts.INVALID_FORMAT) == 0
        return valid


def normalise_batch(imeis: Sequence[str] | npt.NDArray[np.uint8]) -> ImeiBatch:
    """Split every IMEI of a batch into TAC and serial; flag malformed ones and bad check digits.

    `imeis` may also be a matrix of digit values, one row per IMEI of 14, 15 or 16
    digits, as the wire codec reads a request of IMEIs all spelt alike.
    """
    if isinstance(imeis, np.ndarray):
        return _from_digit_rows(imeis)
    column = TextColumn.of(imeis)
    keys = np.zeros(len(imeis), dtype=np.uint64)
    flags = np.full(len(imeis), facts.INVALID_FORMAT, dtype=np.uint32)
    rest = np.ones(len(imeis), dtype=np.bool_)
    for length in _DIGIT_LENGTHS:
        if not (column.lengths == length).any():
            continue
        rows, digits = column.digit_rows(length)
        if len(rows):
            part = _from_digit_rows(digits)
            keys[rows], flags[rows], rest[rows] = part.keys, part.flags, False
    # PEI spellings and malformed strings, a few in a batch: one by one.
    for row in np.flatnonzero(rest).tolist():
        keys[row], flags[row] = normalise_one(imeis[row])
    return ImeiBatch(keys, flags)


def _from_digit_rows(digits: npt.NDArray[np.uint8]) -> ImeiBatch:
    """A batch of 14-digit bodies, 15-digit IMEIs or 16-digit IMEISVs, all of one length."""
    # One small float matrix product (exact: every value is far below 2**53) gives the
    # key, the Luhn sum and the check digit of every row at once.
    columns = digits.astype(np.float64) @ _COLUMNS[: digits.shape[1]]
    flags = np.zeros(len(digits), dtype=np.uint32)
    if digits.shape[1] == IMEI_DIGITS:
        # Doubling a digit of 5 or more carries: 2d becomes 2d - 9 in the Luhn sum.
        luhn = columns[:, _LUHN] - 9 * ((digits >= 5).astype(np.float64) @ _DOUBLED)
        expected = (10 - luhn % 10) % 10
        flags[expected != columns[:, _CHECK]] = facts.CHECK_DIGIT_MISMATCH
    return ImeiBatch(columns[:, _KEY].astype(np.uint64), flags)


def normalise_one(text: str) -> tuple[int, int]:
    """The key and format flags of one IMEI."""
    parsed = parse_imei(text)
    if parsed is None:
        return 0, facts.INVALID_FORMAT
    flags = facts.CHECK_DIGIT_MISMATCH if parsed.check_digit_mismatch else 0
    return int(parsed.tac) << SERIAL_BITS | int(parsed.serial), flags
