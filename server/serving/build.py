"""Building a `ServingState`: from a store's newest snapshot, or from the previous state.

A first state maps the fact table a generation saved (store.py) where it lies and
brings it up to date; with none saved it assembles the table from every TAC's segment.
A next state costs what changed: the edits of deltas applied to the previous table, or
the segments of the TACs a generation changed spliced into it; a table mostly changed
(a full import of a list) is assembled anew.

This is seconds of array work at 10^9 IMEIs, so it runs on a thread (`watcher.py`), and
the event loop keeps answering from the previous state until the new one is swapped in.
What runs on that thread must not hold the GIL for long: a delta's edits are merged by a
compiled pass that releases it (`fact_table_edits`); a saved table is mapped, not read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pyroaring import FrozenBitMap

from imeireg.server.check.fact_table import SEGMENT_DTYPE, FactTable, Segment
from imeireg.server.check.fact_table_edits import edited
from imeireg.server.check.policy import Policy
from imeireg.server.model import TacSet
from imeireg.server.serving.state import ServingState
from imeireg.server.store import ReadView, Store, merge_edits

U16 = npt.NDArray[np.uint16]
U64 = npt.NDArray[np.uint64]
log = logging.getLogger("imeireg.server")


def first_state(store: Store, policy: Policy) -> ServingState:
    """The state of the store's newest committed snapshot, built from nothing."""
    view = store.view()
    try:
        return _built(view, policy, None)
    except BaseException:
        view.close()
        raise


@contextmanager
def opened_state(db: str | Path, policy: Policy | None = None) -> Iterator[ServingState]:
    """The state of the newest snapshot of the store at `db`, for checks in this process
    (benchmarks, tools); its store is closed after the `with` block."""
    store = Store.open(db)
    try:
        state = first_state(store, policy or Policy.default())
        try:
            yield state
        finally:
            state.close()
    finally:
        store.close()


def next_state(store: Store, previous: ServingState) -> ServingState | None:
    """The state of the store's newest committed snapshot, from `previous`; None when that
    is still the newest. `previous` is left open and unchanged: the caller swaps and
    releases (`state.release`)."""
    view = store.view()
    try:
        snapshot = view.snapshot()
        if snapshot == previous.snapshot:
            view.close()
            return None
        # A generation that is not newer is another store under the same path: start over.
        newer = snapshot.generation > previous.snapshot.generation
        return _built(view, previous.policy, previous if newer else None)
    except BaseException:
        view.close()
        raise


def _built(view: ReadView, policy: Policy, previous: ServingState | None) -> ServingState:
    snapshot = view.snapshot()
    allocated = view.tac_set(TacSet.ALLOCATED)
    barred_tacs = view.tac_set(TacSet.BARRED)
    tac_sets = (allocated, barred_tacs)
    table_pages: ReadView | None = None
    saved = view.saved_table_generation()
    if previous is None or saved > previous.snapshot.generation:
        # A generation that replaced a list saved its whole table: mapped in place, it
        # costs nothing to build, whatever the registry's size.
        table, table_pages = _first_table(view, snapshot.generation, tac_sets)
    else:
        table = _caught_up(
            view, previous.table, previous.snapshot.generation, snapshot.generation, tac_sets
        )
        if table is previous.table:
            table_pages = previous.table_pages
    return ServingState(snapshot, table, allocated, barred_tacs, policy, view, table_pages)


TacSets = tuple[FrozenBitMap, FrozenBitMap]  # allocated, barred


def _first_table(
    view: ReadView, current: int, tac_sets: TacSets
) -> tuple[FactTable, ReadView | None]:
    """The table to start from, and the view whose pages it maps, if it maps any.

    The table a generation saved, mapped where it lies, then brought up to date like a
    served table; with none saved, assembled from every segment.
    """
    saved = view.saved_table()
    if saved is None or saved[0] > current:
        return _assembled(view, tac_sets), None
    generation, keys, found = saved
    table = FactTable(keys, found)
    current_table = _caught_up(view, table, generation, current, tac_sets)
    return current_table, (view if current_table is table else None)


def _caught_up(
    view: ReadView, table: FactTable, previous: int, current: int, tac_sets: TacSets
) -> FactTable:
    """`table`, as of generation `previous`, brought up to generation `current`."""
    if current == previous:
        return table
    edits = _edits_since(view, previous, current)
    if edits is not None:
        keys, segment_facts = merge_edits(edits)
        return edited(table, keys, segment_facts, *tac_sets)
    changed = _changed_since(view, previous, current)
    if changed is not None and not changed:
        return table
    segments = view.segments_by_tac(changed) if changed else {}
    # Splicing copies the table once; when most of it changed (a full import of a list),
    # assembling it anew costs no more.
    if changed is None or _points(segments) > len(table.keys) // 2:
        return _assembled(view, tac_sets)
    return table.splice(np.array(changed.to_array(), dtype=np.uint64), segments, *tac_sets)


def _assembled(view: ReadView, tac_sets: TacSets) -> FactTable:
    return FactTable.assemble(view.segments_by_tac(), *tac_sets)


def _edits_since(view: ReadView, previous: int, current: int) -> list[tuple[U64, U16]] | None:
    """The edits of generations previous+1..current, when each of them is a delta of an
    IMEI list: applied to the table, they cost a copy of it and no segment read."""
    if current <= previous:
        return None
    edits = []
    for generation in range(previous + 1, current + 1):
        found = view.edits(generation)
        if found is None:
            return None
        edits.append(found)
    return edits


def _changed_since(view: ReadView, previous: int, current: int) -> FrozenBitMap | None:
    """The TACs generations previous+1..current changed; None when the table is to be built
    whole: a generation has no change record, or the store went back (a different store
    under the same path)."""
    if current <= previous:
        return None
    changed = FrozenBitMap()
    for generation in range(previous + 1, current + 1):
        tacs = view.changed_tacs(generation)
        if tacs is None:
            return None
        changed |= tacs
    return changed


def _points(segments: dict[int, Segment]) -> int:
    return sum(map(len, segments.values())) // SEGMENT_DTYPE.itemsize
