"""A delta's edits applied to the fact table in one compiled pass, without the GIL.

`FactTable.apply_edits` is the reference: numpy passes over the whole table (delete,
insert, a boolean mask to merge equal neighbours). Several of those passes hold the GIL
for as long as they run — a boolean index over 1.6 million rows kept another thread
waiting 7 ms here — so a state built on a thread still stalled the event loop that
answers calls. This pass merges the edits into a copy of the table in one sweep, with
the GIL released (`compiled`: nogil), and pads the result as `FactTable` lays it out.
The tests hold it to the reference.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pyroaring import AbstractBitMap

from imeireg.server.check import facts
from imeireg.server.check.fact_table import BLOCK, GAP, NO_KEY, FactTable
from imeireg.server.check.normalise import SERIAL_BITS
from imeireg.server.check.sorted_arrays import sorted_contains
from imeireg.server.compiled import U16S, U64S, compiled

U16 = npt.NDArray[np.uint16]
U64 = npt.NDArray[np.uint64]

_GAP = GAP  # module globals: numba compiles them in as constants
_BLOCK = BLOCK


@compiled(f"Tuple((uint64[::1], uint16[::1]))({U64S}, {U16S}, {U64S}, {U16S})")
def _overwritten(steps: U64, values: U16, keys: U64, new_values: U16) -> tuple[U64, U16]:
    """The step function (`steps`, `values`; padding excluded) with each of `keys` (sorted,
    distinct) given its own step of `new_values`, the old function resuming one key later,
    and equal neighbours merged; padded to whole blocks."""
    capacity = len(steps) + 2 * len(keys) + _BLOCK
    out_steps = np.empty(capacity, np.uint64)
    out_values = np.empty(capacity, np.uint16)
    size = 0
    row = 0
    old = values[0] if len(values) else _GAP  # the old function's value where we are
    for edit in range(len(keys)):
        key = keys[edit]
        while row < len(steps) and steps[row] < key:
            old = values[row]
            if size == 0 or out_values[size - 1] != old:
                out_steps[size], out_values[size] = steps[row], old
                size += 1
            row += 1
        while row < len(steps) and steps[row] == key:  # overwritten by the edit
            old = values[row]
            row += 1
        if size == 0 or out_values[size - 1] != new_values[edit]:
            out_steps[size], out_values[size] = key, new_values[edit]
            size += 1
        resumes = key + np.uint64(1)
        if edit + 1 < len(keys) and keys[edit + 1] == resumes:
            continue  # the next edit has that key
        if row < len(steps) and steps[row] == resumes:
            continue  # an old step starts there and is copied next
        if out_values[size - 1] != old:
            out_steps[size], out_values[size] = resumes, old
            size += 1
    while row < len(steps):
        if size == 0 or out_values[size - 1] != values[row]:
            out_steps[size], out_values[size] = steps[row], values[row]
            size += 1
        row += 1
    padded = size + (-size % _BLOCK)
    out_steps[size:padded] = NO_KEY
    out_values[size:padded] = _GAP
    return out_steps[:padded], out_values[:padded]


def edited(
    table: FactTable,
    keys: U64,
    segment_facts: U16,
    allocated: AbstractBitMap,
    barred: AbstractBitMap,
) -> FactTable:
    """`table.apply_edits(keys, segment_facts, allocated, barred)`, in one compiled pass."""
    size = int(np.searchsorted(table.keys, NO_KEY))
    tacs = keys >> np.uint64(SERIAL_BITS)
    own = np.where(
        sorted_contains(np.array(allocated.to_array(), np.uint64), tacs), 0, facts.TAC_UNALLOCATED
    ) | np.where(sorted_contains(np.array(barred.to_array(), np.uint64), tacs), facts.TAC_BARRED, 0)
    new = segment_facts | own.astype(np.uint16)
    steps, found = _overwritten(table.keys[:size], table.facts[:size], keys, new)
    return FactTable(steps, found)
