"""The request path's per-IMEI loops, compiled with numba: one pass each over a batch's bytes.

A batch of 1000 IMEIs costs a few hundred nanoseconds of real work per step, but
each numpy operation costs 1 to 5 µs before it starts, and reading a request,
normalising its IMEIs, searching the fact table and writing the answer took
dozens of them: about 1 ms a batch, more than the gRPC call itself. These loops
do each step in one compiled pass over the request's own bytes.

The server alone imports this module. `imeireg import` works in whole-array numpy
passes over millions of rows, where those fixed costs vanish, and so does not pay
numba's start-up (about 0.9 s: the import and loading the compiled code). Every
function is compiled for the argument types it is declared with, when this module
is first imported, and cached beside it, so no request ever waits for a compiler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

from imeireg.imei import BODY_DIGITS, IMEI_DIGITS, IMEISV_DIGITS, MCC_DIGITS, TAC_DIGITS
from imeireg.server import facts
from imeireg.server.columns import TextColumn
from imeireg.server.normalise import SERIAL_BITS, ImeiBatch, normalise_one
from imeireg.server.segments import BLOCK, FactTable

U8 = npt.NDArray[np.uint8]
U16 = npt.NDArray[np.uint16]
U32 = npt.NDArray[np.uint32]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Bools = npt.NDArray[np.bool_]


# Arguments are typed read-only, so that views of a request's bytes or of the store's
# pages are taken as they are; writable arrays convert to them.
_BYTES, _I64S, _U32S, _U64S, _U16S = (
    f"Array({dtype}, 1, 'C', readonly=True)"
    for dtype in ("uint8", "int64", "uint32", "uint64", "uint16")
)
Function = TypeVar("Function", bound=Callable[..., Any])


def _compiled(signature: str) -> Callable[[Function], Function]:
    """Compile for `signature` now (or load the cached build), in nopython mode."""
    # A dispatcher is called like the function it compiled.
    return cast(
        Callable[[Function], Function],
        numba.njit(signature, cache=True, nogil=True, error_model="numpy"),
    )


_ZERO = ord("0")
# Queries searched in step; more only adds work once the misses of a group overlap.
_SEARCH_GROUP = 32
_STRING_TAGS = (1 << 3 | 2, 2 << 3 | 2)  # fields 1 (imeis) and 2 (imsis), length-delimited
_DIGIT_LENGTHS = (BODY_DIGITS, IMEI_DIGITS, IMEISV_DIGITS)
_INVALID_FORMAT = facts.INVALID_FORMAT
_CHECK_DIGIT_MISMATCH = facts.CHECK_DIGIT_MISMATCH
_INBOUND_ROAMER = facts.INBOUND_ROAMER
_ASCII_END = 0x80
_MAX_LENGTH_SHIFT = 21  # a string's length in at most 4 varint bytes
_PEI_START = ord("i")  # of "imei-" and "imeisv-"


# ---- a CheckImeisRequest's fields ----------------------------------------------------


@_compiled(f"UniTuple(int64, 2)({_BYTES}, int64)")
def _length_at(data: U8, position: int) -> tuple[int, int]:
    """The varint length at `position` and where the string after it starts; a length of
    -1 when the varint runs past the end or over 4 bytes."""
    length = 0
    for shift in range(0, _MAX_LENGTH_SHIFT + 7, 7):
        if position >= len(data):
            break
        byte = data[position]
        position += 1
        length |= int(byte & 0x7F) << shift
        if byte < 0x80:
            return length, position
    return -1, position


@_compiled(f"Tuple((boolean, int64[::1], int64[::1], int64[::1], int64[::1]))({_BYTES})")
def _fields(data: U8) -> tuple[bool, I64, I64, I64, I64]:
    """Whether the message is fields 1 and 2 of ASCII strings only, and if so where each
    string of field 1 (imeis) and of field 2 (imsis) starts and how long it is.

    Anything else is left to protobuf: another field or wire type, a length past the
    end or of more than 4 varint bytes, a byte that is not ASCII within a string.
    """
    capacity = len(data) // 2
    starts = np.empty((2, capacity), np.int64)
    lengths = np.empty((2, capacity), np.int64)
    unread = (False, starts[0, :0], lengths[0, :0], starts[1, :0], lengths[1, :0])
    counts = np.zeros(2, np.int64)
    position = 0
    while position < len(data):
        tag = data[position]
        length, start = _length_at(data, position + 1)
        if tag not in _STRING_TAGS or length < 0 or start + length > len(data):
            return unread
        high_bits = 0
        for at in range(start, start + length):
            high_bits |= data[at]
        if high_bits >= _ASCII_END:
            return unread
        field = (tag >> 3) - 1
        starts[field, counts[field]] = start
        lengths[field, counts[field]] = length
        counts[field] += 1
        position = start + length
    imeis, imsis = counts
    return True, starts[0, :imeis], lengths[0, :imeis], starts[1, :imsis], lengths[1, :imsis]


def request_columns(raw: bytes) -> tuple[TextColumn, TextColumn] | None:
    """The `imeis` and `imsis` of a serialized CheckImeisRequest of ASCII strings, as
    columns of its bytes; None for any other message, which protobuf is to read."""
    data = np.frombuffer(raw, dtype=np.uint8)
    read, imei_starts, imei_lengths, imsi_starts, imsi_lengths = _fields(data)
    if not read:
        return None
    return (
        TextColumn.from_bytes(data, imei_starts, imei_lengths),
        TextColumn.from_bytes(data, imsi_starts, imsi_lengths),
    )


# ---- IMEIs: key and format facts -----------------------------------------------------


@_compiled(f"Tuple((uint64[::1], uint32[::1], boolean[::1]))({_BYTES}, {_I64S}, {_I64S})")
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


# ---- IMSIs ---------------------------------------------------------------------------


@_compiled(f"int64[::1]({_BYTES}, {_I64S}, {_I64S}, int64, int64)")
def _invalid_imsis(chars: U8, starts: I64, lengths: I64, shortest: int, longest: int) -> I64:
    invalid = np.empty(len(starts), np.int64)
    count = 0
    for row in range(len(starts)):
        length = lengths[row]
        bad = length != 0 and (length < shortest or length > longest)
        for at in range(starts[row], starts[row] + length):
            digit = int(chars[at]) - _ZERO
            bad |= (digit < 0) | (digit > 9)
        invalid[count] = row
        count += bad
    return invalid[:count]


def invalid_imsis(column: TextColumn, digits: range) -> list[int]:
    """The rows of `column` that are neither empty (no IMSI) nor an IMSI of `digits` digits."""
    rows: I64 = _invalid_imsis(column.chars, column.starts, column.lengths, digits[0], digits[-1])
    invalid: list[int] = rows.tolist()
    return invalid


# ---- the fact table ------------------------------------------------------------------


@_compiled(f"uint16[::1]({_U64S}, {_U64S}, {_U16S}, {_U64S})")
def _lookup(sample: U64, keys: U64, found: U16, queries: U64) -> U16:
    out = np.empty(len(queries), np.uint16)
    low = np.empty(_SEARCH_GROUP, np.int64)
    for group in range(0, len(queries), _SEARCH_GROUP):
        members = min(_SEARCH_GROUP, len(queries) - group)
        # The last sampled key at or below each query (the table's first key is 0), by
        # halving, for a group of queries in step: their loads do not depend on one
        # another, so the processor waits for their cache misses together.
        low[:members] = 0
        size = len(sample)
        while size > 1:
            half = size >> 1
            for member in range(members):
                # Arithmetic, not a branch: a mispredicted branch would cancel the
                # loads already in flight.
                low[member] += half * (sample[low[member] + half] <= queries[group + member])
            size -= half
        # Then the last key at or below it within that sample's block.
        for member in range(members):
            query = queries[group + member]
            at = low[member] * BLOCK
            below = 0
            for offset in range(1, BLOCK):
                below += keys[at + offset] <= query
            out[group + member] = found[at + below]
    return out


def lookup(table: FactTable, keys: U64) -> U16:
    """The facts of each IMEI key (``tac << SERIAL_BITS | serial``): two-step search, as
    `FactTable` lays out, over every BLOCK-th key and then within one block."""
    found: U16 = _lookup(table.sample, table.keys, table.facts, keys)
    return found


@_compiled(
    f"uint32[::1]({_U64S}, {_U64S}, {_U16S}, {_U64S}, {_U32S}, {_BYTES}, {_I64S}, {_I64S}, {_I64S})"
)
def _batch_facts(  # noqa: PLR0917  (a compiled function takes its arguments by position)
    sample: U64,
    keys: U64,
    found: U16,
    queries: U64,
    flags: U32,
    imsi_chars: U8,
    imsi_starts: I64,
    imsi_lengths: I64,
    home_mccs: I64,
) -> U32:
    table_facts = _lookup(sample, keys, found, queries)
    out = np.empty(len(queries), np.uint32)
    for row in range(len(queries)):
        if flags[row] & _INVALID_FORMAT:
            out[row] = flags[row]  # no IMEI: nothing else is known of it
            continue
        out[row] = table_facts[row] | flags[row]
        if row >= len(imsi_lengths) or imsi_lengths[row] == 0:
            continue  # no IMSI given
        mcc = -1  # too short to have one: foreign
        if imsi_lengths[row] >= MCC_DIGITS:
            mcc = 0
            for at in range(imsi_starts[row], imsi_starts[row] + MCC_DIGITS):
                mcc = mcc * 10 + int(imsi_chars[at]) - _ZERO
        if mcc not in home_mccs:
            out[row] |= _INBOUND_ROAMER
    return out


def batch_facts(table: FactTable, batch: ImeiBatch, imsis: TextColumn, home_mccs: I64) -> U32:
    """The fact bits of every IMEI of a batch from the table, its format flags and, where
    `imsis` (empty, or aligned with the batch) gives one, whether its SIM is foreign.
    Rows with pairings keep `segments.HAS_PAIRING`, for the caller to look them up."""
    found: U32 = _batch_facts(
        table.sample,
        table.keys,
        table.facts,
        batch.keys,
        batch.flags,
        imsis.chars,
        imsis.starts,
        imsis.lengths,
        home_mccs,
    )
    return found


# ---- the response --------------------------------------------------------------------


@_compiled(f"uint8[::1]({_U32S})")
def _varints(values: U32) -> U8:
    out = np.empty(5 * len(values), np.uint8)
    size = 0
    for value in values:
        rest = value
        while rest >= 0x80:
            out[size] = (rest & 0x7F) | 0x80
            rest >>= 7
            size += 1
        out[size] = rest
        size += 1
    return out[:size]


def packed_varints(values: U32) -> U8:
    """`values` as the payload of a packed repeated varint field."""
    packed: U8 = _varints(values)
    return packed
