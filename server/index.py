"""The serving index: one pinned registry snapshot with its roaring bitmaps decoded in memory.

Each request first calls `refresh()`, which costs one LMDB read transaction when
nothing changed. When an import has committed a new generation, the index pins
the new snapshot, reloads the TAC-level sets and evicts only the TACs whose
serial sets the new generations changed, so the next request is answered from
the new snapshot with no restart. Per-TAC bitmaps are decoded lazily, on first
use, from the pinned snapshot, so every answer comes from exactly one generation.
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
from imeireg.server.normalise import ImeiBatch
from imeireg.server.store import ImportRecord, ListName, SerialSet, Snapshot, Store, TacSet

U32 = npt.NDArray[np.uint32]
log = logging.getLogger("imeireg.server")

_EMPTY = FrozenBitMap()
# A serial set's fact bit; PAIRED here only means "has some pairing": whether the
# pair matches the IMSI given is decided afterwards, for those IMEIs alone.
_HAS_PAIRING = 1 << 31
_SET_FACTS = {
    SerialSet.PROVISIONAL: facts.REGISTRATION_PROVISIONAL,
    SerialSet.STOLEN: facts.STOLEN,
    SerialSet.BARRED: facts.BARRED,
    SerialSet.GOLDEN: facts.GOLDEN,
    SerialSet.PAIRED: _HAS_PAIRING,
}


@dataclass(frozen=True, slots=True)
class _TacEntry:
    """The decoded serial sets of one TAC; `exceptional` is the union of all but `registered`."""

    registered: FrozenBitMap
    exceptional: FrozenBitMap
    others: tuple[tuple[int, FrozenBitMap], ...]


_UNLISTED = _TacEntry(_EMPTY, _EMPTY, ())


@dataclass(frozen=True, slots=True)
class TacRecord:
    """What the registry knows of one TAC."""

    tac: str
    allocated: bool
    barred: bool
    model: dict[str, str]


class RegistryIndex:
    """Answers fact queries for batches of IMEIs from one pinned snapshot of a store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._txn: lmdb.Transaction | None = None
        self._snapshot_raw = b""
        self._entries: dict[int, _TacEntry] = {}
        self._allocated = _EMPTY
        self._barred_tacs = _EMPTY
        self._listed = _EMPTY
        self.snapshot = Snapshot(0, 0.0)
        self.refresh()

    def close(self) -> None:
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
        self.store.close()

    def refresh(self) -> Snapshot:
        """Pin the newest committed snapshot if it changed; return the pinned one."""
        txn = self.store.env.begin(db=self.store.meta)
        raw = bytes(txn.get(b"snapshot") or b"")
        if raw == self._snapshot_raw:
            txn.abort()
            return self.snapshot
        previous = self.snapshot.generation
        snapshot = self.store.snapshot(txn)
        self._evict(txn, previous, snapshot.generation)
        self._allocated = self.store.tac_set(txn, TacSet.ALLOCATED)
        self._barred_tacs = self.store.tac_set(txn, TacSet.BARRED)
        self._listed = self.store.tac_set(txn, TacSet.LISTED)
        if self._txn is not None:
            log.info("now answering from generation %d (was %d)", snapshot.generation, previous)
            self._txn.abort()
        self._txn, self._snapshot_raw, self.snapshot = txn, raw, snapshot
        return snapshot

    def _evict(self, txn: lmdb.Transaction, previous: int, current: int) -> None:
        if current < previous:  # the store was replaced by an older one
            self._entries.clear()
            return
        for generation in range(previous + 1, current + 1):
            changed = self.store.changed_tacs(txn, generation)
            if changed is None:
                self._entries.clear()
                return
            for tac in changed:
                self._entries.pop(tac, None)

    def facts(self, batch: ImeiBatch, imsis: Sequence[str], home_mccs: frozenset[str]) -> U32:
        """The fact bits of every IMEI of a batch; `imsis` is empty or aligned with it."""
        reasons = batch.flags.copy()
        rows = np.flatnonzero(batch.valid)
        tacs = batch.tacs[rows].tolist()
        serials = batch.serials[rows].tolist()
        found = np.fromiter(self._serial_facts(tacs, serials), dtype=np.uint32, count=len(rows))
        found |= np.fromiter(self._tac_facts(tacs), dtype=np.uint32, count=len(rows))
        if imsis:
            for position in np.flatnonzero(found & _HAS_PAIRING).tolist():
                row = int(rows[position])
                body = f"{tacs[position]:08d}{serials[position]:06d}"
                if imsis[row] and self.store.is_paired(self._pinned, body, imsis[row]):
                    found[position] |= facts.PAIRED
            for position, row in enumerate(rows.tolist()):
                imsi = imsis[row]
                if imsi and imsi[:3] not in home_mccs:
                    found[position] |= facts.INBOUND_ROAMER
        reasons[rows] |= found & ~np.uint32(_HAS_PAIRING)
        return reasons

    def _tac_facts(self, tacs: list[int]) -> list[int]:
        allocated, barred = self._allocated, self._barred_tacs
        return [
            (0 if tac in allocated else facts.TAC_UNALLOCATED)
            | (facts.TAC_BARRED if tac in barred else 0)
            for tac in tacs
        ]

    def _serial_facts(self, tacs: list[int], serials: list[int]) -> list[int]:
        # The hot loop: one dict lookup and one or two bitmap probes per IMEI.
        entries = self._entries
        load = self._load
        listed = self._listed
        out = []
        for tac, serial in zip(tacs, serials, strict=True):
            # TACs on no list share one empty entry, so junk TACs cannot grow the cache.
            entry = entries.get(tac) or (load(tac) if tac in listed else _UNLISTED)
            bits = facts.REGISTERED if serial in entry.registered else facts.NOT_REGISTERED
            if serial in entry.exceptional:
                for bit, members in entry.others:
                    if serial in members:
                        bits |= bit
                if bits & facts.REGISTRATION_PROVISIONAL:
                    bits &= ~facts.NOT_REGISTERED
            out.append(bits)
        return out

    def _load(self, tac: int) -> _TacEntry:
        txn = self._pinned
        registered = self.store.serials(txn, SerialSet.REGISTERED, tac) or _EMPTY
        others = tuple(
            (bit, members)
            for which, bit in _SET_FACTS.items()
            if (members := self.store.serials(txn, which, tac)) is not None
        )
        exceptional = FrozenBitMap.union(*(m for _, m in others)) if others else _EMPTY
        entry = _TacEntry(registered, exceptional, others)
        self._entries[tac] = entry
        return entry

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
