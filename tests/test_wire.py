"""The columnar wire codec (`imeireg.server.wire`): the bytes of legality.proto, without protobuf.

Every property compares the codec with protobuf itself on the same messages: a
response must be the bytes protobuf would write, and a request must read as
protobuf reads it, whether it is read in columns of its own bytes or by protobuf.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from imeireg.server.check.columns import TextColumn
from imeireg.server.check.normalise import normalise_batch
from imeireg.server.check.normalise_compiled import normalise_column
from imeireg.server.check.verdict import SMALL_BATCH
from imeireg.server.fronts.grpc.wire import (
    SMALL_REQUEST_BYTES,
    CheckRequest,
    encode_response,
    unwrap_stream_request,
    wrap_stream_response,
)
from imeireg.v1 import legality_pb2 as pb

ASCII_DIGITS = "0123456789"
DIGIT_LENGTHS = (14, 15, 16)
# More IMEIs than the checker answers one by one, in more bytes than protobuf reads.
LARGE = SMALL_REQUEST_BYTES // (2 + 14) + 1
ROAMING_IMSI = "525011234567890"

snapshots = st.one_of(
    st.just(b""),
    st.builds(
        lambda generation, seconds, nanos: pb.Snapshot(
            generation=generation, commit_time=Timestamp(seconds=seconds, nanos=nanos)
        ).SerializeToString(),
        st.integers(min_value=0, max_value=2**64 - 1),
        st.integers(min_value=0, max_value=253_402_300_799),
        st.integers(min_value=0, max_value=999_999_999),
    ),
)


@st.composite
def verdict_columns(
    draw: st.DrawFn,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint32]]:
    """Aligned status and reason columns, of a small batch or a large one."""
    count = draw(
        st.one_of(
            st.integers(min_value=1, max_value=SMALL_BATCH),
            st.integers(min_value=SMALL_BATCH + 1, max_value=3000),
        )
    )
    statuses = draw(arrays(np.uint8, count, elements=st.integers(min_value=1, max_value=3)))
    reasons = draw(
        arrays(
            np.uint32,
            count,
            elements=st.one_of(
                st.integers(min_value=0, max_value=8191), st.sampled_from([0, 127, 128, 8191])
            ),
        )
    )
    return statuses, reasons


def protobuf_response(
    statuses: npt.NDArray[np.uint8], reasons: npt.NDArray[np.uint32], snapshot: bytes
) -> bytes:
    return pb.CheckImeisResponse(
        statuses=statuses.tolist(),
        reasons=reasons.tolist(),
        snapshot=pb.Snapshot.FromString(snapshot),
    ).SerializeToString()


@settings(max_examples=200)
@given(verdict_columns(), snapshots)
def test_encoded_response_is_the_bytes_protobuf_writes_and_parses_back(
    columns: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint32]], snapshot: bytes
) -> None:
    statuses, reasons = columns
    encoded = encode_response(statuses, reasons, snapshot)
    assert encoded == protobuf_response(statuses, reasons, snapshot)
    parsed = pb.CheckImeisResponse.FromString(encoded)
    assert list(parsed.statuses) == statuses.tolist()
    assert list(parsed.reasons) == reasons.tolist()
    assert parsed.snapshot == pb.Snapshot.FromString(snapshot)


@pytest.mark.parametrize("count", [1, SMALL_BATCH, SMALL_BATCH + 1, 3000])
def test_reasons_at_the_varint_byte_boundaries_encode_as_protobuf_does(count: int) -> None:
    reasons = np.resize(np.array([0, 1, 127, 128, 255, 256, 8191], dtype=np.uint32), count)
    statuses = np.resize(np.array([1, 2, 3], dtype=np.uint8), count)
    snapshot = pb.Snapshot(generation=300).SerializeToString()
    assert encode_response(statuses, reasons, snapshot) == protobuf_response(
        statuses, reasons, snapshot
    )


def request_bytes(imeis: list[str], imsis: list[str] | None = None) -> bytes:
    return pb.CheckImeisRequest(imeis=imeis, imsis=imsis or []).SerializeToString()


def read_in_columns(parsed: CheckRequest) -> bool:
    """Whether the request's own bytes were read (`wire.request_columns`), not protobuf's."""
    return isinstance(parsed.imeis, TextColumn) and parsed.imeis.strings is None


def assert_reads_as(parsed: CheckRequest, imeis: list[str], imsis: list[str]) -> None:
    """The request holds what protobuf reads, and its IMEIs normalise as the strings do,
    through the request path's compiled pass and through the importers' numpy one."""
    assert parsed.count == len(imeis)
    assert list(parsed.imeis) == imeis
    assert list(parsed.imsis) == imsis
    if not imeis:
        return
    served = normalise_column(TextColumn.of(parsed.imeis))
    imported = normalise_batch(imeis)
    assert served.keys.tolist() == imported.keys.tolist()
    assert served.flags.tolist() == imported.flags.tolist()


@st.composite
def uniform_digit_strings(draw: st.DrawFn, min_size: int, max_size: int) -> list[str]:
    length = draw(st.sampled_from(DIGIT_LENGTHS))
    digits = st.text(alphabet=ASCII_DIGITS, min_size=length, max_size=length)
    return draw(st.lists(digits, min_size=min_size, max_size=max_size))


# Any text at all, texts of the IMEI lengths with non-digits in them, and PEI spellings.
any_imei_text = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=ASCII_DIGITS + "-;/:aé٣\n", min_size=14, max_size=16),
    st.text(alphabet=ASCII_DIGITS, min_size=14, max_size=16),
    st.text(alphabet=ASCII_DIGITS, min_size=15, max_size=15).map("imei-".__add__),
    st.text(alphabet=ASCII_DIGITS, min_size=16, max_size=16).map("imeisv-".__add__),
)
ascii_imei_text = any_imei_text.filter(str.isascii)
imsi_text = st.sampled_from(["", "510101234567890", ROAMING_IMSI, "5250", "52a"])


@given(
    st.one_of(
        uniform_digit_strings(min_size=LARGE, max_size=300),
        st.lists(ascii_imei_text, min_size=LARGE, max_size=100),
    ),
    st.data(),
)
def test_requests_of_ascii_strings_past_the_small_size_are_read_in_columns_of_their_bytes(
    imeis: list[str], data: st.DataObject
) -> None:
    imsis = data.draw(
        st.one_of(st.just([]), st.lists(imsi_text, min_size=len(imeis), max_size=len(imeis)))
    )
    raw = request_bytes(imeis, imsis)
    parsed = CheckRequest.parse(raw)
    assert read_in_columns(parsed) == (len(raw) > SMALL_REQUEST_BYTES)
    assert_reads_as(parsed, imeis, imsis)


@given(uniform_digit_strings(min_size=1, max_size=SMALL_BATCH))
def test_small_requests_are_parsed_by_protobuf(imeis: list[str]) -> None:
    parsed = CheckRequest.parse(request_bytes(imeis))
    assert not read_in_columns(parsed)
    assert_reads_as(parsed, imeis, [])


def test_a_request_whose_imsis_are_all_empty_still_carries_them() -> None:
    imeis = ["353322110000019"] * LARGE
    assert_reads_as(CheckRequest.parse(request_bytes(imeis, [""] * LARGE)), imeis, [""] * LARGE)


@pytest.mark.parametrize("text", ["35332211000001é", "٣5332211000001", "imei-٣53322110000019"])
def test_a_string_that_is_not_ascii_sends_the_request_to_protobuf(text: str) -> None:
    imeis = ["353322110000019"] * LARGE + [text]
    parsed = CheckRequest.parse(request_bytes(imeis))
    assert not read_in_columns(parsed)
    assert_reads_as(parsed, imeis, [])


@pytest.mark.parametrize("length", DIGIT_LENGTHS)
@pytest.mark.parametrize(
    "unknown",
    ["varint", "string one row long"],
)
def test_unknown_fields_send_the_request_to_protobuf(length: int, unknown: str) -> None:
    imeis = ["1" * length] * LARGE
    field_3 = b"\x18\x01" if unknown == "varint" else b"\x1a" + bytes([length]) + b"9" * length
    parsed = CheckRequest.parse(request_bytes(imeis) + field_3)
    assert not read_in_columns(parsed)
    assert_reads_as(parsed, imeis, [])


def test_strings_of_128_bytes_or_more_are_read_in_columns() -> None:
    imeis = ["353322110000019"] * LARGE + ["9" * 300]
    parsed = CheckRequest.parse(request_bytes(imeis))
    assert read_in_columns(parsed)
    assert_reads_as(parsed, imeis, [])


@settings(max_examples=300)
@given(
    st.one_of(
        st.lists(any_imei_text, max_size=60),
        uniform_digit_strings(min_size=0, max_size=60),
    ),
    st.booleans(),
)
def test_any_request_reads_as_protobuf_reads_it(imeis: list[str], with_imsis: bool) -> None:
    imsis = [ROAMING_IMSI if i % 3 else "" for i in range(len(imeis))] if with_imsis else []
    assert_reads_as(CheckRequest.parse(request_bytes(imeis, imsis)), imeis, imsis)


# Bytes in and around the digits, and the tags and lengths of the message's fields.
mutant_bytes = st.sampled_from(
    [0x00, 0x0A, 0x0E, 0x0F, 0x10, 0x12, 0x1A, 0x2F, 0x30, 0x39, 0x3A, 0x80, 0xFF]
)


@settings(max_examples=400)
@given(
    uniform_digit_strings(min_size=LARGE, max_size=40),
    st.lists(st.tuples(st.integers(min_value=0), mutant_bytes), max_size=3),
    st.integers(min_value=0, max_value=20),
    st.binary(max_size=20),
)
@example(["1" * 15] * LARGE, [(17 * 3, 0x12)], 0, b"")  # one row becomes an IMSI
@example(["1" * 15] * LARGE, [(17 * 3 + 1, 14)], 0, b"")  # a row one byte shorter
@example(["1" * 15] * LARGE, [(17 * 3 + 1, 0x80)], 0, b"")  # a length's varint runs on
@example(["1" * 15] * LARGE, [(17 * 3 + 5, 0x3A)], 0, b"")  # ':' just above '9'
@example(["1" * 15] * LARGE, [(17 * 3 + 5, 0x2F)], 0, b"")  # '/' just below '0'
@example(["1" * 15] * LARGE, [], 17, b"")  # one whole row cut off
@example(["1" * 15] * LARGE, [], 0, b"\x0a\x0f" + b"2" * 15)  # one more row
@example(["1" * 15] * LARGE, [], 0, b"\x0a\xff\xff\xff\xff\x0f")  # a length past the end
def test_mangled_request_bytes_read_as_protobuf_reads_them_or_not_at_all(
    imeis: list[str], replacements: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    raw = bytearray(request_bytes(imeis))
    for position, byte in replacements:
        raw[position % len(raw)] = byte
    mangled = bytes(raw[: len(raw) - cut]) + tail
    try:
        message = pb.CheckImeisRequest.FromString(mangled)
    except DecodeError:
        with pytest.raises(DecodeError):
            CheckRequest.parse(mangled)
        return
    assert_reads_as(CheckRequest.parse(mangled), list(message.imeis), list(message.imsis))


def test_an_empty_request_has_no_imeis() -> None:
    assert_reads_as(CheckRequest.parse(b""), [], [])


def stream_request(imeis: list[str], imsis: list[str] | None = None) -> bytes:
    check = pb.CheckImeisRequest(imeis=imeis, imsis=imsis or [])
    return pb.StreamCheckImeisRequest(check=check).SerializeToString()


@given(
    st.one_of(uniform_digit_strings(min_size=0, max_size=300), st.lists(any_imei_text, max_size=40))
)
def test_a_stream_request_unwraps_to_its_check_request(imeis: list[str]) -> None:
    parsed = unwrap_stream_request(stream_request(imeis))
    direct = CheckRequest.parse(request_bytes(imeis))
    assert read_in_columns(parsed) == read_in_columns(direct)
    assert_reads_as(parsed, imeis, [])


def test_a_stream_request_with_imsis_unwraps_with_them() -> None:
    imeis, imsis = ["353322110000019"] * LARGE, [ROAMING_IMSI] * LARGE
    assert_reads_as(unwrap_stream_request(stream_request(imeis, imsis)), imeis, imsis)


@pytest.mark.parametrize(
    "raw",
    [pb.StreamCheckImeisRequest().SerializeToString(), stream_request([])],
    ids=["no check field", "empty check field"],
)
def test_an_empty_stream_message_unwraps_to_no_imeis(raw: bytes) -> None:
    assert_reads_as(unwrap_stream_request(raw), [], [])


def test_a_stream_message_split_in_two_check_fields_is_merged_as_protobuf_does() -> None:
    first, second = ["353322110000019"] * LARGE, ["01234567000500"] * LARGE
    raw = stream_request(first) + stream_request(second)
    assert list(pb.StreamCheckImeisRequest.FromString(raw).check.imeis) == first + second
    assert_reads_as(unwrap_stream_request(raw), first + second, [])


def test_a_stream_message_with_an_unknown_field_unwraps_to_its_check_request() -> None:
    imeis = ["353322110000019"] * LARGE
    raw = stream_request(imeis) + b"\x10\x01"
    assert_reads_as(unwrap_stream_request(raw), imeis, [])


@given(st.one_of(st.just((np.empty(0, np.uint8), np.empty(0, np.uint32))), verdict_columns()))
def test_a_stream_response_wraps_its_check_response_as_protobuf_does(
    columns: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint32]],
) -> None:
    statuses, reasons = columns
    snapshot = pb.Snapshot(generation=len(statuses)).SerializeToString()
    response = encode_response(statuses, reasons, snapshot) if len(statuses) else b""
    wrapped = wrap_stream_response(response)
    check = pb.CheckImeisResponse.FromString(response)
    assert wrapped == pb.StreamCheckImeisResponse(check=check).SerializeToString()
    assert pb.StreamCheckImeisResponse.FromString(wrapped).check == check
