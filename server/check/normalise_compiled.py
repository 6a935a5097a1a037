"""Normalisation of a request's IMEIs in one compiled pass: `normalise.normalise_batch`
for a column of a request's bytes, without a numpy operation per step.

`imeireg.imei.parse_imei` is the reference; the tests hold this pass to it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from imeireg.imei import BODY_DIGITS, IMEI_DIGITS, IMEISV_DIGITS
from imeireg.server.check import facts
from imeireg.server.check.columns import TextColumn
from imeireg.server.check.intrinsics import word_at
from imeireg.server.check.normalise import SERIAL_BITS, ImeiBatch
from imeireg.server.compiled import BYTES, I64S, compiled

U8 = npt.NDArray[np.uint8]
U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

_ZERO = ord("0")
_DIGIT_LENGTHS = (BODY_DIGITS, IMEI_DIGITS, IMEISV_DIGITS)
_INVALID_FORMAT = facts.INVALID_FORMAT
_CHECK_DIGIT_MISMATCH = facts.CHECK_DIGIT_MISMATCH
# The 5G PEI spellings, each followed by exactly so many digits (as `imei.parse_imei`).
_IMEI_PEI = np.frombuffer(b"imei-", np.uint8)
_IMEISV_PEI = np.frombuffer(b"imeisv-", np.uint8)


@compiled(f"boolean({BYTES}, int64, int64, {BYTES}, int64)")
def _is_pei(chars: U8, start: int, length: int, prefix: U8, digits: int) -> bool:
    """Whether the string at `start` is `prefix` followed by `digits` characters."""
    if length != len(prefix) + digits:
        return False
    differs = 0
    for at in range(len(prefix)):
        differs |= chars[start + at] ^ prefix[at]
    return differs == 0


# An IMEI's body is read eight digits at a time, as words of eight bytes ("SWAR"), at
# its start (the TAC) and six bytes on (its last two TAC digits, then the serial): 10
# against 19 µs for 1000 IMEIs digit by digit. In a word the first byte is the lowest.
_ASCII_ZEROS = np.uint64(0x3030_3030_3030_3030)
_HIGH_NIBBLES = np.uint64(0xF0F0_F0F0_F0F0_F0F0)
_SIXES = np.uint64(0x0606_0606_0606_0606)
_THREES = np.uint64(0x0303_0303_0303_0303)
_ONES = np.uint64(0x0101_0101_0101_0101)
_EVEN_BYTES = np.uint64(0x00FF_00FF_00FF_00FF)  # the 1st, 3rd, ... digit of a word
_ODD_BYTES = np.uint64(0xFF00_FF00_FF00_FF00)
_SERIAL_BYTES = np.uint64(0xFFFF_FFFF_FFFF_0000)  # of the word from the body's 7th digit
_SECOND_WORD = BODY_DIGITS - 8


@compiled("boolean(uint64)")
def _all_digits(word: np.uint64) -> bool:
    """Whether all eight bytes of `word` are ASCII digits: each 0x3_, and not past 0x39."""
    if word & _HIGH_NIBBLES != _ASCII_ZEROS:
        return False
    return bool((word + _SIXES) & _HIGH_NIBBLES == _ASCII_ZEROS)  # no carry: each byte < 0x40


@compiled("uint64(uint64)")
def _number(digits: np.uint64) -> np.uint64:
    """The eight digit values of a word (first digit lowest) as one number."""
    pairs = (digits * np.uint64(10) + (digits >> np.uint64(8))) & _EVEN_BYTES
    fours = (pairs * np.uint64(100) + (pairs >> np.uint64(16))) & np.uint64(0x0000_FFFF_0000_FFFF)
    return (fours * np.uint64(10_000) + (fours >> np.uint64(32))) & np.uint64(0xFFFF_FFFF)


@compiled("uint64(uint64)")
def _luhn_sum(digits: np.uint64) -> np.uint64:
    """The Luhn sum of the eight digit values of a word that starts at an even position of
    the body: every second digit doubled, less 9 when that makes 10 or more."""
    doubled = digits & _ODD_BYTES
    carries = ((doubled + _THREES) >> np.uint64(3)) & _ONES  # 1 in a byte whose digit is >= 5
    per_digit = (digits & _EVEN_BYTES) + doubled * np.uint64(2) - carries * np.uint64(9)
    return (per_digit * _ONES) >> np.uint64(56)  # the sum of the bytes


@compiled(f"Tuple((uint64[::1], uint32[::1]))({BYTES}, {I64S}, {I64S})")
def imei_keys(chars: U8, starts: I64, lengths: I64) -> tuple[U64, U32]:
    """Key and format flags of every string of a column, as `imei.parse_imei` reads it."""
    count = len(starts)
    keys = np.zeros(count, np.uint64)
    flags = np.zeros(count, np.uint32)
    for row in range(count):
        start = starts[row]
        length = lengths[row]
        if _is_pei(chars, start, length, _IMEI_PEI, IMEI_DIGITS):
            start += len(_IMEI_PEI)
            length = IMEI_DIGITS
        elif _is_pei(chars, start, length, _IMEISV_PEI, IMEISV_DIGITS):
            start += len(_IMEISV_PEI)
            length = IMEISV_DIGITS
        if length not in _DIGIT_LENGTHS:
            flags[row] = _INVALID_FORMAT
            continue
        first = word_at(chars, start)
        second = word_at(chars, start + _SECOND_WORD)
        not_digits = not (_all_digits(first) and _all_digits(second))
        check = 0
        for at in range(start + BODY_DIGITS, start + length):
            check = int(chars[at]) - _ZERO
            not_digits |= (check < 0) | (check > 9)
        if not_digits:
            flags[row] = _INVALID_FORMAT
            continue
        tac_digits = first - _ASCII_ZEROS
        serial_digits = (second - _ASCII_ZEROS) & _SERIAL_BYTES
        keys[row] = _number(tac_digits) << np.uint64(SERIAL_BITS) | _number(serial_digits)
        luhn = _luhn_sum(tac_digits) + _luhn_sum(serial_digits)
        if length == IMEI_DIGITS and (10 - luhn % 10) % 10 != check:
            flags[row] = _CHECK_DIGIT_MISMATCH
    return keys, flags


def normalise_column(column: TextColumn) -> ImeiBatch:
    """`normalise.normalise_batch` for a request's IMEIs, in one compiled pass."""
    return ImeiBatch(*imei_keys(column.chars, column.starts, column.lengths))
