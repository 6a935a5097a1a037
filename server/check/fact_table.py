"""The fact table: every IMEI-level fact of the registry as sorted intervals of one key space.

A key is an IMEI's ``tac << 20 | serial`` (see normalise.py). Per TAC, the
roaring bitmaps of its serial sets (registered, provisional, stolen, barred,
golden, paired) are turned into a
*segment*: the serials where the set of facts changes, and the facts from each
such point on. Factory blocks of sequential serials make a few points each.

Concatenated over all TACs, with the TAC-level facts (allocated, barred) folded
in, segments form one sorted table, so the facts of a whole batch are one
search of it (`fact_table_search`), with no Python work per IMEI. Segments are
computed by the importer, in the import's transaction, and stored beside the
bitmaps (`store.segments`); the server only concatenates them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from pyroaring import AbstractBitMap

from imeireg.server.check import facts
from imeireg.server.check.normalise import SERIAL_BITS
from imeireg.server.check.sorted_arrays import overwrite_steps, sorted_contains, sorted_unique

U16 = npt.NDArray[np.uint16]
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

END_OF_TAC = 1 << SERIAL_BITS
# An IMEI with pairings; whether one pairs with the IMSI given is looked up afterwards.
HAS_PAIRING = 1 << 15
#: Facts of a key whose TAC has no entry at all.
GAP = facts.TAC_UNALLOCATED | facts.NOT_REGISTERED
assert facts.FACT_SPACE <= HAS_PAIRING, "fact bits must fit below HAS_PAIRING in 16 bits"

# Keys per block of the fact table's search tree: two cache lines, one vector compare.
# Per 1000-IMEI batch at 10^7 IMEIs (1.4 M rows): 8 keys a block 16 µs, 16 keys 17 µs,
# 32 keys 21-30 µs; 16 keeps the tree to one key in fifteen more.
BLOCK = 16
#: The key that pads the table to whole blocks: above any IMEI's.
NO_KEY = np.iinfo(np.uint64).max
# A segment as stored: (point, facts) pairs, little-endian; read as bytes, or as a view
# of the store's pages.
Segment = bytes | memoryview
SEGMENT_DTYPE = np.dtype([("point", "<u4"), ("facts", "<u2")])
UNLISTED = np.array([(0, facts.NOT_REGISTERED)], dtype=SEGMENT_DTYPE).tobytes()
# The one row of a TAC in no list and no TAC set.
_GAP_SEGMENT = np.array([(0, GAP)], dtype=SEGMENT_DTYPE).tobytes()


@dataclass(frozen=True, slots=True)
class FactTable:
    """Sorted interval starts over the key space and the facts that hold from each.

    The keys are searched down a tree of samples of them (`sample`): every BLOCK-th key,
    every BLOCK-th of those, and so on up to one block, top level first, level d from
    `level_starts[d]`. A query descends it one block per level, each block one vector
    compare (`intrinsics`), then reads one block of the keys. Every level and the keys
    are padded to whole blocks with keys above any IMEI's. The sample is derived when a
    table is made, never stored: about one key in fifteen more.
    """

    keys: U64
    facts: U16
    sample: U64 = field(init=False)
    level_starts: I64 = field(init=False)

    def __post_init__(self) -> None:
        if padding := -len(self.keys) % BLOCK:
            object.__setattr__(self, "keys", np.append(self.keys, np.full(padding, NO_KEY)))
            found = np.append(self.facts, np.full(padding, GAP, np.uint16))
            object.__setattr__(self, "facts", found)
        sample, starts = _search_tree(self.keys)
        object.__setattr__(self, "sample", sample)
        object.__setattr__(self, "level_starts", starts)

    @classmethod
    def assemble(
        cls, segments: Mapping[int, Segment], allocated: Iterable[int], barred: Iterable[int]
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
        # Built in few whole passes over the arrays, padded as it is built: at 10^8 rows
        # each pass costs a fraction of a second.
        rows = 1 + len(packed) + len(parts)
        padding = -rows % BLOCK
        after_points = np.cumsum(lengths)  # where each TAC's end marker goes among the points
        keys = np.repeat(tacs << np.uint64(SERIAL_BITS), lengths + 1)
        keys += np.insert(packed["point"], after_points, END_OF_TAC)
        keys = np.concatenate([np.zeros(1, np.uint64), keys, np.full(padding, NO_KEY)])
        inner: U16 = np.insert(
            packed["facts"] | np.repeat(base.astype(np.uint16), lengths), after_points, GAP
        )
        gap = np.full(1 + padding, GAP, np.uint16)
        return cls(keys, np.concatenate([gap[:1], inner, gap[1:]]))

    def splice(
        self,
        tacs: U64,
        segments: Mapping[int, Segment],
        allocated: AbstractBitMap,
        barred: AbstractBitMap,
    ) -> FactTable:
        """This table with the rows of `tacs` (sorted, distinct) replaced by their new facts.

        Each TAC owns the keys from its serial 0 up to the next TAC's serial 0. Its new
        rows come from its segment and TAC-level facts, or are one GAP row when it is
        in none; after them, the facts that held at the next TAC's first key resume.
        Costs a copy of the table, not an assembly of every TAC.
        """
        size = int(np.searchsorted(self.keys, NO_KEY))
        keys, found = self.keys[:size], self.facts[:size]
        shift = np.uint64(SERIAL_BITS)
        starts, ends = tacs << shift, (tacs + np.uint64(1)) << shift
        # Old rows to drop: those within any spliced TAC's key range.
        drop = np.zeros(size + 1, dtype=np.int64)
        np.add.at(drop, np.searchsorted(keys, starts), 1)
        np.add.at(drop, np.searchsorted(keys, ends), -1)
        kept = np.cumsum(drop[:-1]) == 0

        listed = [t in allocated or t in barred or t in segments for t in tacs.tolist()]
        parts = [
            segments.get(tac, UNLISTED) if present else _GAP_SEGMENT
            for tac, present in zip(tacs.tolist(), listed, strict=True)
        ]
        packed = np.frombuffer(b"".join(parts), dtype=SEGMENT_DTYPE)
        lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
        lengths //= SEGMENT_DTYPE.itemsize
        base = np.array(
            [
                (0 if tac in allocated else facts.TAC_UNALLOCATED)
                | (facts.TAC_BARRED if tac in barred else 0)
                if present
                else 0
                for tac, present in zip(tacs.tolist(), listed, strict=True)
            ],
            dtype=np.uint16,
        )
        new_keys = np.repeat(starts, lengths) + packed["point"]
        new_facts = packed["facts"] | np.repeat(base, lengths)
        resumed = found[np.searchsorted(keys, ends, side="right") - 1]
        # The resumed facts of one TAC come before the next TAC's own first row, which wins.
        inserted_keys = np.concatenate([new_keys, ends])
        inserted_facts = np.concatenate([new_facts, resumed])
        order = np.lexsort((np.r_[np.ones(len(new_keys)), np.zeros(len(ends))], inserted_keys))
        inserted_keys, inserted_facts = inserted_keys[order], inserted_facts[order]

        kept_keys = keys[kept]
        at = np.searchsorted(kept_keys, inserted_keys)
        merged_keys = np.insert(kept_keys, at, inserted_keys)
        merged_facts = np.insert(found[kept], at, inserted_facts)
        changes = np.r_[True, merged_facts[1:] != merged_facts[:-1]]
        return FactTable(merged_keys[changes], merged_facts[changes])

    def apply_edits(
        self, keys: U64, segment_facts: U16, allocated: AbstractBitMap, barred: AbstractBitMap
    ) -> FactTable:
        """This table with each of `keys` (sorted, distinct) given its new segment facts,
        and its TAC's own facts: what a delta changed, without re-reading any segment."""
        size = int(np.searchsorted(self.keys, NO_KEY))
        tacs = keys >> np.uint64(SERIAL_BITS)
        new = segment_facts | np.where(
            sorted_contains(_array_of(allocated), tacs), 0, facts.TAC_UNALLOCATED
        ).astype(np.uint16)
        new |= np.where(sorted_contains(_array_of(barred), tacs), facts.TAC_BARRED, 0).astype(
            np.uint16
        )
        steps, found = overwrite_steps(self.keys[:size], self.facts[:size], keys, new)
        changes = np.r_[True, found[1:] != found[:-1]]
        return FactTable(steps[changes], found[changes])


def _search_tree(keys: U64) -> tuple[U64, I64]:
    """The sampled levels of the search tree over `keys` (whole blocks), top first, each
    padded to whole blocks, in one array; and where each level starts in it."""
    sizes = []
    size = len(keys)
    while size > BLOCK:
        size = -(-size // BLOCK)  # an entry per block of the level below
        size += -size % BLOCK
        sizes.append(size)
    sizes.reverse()
    starts = np.cumsum([0, *sizes[:-1]], dtype=np.int64) if sizes else np.empty(0, np.int64)
    levels = np.full(sum(sizes), NO_KEY)
    below = keys
    for start, size in zip(starts[::-1].tolist(), sizes[::-1], strict=True):
        level = levels[start : start + size]
        entries = below[::BLOCK]
        level[: len(entries)] = entries
        below = level
    return levels, starts


def _array_of(bitmap: AbstractBitMap) -> U64:
    return np.array(bitmap.to_array(), dtype=np.uint64)
