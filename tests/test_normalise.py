"""Batch normalisation: the columns must say what `parse_imei` says.

Both implementations are held to it: `normalise.normalise_batch`, the importers'
whole-array numpy passes, and `normalise_compiled.normalise_column`, the request path's
compiled pass over a request's bytes.
"""

from __future__ import annotations

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from imeireg.imei import luhn_check_digit, parse_imei, with_check_digit
from imeireg.server.check.columns import TextColumn
from imeireg.server.check.facts import CHECK_DIGIT_MISMATCH, INVALID_FORMAT
from imeireg.server.check.normalise import ImeiBatch, normalise_batch
from imeireg.server.check.normalise_compiled import normalise_column

ASCII_DIGITS = "0123456789"
bodies = st.text(alphabet=ASCII_DIGITS, min_size=14, max_size=14)
imeis = bodies.map(with_check_digit)
bad_check_digit_imeis = st.builds(
    lambda body, offset: body + str((luhn_check_digit(body) + offset) % 10),
    bodies,
    st.integers(min_value=1, max_value=9),
)
fifteen_digit_imeis = st.one_of(imeis, bad_check_digit_imeis)
imeisvs = st.builds(str.__add__, bodies, st.text(alphabet=ASCII_DIGITS, min_size=2, max_size=2))
peis = st.one_of(fifteen_digit_imeis.map("imei-".__add__), imeisvs.map("imeisv-".__add__))
malformed = st.one_of(
    st.text(alphabet=ASCII_DIGITS, max_size=20).filter(lambda s: len(s) not in (14, 15, 16)),
    st.text(max_size=20),
    fifteen_digit_imeis.map(lambda imei: imei[:7] + "٣" + imei[8:]),
    fifteen_digit_imeis.map(lambda imei: " " + imei),
    # Separators inside an IMEI must not pass for row boundaries in a joined batch.
    st.text(alphabet=ASCII_DIGITS + ";,|\n", min_size=13, max_size=17),
)
any_spelling = st.one_of(fifteen_digit_imeis, bodies, imeisvs, peis, malformed)
# No separators or prefixes: only the lengths tell these apart.
bare_digits = st.one_of(
    fifteen_digit_imeis,
    bodies,
    imeisvs,
    st.text(alphabet=ASCII_DIGITS, max_size=20).filter(lambda s: len(s) not in (14, 15, 16)),
)


def expected_columns(texts: list[str]) -> tuple[list[int], list[int], list[int]]:
    """What the batch columns must hold, built one IMEI at a time from `parse_imei`."""
    tacs, serials, flags = [], [], []
    for text in texts:
        parsed = parse_imei(text)
        if parsed is None:
            tacs.append(0)
            serials.append(0)
            flags.append(INVALID_FORMAT)
        else:
            tacs.append(int(parsed.body[:8]))
            serials.append(int(parsed.body[8:]))
            flags.append(CHECK_DIGIT_MISMATCH if parsed.check_digit_mismatch else 0)
    return tacs, serials, flags


def normalised(texts: list[str]) -> list[ImeiBatch]:
    """The batch as each implementation normalises it."""
    return [normalise_batch(texts), normalise_column(TextColumn.of(texts))]


def assert_agrees_with_parse_imei(texts: list[str]) -> None:
    tacs, serials, flags = expected_columns(texts)
    for batch in normalised(texts):
        for column in (batch.tacs, batch.serials, batch.flags):
            assert column.dtype == np.uint32
        assert batch.tacs.tolist() == tacs
        assert batch.serials.tolist() == serials
        assert batch.flags.tolist() == flags
        assert batch.valid.tolist() == [flag != INVALID_FORMAT for flag in flags]


@given(st.lists(fifteen_digit_imeis, min_size=1, max_size=50))
def test_fifteen_digit_batches_agree_with_parse_imei(texts: list[str]) -> None:
    assert_agrees_with_parse_imei(texts)


@given(
    st.one_of(st.lists(bodies, min_size=1, max_size=50), st.lists(imeisvs, min_size=1, max_size=50))
)
def test_batches_of_bodies_or_of_imeisvs_agree_with_parse_imei(texts: list[str]) -> None:
    assert_agrees_with_parse_imei(texts)


def test_empty_batch_gives_empty_columns() -> None:
    assert_agrees_with_parse_imei([])


@given(st.lists(imeis, min_size=1, max_size=50), st.data())
def test_bad_check_digits_are_flagged_where_they_are(texts: list[str], data: st.DataObject) -> None:
    spoiled = data.draw(st.sets(st.integers(min_value=0, max_value=len(texts) - 1)))
    for i in spoiled:
        texts[i] = texts[i][:14] + str((int(texts[i][14]) + 1) % 10)
    for batch in normalised(texts):
        assert batch.flags.tolist() == [
            CHECK_DIGIT_MISMATCH if i in spoiled else 0 for i in range(len(texts))
        ]
        assert batch.valid.all()


@given(st.lists(any_spelling, min_size=1, max_size=50))
def test_any_batch_agrees_with_parse_imei(texts: list[str]) -> None:
    assert_agrees_with_parse_imei(texts)


@given(st.lists(bare_digits, min_size=1, max_size=50))
@example(["49015420323751", "4901542032375101"])
@example(["490154203237518;", "49015420323751"])
def test_batches_of_bare_digit_strings_agree_with_parse_imei(texts: list[str]) -> None:
    assert_agrees_with_parse_imei(texts)


def test_a_body_and_an_imeisv_are_not_read_as_two_fifteen_digit_imeis() -> None:
    # Their lengths sum to 2 x 15: a batch checked by total length alone would misread both.
    for batch in normalised(["49015420323751", "4901542032375101"]):
        assert batch.tacs.tolist() == [49015420, 49015420]
        assert batch.serials.tolist() == [323751, 323751]
        assert batch.flags.tolist() == [0, 0]


def test_order_of_the_request_is_kept() -> None:
    for batch in normalised(
        ["490154203237518", "not an imei", "012345678901230", "imeisv-3520990012345601"]
    ):
        assert batch.tacs.tolist() == [49015420, 0, 1234567, 35209900]
        assert batch.serials.tolist() == [323751, 0, 890123, 123456]
        assert batch.flags.tolist() == [0, INVALID_FORMAT, CHECK_DIGIT_MISMATCH, 0]
        assert batch.valid.tolist() == [True, False, True, True]
