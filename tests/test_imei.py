"""IMEI parsing (`imeireg.imei`): which spellings are IMEIs, and the body each reduces to."""

from __future__ import annotations

import pytest
import stdnum.imei
import stdnum.luhn
from hypothesis import given
from hypothesis import strategies as st

from imeireg.imei import ParsedImei, luhn_check_digit, parse_imei, with_check_digit

ASCII_DIGITS = "0123456789"
bodies = st.text(alphabet=ASCII_DIGITS, min_size=14, max_size=14)
software_versions = st.text(alphabet=ASCII_DIGITS, min_size=2, max_size=2)
# Characters that Python's str.isdigit() accepts but an IMEI never contains.
non_ascii_digits = st.characters(categories=["Nd", "No"]).filter(
    lambda char: not char.isascii() and char.isdigit()
)


def wrong_check_digit(body: str, offset: int) -> str:
    return str((luhn_check_digit(body) + offset) % 10)


def test_domain_example_check_digit() -> None:
    assert luhn_check_digit("49015420323751") == 8
    assert with_check_digit("49015420323751") == "490154203237518"


@given(bodies)
def test_check_digit_agrees_with_python_stdnum(body: str) -> None:
    assert luhn_check_digit(body) == int(stdnum.luhn.calc_check_digit(body))
    assert stdnum.imei.is_valid(with_check_digit(body))


@given(bodies)
def test_fourteen_digit_body_is_accepted_as_is(body: str) -> None:
    assert parse_imei(body) == ParsedImei(body, check_digit_mismatch=False)


@given(bodies)
def test_fifteen_digit_imei_with_its_check_digit_gives_its_body(body: str) -> None:
    assert parse_imei(with_check_digit(body)) == ParsedImei(body, check_digit_mismatch=False)


@given(bodies, st.integers(min_value=1, max_value=9))
def test_wrong_check_digit_is_flagged_not_rejected(body: str, offset: int) -> None:
    imei = body + wrong_check_digit(body, offset)
    assert parse_imei(imei) == ParsedImei(body, check_digit_mismatch=True)


@given(bodies, software_versions)
def test_imeisv_gives_its_first_14_digits_and_has_no_check_digit(body: str, svn: str) -> None:
    assert parse_imei(body + svn) == ParsedImei(body, check_digit_mismatch=False)


@given(bodies, st.integers(min_value=0, max_value=9), software_versions)
def test_pei_forms_are_parsed_like_their_digits(body: str, last: int, svn: str) -> None:
    imei = body + str(last)
    assert parse_imei(f"imei-{imei}") == parse_imei(imei)
    assert parse_imei(f"imei-{imei}") == ParsedImei(body, last != luhn_check_digit(body))
    assert parse_imei(f"imeisv-{body}{svn}") == ParsedImei(body, check_digit_mismatch=False)


def test_leading_zeros_are_kept() -> None:
    parsed = parse_imei("012345678901237")
    assert parsed == ParsedImei("01234567890123", check_digit_mismatch=False)
    assert parsed.tac == "01234567"
    assert parsed.serial == "890123"
    assert parse_imei("00000000000000") == ParsedImei("00000000000000")


@given(bodies)
def test_tac_is_the_first_8_digits_and_serial_the_next_6(body: str) -> None:
    parsed = parse_imei(with_check_digit(body))
    assert parsed is not None
    assert (parsed.tac, parsed.serial) == (body[:8], body[8:])


@given(st.text(alphabet=ASCII_DIGITS, max_size=40).filter(lambda s: len(s) not in (14, 15, 16)))
def test_digit_strings_of_other_lengths_are_not_imeis(digits: str) -> None:
    assert parse_imei(digits) is None


@given(bodies, st.sampled_from([14, 16, 17]))
def test_imei_prefix_needs_exactly_15_digits(body: str, length: int) -> None:
    assert parse_imei("imei-" + (body + "00")[:length]) is None


@given(bodies, st.sampled_from([14, 15, 17]))
def test_imeisv_prefix_needs_exactly_16_digits(body: str, length: int) -> None:
    assert parse_imei("imeisv-" + (body + "000")[:length]) is None


@given(bodies, st.integers(min_value=0, max_value=14), non_ascii_digits)
def test_non_ascii_digits_are_not_imei_digits(body: str, position: int, char: str) -> None:
    imei = with_check_digit(body)
    assert parse_imei(imei[:position] + char + imei[position + 1 :]) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "49015420323751٣",  # Arabic-Indic three
        "4901542032375²",  # superscript two, 14 characters
        "490154203237518²",
        "".join(chr(0xFF10 + int(digit)) for digit in "490154203237518"),  # fullwidth digits
        "49015420323751A",
        "4901542032375A",
        "ABCDEFGHIJKLMNO",
        "49015420-323751-8",
        "+490154203237518",
        "-49015420323751",
        "imei-",
        "imeisv-",
        "imei-49015420323751A",
        "IMEI-490154203237518",  # TS 29.571 spells the prefixes in lower case
        "mac-490154203237518",
        "imsi-490154203237518",
    ],
)
def test_malformed_text_is_not_an_imei(text: str) -> None:
    assert parse_imei(text) is None


@given(
    bodies,
    st.sampled_from([" ", "\t", "\n", "\r\n", "\u00a0"]),
    st.sampled_from(["before", "after", "inside"]),
)
def test_whitespace_anywhere_is_not_trimmed(body: str, space: str, where: str) -> None:
    imei = with_check_digit(body)
    text = {
        "before": space + imei,
        "after": imei + space,
        "inside": imei[:8] + space + imei[8:],
    }[where]
    assert parse_imei(text) is None
    assert parse_imei("imei-" + text) is None
