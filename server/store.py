"""The registry store: one LMDB environment with every list, its roaring-bitmap index, its log.

Layout (named databases):
  meta        schema version, current snapshot (generation, commit time), rows per list
  imports     generation → JSON record of the import that committed it
  changes     generation → serialized roaring bitmap of the TACs whose serial sets it changed
  tac_sets    "allocated" / "barred" → serialized roaring bitmap of TAC numbers
  gsma        8-digit TAC → JSON GSMA model record
  pairs       14-digit IMEI body + ":" + IMSI → MSISDN
  <set>       per serial set (registered, provisional, stolen, barred, golden, paired):
              TAC as 4 big-endian bytes → serialized 32-bit roaring bitmap of 6-digit serials
  segments    TAC → its fact-table segment (see segments.py), derived from its serial sets

LMDB gives one writer and many reader processes over MVCC snapshots: an import is
one write transaction, readers keep their snapshot until it commits, and a
crash never loses a committed generation.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
from pyroaring import AbstractBitMap, BitMap, FrozenBitMap

from imeireg.server import facts
from imeireg.server.normalise import SERIAL_BITS
from imeireg.server.segments import HAS_PAIRING, UNLISTED, segments_of

SCHEMA_VERSION = 1
# Virtual address space only: LMDB grows the file as data is written.
MAP_SIZE = 1 << 40
_MAX_DBS = 16

_SCHEMA_KEY = b"schema_version"
_SNAPSHOT_KEY = b"snapshot"
_ROWS_PREFIX = b"rows:"
_SNAPSHOT = struct.Struct(">Qd")
_GENERATION = struct.Struct(">Q")
_TAC_KEY = struct.Struct(">I")
_COUNT = struct.Struct(">Q")
# Segments are rebuilt this many TACs at a time, so memory stays bounded at any scale.
_SEGMENT_TACS = 4096


class StoreError(Exception):
    """The store cannot be opened or used; the message is one line meant for an operator."""


class ListName(StrEnum):
    """The lists a registry keeps, named as on the command line."""

    GSMA_TAC = "gsma-tac"
    REGISTRATION = "registration"
    STOLEN = "stolen"
    BARRED = "barred"
    BARRED_TAC = "barred-tac"
    GOLDEN = "golden"
    PAIRING = "pairing"


class SerialSet(StrEnum):
    """Per-TAC roaring bitmaps of serials: the membership index of the IMEI-level lists."""

    REGISTERED = "registered"
    PROVISIONAL = "provisional"
    STOLEN = "stolen"
    BARRED = "barred"
    GOLDEN = "golden"
    PAIRED = "paired"  # IMEIs that have at least one pairing in `pairs`


class TacSet(StrEnum):
    """Roaring bitmaps of whole TACs."""

    ALLOCATED = "allocated"
    BARRED = "barred"


#: The fact bit of each serial set, for the fact table's segments.
SET_FACTS = {
    SerialSet.REGISTERED: facts.REGISTERED,
    SerialSet.PROVISIONAL: facts.REGISTRATION_PROVISIONAL,
    SerialSet.STOLEN: facts.STOLEN,
    SerialSet.BARRED: facts.BARRED,
    SerialSet.GOLDEN: facts.GOLDEN,
    SerialSet.PAIRED: HAS_PAIRING,
}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One committed state of the registry."""

    generation: int
    committed_at: float  # Unix time; 0.0 before the first import


@dataclass(frozen=True, slots=True)
class ImportRecord:
    """The log entry of one committed import."""

    list_name: str
    mode: str  # "full" or "delta"
    file_name: str
    sha256: str
    rows: int
    generation: int
    committed_at: float


def tac_key(tac: int) -> bytes:
    return _TAC_KEY.pack(tac)


def tac_from_key(key: bytes | memoryview) -> int:
    tac: int = _TAC_KEY.unpack(key)[0]
    return tac


def pair_key(body: str, imsi: str) -> bytes:
    return f"{body}:{imsi}".encode("ascii")


def _get(txn: lmdb.Transaction, key: bytes, db: Any) -> bytes | None:
    value = txn.get(key, db=db)
    return None if value is None else bytes(value)


def serialize(bitmap: AbstractBitMap) -> bytes:
    if isinstance(bitmap, BitMap):
        bitmap.run_optimize()
    return bytes(bitmap.serialize())


class Store:
    """An open registry store. Reads go through `read()`, imports through `write()`."""

    def __init__(self, env: lmdb.Environment, path: Path) -> None:
        self.env = env
        self.path = path
        self.meta = env.open_db(b"meta", create=False)
        self.imports = env.open_db(b"imports", create=False)
        self.changes = env.open_db(b"changes", create=False)
        self.tac_sets = env.open_db(b"tac_sets", create=False)
        self.gsma = env.open_db(b"gsma", create=False)
        self.pairs = env.open_db(b"pairs", create=False)
        self.segments = env.open_db(b"segments", create=False)
        self.serial_sets = {s: env.open_db(s.value.encode(), create=False) for s in SerialSet}

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = True) -> Store:
        """Open an existing store; a missing or foreign one is a one-line StoreError."""
        path = Path(path)
        if not (path / "data.mdb").is_file():
            raise StoreError(
                f"no registry store at {path} (create one with `imeireg import` or `imeireg demo`)"
            )
        try:
            env = lmdb.open(
                str(path), readonly=readonly, create=False, map_size=MAP_SIZE, max_dbs=_MAX_DBS
            )
        except lmdb.Error as error:
            raise StoreError(f"{path} is not a readable LMDB store: {error}") from error
        try:
            store = cls(env, path)
            with env.begin(db=store.meta) as txn:
                version = txn.get(_SCHEMA_KEY)
        except lmdb.Error as error:
            env.close()
            raise StoreError(f"{path} is not an imeireg registry store ({error})") from error
        if version is None or not version.isdigit():
            env.close()
            raise StoreError(f"{path} is not an imeireg registry store (no schema version)")
        if int(version) != SCHEMA_VERSION:
            env.close()
            raise StoreError(
                f"{path} has store schema {int(version)}; "
                f"this imeireg reads schema {SCHEMA_VERSION}"
            )
        return store

    @classmethod
    def create(cls, path: str | Path) -> Store:
        """Open a store for writing, creating an empty one (generation 0) if there is none."""
        path = Path(path)
        if not (path / "data.mdb").exists():
            path.mkdir(parents=True, exist_ok=True)
            env = lmdb.open(str(path), map_size=MAP_SIZE, max_dbs=_MAX_DBS)
            with env.begin(write=True) as txn:
                meta = env.open_db(b"meta", txn=txn)
                for name in (
                    "imports",
                    "changes",
                    "tac_sets",
                    "gsma",
                    "pairs",
                    "segments",
                    *SerialSet,
                ):
                    env.open_db(str(name).encode(), txn=txn)
                txn.put(_SCHEMA_KEY, str(SCHEMA_VERSION).encode(), db=meta)
                txn.put(_SNAPSHOT_KEY, _SNAPSHOT.pack(0, 0.0), db=meta)
            env.close()
        return cls.open(path, readonly=False)

    def close(self) -> None:
        self.env.close()

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        with self.env.begin() as txn:
            yield txn

    @contextmanager
    def write(self) -> Iterator[StoreWriter]:
        """One write transaction: committed as a new generation on success, aborted on any error."""
        try:
            with self.env.begin(write=True) as txn:
                yield StoreWriter(self, txn)
        except lmdb.MapFullError as error:
            raise StoreError(
                f"{self.path}: the store is full ({error}); nothing was changed"
            ) from error
        except (lmdb.ReadonlyError, lmdb.DiskError) as error:
            raise StoreError(f"{self.path}: cannot write ({error}); nothing was changed") from error

    # Reads, all within a caller's transaction so that they see one snapshot.

    def snapshot(self, txn: lmdb.Transaction) -> Snapshot:
        return Snapshot(*_SNAPSHOT.unpack(_get(txn, _SNAPSHOT_KEY, self.meta) or b""))

    def rows(self, txn: lmdb.Transaction) -> dict[ListName, int]:
        counts = {}
        for name in ListName:
            raw = _get(txn, _ROWS_PREFIX + name.value.encode(), self.meta)
            counts[name] = _COUNT.unpack(raw)[0] if raw else 0
        return counts

    def import_log(self, txn: lmdb.Transaction, limit: int | None = None) -> list[ImportRecord]:
        """Committed imports, newest first."""
        records = []
        cursor = txn.cursor(db=self.imports)
        if cursor.last():
            for _, value in cursor.iterprev():
                records.append(ImportRecord(**json.loads(bytes(value))))
                if limit is not None and len(records) >= limit:
                    break
        return records

    def changed_tacs(self, txn: lmdb.Transaction, generation: int) -> FrozenBitMap | None:
        """TACs whose serial sets `generation` changed; None when it is not recorded."""
        raw = _get(txn, _GENERATION.pack(generation), db=self.changes)
        return None if raw is None else FrozenBitMap.deserialize(raw)

    def tac_set(self, txn: lmdb.Transaction, which: TacSet) -> FrozenBitMap:
        raw = _get(txn, which.value.encode(), db=self.tac_sets)
        return FrozenBitMap() if raw is None else FrozenBitMap.deserialize(raw)

    def serials(self, txn: lmdb.Transaction, which: SerialSet, tac: int) -> FrozenBitMap | None:
        raw = _get(txn, tac_key(tac), db=self.serial_sets[which])
        return None if raw is None else FrozenBitMap.deserialize(raw)

    def segments_by_tac(
        self, txn: lmdb.Transaction, tacs: Iterable[int] | None = None
    ) -> dict[int, bytes]:
        """Stored fact-table segments: of every listed TAC, or of those of `tacs` listed."""
        if tacs is None:
            cursor = txn.cursor(db=self.segments)
            return {tac_from_key(key): bytes(value) for key, value in cursor.iternext()}
        return {
            tac: raw for tac in tacs if (raw := _get(txn, tac_key(tac), self.segments)) is not None
        }

    def gsma_record(self, txn: lmdb.Transaction, tac: str) -> dict[str, str] | None:
        raw = _get(txn, tac.encode("ascii"), db=self.gsma)
        return None if raw is None else dict(json.loads(raw))

    def is_paired(self, txn: lmdb.Transaction, body: str, imsi: str) -> bool:
        return txn.get(pair_key(body, imsi), db=self.pairs) is not None


class StoreWriter:
    """The write side of one import transaction."""

    def __init__(self, store: Store, txn: lmdb.Transaction) -> None:
        self.store = store
        self.txn = txn

    def replace_serial_set(
        self, which: SerialSet, bitmaps: Iterable[tuple[int, AbstractBitMap]]
    ) -> BitMap:
        """Replace a whole serial set with (TAC, serials) pairs in ascending TAC order.

        Returns the TACs whose bitmap changed (or may have). The pairs may be generated
        as they are written, so a set need never be in memory whole.
        """
        db = self.store.serial_sets[which]
        touched = BitMap(tac_from_key(key) for key in self.txn.cursor(db=db).iternext(values=False))
        self.txn.drop(db, delete=False)
        previous = -1
        for tac, bitmap in bitmaps:
            if tac <= previous:
                raise ValueError(f"TAC {tac} after {previous}: TACs must come in ascending order")
            previous = tac
            if bitmap:
                self.txn.put(tac_key(tac), serialize(bitmap), db=db, append=True)
                touched.add(tac)
        return touched

    def replace_tac_set(self, which: TacSet, tacs: AbstractBitMap) -> None:
        self.txn.put(which.value.encode(), serialize(tacs), db=self.store.tac_sets)

    def replace_records(self, db: Any, records: Mapping[bytes, bytes]) -> None:
        """Replace a whole record database (gsma or pairs) with `records`."""
        self.txn.drop(db, delete=False)
        for key in sorted(records):
            self.txn.put(key, records[key], db=db, append=True)

    def set_rows(self, name: ListName, rows: int) -> None:
        self.txn.put(_ROWS_PREFIX + name.value.encode(), _COUNT.pack(rows), db=self.store.meta)

    def current_rows(self, name: ListName) -> int:
        return self.store.rows(self.txn)[name]

    def commit_generation(
        self,
        name: ListName,
        *,
        mode: str,
        file_name: str,
        sha256: str,
        rows: int,
        touched: BitMap,
    ) -> ImportRecord:
        """Bump the generation and log the import; the caller's `with` block then commits."""
        generation = self.store.snapshot(self.txn).generation + 1
        now = time.time()
        record = ImportRecord(name.value, mode, file_name, sha256, rows, generation, now)
        self.txn.put(_SNAPSHOT_KEY, _SNAPSHOT.pack(generation, now), db=self.store.meta)
        key = _GENERATION.pack(generation)
        self.txn.put(key, json.dumps(asdict(record)).encode(), db=self.store.imports)
        self.txn.put(key, serialize(touched), db=self.store.changes)
        self._rebuild_segments(touched)
        return record

    def _rebuild_segments(self, tacs: BitMap) -> None:
        """Recompute the stored fact-table segment of every TAC whose serial sets changed."""
        ordered = tacs.to_array()
        for start in range(0, len(ordered), _SEGMENT_TACS):
            self._rebuild_segment_group(ordered[start : start + _SEGMENT_TACS].tolist())

    def _rebuild_segment_group(self, tacs: list[int]) -> None:
        tac_keys = [tac_key(tac) for tac in tacs]
        members = {}
        for which, bit in SET_FACTS.items():
            db = self.store.serial_sets[which]
            keys = [
                np.frombuffer(FrozenBitMap.deserialize(raw).to_array(), dtype=np.uint32).astype(
                    np.uint64
                )
                | np.uint64(tac << SERIAL_BITS)
                for tac, key in zip(tacs, tac_keys, strict=True)
                if (raw := _get(self.txn, key, db)) is not None
            ]
            members[bit] = np.concatenate(keys) if keys else np.empty(0, np.uint64)
        segments = segments_of(members, np.fromiter(tacs, dtype=np.uint64, count=len(tacs)))
        for key, segment in zip(tac_keys, segments.values(), strict=True):
            if segment == UNLISTED:
                self.txn.delete(key, db=self.store.segments)
            else:
                self.txn.put(key, segment, db=self.store.segments)
