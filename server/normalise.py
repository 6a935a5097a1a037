"""Batch IMEI normalisation: a request's IMEI strings → TAC and serial columns plus format facts.

The common case, a batch of IMEIs all spelt alike (14, 15 or 16 digits), is done
in a few numpy operations over the joined bytes; a batch mixing spellings goes
through `imei.parse_imei` one IMEI at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from imeireg.imei import BODY_DIGITS, IMEI_DIGITS, IMEISV_DIGITS, TAC_DIGITS, parse_imei
from imeireg.server import facts

U32 = npt.NDArray[np.uint32]

_SERIAL_WEIGHTS = 10 ** np.arange(BODY_DIGITS - TAC_DIGITS - 1, -1, -1, dtype=np.uint32)
_TAC_WEIGHTS = 10 ** np.arange(TAC_DIGITS - 1, -1, -1, dtype=np.uint32)
# Luhn: digits in even positions (2nd, 4th, ... 14th, 1-based) are doubled, and
# the digits of the product summed: 2d → 2d - 9 when 2d > 9.
_LUHN_DOUBLED = np.array([0, 2, 4, 6, 8, 1, 3, 5, 7, 9], dtype=np.uint8)
_EVEN_POSITIONS = np.arange(1, BODY_DIGITS, 2)
_UNIFORM_LENGTHS = (BODY_DIGITS, IMEI_DIGITS, IMEISV_DIGITS)
_TERMINATOR = ";"
_ODD_POSITIONS = np.arange(0, BODY_DIGITS, 2)


@dataclass(frozen=True, slots=True)
class ImeiBatch:
    """Aligned columns for one batch; tac and serial are 0 where the IMEI is invalid."""

    tacs: U32
    serials: U32
    flags: U32  # INVALID_FORMAT and CHECK_DIGIT_MISMATCH bits

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
    count = len(imeis)
    if count:
        # Joined with a terminator after each IMEI, a batch of equal-length digit strings
        # is a matrix whose last column is all terminators: one check proves every length.
        joined = _TERMINATOR.join(imeis) + _TERMINATOR
        width, remainder = divmod(len(joined), count)
        if not remainder and width - 1 in _UNIFORM_LENGTHS and joined.isascii():
            chars = np.frombuffer(joined.encode("ascii"), dtype=np.uint8).reshape(count, width)
            digits = chars[:, :-1] - np.uint8(ord("0"))
            if bool((chars[:, -1] == ord(_TERMINATOR)).all()) and bool((digits <= 9).all()):
                return _from_digit_rows(digits)
    return _from_mixed(imeis)


def _from_digit_rows(digits: npt.NDArray[np.uint8]) -> ImeiBatch:
    """A batch of 14-digit bodies, 15-digit IMEIs or 16-digit IMEISVs, all of one length."""
    body = digits[:, :BODY_DIGITS]
    flags = np.zeros(len(digits), dtype=np.uint32)
    if digits.shape[1] == IMEI_DIGITS:
        luhn_sum = body[:, _ODD_POSITIONS].sum(axis=1, dtype=np.uint32) + _LUHN_DOUBLED[
            body[:, _EVEN_POSITIONS]
        ].sum(axis=1, dtype=np.uint32)
        expected = (10 - luhn_sum % 10) % 10
        flags[expected != digits[:, BODY_DIGITS]] = facts.CHECK_DIGIT_MISMATCH
    return ImeiBatch(
        tacs=body[:, :TAC_DIGITS] @ _TAC_WEIGHTS,
        serials=body[:, TAC_DIGITS:] @ _SERIAL_WEIGHTS,
        flags=flags,
    )


def _from_mixed(imeis: Sequence[str]) -> ImeiBatch:
    count = len(imeis)
    tacs = np.zeros(count, dtype=np.uint32)
    serials = np.zeros(count, dtype=np.uint32)
    flags = np.zeros(count, dtype=np.uint32)
    for i, text in enumerate(imeis):
        parsed = parse_imei(text)
        if parsed is None:
            flags[i] = facts.INVALID_FORMAT
            continue
        tacs[i] = int(parsed.tac)
        serials[i] = int(parsed.serial)
        if parsed.check_digit_mismatch:
            flags[i] = facts.CHECK_DIGIT_MISMATCH
    return ImeiBatch(tacs, serials, flags)
