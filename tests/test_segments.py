"""The fact table (`imeireg.server.segments`): serial sets → segments → one sorted table.

The table is checked against the plainest model of the registry there is: per
(TAC, serial), the OR of the sets holding it, and the TAC-level facts.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from imeireg.server.check import fact_table_search, facts
from imeireg.server.check.fact_table import (
    END_OF_TAC,
    GAP,
    HAS_PAIRING,
    SEGMENT_DTYPE,
    UNLISTED,
    FactTable,
)
from imeireg.server.check.normalise import SERIAL_BITS
from imeireg.server.store.segments import Edit, patch_segments, segments_of

LAST_SERIAL = 999_999
LAST_TAC = 99_999_999
SET_BITS = (
    facts.REGISTERED,
    facts.REGISTRATION_PROVISIONAL,
    facts.STOLEN,
    facts.BARRED,
    facts.GOLDEN,
    HAS_PAIRING,
)
# TAC 0, adjacent TACs, and the last TAC: the edges of the key space.
TAC_POOL = (0, 1, 35_332_211, 35_332_212, 86_000_001, LAST_TAC)

SerialSets = dict[int, dict[int, frozenset[int]]]  # fact bit → TAC → serials


@dataclass(frozen=True)
class Registry:
    """A registry in its plainest form, and what it says of one (TAC, serial)."""

    sets: SerialSets
    allocated: frozenset[int]
    barred: frozenset[int]

    def facts_of(self, tac: int, serial: int) -> int:
        found = 0
        for bit, by_tac in self.sets.items():
            if serial in by_tac.get(tac, frozenset()):
                found |= bit
        if not found & (facts.REGISTERED | facts.REGISTRATION_PROVISIONAL):
            found |= facts.NOT_REGISTERED
        if tac not in self.allocated:
            found |= facts.TAC_UNALLOCATED
        if tac in self.barred:
            found |= facts.TAC_BARRED
        return found

    def listed_tacs(self) -> set[int]:
        return {tac for by_tac in self.sets.values() for tac, serials in by_tac.items() if serials}

    def members(self) -> dict[int, npt.NDArray[np.uint64]]:
        """Each set's sorted keys, as the store hands them to `segments_of`."""
        return {bit: keys_of(by_tac) for bit, by_tac in self.sets.items()}


def keys_of(by_tac: dict[int, frozenset[int]]) -> npt.NDArray[np.uint64]:
    keys = sorted(
        tac << SERIAL_BITS | serial for tac, serials in by_tac.items() for serial in serials
    )
    return np.array(keys, dtype=np.uint64)


serials_near_edges = st.one_of(
    st.integers(min_value=0, max_value=LAST_SERIAL),
    st.integers(min_value=0, max_value=300),
    st.integers(min_value=LAST_SERIAL - 300, max_value=LAST_SERIAL),
    st.sampled_from([0, 1, LAST_SERIAL - 1, LAST_SERIAL]),
)


@st.composite
def serial_sets(draw: st.DrawFn) -> frozenset[int]:
    """Runs (factory blocks) and scattered serials, often at serial 0 and 999,999."""
    serials: set[int] = set()
    for start, length in draw(
        st.lists(st.tuples(serials_near_edges, st.integers(min_value=1, max_value=60)), max_size=4)
    ):
        serials.update(range(start, min(start + length, LAST_SERIAL + 1)))
    serials.update(draw(st.lists(serials_near_edges, max_size=6)))
    return frozenset(serials)


@st.composite
def registries(draw: st.DrawFn) -> Registry:
    listed = draw(st.lists(st.sampled_from(TAC_POOL), min_size=1, max_size=4, unique=True))
    sets: SerialSets = {
        bit: {tac: draw(serial_sets()) for tac in listed if draw(st.booleans())}
        for bit in draw(st.lists(st.sampled_from(SET_BITS), min_size=1, unique=True))
    }
    tacs_around = st.sampled_from(sorted({*TAC_POOL, 2, 35_332_210, 35_332_213}))
    return Registry(
        sets,
        allocated=frozenset(draw(st.lists(tacs_around, max_size=5))),
        barred=frozenset(draw(st.lists(tacs_around, max_size=3))),
    )


def probes(registry: Registry) -> list[tuple[int, int]]:
    """Every serial next to a member of a set, the edges of every TAC, and neighbouring TACs."""
    tacs = {*TAC_POOL, *registry.allocated, *registry.barred}
    tacs |= {tac + step for tac in tacs for step in (-1, 1) if 0 <= tac + step <= LAST_TAC}
    pairs = {(tac, serial) for tac in tacs for serial in (0, 1, 500_000, LAST_SERIAL - 1)}
    pairs |= {(tac, LAST_SERIAL) for tac in tacs}
    for by_tac in registry.sets.values():
        for tac, serials in by_tac.items():
            for serial in serials:
                pairs |= {
                    (tac, s) for s in (serial - 1, serial, serial + 1) if 0 <= s <= LAST_SERIAL
                }
    return sorted(pairs)


def lookup(table: FactTable, pairs: list[tuple[int, int]]) -> list[int]:
    """The facts the table gives each (TAC, serial), looked up as one batch of IMEI keys."""
    keys = np.array([tac << SERIAL_BITS | serial for tac, serial in pairs], dtype=np.uint64)
    found = fact_table_search.lookup(table, keys)
    assert found.dtype == np.uint16
    return [int(bits) for bits in found.tolist()]


def segment_tacs(registry: Registry) -> npt.NDArray[np.uint64]:
    """The TACs an import recomputes: those listed, and two whose serials it has unlisted."""
    return np.array(sorted(registry.listed_tacs() | set(TAC_POOL[:2])), dtype=np.uint64)


def table_of(registry: Registry, *, keep_unlisted: bool = False) -> FactTable:
    """The table as the server builds it: segments as the importer stores them, then assembled."""
    segments = segments_of(registry.members(), segment_tacs(registry))
    if not keep_unlisted:  # the store deletes the segment of a TAC with no serials listed
        segments = {tac: segment for tac, segment in segments.items() if segment != UNLISTED}
    return FactTable.assemble(segments, registry.allocated, registry.barred)


def decode(segment: bytes) -> list[tuple[int, int]]:
    return [(int(p), int(f)) for p, f in np.frombuffer(segment, dtype=SEGMENT_DTYPE).tolist()]


@settings(max_examples=300)
@given(registries(), st.booleans())
def test_the_table_answers_what_the_serial_sets_and_tac_sets_say(
    registry: Registry, keep_unlisted: bool
) -> None:
    pairs = probes(registry)
    found = lookup(table_of(registry, keep_unlisted=keep_unlisted), pairs)
    assert found == [registry.facts_of(tac, serial) for tac, serial in pairs]


@settings(max_examples=200)
@given(registries())
def test_segments_are_canonical(registry: Registry) -> None:
    tacs = segment_tacs(registry)
    segments = segments_of(registry.members(), tacs)
    assert list(segments) == tacs.tolist()
    for segment in segments.values():
        points = decode(segment)
        assert points[0][0] == 0
        assert all(a[0] < b[0] for a, b in itertools.pairwise(points))
        assert all(a[1] != b[1] for a, b in itertools.pairwise(points))
        assert points[-1][0] <= LAST_SERIAL + 1


def test_no_tacs_give_no_segments() -> None:
    assert segments_of({facts.REGISTERED: np.empty(0, np.uint64)}, np.empty(0, np.uint64)) == {}


def test_tacs_of_no_entry_answer_unallocated_and_not_registered() -> None:
    registry = Registry({facts.REGISTERED: {35_332_211: frozenset({7})}}, frozenset(), frozenset())
    table = table_of(registry)
    pairs = [(0, 0), (2, 7), (35_332_210, 7), (35_332_212, 7), (LAST_TAC, LAST_SERIAL)]
    assert lookup(table, pairs) == [GAP] * 5
    assert GAP == facts.TAC_UNALLOCATED | facts.NOT_REGISTERED
    assert lookup(FactTable.assemble({}, (), ()), pairs) == [GAP] * 5


def test_serial_999999_of_one_tac_and_serial_0_of_the_next_stay_apart() -> None:
    registry = Registry(
        {
            facts.STOLEN: {35_332_211: frozenset({LAST_SERIAL})},
            facts.REGISTERED: {35_332_212: frozenset({0})},
        },
        allocated=frozenset({35_332_211}),
        barred=frozenset({35_332_212}),
    )
    found = lookup(
        table_of(registry),
        [
            (35_332_211, LAST_SERIAL - 1),
            (35_332_211, LAST_SERIAL),
            (35_332_212, 0),
            (35_332_212, 1),
        ],
    )
    unallocated_barred = facts.TAC_UNALLOCATED | facts.TAC_BARRED
    assert found == [
        facts.NOT_REGISTERED,
        facts.NOT_REGISTERED | facts.STOLEN,
        facts.REGISTERED | unallocated_barred,
        facts.NOT_REGISTERED | unallocated_barred,
    ]


def test_a_factory_block_of_10000_serials_is_three_points() -> None:
    block = np.arange(1000, 11_000, dtype=np.uint64) | np.uint64(35_332_211 << SERIAL_BITS)
    segments = segments_of({facts.REGISTERED: block}, np.array([35_332_211], dtype=np.uint64))
    assert decode(segments[35_332_211]) == [
        (0, facts.NOT_REGISTERED),
        (1000, facts.REGISTERED),
        (11_000, facts.NOT_REGISTERED),
    ]


def test_a_whole_tac_registered_is_two_points_ending_past_the_last_serial() -> None:
    block = np.arange(0, LAST_SERIAL + 1, dtype=np.uint64)
    segments = segments_of({facts.REGISTERED: block}, np.array([0], dtype=np.uint64))
    assert decode(segments[0]) == [(0, facts.REGISTERED), (LAST_SERIAL + 1, facts.NOT_REGISTERED)]


def test_overlapping_blocks_of_two_sets_cut_the_segment_where_the_facts_change() -> None:
    tac = np.uint64(35_332_211 << SERIAL_BITS)
    segments = segments_of(
        {
            facts.REGISTERED: np.arange(0, 10_000, dtype=np.uint64) | tac,
            facts.STOLEN: np.arange(5000, 6000, dtype=np.uint64) | tac,
            facts.GOLDEN: np.empty(0, dtype=np.uint64),
        },
        np.array([35_332_211, 35_332_212], dtype=np.uint64),
    )
    assert decode(segments[35_332_211]) == [
        (0, facts.REGISTERED),
        (5000, facts.REGISTERED | facts.STOLEN),
        (6000, facts.REGISTERED),
        (10_000, facts.NOT_REGISTERED),
    ]
    assert segments[35_332_212] == UNLISTED


def edits_between(before: Registry, after: Registry) -> list[Edit]:
    """What a delta import hands `patch_segments`: per set, the keys that joined and left."""
    edits = []
    for bit in SET_BITS:
        old = set(keys_of(before.sets.get(bit, {})).tolist())
        new = set(keys_of(after.sets.get(bit, {})).tolist())
        edits.append(
            Edit(
                bit, np.array(sorted(new - old), np.uint64), np.array(sorted(old - new), np.uint64)
            )
        )
    return edits


@settings(max_examples=300)
@given(registries(), registries())
def test_patching_segments_gives_what_computing_them_afresh_gives(
    before: Registry, after: Registry
) -> None:
    edits = edits_between(before, after)
    edited = {int(key) >> SERIAL_BITS for e in edits for key in [*e.added, *e.removed]}
    tacs = np.array(sorted(edited), dtype=np.uint32)
    old = {
        tac: segment
        for tac, segment in segments_of(before.members(), segment_tacs(before)).items()
        if segment != UNLISTED
    }
    patched = patch_segments(old, tacs, edits).segments
    within = {
        bit: keys[np.isin(keys >> np.uint64(SERIAL_BITS), tacs)]
        for bit, keys in after.members().items()
    }
    assert patched == segments_of(within, tacs.astype(np.uint64))


@settings(max_examples=300)
@given(registries(), registries())
def test_splicing_changed_tacs_answers_like_a_table_built_afresh(
    before: Registry, after: Registry
) -> None:
    """What a serving index does after a commit: only the TACs it changed are re-read."""
    changed = (
        before.listed_tacs() ^ after.listed_tacs()
        | {
            t
            for t in after.listed_tacs()
            if any(
                before.sets.get(bit, {}).get(t) != after.sets.get(bit, {}).get(t)
                for bit in SET_BITS
            )
        }
        | (before.allocated ^ after.allocated)
        | (before.barred ^ after.barred)
    )
    segments = {
        tac: segment
        for tac, segment in segments_of(after.members(), segment_tacs(after)).items()
        if segment != UNLISTED and tac in changed
    }
    spliced = table_of(before).splice(
        np.array(sorted(changed), dtype=np.uint64),
        segments,
        BitMap(after.allocated),
        BitMap(after.barred),
    )
    pairs = probes(before) + probes(after)
    assert lookup(spliced, pairs) == [after.facts_of(tac, serial) for tac, serial in pairs]


@settings(max_examples=300)
@given(registries(), registries())
def test_applying_a_deltas_edits_answers_like_a_table_built_afresh(
    before: Registry, changed_sets: Registry
) -> None:
    """What a serving index does after a delta of an IMEI list: only the keys it edited."""
    after = Registry(changed_sets.sets, before.allocated, before.barred)
    edits = edits_between(before, after)
    keys = np.array(
        sorted({int(key) for e in edits for key in [*e.added, *e.removed]}), dtype=np.uint64
    )
    tac_facts = facts.TAC_UNALLOCATED | facts.TAC_BARRED
    segment_facts = np.array(
        [
            after.facts_of(int(k) >> SERIAL_BITS, int(k) & (END_OF_TAC - 1)) & ~tac_facts
            for k in keys
        ],
        dtype=np.uint16,
    )
    edited = table_of(before).apply_edits(
        keys, segment_facts, BitMap(after.allocated), BitMap(after.barred)
    )
    pairs = probes(before) + probes(after)
    assert lookup(edited, pairs) == [after.facts_of(tac, serial) for tac, serial in pairs]


# The search tree's edges: one block, one more than a block, a full level, and past it.
TREE_EDGES = (1, 15, 16, 17, 255, 256, 257, 4095, 4096, 4097, 65_536, 65_537)


@st.composite
def sorted_tables(draw: st.DrawFn) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint16]]:
    """Distinct sorted keys from 0 (as every table starts), spread wide or packed in runs
    as factory blocks pack them, and a fact per key."""
    rows = draw(st.one_of(st.sampled_from(TREE_EDGES), st.integers(1, 20_000)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    span = draw(st.sampled_from([rows, 4 * rows, 1 << 20, 1 << 47]))
    keys = np.unique(np.r_[0, rng.integers(1, span, size=rows - 1, dtype=np.uint64, endpoint=True)])
    while len(keys) < rows:  # collisions: top up with keys past the last
        keys = np.r_[keys, keys[-1] + np.arange(1, rows - len(keys) + 1, dtype=np.uint64)]
    return keys, rng.integers(0, 1 << 16, size=rows, dtype=np.uint16)


@settings(max_examples=300, deadline=None)
@given(sorted_tables(), st.integers(0, 2**32 - 1))
def test_the_search_tree_finds_the_last_key_at_or_below_each_query_as_a_binary_search_does(
    table_columns: tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint16]], seed: int
) -> None:
    keys, found = table_columns
    table = FactTable(keys, found)
    rng = np.random.default_rng(seed)
    highest = np.iinfo(np.uint64).max - 1  # above every IMEI key; the last of the key space
    queries = np.concatenate(
        [
            keys,
            keys + np.uint64(1),
            np.maximum(keys, np.uint64(1)) - np.uint64(1),
            rng.integers(0, int(keys[-1]) + 2, size=500, dtype=np.uint64, endpoint=True),
            rng.integers(0, highest, size=100, dtype=np.uint64, endpoint=True),
            np.array([0, highest], dtype=np.uint64),
        ]
    )
    expected = found[np.searchsorted(keys, queries, side="right") - 1]
    assert fact_table_search.lookup(table, queries).tolist() == expected.tolist()
