"""Fact-table segments as the store keeps them: computed from serial sets, patched by deltas.

A segment (`fact_table.SEGMENT_DTYPE`) is one TAC's share of the fact table: the
serials where its set of facts changes, and the facts from each such point on.
Imports compute them in their write transaction and store them beside the bitmaps,
so that a server only concatenates them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from imeireg.server.check import facts
from imeireg.server.check.fact_table import (
    END_OF_TAC,
    SEGMENT_DTYPE,
    UNLISTED,
    Segment,
)
from imeireg.server.check.normalise import SERIAL_BITS
from imeireg.server.check.sorted_arrays import overwrite_steps, sorted_unique

U16 = npt.NDArray[np.uint16]
U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]

_NO_FACTS = np.empty(0, dtype=np.uint16)
_REGISTRATION = facts.REGISTERED | facts.REGISTRATION_PROVISIONAL


def segments_of(members: Mapping[int, U64], tacs: U64) -> dict[int, bytes]:
    """The stored segment of each TAC of `tacs` (sorted, distinct).

    `members` maps a fact bit to the sorted keys of that serial set within those TACs.
    Each set is cut into runs of consecutive keys; a sweep over the runs' starts (+bit)
    and ends (-bit) gives the facts from every point on, since runs of one set never
    overlap. Runs never cross TACs: the last serial, 999,999, is far below 2**20.
    """
    if not len(tacs):
        return {}
    event_keys = [tacs << np.uint64(SERIAL_BITS)]  # every segment starts at serial 0
    event_deltas = [np.zeros(len(tacs), dtype=np.int64)]
    for bit, keys in members.items():
        if len(keys):
            breaks = np.flatnonzero(np.diff(keys) != 1)
            event_keys += [keys[np.r_[0, breaks + 1]], keys[np.r_[breaks, len(keys) - 1]] + 1]
            event_deltas += [np.full(len(breaks) + 1, bit), np.full(len(breaks) + 1, -bit)]
    keys = np.concatenate(event_keys)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    found = np.cumsum(np.concatenate(event_deltas)[order])
    last = np.r_[keys[1:] != keys[:-1], True]  # all deltas at a key applied
    keys, found = keys[last], found[last]
    found[(found & _REGISTRATION) == 0] |= facts.NOT_REGISTERED
    owners = keys >> np.uint64(SERIAL_BITS)
    first = np.r_[True, owners[1:] != owners[:-1]]
    keep = first | np.r_[True, found[1:] != found[:-1]]
    packed = np.empty(int(keep.sum()), dtype=SEGMENT_DTYPE)
    packed["point"] = keys[keep] & np.uint64(END_OF_TAC - 1)
    packed["facts"] = found[keep]
    cuts = np.flatnonzero(first[keep])
    return {
        int(tac): packed[start:stop].tobytes()
        for tac, start, stop in zip(
            tacs.tolist(), cuts.tolist(), [*cuts[1:].tolist(), len(packed)], strict=True
        )
    }


@dataclass(frozen=True, slots=True)
class Edit:
    """IMEI keys (sorted, distinct) that joined and left the serial set of one fact bit."""

    bit: int
    added: U64
    removed: U64


class Patch(NamedTuple):
    """Segments after edits, and the facts each edited key now has in its segment."""

    segments: dict[int, bytes]
    keys: U64
    facts: U16


def patch_segments(old: Mapping[int, Segment], tacs: U32, edits: Sequence[Edit]) -> Patch:
    """The segments of `tacs` after `edits`, from their `old` segments (absent: unlisted).

    Every segment starts at serial 0, so the segments of sorted TACs, concatenated,
    are one step function over the key space. Each edited key gets its own step,
    holding its old facts with the edits' bits set or cleared, and the old facts
    resume one key later; steps that repeat their predecessor's facts are dropped.
    The result is what `segments_of` computes from the edited sets, in a time that
    depends on the segments' size, not on how many serials the TACs hold.
    """
    parts = [old.get(tac, UNLISTED) for tac in tacs.tolist()]
    edited = sorted_unique(np.concatenate([k for e in edits for k in (e.added, e.removed)]))
    if not len(edited):
        return Patch(
            {t: bytes(p) for t, p in zip(tacs.tolist(), parts, strict=True)}, edited, _NO_FACTS
        )
    packed = np.frombuffer(b"".join(parts), dtype=SEGMENT_DTYPE)
    lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    lengths //= SEGMENT_DTYPE.itemsize
    owners = np.repeat(tacs.astype(np.uint64), lengths)
    steps = (owners << np.uint64(SERIAL_BITS)) | packed["point"].astype(np.uint64)
    values = packed["facts"].astype(np.int64)

    set_bits = np.zeros(len(edited), dtype=np.int64)
    clear_bits = np.zeros(len(edited), dtype=np.int64)
    for edit in edits:
        set_bits[np.searchsorted(edited, edit.added)] |= edit.bit
        clear_bits[np.searchsorted(edited, edit.removed)] |= edit.bit

    def before(keys: U64) -> npt.NDArray[np.int64]:
        found: npt.NDArray[np.int64] = values[np.searchsorted(steps, keys, side="right") - 1]
        return found

    after = (before(edited) | set_bits) & ~clear_bits & ~facts.NOT_REGISTERED
    after[(after & _REGISTRATION) == 0] |= facts.NOT_REGISTERED
    keys, found = overwrite_steps(steps, values, edited, after)
    owners = keys >> np.uint64(SERIAL_BITS)
    first = np.r_[True, owners[1:] != owners[:-1]]
    keep = first | np.r_[True, found[1:] != found[:-1]]
    result = np.empty(int(keep.sum()), dtype=SEGMENT_DTYPE)
    result["point"] = keys[keep] & np.uint64(END_OF_TAC - 1)
    result["facts"] = found[keep]
    cuts = np.flatnonzero(first[keep]).tolist()
    segments = {
        tac: result[start:stop].tobytes()
        for tac, start, stop in zip(tacs.tolist(), cuts, [*cuts[1:], len(result)], strict=True)
    }
    return Patch(segments, edited, after.astype(np.uint16))
