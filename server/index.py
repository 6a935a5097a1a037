"""The serving index: one pinned registry snapshot, its facts held as one sorted table.

Each request first calls `refresh()`, which costs one LMDB read transaction when
nothing changed. When an import has committed a new generation, the index pins
the new snapshot, re-reads only the segments of the TACs that the new
generations changed, and splices them into the fact table (segments.py), so the
next request is answered from the new snapshot with no restart, and every answer
comes from exactly one generation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import lmdb
import numpy as np
import numpy.typing as npt
from pyroaring import FrozenBitMap

from imeireg.imei import MCC_DIGITS
from imeireg.server import facts
from imeireg.server.columns import TextColumn
from imeireg.server.kernels import batch_facts
from imeireg.server.normalise import SERIAL_BITS, ImeiBatch
from imeireg.server.segments import GAP, HAS_PAIRING, SEGMENT_DTYPE, FactTable, Segment
from imeireg.server.store import ImportRecord, ListName, Snapshot, Store, TacSet, merge_edits

U16 = npt.NDArray[np.uint16]
U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
log = logging.getLogger("imeireg.server")


@dataclass(frozen=True, slots=True)
class TacRecord:
    """What the registry knows of one TAC."""

    tac: str
    allocated: bool
    barred: bool
    model: dict[str, str]


def _distinct(*txns: lmdb.Transaction | None) -> list[lmdb.Transaction]:
    """The transactions given, each once."""
    return list({id(txn): txn for txn in txns if txn is not None}.values())


def _points(segments: dict[int, Segment]) -> int:
    return sum(map(len, segments.values())) // SEGMENT_DTYPE.itemsize


class RegistryIndex:
    """Answers fact queries for batches of IMEIs from one pinned snapshot of a store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._txn: lmdb.Transaction | None = None
        # The transaction whose pages the table views (a saved table, mapped in place).
        self._backing: lmdb.Transaction | None = None
        self._snapshot_raw = b""
        self._allocated = FrozenBitMap()
        self._barred_tacs = FrozenBitMap()
        self._table = FactTable(np.zeros(1, np.uint64), np.full(1, GAP, np.uint16))  # until refresh
        self.snapshot = Snapshot(0, 0.0)
        self.refresh()

    def close(self) -> None:
        for txn in _distinct(self._txn, self._backing):
            txn.abort()
        self._txn = self._backing = None
        self.store.close()

    def refresh(self) -> Snapshot:
        """Pin the newest committed snapshot if it changed; return the pinned one."""
        txn = self.store.env.begin(buffers=True)  # segments and the saved table read in place
        raw = bytes(txn.get(b"snapshot", db=self.store.meta) or b"")
        if raw == self._snapshot_raw:
            txn.abort()
            return self.snapshot
        previous = self.snapshot.generation
        snapshot = self.store.snapshot(txn)
        self._allocated = self.store.tac_set(txn, TacSet.ALLOCATED)
        self._barred_tacs = self.store.tac_set(txn, TacSet.BARRED)
        released = _distinct(self._txn, self._backing)
        if self._txn is None:
            self._table, self._backing = self._first_table(txn, snapshot.generation)
        else:
            table = self._caught_up(txn, self._table, previous, snapshot.generation)
            if table is not self._table:
                self._table, self._backing = table, None
            log.info("now answering from generation %d (was %d)", snapshot.generation, previous)
        # A transaction stays open while the table views its pages.
        for old in released:
            if old is not self._backing:
                old.abort()
        self._txn, self._snapshot_raw, self.snapshot = txn, raw, snapshot
        return snapshot

    def _first_table(
        self, txn: lmdb.Transaction, current: int
    ) -> tuple[FactTable, lmdb.Transaction | None]:
        """The table to start from, and the transaction whose pages it views, if any.

        The table a generation saved (store.py), mapped where it lies, then brought up to
        date like a served table; with none saved, assembled from every segment.
        """
        saved = self.store.saved_table(txn)
        if saved is None or saved[0] > current:
            return self._assembled(txn), None
        generation, keys, found = saved
        table = FactTable(keys, found)
        current_table = self._caught_up(txn, table, generation, current)
        return current_table, (txn if current_table is table else None)

    def _caught_up(
        self, txn: lmdb.Transaction, table: FactTable, previous: int, current: int
    ) -> FactTable:
        """`table`, as of generation `previous`, brought up to generation `current`."""
        if current == previous:
            return table
        edits = self._edits_since(txn, previous, current)
        if edits is not None:
            keys, segment_facts = merge_edits(edits)
            return table.apply_edits(keys, segment_facts, self._allocated, self._barred_tacs)
        changed = self._changed_since(txn, previous, current)
        if changed is not None and not changed:
            return table
        segments = self.store.segments_by_tac(txn, changed) if changed else {}
        # Splicing copies the table once; when most of it changed (a full import of a
        # list), assembling it anew costs no more.
        if changed is None or _points(segments) > len(table.keys) // 2:
            return self._assembled(txn)
        return table.splice(
            np.array(changed.to_array(), dtype=np.uint64),
            segments,
            self._allocated,
            self._barred_tacs,
        )

    def _assembled(self, txn: lmdb.Transaction) -> FactTable:
        segments = self.store.segments_by_tac(txn)
        return FactTable.assemble(segments, self._allocated, self._barred_tacs)

    def _edits_since(
        self, txn: lmdb.Transaction, previous: int, current: int
    ) -> list[tuple[U64, U16]] | None:
        """The edits of generations previous+1..current, when each of them is a delta of
        an IMEI list: applied to the table, they cost a copy of it and no segment read."""
        if current <= previous:
            return None
        edits = []
        for generation in range(previous + 1, current + 1):
            found = self.store.edits(txn, generation)
            if found is None:
                return None
            edits.append(found)
        return edits

    def _changed_since(
        self, txn: lmdb.Transaction, previous: int, current: int
    ) -> FrozenBitMap | None:
        """The TACs generations previous+1..current changed; None when the table is to be
        built whole: a generation has no change record, or the store went back (a
        different store under the same path)."""
        if current <= previous:
            return None
        changed = FrozenBitMap()
        for generation in range(previous + 1, current + 1):
            tacs = self.store.changed_tacs(txn, generation)
            if tacs is None:
                return None
            changed |= tacs
        return changed

    def facts(self, batch: ImeiBatch, imsis: Sequence[str], home_mccs: I64) -> U32:
        """The fact bits of every IMEI of a batch; `imsis` is empty or aligned with it, and
        `home_mccs` are the MCCs of the home network, as numbers."""
        column = TextColumn.of(imsis)
        found = batch_facts(self._table, batch, column, home_mccs)
        paired = np.uint32(HAS_PAIRING)
        for row in np.flatnonzero(found & paired).tolist() if len(column) else ():
            tac, serial = divmod(int(batch.keys[row]), 1 << SERIAL_BITS)
            imei_body = f"{tac:08d}{serial:06d}"
            if column[row] and self.store.is_paired(self._pinned, imei_body, column[row]):
                found[row] |= facts.PAIRED
        found &= ~paired
        return found

    def facts_of(self, tac: int, serial: int, imsi: str, home_mccs: frozenset[str]) -> int:
        """The fact bits of one valid IMEI: `facts` for a batch of one, without numpy's overhead."""
        table = self._table
        found = int(
            table.facts[
                int(table.keys.searchsorted(np.uint64(tac << SERIAL_BITS | serial), "right")) - 1
            ]
        )
        if found & HAS_PAIRING:
            found ^= HAS_PAIRING
            if imsi and self.store.is_paired(self._pinned, f"{tac:08d}{serial:06d}", imsi):
                found |= facts.PAIRED
        if imsi and imsi[:MCC_DIGITS] not in home_mccs:
            found |= facts.INBOUND_ROAMER
        return found

    @property
    def _pinned(self) -> lmdb.Transaction:
        assert self._txn is not None, "index used after close()"
        return self._txn

    def tac_records(self, tacs: Sequence[str]) -> list[TacRecord]:
        records = []
        for tac in tacs:
            number = int(tac)
            model = self.store.gsma_record(self._pinned, tac) or {}
            records.append(
                TacRecord(tac, number in self._allocated, number in self._barred_tacs, model)
            )
        return records

    def rows(self) -> dict[ListName, int]:
        return self.store.rows(self._pinned)

    def tac_count(self) -> int:
        return len(self._allocated)

    def recent_imports(self, limit: int) -> list[ImportRecord]:
        return self.store.import_log(self._pinned, limit)
