"""Columnar wire codec for CheckImeis: protobuf bytes ↔ numpy columns, no object per IMEI.

The messages are the ones of legality.proto, byte for byte; only the work is
different. In the usual request, IMEIs all spelt alike and no IMSIs, every
`imeis` entry is the same field tag, the same one-byte length and the digits, so
the serialized message is a matrix and its digits are read with numpy, without
making a Python string per IMEI. Any other request is parsed by protobuf (upb).
A response is written the same way: the packed statuses are one byte each, the
packed reason bit sets one or two varint bytes each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from imeireg.server import facts
from imeireg.server.columns import TextColumn
from imeireg.server.legality import SMALL_BATCH
from imeireg.v1 import legality_pb2 as pb

U8 = npt.NDArray[np.uint8]

_IMEIS_TAG = 1 << 3 | 2  # field 1, length-delimited
_IMSIS_TAG = 2 << 3 | 2
_CHECK_TAG = bytes([1 << 3 | 2])  # field 1 of the stream messages
_STATUSES_TAG = bytes([1 << 3 | 2])
_REASONS_TAG = bytes([2 << 3 | 2])
_SNAPSHOT_TAG = bytes([3 << 3 | 2])
_DIGIT_LENGTHS = (14, 15, 16)
# A request of at most SMALL_BATCH IMEIs and IMSIs, each field at most 2 + 16 + 2 + 15 bytes.
_SMALL_REQUEST_BYTES = SMALL_BATCH * (2 + 16 + 2 + 15)
# Reason bit sets stay below 2**14, so each is one or two varint bytes.
assert facts.FACT_SPACE <= 1 << 14


@dataclass(frozen=True)
class CheckRequest:
    """A CheckImeisRequest as received, read in columns wherever its bytes allow."""

    count: int
    digits: U8 | None  # (count, 14 | 15 | 16) digit values when every IMEI is spelt alike
    strings: Sequence[str]  # the IMEIs
    imsis: Sequence[str] = ()

    @classmethod
    def parse(cls, raw: bytes) -> CheckRequest:
        digits = _uniform_digits(raw)
        if digits is not None:
            count, width = digits.shape
            starts = np.arange(2, count * (width + 2), width + 2)
            strings = TextColumn.from_bytes(
                np.frombuffer(raw, dtype=np.uint8), starts, np.full(count, width)
            )
            return cls(count, digits, strings)
        # A few IMEIs (single checks) are answered one by one: protobuf reads them faster.
        columns = _string_columns(raw) if len(raw) > _SMALL_REQUEST_BYTES else None
        if columns is not None:
            imeis, imsis = columns
            return cls(len(imeis), None, imeis, imsis)
        return cls.of(pb.CheckImeisRequest.FromString(raw))

    @classmethod
    def of(cls, message: pb.CheckImeisRequest) -> CheckRequest:
        """A request already parsed by protobuf."""
        return cls(len(message.imeis), None, message.imeis, message.imsis)

    @property
    def imeis(self) -> Sequence[str] | U8:
        """The digit matrix when there is one (see normalise_batch), else the IMEI strings."""
        return self.digits if self.digits is not None else self.strings


def _string_columns(raw: bytes) -> tuple[TextColumn, Sequence[str]] | None:
    """The `imeis` and `imsis` of a request of ASCII strings under 128 bytes, as columns.

    Every field of such a request is a tag byte (0x0A or 0x12), a one-byte length and
    the string. Taking every byte equal to a tag for a field start, the fields must
    chain exactly from the first byte to the last; a string holding a tag byte, a
    longer varint or any other field breaks the chain, and protobuf reads the request.
    """
    data = np.frombuffer(raw, dtype=np.uint8)
    if not len(data) or data[0] != _IMEIS_TAG or (data >= 0x80).any():
        return None
    starts = np.flatnonzero((data == _IMEIS_TAG) | (data == _IMSIS_TAG))
    if starts[-1] + 1 >= len(data):
        return None
    lengths = data[starts + 1].astype(np.int64)
    ends = starts + 2 + lengths
    if ends[-1] != len(data) or not (ends[:-1] == starts[1:]).all():
        return None
    imsi = data[starts] == _IMSIS_TAG
    imeis = TextColumn.from_bytes(data, starts[~imsi] + 2, lengths[~imsi])
    if not imsi.any():
        return imeis, ()
    return imeis, TextColumn.from_bytes(data, starts[imsi] + 2, lengths[imsi])


def unwrap_stream_request(raw: bytes) -> CheckRequest:
    """A StreamCheckImeisRequest: field 1 holds the CheckImeisRequest."""
    length, start = _read_varint(raw, 1) if raw[:1] == _CHECK_TAG else (-1, 0)
    if start + length == len(raw):
        return CheckRequest.parse(raw[start:])
    return CheckRequest.of(pb.StreamCheckImeisRequest.FromString(raw).check)


def wrap_stream_response(response: bytes) -> bytes:
    """A StreamCheckImeisResponse holding a serialized CheckImeisResponse."""
    return _CHECK_TAG + varint(len(response)) + response


def _read_varint(raw: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while position < len(raw):
        byte = raw[position]
        value |= (byte & 0x7F) << shift
        position += 1
        if not byte & 0x80:
            return value, position
        shift += 7
    return -1, position


def _uniform_digits(raw: bytes) -> U8 | None:
    """The digit matrix of a request of more than SMALL_BATCH IMEIs all spelt alike."""
    if len(raw) < 2 or raw[0] != _IMEIS_TAG or raw[1] not in _DIGIT_LENGTHS:
        return None
    width = raw[1] + 2
    if len(raw) % width or len(raw) // width <= SMALL_BATCH:
        return None
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, width)
    digits = rows[:, 2:] - np.uint8(ord("0"))
    if (rows[:, 0] == _IMEIS_TAG).all() and (rows[:, 1] == raw[1]).all() and (digits <= 9).all():
        return digits
    return None


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_response(
    statuses: npt.NDArray[np.uint8], reasons: npt.NDArray[np.uint32], snapshot: bytes
) -> bytes:
    """A serialized CheckImeisResponse; `snapshot` is a serialized Snapshot message."""
    if len(statuses) <= SMALL_BATCH:
        response = pb.CheckImeisResponse(statuses=statuses.tolist(), reasons=reasons.tolist())
        return response.SerializeToString() + _SNAPSHOT_TAG + varint(len(snapshot)) + snapshot
    long = reasons >= 0x80
    sizes = 1 + long.astype(np.int64)
    starts = np.cumsum(sizes) - sizes
    packed = np.empty(int(sizes.sum()), dtype=np.uint8)
    packed[starts] = np.where(long, reasons & 0x7F | 0x80, reasons)
    packed[starts[long] + 1] = reasons[long] >> 7
    return b"".join(
        (
            _STATUSES_TAG,
            varint(len(statuses)),
            statuses.astype(np.uint8).tobytes(),
            _REASONS_TAG,
            varint(len(packed)),
            packed.tobytes(),
            _SNAPSHOT_TAG,
            varint(len(snapshot)),
            snapshot,
        )
    )
