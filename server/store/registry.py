"""The registry store: one LMDB environment with every list, its roaring-bitmap index, its log.

Layout (named databases):
  meta        schema version, current snapshot (generation, commit time), rows per list
  imports     generation → JSON record of the import that committed it
  changes     generation → serialized roaring bitmap of the TACs whose serial sets it changed
  tac_sets    "allocated" / "barred" → serialized roaring bitmap of TAC numbers
  gsma        8-digit TAC → GSMA model record: JSON, deflated with a preset dictionary
              sampled from the records (meta "gsma-dictionary"), 215 → about 25 bytes
  pairs       14-digit IMEI body + ":" + IMSI → MSISDN
  <set>       per serial set (registered, provisional, stolen, barred, golden, paired):
              TAC as 4 big-endian bytes → serialized 32-bit roaring bitmap of 6-digit serials
  segments    TAC → its fact-table segment (see segments.py), derived from its serial sets
  undo        generation + database + key → the value it replaced (the history that
              `rollback` replays backwards; kept for the last HISTORY_GENERATIONS)

LMDB gives one writer and many reader processes over MVCC snapshots: an import is
one write transaction, readers keep their snapshot until it commits, and a
crash never loses a committed generation.

Every write of an import goes through StoreWriter's named operations (replace a
serial set, add and remove IMEIs, replace or edit the GSMA records, the pairings, a
TAC set), which first copy the value they replace into `undo` under the new
generation (once per key). Rolling back to the state before generation G replays
those before-images from the newest generation down to G, as one more generation.
Bitmaps are compressed, so a generation's before-images cost about what the data
it replaced costs.

The writer keeps two derived sets in step with the records they index, so that no
importer has to: the allocated TACs are the TACs with a GSMA record, and the
`paired` serial set holds the IMEIs with at least one pairing.

Nothing outside this package sees a database handle or a transaction: `ReadView`
and `StoreWriter` speak of lists, TACs and IMEI keys. `ReadView.database_entries`
reads the layout above as it is, for tests that verify it.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import numpy.typing as npt
from pyroaring import AbstractBitMap, BitMap, FrozenBitMap

from imeireg.server.check import facts
from imeireg.server.check.fact_table import HAS_PAIRING, UNLISTED, FactTable, Segment
from imeireg.server.check.normalise import SERIAL_BITS, normalise_batch
from imeireg.server.check.sorted_arrays import sorted_unique
from imeireg.server.model import Changes, ImportRecord, ListName, SerialSet, Snapshot, TacSet
from imeireg.server.store.segments import Edit, patch_segments, segments_of

SCHEMA_VERSION = 2
# Virtual address space only: LMDB grows the file as data is written.
MAP_SIZE = 1 << 40
_MAX_DBS = 16
_DATABASES = (
    "meta", "imports", "changes", "tac_sets", "gsma", "pairs", "segments", "undo",
    *(which.value for which in SerialSet),
)  # fmt: skip

_SCHEMA_KEY = b"schema_version"
_SNAPSHOT_KEY = b"snapshot"
_ROWS_PREFIX = b"rows:"
GSMA_DICTIONARY = b"gsma-dictionary"
# Deflate primes its window with the whole preset dictionary for every record: 4 KiB
# costs about 16 µs a record and gives 23 bytes from 215; 32 KiB, 80 µs and 16 bytes.
_DICTIONARY_BYTES = 1 << 12
_SNAPSHOT = struct.Struct(">Qd")
_GENERATION = struct.Struct(">Q")
_TAC_KEY = struct.Struct(">I")
U64 = npt.NDArray[np.uint64]
U16 = npt.NDArray[np.uint16]
_EDITS = b"e"  # after a generation's key in `changes`: the keys it edited
# In `meta`: the whole fact table as a generation saved it.
_TABLE_GENERATION, _TABLE_KEYS, _TABLE_FACTS = b"table:generation", b"table:keys", b"table:facts"
_COUNT = struct.Struct(">Q")
# Segments are rebuilt this many TACs at a time, so memory stays bounded at any scale.
_SEGMENT_TACS = 4096
#: Generations whose before-images are kept, so that `rollback` can go back this far.
HISTORY_GENERATIONS = 100
# An undo value is a marker byte, then the value replaced when the key existed.
_ABSENT, _PRESENT = b"\x00", b"\x01"
_REPLACED = b"R"  # under the key (generation, database): the whole database was replaced


_NO_CHANGES = Changes()


class StoreError(Exception):
    """The store cannot be opened or used; the message is one line meant for an operator."""


#: The fact bit of each serial set, for the fact table's segments.
SET_FACTS = {
    SerialSet.REGISTERED: facts.REGISTERED,
    SerialSet.PROVISIONAL: facts.REGISTRATION_PROVISIONAL,
    SerialSet.STOLEN: facts.STOLEN,
    SerialSet.BARRED: facts.BARRED,
    SerialSet.GOLDEN: facts.GOLDEN,
    SerialSet.PAIRED: HAS_PAIRING,
}


def tac_key(tac: int) -> bytes:
    return _TAC_KEY.pack(tac)


def tac_from_key(key: bytes | memoryview) -> int:
    tac: int = _TAC_KEY.unpack(key)[0]
    return tac


def _pair_key(body: str, imsi: str) -> bytes:
    return f"{body}:{imsi}".encode("ascii")


def _gsma_key(tac: int) -> bytes:
    return f"{tac:08d}".encode("ascii")


def _gsma_json(record: Mapping[str, str]) -> bytes:
    return json.dumps(record).encode()


def _get(txn: lmdb.Transaction, key: bytes, db: Any) -> bytes | None:
    value = txn.get(key, db=db)
    return None if value is None else bytes(value)


def serialize(bitmap: AbstractBitMap) -> bytes:
    if isinstance(bitmap, BitMap):
        bitmap.run_optimize()
    return bytes(bitmap.serialize())


class _Databases:
    """The handles of an environment's named databases (see the layout above)."""

    def __init__(self, env: lmdb.Environment) -> None:
        self.by_name: dict[str, Any] = {
            name: env.open_db(name.encode(), create=False) for name in _DATABASES
        }
        self.meta = self.by_name["meta"]
        self.imports = self.by_name["imports"]
        self.changes = self.by_name["changes"]
        self.tac_sets = self.by_name["tac_sets"]
        self.gsma = self.by_name["gsma"]
        self.pairs = self.by_name["pairs"]
        self.segments = self.by_name["segments"]
        self.undo = self.by_name["undo"]
        self.serial_sets = {which: self.by_name[which.value] for which in SerialSet}
        #: The databases an import changes, by their one-byte code in `undo` keys.
        self.undoable: dict[int, Any] = dict(
            enumerate([self.meta, self.tac_sets, self.gsma, self.pairs, *self.serial_sets.values()])
        )
        self.undo_code = {id(db): code for code, db in self.undoable.items()}


class Store:
    """An open registry store. Reads go through `read()`, imports through `write()`.

    `env` is the LMDB environment, for this package's own modules alone (snapshots.py
    copies it); everything else reads and writes through the views and the writer.
    """

    def __init__(self, env: lmdb.Environment, path: Path) -> None:
        self.env = env
        self.path = path
        self._db = _Databases(env)

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
            purpose = "readable" if readonly else "writable"
            raise StoreError(f"{path} is not a {purpose} LMDB store: {error}") from error
        try:
            store = cls(env, path)
            with env.begin(db=store._db.meta) as txn:
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
                databases = {name: env.open_db(name.encode(), txn=txn) for name in _DATABASES}
                meta = databases["meta"]
                txn.put(_SCHEMA_KEY, str(SCHEMA_VERSION).encode(), db=meta)
                txn.put(_SNAPSHOT_KEY, _SNAPSHOT.pack(0, 0.0), db=meta)
            env.close()
        return cls.open(path, readonly=False)

    def close(self) -> None:
        self.env.close()

    def view(self) -> ReadView:
        """A view of the newest committed snapshot, open until closed."""
        return ReadView(self._db, self.env.begin(buffers=True))

    @contextmanager
    def read(self) -> Iterator[ReadView]:
        """A view of the newest committed snapshot, for the `with` block."""
        view = self.view()
        try:
            yield view
        finally:
            view.close()

    def current_snapshot(self) -> Snapshot:
        """The newest committed snapshot: one short read."""
        with self.read() as view:
            return view.snapshot()

    @contextmanager
    def write(self) -> Iterator[StoreWriter]:
        """One write transaction: committed as a new generation on success, aborted on any error."""
        try:
            with self.env.begin(write=True) as txn:
                yield StoreWriter(self._db, txn)
        except lmdb.MapFullError as error:
            raise StoreError(
                f"{self.path}: the store is full ({error}); nothing was changed"
            ) from error
        except lmdb.Error as error:  # read-only, disk full, file size limit, I/O error, ...
            # A write cut short by a full disk or a file size limit is a short write,
            # which LMDB reports as EIO.
            hint = (
                "; is the disk full?"
                if isinstance(error, lmdb.DiskError) or ("Input/output error" in str(error))
                else ""
            )
            raise StoreError(
                f"{self.path}: cannot write ({error}{hint}); nothing was changed"
            ) from error


class ReadView:
    """One snapshot of the registry, read through named operations.

    A read transaction, begun with buffers=True: records are read in place, as views of
    the store's pages, valid while the view is open. An open view keeps its snapshot
    whatever imports commit since, so every read through it agrees; close it when done.
    py-lmdb opens every environment with MDB_NOTLS, so a view begun on one thread may be
    used and closed on another. `txn` is the read transaction, for this package's own
    modules alone (snapshots.py copies the environment as of it).
    """

    def __init__(self, databases: _Databases, txn: lmdb.Transaction) -> None:
        self._db = databases
        self.txn = txn

    def close(self) -> None:
        self.txn.abort()

    def snapshot(self) -> Snapshot:
        return Snapshot(*_SNAPSHOT.unpack(_get(self.txn, _SNAPSHOT_KEY, self._db.meta) or b""))

    def rows(self) -> dict[ListName, int]:
        counts = {}
        for name in ListName:
            raw = _get(self.txn, _ROWS_PREFIX + name.value.encode(), self._db.meta)
            counts[name] = _COUNT.unpack(raw)[0] if raw else 0
        return counts

    def import_log(self, limit: int | None = None) -> list[ImportRecord]:
        """Committed imports, newest first."""
        records = []
        cursor = self.txn.cursor(db=self._db.imports)
        if cursor.last():
            for _, value in cursor.iterprev():
                records.append(ImportRecord(**json.loads(bytes(value))))
                if limit is not None and len(records) >= limit:
                    break
        return records

    def history_kept(self) -> int:
        """The oldest generation whose before-images are kept (0 when there are none)."""
        cursor = self.txn.cursor(db=self._db.undo)
        if not cursor.first():
            return 0
        generation: int = _GENERATION.unpack(bytes(cursor.key()[: _GENERATION.size]))[0]
        return generation

    def changed_tacs(self, generation: int) -> FrozenBitMap | None:
        """TACs whose serial sets `generation` changed; None when it is not recorded."""
        raw = _get(self.txn, _GENERATION.pack(generation), db=self._db.changes)
        return None if raw is None else FrozenBitMap.deserialize(raw)

    def saved_table(self) -> tuple[int, U64, U16] | None:
        """The fact table as a generation saved it, and that generation; None if none did.

        The arrays are views of the store's
        pages, valid while the view is open.
        """
        generation = _get(self.txn, _TABLE_GENERATION, self._db.meta)
        if generation is None:
            return None
        keys: U64 = np.frombuffer(self.txn.get(_TABLE_KEYS, b"", db=self._db.meta), dtype="<u8")
        found: U16 = np.frombuffer(self.txn.get(_TABLE_FACTS, b"", db=self._db.meta), dtype="<u2")
        saved: int = _GENERATION.unpack(generation)[0]
        return saved, keys, found

    def saved_table_generation(self) -> int:
        """The generation whose fact table is saved; 0 when none is."""
        raw = _get(self.txn, _TABLE_GENERATION, self._db.meta)
        return 0 if raw is None else int(_GENERATION.unpack(raw)[0])

    def edits(self, generation: int) -> tuple[U64, U16] | None:
        """The keys `generation` edited and their new segment facts, when that is all it
        changed (a delta of an IMEI list); None otherwise."""
        raw = _get(self.txn, _GENERATION.pack(generation) + _EDITS, db=self._db.changes)
        if raw is None:
            return None
        count = len(raw) // 10
        return (
            np.frombuffer(raw, dtype="<u8", count=count).astype(np.uint64),
            np.frombuffer(raw, dtype="<u2", offset=8 * count).astype(np.uint16),
        )

    def tac_set(self, which: TacSet) -> FrozenBitMap:
        raw = _get(self.txn, which.value.encode(), db=self._db.tac_sets)
        return FrozenBitMap() if raw is None else FrozenBitMap.deserialize(raw)

    def serials(self, which: SerialSet, tac: int) -> FrozenBitMap | None:
        raw = _get(self.txn, tac_key(tac), db=self._db.serial_sets[which])
        return None if raw is None else FrozenBitMap.deserialize(raw)

    def segments_by_tac(self, tacs: Iterable[int] | None = None) -> dict[int, Segment]:
        """Stored fact-table segments: of every listed TAC, or of those of `tacs` listed.

        Every listed TAC's segment is a view of the store's pages, valid while the view is
        open: not copied.
        """
        if tacs is None:
            cursor = self.txn.cursor(db=self._db.segments)
            return {tac_from_key(key): value for key, value in cursor.iternext()}
        return {
            tac: raw
            for tac in tacs
            if (raw := _get(self.txn, tac_key(tac), self._db.segments)) is not None
        }

    def gsma_record(self, tac: str) -> dict[str, str] | None:
        raw = _get(self.txn, tac.encode("ascii"), db=self._db.gsma)
        return None if raw is None else dict(json.loads(self.gsma_json(raw)))

    def gsma_json(self, stored: bytes) -> bytes:
        """A GSMA record's JSON, as stored: deflated, or JSON as is (which starts with "{",
        a byte no deflate stream starts with)."""
        if stored[:1] == b"{":
            return stored
        dictionary = _get(self.txn, GSMA_DICTIONARY, db=self._db.meta) or b""
        inflate = zlib.decompressobj(wbits=-zlib.MAX_WBITS, zdict=dictionary)
        return inflate.decompress(stored) + inflate.flush()

    def is_paired(self, body: str, imsi: str) -> bool:
        """Whether the pairing list pairs the IMEI whose 14-digit body is `body` with `imsi`."""
        return self.txn.get(_pair_key(body, imsi), db=self._db.pairs) is not None

    def has_pairings(self, body: str) -> bool:
        """Whether the IMEI whose 14-digit body is `body` has any pairing."""
        prefix = _pair_key(body, "")
        cursor = self.txn.cursor(db=self._db.pairs)
        return bool(cursor.set_range(prefix)) and bytes(cursor.key()).startswith(prefix)

    def database_names(self) -> list[str]:
        """The named databases of the environment, as its main database lists them."""
        return [bytes(name).decode() for name in self.txn.cursor().iternext(values=False)]

    def database_entries(self, name: str) -> Iterator[tuple[bytes, bytes]]:
        """Every key and value of the named database (see the layout above), in key order.

        For verifying the layout itself, as tests do; everything else reads through the
        named reads above, which know what the bytes mean.
        """
        for key, value in self.txn.cursor(db=self._db.by_name[name]).iternext():
            yield bytes(key), bytes(value)


class StoreWriter:
    """The write side of one import transaction: the next generation, with its before-images.

    Every change goes through `_put`, `_delete` or `_replace_db`, which first copy what
    they replace into `undo`; the named operations below are built on them. The writer
    also gathers which TACs the generation changed: whose segments must be recomputed,
    and which the serving index must re-read.
    """

    def __init__(self, databases: _Databases, txn: lmdb.Transaction) -> None:
        self._db = databases
        self._txn = txn
        #: Reads within this transaction: they see its own writes.
        self.view = ReadView(databases, txn)
        self._generation = self.view.snapshot().generation + 1
        self._undo_prefix = _GENERATION.pack(self._generation)
        # Databases this generation replaced whole: their every old entry is kept already.
        self._replaced: set[int] = set()
        # TACs whose serial sets were replaced: their segments are recomputed at commit.
        self._stale_segments = BitMap()
        # TACs whose facts may have changed in any way: what a serving index re-reads.
        self._changed = BitMap()
        # The edited keys and their new segment facts, while every change is one of those.
        self._edits: list[tuple[U64, U16]] = []
        self._whole_tacs_changed = False

    # Writes that keep their before-image.

    def _put(self, db: Any, key: bytes, value: bytes) -> None:
        self._remember(db, key)
        self._txn.put(key, value, db=db)

    def _delete(self, db: Any, key: bytes) -> None:
        self._remember(db, key)
        self._txn.delete(key, db=db)

    def _undo_key(self, db: Any, key: bytes = b"") -> bytes:
        return self._undo_prefix + bytes((self._db.undo_code[id(db)],)) + key

    def _remember(self, db: Any, key: bytes) -> None:
        if self._db.undo_code[id(db)] in self._replaced:
            return  # a key without a before-image was not in the database replaced
        undo_key = self._undo_key(db, key)
        if self._txn.get(undo_key, db=self._db.undo) is None:
            old = self._txn.get(key, db=db)
            before = _ABSENT if old is None else _PRESENT + bytes(old)
            self._txn.put(undo_key, before, db=self._db.undo)

    def _replace_db(self, db: Any) -> None:
        """Empty `db` for a full replacement, keeping every entry it had as a before-image."""
        marker = self._undo_key(db)
        undo = self._db.undo
        if self._db.undo_code[id(db)] not in self._replaced:
            self._replaced.add(self._db.undo_code[id(db)])
            for key, value in self._txn.cursor(db=db).iternext():
                undo_key = marker + bytes(key)
                if self._txn.get(undo_key, db=undo) is None:
                    self._txn.put(undo_key, _PRESENT + bytes(value), db=undo)
            self._txn.put(marker, _REPLACED, db=undo)
        self._txn.drop(db, delete=False)

    # Full replacements.

    def replace_serial_set(
        self, which: SerialSet, bitmaps: Iterable[tuple[int, AbstractBitMap]]
    ) -> Changes:
        """Replace a whole serial set with (TAC, serials) pairs in ascending TAC order.

        The pairs may be generated as they are written, so a set need never be in
        memory whole. Returns how many serials joined and left the set.
        """
        db = self._db.serial_sets[which]
        old = {tac_from_key(key): bytes(value) for key, value in self._txn.cursor(db=db).iternext()}
        touched = BitMap(old)
        removed = sum(len(FrozenBitMap.deserialize(raw)) for raw in old.values())
        added = 0
        self._replace_db(db)
        previous = -1
        for tac, bitmap in bitmaps:
            if tac <= previous:
                raise ValueError(f"TAC {tac} after {previous}: TACs must come in ascending order")
            previous = tac
            if bitmap:
                self._txn.put(tac_key(tac), serialize(bitmap), db=db, append=True)
                touched.add(tac)
                kept = (
                    bitmap.intersection_cardinality(FrozenBitMap.deserialize(old[tac]))
                    if tac in old
                    else 0
                )
                added += len(bitmap) - kept
                removed -= kept
        self._stale_segments |= touched
        self._changed |= touched
        self._whole_tacs_changed = True
        return Changes(added, removed)

    def replace_tac_set(self, which: TacSet, tacs: AbstractBitMap) -> Changes:
        old = self.view.tac_set(which)
        self._put(self._db.tac_sets, which.value.encode(), serialize(tacs))
        self._changed |= old ^ tacs
        self._whole_tacs_changed |= bool(old ^ tacs)
        return Changes(len(tacs - old), len(old - tacs))

    def replace_gsma_records(self, records: Mapping[int, Mapping[str, str]]) -> Changes:
        """Replace the GSMA TAC database: every model record (TAC → fields), deflated with
        a new dictionary, and the allocated TACs, which are theirs. Returns how the
        records changed."""
        self.replace_tac_set(TacSet.ALLOCATED, BitMap(records))
        old = {
            bytes(key): self.view.gsma_json(bytes(value))
            for key, value in self._txn.cursor(db=self._db.gsma).iternext()
        }
        new = {_gsma_key(tac): _gsma_json(record) for tac, record in records.items()}
        dictionary = _sampled_dictionary([new[key] for key in sorted(new)])
        self._put(self._db.meta, GSMA_DICTIONARY, dictionary)
        self._write_records(
            self._db.gsma, {key: _deflated(record, dictionary) for key, record in new.items()}
        )
        return _changes(old, new)

    def replace_pairings(self, pairings: Mapping[tuple[str, str], str]) -> Changes:
        """Replace the pairing list: (14-digit IMEI body, IMSI) → MSISDN, and the paired
        IMEIs with it. Returns how the pairings changed."""
        old = {
            bytes(key): bytes(value)
            for key, value in self._txn.cursor(db=self._db.pairs).iternext()
        }
        new = {
            _pair_key(body, imsi): msisdn.encode("ascii")
            for (body, imsi), msisdn in pairings.items()
        }
        self._write_records(self._db.pairs, new)
        paired = sorted_unique(_keys_of({body for body, _ in pairings}))
        self.replace_serial_set(SerialSet.PAIRED, bitmaps_by_tac(paired))
        return _changes(old, new)

    def _write_records(self, db: Any, records: Mapping[bytes, bytes]) -> None:
        self._replace_db(db)
        for key in sorted(records):
            self._txn.put(key, records[key], db=db, append=True)

    # Changes in place, for delta imports.

    def update_tac_set(self, which: TacSet, add: AbstractBitMap, remove: AbstractBitMap) -> None:
        old = self.view.tac_set(which)
        self.replace_tac_set(which, (old | add) - remove)

    def update_gsma_records(
        self, put: Mapping[int, Mapping[str, str]], remove: Iterable[int]
    ) -> None:
        """Add or replace the model records of `put`, delete those of `remove`, and allocate
        or withdraw their TACs. Records are deflated with the store's dictionary."""
        removed = BitMap(remove)
        dictionary = _get(self._txn, GSMA_DICTIONARY, db=self._db.meta)
        for tac, record in put.items():
            stored = _gsma_json(record)
            self._put(
                self._db.gsma,
                _gsma_key(tac),
                stored if dictionary is None else _deflated(stored, dictionary),
            )
        for tac in removed:
            if self._txn.get(_gsma_key(tac), db=self._db.gsma) is not None:
                self._delete(self._db.gsma, _gsma_key(tac))
        self.update_tac_set(TacSet.ALLOCATED, BitMap(put), removed)

    def update_pairings(
        self, put: Mapping[tuple[str, str], str], remove: Iterable[tuple[str, str]]
    ) -> None:
        """Add or replace the pairings of `put` ((IMEI body, IMSI) → MSISDN), delete those of
        `remove`; the IMEIs named join or leave the paired set as they have pairings left."""
        bodies = set()
        for (body, imsi), msisdn in put.items():
            self._put(self._db.pairs, _pair_key(body, imsi), msisdn.encode("ascii"))
            bodies.add(body)
        for body, imsi in remove:
            key = _pair_key(body, imsi)
            if self._txn.get(key, db=self._db.pairs) is not None:
                self._delete(self._db.pairs, key)
            bodies.add(body)
        paired = {body for body in bodies if self.view.has_pairings(body)}
        self.update_serial_set_members(
            {SerialSet.PAIRED: (_keys_of(paired), _keys_of(bodies - paired))}
        )

    def update_serial_set_members(self, changes: Mapping[SerialSet, tuple[U64, U64]]) -> None:
        """Add and remove IMEI keys (sorted, distinct arrays) of serial sets, in place.

        The stored segments of the TACs concerned are patched rather than recomputed:
        a delta costs what it changes, not what its TACs hold.
        """
        edits = []
        for which, (added, removed) in changes.items():
            db = self._db.serial_sets[which]
            for tac, add, remove in _by_tac(added, removed):
                key = tac_key(tac)
                raw = _get(self._txn, key, db)
                bitmap = BitMap() if raw is None else BitMap.deserialize(raw)
                bitmap |= add
                bitmap -= remove
                if bitmap:
                    self._put(db, key, serialize(bitmap))
                elif raw is not None:
                    self._delete(db, key)
            edits.append(Edit(SET_FACTS[which], added, removed))
        tacs = BitMap()
        for edit in edits:
            tacs |= _tacs_of(edit.added) | _tacs_of(edit.removed)
        old = self.view.segments_by_tac(tacs)
        patch = patch_segments(old, np.array(tacs.to_array(), dtype=np.uint32), edits)
        for tac, segment in patch.segments.items():
            self._put_segment(tac, segment)
        self._changed |= tacs
        self._edits.append((patch.keys, patch.facts))

    def set_rows(self, name: ListName, rows: int) -> None:
        self._put(self._db.meta, _ROWS_PREFIX + name.value.encode(), _COUNT.pack(rows))

    def current_rows(self, name: ListName) -> int:
        return self.view.rows()[name]

    # Rollback.

    def roll_back(self, before: int) -> int:
        """Return every database an import changes to its state before generation `before`.

        Replays the kept before-images from the newest generation down to `before`;
        returns how many it replayed. The caller commits this as a new generation.
        """
        current = self._generation - 1
        if not 1 <= before <= current:
            raise StoreError(f"no generation {before} to roll back: generations are 1 to {current}")
        kept = self.view.history_kept()
        if not kept or before < kept:
            raise StoreError(
                f"generation {before} is older than the kept history "
                f"(the last {HISTORY_GENERATIONS} generations"
                + (f", from {kept} on)" if kept else "; none kept)")
            )
        replayed = 0
        self._whole_tacs_changed = True
        for generation in range(current, before - 1, -1):
            replayed += self._replay(generation)
            tacs = self.view.changed_tacs(generation)
            if tacs is not None:
                self._stale_segments |= tacs
                self._changed |= tacs
        return replayed

    def _replay(self, generation: int) -> int:
        prefix = _GENERATION.pack(generation)
        images: list[tuple[int, bytes, bytes]] = []
        cursor = self._txn.cursor(db=self._db.undo)
        if cursor.set_range(prefix):
            for raw_key, value in cursor.iternext():
                key = bytes(raw_key)
                if not key.startswith(prefix):
                    break
                images.append((key[len(prefix)], key[len(prefix) + 1 :], bytes(value)))
        replaced = {code for code, key, _ in images if not key}
        for code in replaced:
            self._replace_db(self._db.undoable[code])
        for code, key, before in images:
            db = self._db.undoable[code]
            if not key:
                continue
            if code in replaced:
                if before != _ABSENT:
                    self._txn.put(key, before[1:], db=db)
            elif before == _ABSENT:
                if self._txn.get(key, db=db) is not None:
                    self._delete(db, key)
            else:
                self._put(db, key, before[1:])
        return len(images) - len(replaced)

    # Commit.

    def commit_generation(
        self,
        name: ListName | None,
        *,
        mode: str,
        file_name: str,
        sha256: str,
        rows: int,
        changes: Changes = _NO_CHANGES,
        rolled_back_to: int = 0,
    ) -> ImportRecord:
        """Log the import as the next generation; the caller's `with` block then commits."""
        generation = self._generation
        now = time.time()
        record = ImportRecord(
            name.value if name else "",
            mode,
            file_name,
            sha256,
            rows,
            generation,
            now,
            changes.added,
            changes.removed,
            changes.updated,
            rolled_back_to,
        )
        self._txn.put(_SNAPSHOT_KEY, _SNAPSHOT.pack(generation, now), db=self._db.meta)
        key = _GENERATION.pack(generation)
        self._txn.put(key, json.dumps(asdict(record)).encode(), db=self._db.imports)
        self._txn.put(key, serialize(self._changed), db=self._db.changes)
        if self._edits and not self._whole_tacs_changed:
            self._txn.put(key + _EDITS, _pack_edits(self._edits), db=self._db.changes)
        self._rebuild_segments(self._stale_segments)
        if self._whole_tacs_changed:
            self._save_table(generation)
        self._forget_before(generation - HISTORY_GENERATIONS + 1)
        return record

    def _save_table(self, generation: int) -> None:
        """Store the whole fact table as of `generation`, for servers to map at start.

        Written by generations that replace lists or change TAC sets, which change much
        of the table; a server catches up on the deltas since from their edits.
        """
        table = FactTable.assemble(
            self.view.segments_by_tac(),
            self.view.tac_set(TacSet.ALLOCATED),
            self.view.tac_set(TacSet.BARRED),
        )
        meta = self._db.meta
        self._txn.put(_TABLE_KEYS, table.keys.astype("<u8", copy=False).data, db=meta)
        self._txn.put(_TABLE_FACTS, table.facts.astype("<u2", copy=False).data, db=meta)
        self._txn.put(_TABLE_GENERATION, _GENERATION.pack(generation), db=meta)

    def _forget_before(self, generation: int) -> None:
        """Drop the before-images of generations older than `generation`."""
        if generation <= 1:
            return
        end = _GENERATION.pack(generation)
        cursor = self._txn.cursor(db=self._db.undo)
        if not cursor.first():
            return
        while bytes(cursor.key()) < end:
            if not cursor.delete():
                break

    def _put_segment(self, tac: int, segment: bytes) -> None:
        if segment == UNLISTED:
            self._txn.delete(tac_key(tac), db=self._db.segments)
        else:
            self._txn.put(tac_key(tac), segment, db=self._db.segments)

    def _rebuild_segments(self, tacs: BitMap) -> None:
        """Recompute the stored fact-table segment of every TAC whose serial sets changed."""
        ordered = tacs.to_array()
        for start in range(0, len(ordered), _SEGMENT_TACS):
            self._rebuild_segment_group(ordered[start : start + _SEGMENT_TACS].tolist())

    def _rebuild_segment_group(self, tacs: list[int]) -> None:
        tac_keys = [tac_key(tac) for tac in tacs]
        members = {}
        for which, bit in SET_FACTS.items():
            db = self._db.serial_sets[which]
            keys = [
                np.frombuffer(FrozenBitMap.deserialize(raw).to_array(), dtype=np.uint32).astype(
                    np.uint64
                )
                | np.uint64(tac << SERIAL_BITS)
                for tac, key in zip(tacs, tac_keys, strict=True)
                if (raw := _get(self._txn, key, db)) is not None
            ]
            members[bit] = np.concatenate(keys) if keys else np.empty(0, np.uint64)
        segments = segments_of(members, np.fromiter(tacs, dtype=np.uint64, count=len(tacs)))
        for tac, segment in zip(tacs, segments.values(), strict=True):
            self._put_segment(tac, segment)


def bitmaps_by_tac(keys: U64) -> Iterator[tuple[int, BitMap]]:
    """Group sorted, distinct IMEI keys (tac << 20 | serial) into a bitmap of serials per TAC,
    as `StoreWriter.replace_serial_set` takes them."""
    if not len(keys):
        return
    tacs = (keys >> np.uint64(SERIAL_BITS)).astype(np.uint32)
    serials = (keys & np.uint64((1 << SERIAL_BITS) - 1)).astype(np.uint32)
    starts = np.flatnonzero(np.r_[True, tacs[1:] != tacs[:-1]])
    ends = np.r_[starts[1:], len(tacs)]
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        yield int(tacs[start]), BitMap(array("I", serials[start:end].tobytes()))


def _keys_of(bodies: Iterable[str]) -> U64:
    """The IMEI keys of 14-digit bodies, sorted."""
    ordered = sorted(bodies)
    return normalise_batch(ordered).keys if ordered else np.empty(0, np.uint64)


def merge_edits(edits: list[tuple[U64, U16]]) -> tuple[U64, U16]:
    """Edits made in order (keys and their facts), as one: each key with its last facts."""
    if len(edits) == 1:
        return edits[0]
    keys = np.concatenate([k for k, _ in edits])
    found = np.concatenate([f for _, f in edits])
    order = np.argsort(keys, kind="stable")
    keys, found = keys[order], found[order]
    last = np.r_[keys[1:] != keys[:-1], True]
    return keys[last], found[last]


def _pack_edits(edits: list[tuple[U64, U16]]) -> bytes:
    keys, found = merge_edits(edits)
    return keys.astype("<u8").tobytes() + found.astype("<u2").tobytes()


def _bitmap(values: npt.NDArray[np.uint64]) -> BitMap:
    return BitMap(array("I", values.astype(np.uint32).tobytes()))


def _tacs_of(keys: U64) -> BitMap:
    return _bitmap(sorted_unique(keys >> np.uint64(SERIAL_BITS)))


def _by_tac(added: U64, removed: U64) -> Iterator[tuple[int, BitMap, BitMap]]:
    """(TAC, serials added, serials removed) for each TAC of two sorted key arrays."""
    shift, mask = np.uint64(SERIAL_BITS), np.uint64((1 << SERIAL_BITS) - 1)
    tacs = np.union1d(added >> shift, removed >> shift)
    bounds = (tacs << shift, (tacs + np.uint64(1)) << shift)
    add_at = np.searchsorted(added, bounds[0]), np.searchsorted(added, bounds[1])
    remove_at = np.searchsorted(removed, bounds[0]), np.searchsorted(removed, bounds[1])
    empty = BitMap()
    for tac, add_from, add_to, remove_from, remove_to in zip(
        tacs.tolist(), *(bound.tolist() for bound in (*add_at, *remove_at)), strict=True
    ):
        yield (
            tac,
            _bitmap(added[add_from:add_to] & mask) if add_to > add_from else empty,
            _bitmap(removed[remove_from:remove_to] & mask) if remove_to > remove_from else empty,
        )


def _changes(old: Mapping[bytes, bytes], new: Mapping[bytes, bytes]) -> Changes:
    return Changes(
        added=sum(key not in old for key in new),
        removed=sum(key not in new for key in old),
        updated=sum(old[key] != value for key, value in new.items() if key in old),
    )


def _sampled_dictionary(records: Sequence[bytes]) -> bytes:
    """A preset dictionary for deflating `records`: records taken evenly through them.

    The records of a GSMA database repeat their field names, makers, brands, device
    types and band lists; deflate finds those in the dictionary and writes a short
    back-reference instead.
    """
    if not records:
        return b""
    average = sum(map(len, records[:: max(1, len(records) // 1000)])) / min(len(records), 1000)
    wanted = max(1, int(_DICTIONARY_BYTES // max(average, 1.0)))
    step = max(1, len(records) // wanted)
    return b"".join(records[::step])[-_DICTIONARY_BYTES:]


def _deflated(record: bytes, dictionary: bytes) -> bytes:
    deflate = zlib.compressobj(
        zlib.Z_BEST_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS, zdict=dictionary
    )
    return deflate.compress(record) + deflate.flush()
