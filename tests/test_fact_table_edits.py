"""The compiled edit of the fact table (`check.fact_table_edits.edited`) against its
reference, `FactTable.apply_edits`: the same table for any table and any edits."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from imeireg.server.check import facts
from imeireg.server.check.fact_table import FactTable
from imeireg.server.check.fact_table_edits import edited
from imeireg.server.check.normalise import SERIAL_BITS

# A few TACs, each a few serials wide, so that edits land on, beside and between steps.
TACS = (0, 1, 35332211, 86000001)
SERIALS = 12
keys_on_tacs = st.builds(
    lambda tac, serial: TACS[tac] << SERIAL_BITS | serial,
    st.integers(0, len(TACS) - 1),
    st.integers(0, SERIALS),
)
fact_bits = st.integers(0, facts.FACT_SPACE - 1)


def table_of(steps: dict[int, int]) -> FactTable:
    """A table whose first key is 0, as every assembled table's is."""
    points = {0: facts.TAC_UNALLOCATED | facts.NOT_REGISTERED, **steps}
    keys = np.array(sorted(points), dtype=np.uint64)
    return FactTable(keys, np.array([points[k] for k in sorted(points)], dtype=np.uint16))


@settings(max_examples=500)
@given(
    st.dictionaries(keys_on_tacs, fact_bits, max_size=40),
    st.dictionaries(keys_on_tacs, fact_bits, min_size=1, max_size=30),
    st.sets(st.sampled_from(TACS)),
    st.sets(st.sampled_from(TACS)),
)
def test_the_compiled_edit_gives_the_reference_table(
    steps: dict[int, int], edits: dict[int, int], allocated: set[int], barred: set[int]
) -> None:
    table = table_of(steps)
    keys = np.array(sorted(edits), dtype=np.uint64)
    found = np.array([edits[k] for k in sorted(edits)], dtype=np.uint16)
    expected = table.apply_edits(keys, found, BitMap(allocated), BitMap(barred))
    got = edited(table, keys, found, BitMap(allocated), BitMap(barred))
    assert got.keys.tolist() == expected.keys.tolist()
    assert got.facts.tolist() == expected.facts.tolist()
    assert got.sample.tolist() == expected.sample.tolist()


def test_an_edit_of_every_key_in_a_row_and_of_the_first_key() -> None:
    table = table_of({5: facts.REGISTERED, 9: facts.STOLEN})
    keys = np.arange(0, 12, dtype=np.uint64)
    found = np.full(12, facts.REGISTERED, dtype=np.uint16)
    expected = table.apply_edits(keys, found, BitMap([0]), BitMap())
    got = edited(table, keys, found, BitMap([0]), BitMap())
    assert got.keys.tolist() == expected.keys.tolist()
    assert got.facts.tolist() == expected.facts.tolist()
