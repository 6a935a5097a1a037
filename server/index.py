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

from imeireg.server import facts
from imeireg.server.columns import TextColumn
from imeireg.server.normalise import SERIAL_BITS, ImeiBatch
from imeireg.server.segments import HAS_PAIRING, SEGMENT_DTYPE, FactTable, Segment
from imeireg.server.store import ImportRecord, ListName, Snapshot, Store, TacSet

U16 = npt.NDArray[np.uint16]
U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]
MCC_DIGITS = 3
log = logging.getLogger("imeireg.server")


@dataclass(frozen=True, slots=True)
class TacRecord:
    """What the registry knows of one TAC."""

    tac: str
    allocated: bool
    barred: bool
    model: dict[str, str]


def _points(segments: dict[int, Segment]) -> int:
    return sum(map(len, segments.values())) // SEGMENT_DTYPE.itemsize


class RegistryIndex:
    """Answers fact queries for batches of IMEIs from one pinned snapshot of a store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._txn: lmdb.Transaction | None = None
        self._snapshot_raw = b""
        self._allocated = FrozenBitMap()
        self._barred_tacs = FrozenBitMap()
        self._table = FactTable.assemble({}, (), ())
        self.snapshot = Snapshot(0, 0.0)
        self.refresh()

    def close(self) -> None:
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
        self.store.close()

    def refresh(self) -> Snapshot:
        """Pin the newest committed snapshot if it changed; return the pinned one."""
        txn = self.store.env.begin(buffers=True)  # segments read in place (see refresh)
        raw = bytes(txn.get(b"snapshot", db=self.store.meta) or b"")
        if raw == self._snapshot_raw:
            txn.abort()
            return self.snapshot
        previous = self.snapshot.generation
        snapshot = self.store.snapshot(txn)
        self._allocated = self.store.tac_set(txn, TacSet.ALLOCATED)
        self._barred_tacs = self.store.tac_set(txn, TacSet.BARRED)
        edits = self._edits_since(txn, previous, snapshot.generation)
        if edits is not None:
            for keys, segment_facts in edits:
                self._table = self._table.apply_edits(
                    keys, segment_facts, self._allocated, self._barred_tacs
                )
        else:
            self._reload(txn, previous, snapshot.generation)
        if self._txn is not None:
            log.info("now answering from generation %d (was %d)", snapshot.generation, previous)
            self._txn.abort()
        self._txn, self._snapshot_raw, self.snapshot = txn, raw, snapshot
        return snapshot

    def _edits_since(
        self, txn: lmdb.Transaction, previous: int, current: int
    ) -> list[tuple[U64, U16]] | None:
        """The edits of generations previous+1..current, when each of them is a delta of
        an IMEI list: applied to the table, they cost a copy of it and no segment read."""
        if self._txn is None or current <= previous:
            return None
        edits = []
        for generation in range(previous + 1, current + 1):
            found = self.store.edits(txn, generation)
            if found is None:
                return None
            edits.append(found)
        return edits

    def _reload(self, txn: lmdb.Transaction, previous: int, current: int) -> None:
        """Re-read the segments of the TACs generations previous+1..current changed."""
        changed = self._changed_since(txn, previous, current)
        segments = self.store.segments_by_tac(txn, changed) if changed else {}
        # Splicing copies the table once; when most of it changed (a full import of a
        # list), assembling it anew costs no more.
        if changed is None or _points(segments) > len(self._table.keys) // 2:
            segments = self.store.segments_by_tac(txn)
            self._table = FactTable.assemble(segments, self._allocated, self._barred_tacs)
        elif changed:
            self._table = self._table.splice(
                np.array(changed.to_array(), dtype=np.uint64),
                segments,
                self._allocated,
                self._barred_tacs,
            )

    def _changed_since(
        self, txn: lmdb.Transaction, previous: int, current: int
    ) -> FrozenBitMap | None:
        """The TACs generations previous+1..current changed; None when the table is to be built
        whole: on the first load, or when a generation has no change record or the store
        went back (a different store under the same path)."""
        if self._txn is None or current <= previous:
            return None
        changed = FrozenBitMap()
        for generation in range(previous + 1, current + 1):
            tacs = self.store.changed_tacs(txn, generation)
            if tacs is None:
                return None
            changed |= tacs
        return changed

    def facts(self, batch: ImeiBatch, imsis: Sequence[str], home_mccs: frozenset[str]) -> U32:
        """The fact bits of every IMEI of a batch; `imsis` is empty or aligned with it."""
        valid = batch.valid
        found = self._table.lookup(batch.keys).astype(np.uint32)
        if imsis:
            self._add_subscriber_facts(found, batch, imsis, home_mccs)
        found &= np.uint32(~HAS_PAIRING & 0xFFFF)
        return np.where(valid, found | batch.flags, batch.flags)

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
        if imsi and imsi[:3] not in home_mccs:
            found |= facts.INBOUND_ROAMER
        return found

    def _add_subscriber_facts(
        self, found: U32, batch: ImeiBatch, imsis: Sequence[str], home_mccs: frozenset[str]
    ) -> None:
        txn = self._pinned
        tacs, serials = batch.tacs, batch.serials
        for row in np.flatnonzero(found & np.uint32(HAS_PAIRING)).tolist():
            body = f"{tacs[row]:08d}{serials[row]:06d}"
            if imsis[row] and self.store.is_paired(txn, body, imsis[row]):
                found[row] |= facts.PAIRED
        column = TextColumn.of(imsis)
        home = np.array([int(mcc) for mcc in home_mccs], dtype=np.int64)
        roaming = (column.lengths > 0) & ~np.isin(column.prefix_number(MCC_DIGITS), home)
        found[roaming] |= np.uint32(facts.INBOUND_ROAMER)

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
