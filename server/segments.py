"""The fact table: every IMEI-level fact of the registry as sorted intervals of one key space.

A key is an IMEI's ``tac << 20 | serial`` (see normalise.py). Per TAC, the
roaring bitmaps of its serial sets (registered, provisional, stolen, barred,
golden, paired) are turned into a
*segment*: the serials where the set of facts changes, and the facts from each
such point on. Factory blocks of sequential serials make a few points each.

Concatenated over all TACs, with the TAC-level facts (allocated, barred) folded
in, segments form one sorted table, so the facts of a whole batch are one
``np.searchsorted`` and one take, with no Python work per IMEI. Segments are
computed by the importer, in the import's transaction, and stored beside the
bitmaps; the server only concatenates them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from imeireg.server import facts
from imeireg.server.arrays import sorted_contains, sorted_unique
from imeireg.server.normalise import SERIAL_BITS

U16 = npt.NDArray[np.uint16]
U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]

END_OF_TAC = 1 << SERIAL_BITS
# An IMEI with pairings; whether one pairs with the IMSI given is looked up afterwards.
HAS_PAIRING = 1 << 15
#: Facts of a key whose TAC has no entry at all.
GAP = facts.TAC_UNALLOCATED | facts.NOT_REGISTERED
_REGISTRATION = facts.REGISTERED | facts.REGISTRATION_PROVISIONAL
assert facts.FACT_SPACE <= HAS_PAIRING, "fact bits must fit below HAS_PAIRING in 16 bits"

BLOCK = 16  # keys per block of the fact table's two-step search: two cache lines
_BLOCK_OFFSETS = np.arange(BLOCK)
_NO_KEY = np.iinfo(np.uint64).max
# A segment as stored: (point, facts) pairs, little-endian.
SEGMENT_DTYPE = np.dtype([("point", "<u4"), ("facts", "<u2")])
UNLISTED = np.array([(0, facts.NOT_REGISTERED)], dtype=SEGMENT_DTYPE).tobytes()


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
class FactTable:
    """Sorted interval starts over the key space and the facts that hold from each.

    A binary search over millions of keys misses the cache at almost every step, so
    the search runs over every BLOCK-th key (a sample small enough to stay cached) and
    then among the BLOCK keys of one block: two cache lines per IMEI. The arrays are
    padded to whole blocks with keys above any IMEI's.
    """

    keys: U64
    facts: U16
    sample: U64 = field(init=False)

    def __post_init__(self) -> None:
        padding = -len(self.keys) % BLOCK
        object.__setattr__(self, "keys", np.append(self.keys, np.full(padding, _NO_KEY)))
        object.__setattr__(self, "facts", np.append(self.facts, np.full(padding, GAP, np.uint16)))
        object.__setattr__(self, "sample", self.keys[::BLOCK].copy())

    @classmethod
    def assemble(
        cls, segments: Mapping[int, bytes], allocated: Iterable[int], barred: Iterable[int]
    ) -> FactTable:
        """The table of every TAC that is allocated, barred or has a segment."""
        allocated_tacs = np.sort(np.fromiter(allocated, dtype=np.uint64))
        barred_tacs = np.sort(np.fromiter(barred, dtype=np.uint64))
        tacs = sorted_unique(
            np.concatenate([allocated_tacs, barred_tacs, np.fromiter(segments, np.uint64)])
        )
        base = np.where(sorted_contains(allocated_tacs, tacs), 0, facts.TAC_UNALLOCATED) | np.where(
            sorted_contains(barred_tacs, tacs), facts.TAC_BARRED, 0
        )
        parts = [segments.get(tac, UNLISTED) for tac in tacs.tolist()]
        packed = np.frombuffer(b"".join(parts), dtype=SEGMENT_DTYPE)
        lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
        lengths //= SEGMENT_DTYPE.itemsize
        # Row 0 is a sentinel for keys below the first TAC. Each TAC's segment is followed by
        # an end marker at the next TAC's first key; when that TAC has entries too, its own
        # first point has the same key and, coming later, wins the search (side="right").
        size = 1 + len(packed) + len(parts)
        is_end = np.zeros(size, dtype=np.bool_)
        is_end[0] = True
        is_end[np.cumsum(lengths + 1)] = True
        points = np.full(size, END_OF_TAC, dtype=np.uint64)
        found = np.full(size, GAP, dtype=np.uint16)
        owners = np.zeros(size, dtype=np.uint64)
        points[0] = 0
        points[~is_end] = packed["point"]
        found[~is_end] = packed["facts"] | np.repeat(base.astype(np.uint16), lengths)
        owners[1:] = np.repeat(tacs, lengths + 1)
        return cls((owners << np.uint64(SERIAL_BITS)) + points, found)

    def lookup(self, keys: U64) -> U16:
        """The facts of each IMEI key (``tac << SERIAL_BITS | serial``)."""
        first = (np.searchsorted(self.sample, keys, side="right") - 1) * BLOCK
        within = self.keys[first[:, np.newaxis] + _BLOCK_OFFSETS] <= keys[:, np.newaxis]
        found: U16 = self.facts[first + np.count_nonzero(within, axis=1) - 1]
        return found
