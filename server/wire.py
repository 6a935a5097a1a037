"""Columnar wire codec for CheckImeis: protobuf bytes ↔ numpy columns, no object per IMEI.

The messages are the ones of legality.proto, byte for byte; only the work is
different. A request of ASCII strings, the usual one, is read in one compiled
pass over its bytes (kernels.py) into columns that point into them, without
making a Python string per IMEI; any other request is parsed by protobuf (upb).
A response is written the same way: the packed statuses are one byte each, the
packed reason bit sets varints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from imeireg.server.kernels import packed_varints, request_columns
from imeireg.server.legality import SMALL_BATCH
from imeireg.v1 import legality_pb2 as pb

U8 = npt.NDArray[np.uint8]

_CHECK_TAG = bytes([1 << 3 | 2])  # field 1 of the stream messages
_STATUSES_TAG = bytes([1 << 3 | 2])
_REASONS_TAG = bytes([2 << 3 | 2])
_SNAPSHOT_TAG = bytes([3 << 3 | 2])
#: Up to this size a request is read by protobuf: SMALL_BATCH IMEIs and IMSIs at most.
SMALL_REQUEST_BYTES = SMALL_BATCH * (2 + 16 + 2 + 15)


@dataclass(frozen=True)
class CheckRequest:
    """A CheckImeisRequest as received: its IMEIs and IMSIs, as columns of its bytes when
    it is a batch of ASCII strings (kernels.request_columns), else as protobuf read them."""

    count: int
    imeis: Sequence[str]
    imsis: Sequence[str] = ()

    @classmethod
    def parse(cls, raw: bytes) -> CheckRequest:
        # A single check, or a few, is answered IMEI by IMEI from strings: protobuf makes
        # those faster than columns would (25 against 49 µs a check, in process).
        columns = request_columns(raw) if len(raw) > SMALL_REQUEST_BYTES else None
        if columns is not None:
            imeis, imsis = columns
            return cls(len(imeis), imeis, imsis if len(imsis) else ())
        return cls.of(pb.CheckImeisRequest.FromString(raw))

    @classmethod
    def of(cls, message: pb.CheckImeisRequest) -> CheckRequest:
        """A request already parsed by protobuf."""
        return cls(len(message.imeis), message.imeis, message.imsis)


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
    if len(statuses) <= SMALL_BATCH:  # a few varints: Python writes them sooner
        packed = b"".join(map(varint, reasons.tolist()))
    else:
        packed = packed_varints(reasons).tobytes()
    return b"".join(
        (
            _STATUSES_TAG,
            varint(len(statuses)),
            statuses.astype(np.uint8).tobytes(),
            _REASONS_TAG,
            varint(len(packed)),
            packed,
            _SNAPSHOT_TAG,
            varint(len(snapshot)),
            snapshot,
        )
    )
