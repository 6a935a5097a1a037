"""The serving state: everything one answer needs, from one committed snapshot, immutable.

A front reads `ServingState` once per request and answers from it alone: the snapshot it
names, the fact table, the TAC sets, the policy and a read view of the store pinned at
that snapshot (pairings, GSMA records, the import log). Nothing in it changes; a new
generation is a new state, built by `build.next_state` off the event loop and swapped in
by the watcher, so an answer can never mix two generations.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyroaring import FrozenBitMap

from imeireg.server.check.fact_table import FactTable
from imeireg.server.check.policy import Policy
from imeireg.server.model import Snapshot
from imeireg.server.store import ReadView


@dataclass(frozen=True, slots=True, eq=False)
class ServingState:
    """One snapshot of the registry, ready to answer from.

    `view` is the store pinned at `snapshot`. `table_pages` is the view whose pages
    `table` maps in place (a saved table, read without a copy), when it does: it may be
    an older view, kept open as long as a state uses its table.
    """

    snapshot: Snapshot
    table: FactTable
    allocated: FrozenBitMap
    barred_tacs: FrozenBitMap
    policy: Policy
    view: ReadView
    table_pages: ReadView | None = None

    def views(self) -> set[ReadView]:
        """The store views this state holds open."""
        return {self.view} | ({self.table_pages} if self.table_pages is not None else set())

    def close(self) -> None:
        """Release every view; the state must not answer again."""
        for view in self.views():
            view.close()


def release(old: ServingState, new: ServingState) -> None:
    """Close the views of `old` that `new` does not share (it may map the same table)."""
    for view in old.views() - new.views():
        view.close()
