"""IMEI parsing: every accepted spelling of an IMEI, reduced to its 14-digit body.

Accepted (3GPP TS 23.003, TS 29.571 PEI):
  - a 14-digit IMEI body (TAC + serial),
  - a 15-digit IMEI (body + Luhn check digit),
  - a 16-digit IMEISV (body + 2-digit software version, no check digit),
  - the 5G PEI forms ``imei-<15 digits>`` and ``imeisv-<16 digits>``.
The body keeps its leading zeros: an IMEI is never a number.
"""

from __future__ import annotations

from dataclasses import dataclass

TAC_DIGITS = 8
SERIAL_DIGITS = 6
BODY_DIGITS = TAC_DIGITS + SERIAL_DIGITS
IMEI_DIGITS = BODY_DIGITS + 1
IMEISV_DIGITS = BODY_DIGITS + 2
MCC_DIGITS = 3  # an IMSI's first digits: its country

_PEI_PREFIXES = {"imei-": IMEI_DIGITS, "imeisv-": IMEISV_DIGITS}
_ASCII_DIGITS = frozenset("0123456789")
# The Luhn sum of each two digits of a body: the first as is, the second doubled (less 9
# when doubling makes 10 or more). Seven lookups per IMEI instead of fourteen steps.
_LUHN_PAIR_SUMS = {
    f"{first}{second}": first + (2 * second - 9 if second >= 5 else 2 * second)
    for first in range(10)
    for second in range(10)
}
_BODY_PAIRS = tuple(slice(start, start + 2) for start in range(0, BODY_DIGITS, 2))


@dataclass(frozen=True, slots=True)
class ParsedImei:
    """An IMEI reduced to its body, and whether a check digit it carried was wrong."""

    body: str
    check_digit_mismatch: bool = False

    @property
    def tac(self) -> str:
        return self.body[:TAC_DIGITS]

    @property
    def serial(self) -> str:
        return self.body[TAC_DIGITS:]


def luhn_check_digit(body: str) -> int:
    """The Luhn check digit of a 14-digit body: every second digit from the left is doubled."""
    total = sum([_LUHN_PAIR_SUMS[body[pair]] for pair in _BODY_PAIRS])
    return (10 - total % 10) % 10


def is_digits(text: str) -> bool:
    """True for a non-empty string of ASCII digits only (``str.isdigit`` also accepts '²', '٣')."""
    return bool(text) and text.isascii() and text.isdigit()


def parse_imei(text: str) -> ParsedImei | None:
    """The body of an IMEI in any accepted form, or None when `text` is no IMEI."""
    digits = text
    for prefix, length in _PEI_PREFIXES.items():
        if text.startswith(prefix):
            digits = text[len(prefix) :]
            if len(digits) != length:
                return None
            break
    if not is_digits(digits) or len(digits) not in (BODY_DIGITS, IMEI_DIGITS, IMEISV_DIGITS):
        return None
    body = digits[:BODY_DIGITS]
    mismatch = len(digits) == IMEI_DIGITS and int(digits[-1]) != luhn_check_digit(body)
    return ParsedImei(body, mismatch)


def with_check_digit(body: str) -> str:
    """The 15-digit IMEI of a 14-digit body."""
    return body + str(luhn_check_digit(body))
