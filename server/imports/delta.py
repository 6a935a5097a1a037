"""Delta imports: DIRBS delta files add, remove or update entries of one list in place.

A delta file has its list's columns plus `change_type` (add | remove | update).
It is read and validated whole, then checked against the registry in the write
transaction that applies it, so a rejected file changes nothing:

- an `add` of an entry the list already has is an error, unless `allow_existing_adds`
  (the add then sets the entry, like an update);
- a `remove` or `update` of an entry the list lacks is an error, unless `allow_missing`
  (a remove is then a no-op and an update adds);
- a key given two different change types in one file is an error, unless
  `allow_conflicts` (the file's last row for the key then wins); a key repeated with
  one change type is fine, and its last row wins.

Each list keys its entries as its full import does: the IMEI (registration, stolen,
barred, golden), the TAC (gsma-tac, barred-tac) or the IMEI and IMSI (pairing).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pyroaring import BitMap

from imeireg.server.check.normalise import SERIAL_BITS
from imeireg.server.imports.full import (
    COMPLETE_STATUSES,
    GsmaRows,
    ImeiColumn,
    ImportRejected,
    RowErrors,
    Rows,
    list_format,
    pair_body,
    pairing_problem,
    parse_tac,
    stolen_status,
    valid_keys,
    well_formed,
)
from imeireg.server.imports.sources import Header, open_rows, read_columns, read_header, sha256_of
from imeireg.server.model import Changes, ImportRecord, ListName, SerialSet, TacSet
from imeireg.server.store import ReadView, Store, StoreWriter, pair_key

CHANGE_COLUMN = "change_type"
_CHANGE_NAMES = pa.array(["add", "remove", "update"])  # in Change's order
_BLOCKING = pa.array(["", "blacklist"])
# A reporting date as the row reader accepts it: YYYYMMDD or YYYY-MM-DD, or none.
_DAY = r"(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])"
_DATE = rf"^([0-9]{{4}}{_DAY}|[0-9]{{4}}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01]))?$"
U64 = npt.NDArray[np.uint64]
Key = int | bytes


class Change(IntEnum):
    ADD = 0
    REMOVE = 1
    UPDATE = 2


@dataclass(frozen=True)
class DeltaChecks:
    """Which of the three delta checks to relax (all enforced by default)."""

    allow_existing_adds: bool = False
    allow_missing: bool = False
    allow_conflicts: bool = False


@dataclass(frozen=True, slots=True)
class Entry:
    """The last row of a delta file for one key."""

    line: int
    change: Change
    key: Key
    value: object  # the list's payload: a status, a model record, an MSISDN


class _Delta(Protocol):
    """How one list reads its delta rows and applies them."""

    def read(self, header: Header, rows: Rows, errors: RowErrors) -> list[Entry]:
        """The valid rows, in file order; the invalid ones are errors."""
        ...

    def existing(self, view: ReadView, keys: Sequence[Key]) -> list[bool]:
        """Whether the list has each key in the transaction's snapshot."""
        ...

    def apply(
        self, writer: StoreWriter, entries: Sequence[Entry], existed: Sequence[bool]
    ) -> Changes:
        """Write the entries into the list; count what they added, removed and updated."""
        ...

    def describe(self, key: Key) -> str: ...

    def read_fast(self, path: Path, delimiter: str, header: Header) -> list[Entry] | None:
        """All the rows, read in column blocks, when every one is valid; else None.

        Their line numbers assume one line per row: only an error needs them, and
        an error has the file read again row by row.
        """
        ...


def import_delta(
    store: Store,
    list_name: ListName,
    path: Path,
    *,
    checks: DeltaChecks = DeltaChecks(),
    show_progress: bool = False,
) -> ImportRecord:
    """Apply the delta file `path` to `list_name` as one new generation, or change nothing."""
    columns, delimiter = list_format(list_name)
    columns = (*columns, CHANGE_COLUMN)
    header = read_header(path, delimiter)
    if missing := header.missing(columns):
        raise ImportRejected(
            path, [f"{path}:1: header lacks column(s) {', '.join(missing)}"], total=1
        )
    delta = DELTAS[list_name]()
    with ThreadPoolExecutor(max_workers=1) as hasher:
        digest = hasher.submit(sha256_of, path)
        rows = delta.read_fast(path, delimiter, header)
        try:
            return _apply(store, list_name, path, delta, rows, digest=digest, checks=checks)
        except _ExactLinesNeeded:
            pass
        errors = RowErrors(path)
        with open_rows(path, delimiter, show_progress=show_progress) as (header, reader):
            rows = delta.read(header, reader, errors)
        return _apply(
            store, list_name, path, delta, rows, digest=digest, checks=checks, errors=errors
        )


class _ExactLinesNeeded(Exception):
    """A file read in column blocks, without line numbers, has an error to report."""


def _apply(
    store: Store,
    list_name: ListName,
    path: Path,
    delta: _Delta,
    rows: list[Entry] | None,
    *,
    digest: Future[str],
    checks: DeltaChecks,
    errors: RowErrors | None = None,
) -> ImportRecord:
    """Check the rows read and apply them as one generation, or reject the file.

    Without `errors`, the rows come from the fast reader: whatever is wrong with
    them raises _ExactLinesNeeded, for the row reader to report with line numbers.
    """
    if rows is None:
        raise _ExactLinesNeeded
    found = errors if errors is not None else RowErrors(path)
    entries = _last_per_key(rows, checks, found, delta)
    if found.total:  # report the file's other errors too, then reject it
        if errors is None:
            raise _ExactLinesNeeded
        with store.read() as view:
            _check_existing(delta, view, entries, checks=checks, errors=found)
        found.raise_if_any()
    sha256 = digest.result()
    with store.write() as writer:
        existed = _check_existing(delta, writer.view, entries, checks=checks, errors=found)
        if found.total and errors is None:
            raise _ExactLinesNeeded
        found.raise_if_any()
        changes = delta.apply(writer, entries, existed)
        total = writer.current_rows(list_name) + changes.added - changes.removed
        writer.set_rows(list_name, max(total, 0))
        return writer.commit_generation(
            list_name,
            mode="delta",
            file_name=path.name,
            sha256=sha256,
            rows=len(entries),
            changes=changes,
        )


def _check_existing(
    delta: _Delta,
    view: ReadView,
    entries: list[Entry],
    *,
    checks: DeltaChecks,
    errors: RowErrors,
) -> list[bool]:
    """Whether the list has each entry's key; the entries that contradict it are errors."""
    existed = delta.existing(view, [entry.key for entry in entries])
    for entry, present in zip(entries, existed, strict=True):
        if present and entry.change is Change.ADD and not checks.allow_existing_adds:
            errors.add(
                entry.line, f"add of {delta.describe(entry.key)}, which the list already has"
            )
        elif not present and entry.change is not Change.ADD and not checks.allow_missing:
            errors.add(
                entry.line,
                f"{entry.change.name.lower()} of {delta.describe(entry.key)}, "
                "which the list does not have",
            )
    return existed


def _last_per_key(
    rows: list[Entry], checks: DeltaChecks, errors: RowErrors, delta: _Delta
) -> list[Entry]:
    """Each key's last row, in key order; two change types for one key are an error."""
    last: dict[Key, Entry] = {}
    for entry in rows:
        earlier = last.get(entry.key)
        if (
            earlier is not None
            and earlier.change is not entry.change
            and not checks.allow_conflicts
        ):
            errors.add(
                entry.line,
                f"{entry.change.name.lower()} of {delta.describe(entry.key)}, "
                f"which line {earlier.line} gives as {earlier.change.name.lower()}",
            )
            continue
        last[entry.key] = entry
    return [last[key] for key in sorted(last)]


def _normalised(column: pa.Array) -> pa.Array:
    return pc.utf8_lower(pc.utf8_trim_whitespace(column))


def _change_of(text: str) -> Change | None:
    try:
        return Change[text.strip().upper()]
    except KeyError:
        return None


def _bad_change(text: str) -> str:
    return f"{CHANGE_COLUMN} {text!r} is not one of add, remove, update"


class _ImeiDelta:
    """A list of IMEIs kept in serial sets: registration, stolen, barred, golden.

    `value` is the serial set an add or update puts the IMEI in (None: in none, e.g. a
    stolen report whose status no longer blocks); every other set of the list loses it.
    """

    def __init__(self, list_name: ListName, sets: tuple[SerialSet, ...], column: str) -> None:
        self._sets = sets
        self._column = column
        self._stolen = list_name is ListName.STOLEN
        self._status = {
            ListName.REGISTRATION: self._registration_status,
            ListName.STOLEN: self._stolen_status,
        }.get(list_name)

    def read(self, header: Header, rows: Rows, errors: RowErrors) -> list[Entry]:
        imeis = ImeiColumn(self._column, errors)
        status_columns = ("reporting_date", "status") if self._stolen else ("status",)
        pick = header.picker((self._column, CHANGE_COLUMN))
        pick_status = header.picker(status_columns) if self._status else None
        tags: dict[int, tuple[Change, int]] = {}
        for line, row in well_formed(header, rows, errors):
            imei, change_text = pick(row)
            change = _change_of(change_text)
            if change is None:
                errors.add(line, _bad_change(change_text))
                continue
            target = 0
            if self._status and pick_status and change is not Change.REMOVE:
                found = self._status([field.strip() for field in pick_status(row)])
                if isinstance(found, str):
                    errors.add(line, found)
                    continue
                target = found
            tags[line] = change, target
            imeis.add(line, imei.strip())
        keys, _, lines = imeis.finish()
        entries = []
        for key, line in zip(keys.tolist(), lines.tolist(), strict=True):
            change, target = tags[line]
            entries.append(Entry(line, change, key, target))
        entries.sort(key=lambda entry: entry.line)
        return entries

    def read_fast(self, path: Path, delimiter: str, header: Header) -> list[Entry] | None:
        statuses = ("reporting_date", "status") if self._stolen else ("status",)
        names = (self._column, CHANGE_COLUMN, *(statuses if self._status else ()))
        keys, changes, targets = [], [], []
        try:
            for imeis, change, *status in read_columns(path, delimiter, header, names):
                found = valid_keys(imeis)
                codes = pc.index_in(_normalised(change), value_set=_CHANGE_NAMES)
                target = self._fast_targets(status, len(imeis))
                if found is None or codes.null_count or target is None:
                    return None
                code = codes.to_numpy(zero_copy_only=False)
                keys.append(found.tolist())
                changes.append(code.tolist())
                targets.append(np.where(code == Change.REMOVE, 0, target).tolist())
        except pa.ArrowException:
            return None
        columns = (itertools.chain.from_iterable(c) for c in (keys, changes, targets))
        rows = zip(*columns, strict=True)
        return [
            Entry(line, Change(change), key, target)
            for line, (key, change, target) in enumerate(rows, start=2)
        ]

    def _fast_targets(self, status: list[pa.Array], rows: int) -> npt.NDArray[np.int64] | None:
        """Each row's target set (see the class), or None if a row needs the row reader."""
        if not self._status:
            return np.zeros(rows, dtype=np.int64)
        if self._stolen:
            dates, text = status
            if not pc.all(pc.match_substring_regex(pc.utf8_trim_whitespace(dates), _DATE)).as_py():
                return None
            blocking = pc.is_in(_normalised(text), value_set=_BLOCKING).to_numpy(
                zero_copy_only=False
            )
            return np.where(blocking, 0, -1)
        (text,) = status
        complete = pc.is_in(_normalised(text), value_set=COMPLETE_STATUSES)
        return np.where(complete.to_numpy(zero_copy_only=False), 0, 1)

    @staticmethod
    def _registration_status(fields: list[str]) -> int | str:
        (status,) = fields
        return 0 if status.lower() in COMPLETE_STATUSES.to_pylist() else 1

    @staticmethod
    def _stolen_status(fields: list[str]) -> int | str:
        blocking, problem = stolen_status(fields)
        return problem if problem else (0 if blocking else -1)

    def existing(self, view: ReadView, keys: Sequence[Key]) -> list[bool]:
        members = BitMap()
        found = []
        current_tac = -1
        for key in keys:
            assert isinstance(key, int)
            tac, serial = key >> SERIAL_BITS, key & ((1 << SERIAL_BITS) - 1)
            if tac != current_tac:
                current_tac, members = tac, BitMap()
                for which in self._sets:
                    members |= view.serials(which, tac) or BitMap()
            found.append(serial in members)
        return found

    def apply(
        self, writer: StoreWriter, entries: Sequence[Entry], existed: Sequence[bool]
    ) -> Changes:
        joining: dict[SerialSet, list[int]] = {which: [] for which in self._sets}
        leaving: dict[SerialSet, list[int]] = {which: [] for which in self._sets}
        added = removed = updated = 0
        for entry, present in zip(entries, existed, strict=True):
            assert isinstance(entry.key, int) and isinstance(entry.value, int)
            target = (
                None
                if entry.change is Change.REMOVE or entry.value < 0
                else self._sets[entry.value]
            )
            for which in self._sets:
                (joining if which is target else leaving)[which].append(entry.key)
            if target is None:
                removed += present
            elif present:
                updated += 1
            else:
                added += 1
        writer.update_serial_sets(
            {
                which: (_keys(joining[which]), _keys(leaving[which]))
                for which in self._sets
                if joining[which] or leaving[which]
            }
        )
        return Changes(added, removed, updated)

    def describe(self, key: Key) -> str:
        assert isinstance(key, int)
        return f"IMEI {pair_body(key)}"


def _keys(values: list[int]) -> U64:
    return np.array(values, dtype=np.uint64)  # entries come in key order: already sorted


class _RowsOnly:
    """A list whose deltas are small enough, or varied enough, to be read row by row."""

    def read_fast(self, path: Path, delimiter: str, header: Header) -> list[Entry] | None:
        return None


class _TacDelta(_RowsOnly):
    """A list keyed by TAC: the GSMA TAC database (with model records) or the barred TACs."""

    def __init__(self, which: TacSet, records: bool) -> None:
        self._which = which
        self._records = records

    def read(self, header: Header, rows: Rows, errors: RowErrors) -> list[Entry]:
        gsma = GsmaRows(header) if self._records else None
        pick = header.picker(("tac", CHANGE_COLUMN))
        entries = []
        for line, row in well_formed(header, rows, errors):
            text, change_text = (field.strip() for field in pick(row))
            change = _change_of(change_text)
            if change is None:
                errors.add(line, _bad_change(change_text))
                continue
            if gsma and change is not Change.REMOVE:
                parsed = gsma.parse(row)
                if isinstance(parsed, str):
                    errors.add(line, parsed)
                    continue
                entries.append(Entry(line, change, *parsed))
                continue
            tac = parse_tac(text)
            if tac is None:
                errors.add(line, f"tac {text!r} is not a TAC (8 digits expected)")
                continue
            entries.append(Entry(line, change, tac, None))
        return entries

    def existing(self, view: ReadView, keys: Sequence[Key]) -> list[bool]:
        tacs = view.tac_set(self._which)
        return [isinstance(key, int) and key in tacs for key in keys]

    def apply(
        self, writer: StoreWriter, entries: Sequence[Entry], existed: Sequence[bool]
    ) -> Changes:
        joining, leaving = BitMap(), BitMap()
        added = removed = updated = 0
        for entry, present in zip(entries, existed, strict=True):
            assert isinstance(entry.key, int)
            key = f"{entry.key:08d}".encode("ascii")
            if entry.change is Change.REMOVE:
                leaving.add(entry.key)
                removed += present
                if self._records and present:
                    writer.delete(writer.store.gsma, key)
                continue
            joining.add(entry.key)
            updated += present
            added += not present
            if self._records:
                assert isinstance(entry.value, bytes)
                writer.put_gsma_record(key, entry.value)
        writer.update_tac_set(self._which, joining, leaving)
        return Changes(added, removed, updated)

    def describe(self, key: Key) -> str:
        assert isinstance(key, int)
        return f"tac {key:08d}"


class _PairingDelta(_RowsOnly):
    """IMEI-IMSI exception pairs, keyed by the pair; the MSISDN is what an update changes."""

    def read(self, header: Header, rows: Rows, errors: RowErrors) -> list[Entry]:
        imeis = ImeiColumn("imei", errors)
        pick = header.picker(("imei", "imsi", "msisdn", CHANGE_COLUMN))
        fields: dict[int, tuple[Change, str, str]] = {}
        for line, row in well_formed(header, rows, errors):
            imei, imsi, msisdn, change_text = (field.strip() for field in pick(row))
            change = _change_of(change_text)
            if change is None:
                errors.add(line, _bad_change(change_text))
                continue
            if problem := pairing_problem(imsi, msisdn):
                errors.add(line, problem)
                continue
            fields[line] = change, imsi, msisdn
            imeis.add(line, imei)
        keys, _, lines = imeis.finish()
        entries = []
        for key, line in zip(keys.tolist(), lines.tolist(), strict=True):
            change, imsi, msisdn = fields[line]
            entries.append(Entry(line, change, pair_key(pair_body(key), imsi), msisdn.encode()))
        entries.sort(key=lambda entry: entry.line)
        return entries

    def existing(self, view: ReadView, keys: Sequence[Key]) -> list[bool]:
        return [isinstance(key, bytes) and view.has_pair(key) for key in keys]

    def apply(
        self, writer: StoreWriter, entries: Sequence[Entry], existed: Sequence[bool]
    ) -> Changes:
        pairs = writer.store.pairs
        added = removed = updated = 0
        bodies = set()
        for entry, present in zip(entries, existed, strict=True):
            assert isinstance(entry.key, bytes) and isinstance(entry.value, bytes)
            bodies.add(entry.key.split(b":")[0])
            if entry.change is Change.REMOVE:
                if present:
                    writer.delete(pairs, entry.key)
                    removed += 1
            else:
                writer.put(pairs, entry.key, entry.value)
                updated += present
                added += not present
        # An IMEI is in the paired set while it has at least one pair.
        paired: list[int] = []
        unpaired: list[int] = []
        for body in sorted(bodies):
            key = int(body[:8]) << SERIAL_BITS | int(body[8:])
            (paired if writer.view.has_pairs_of(body) else unpaired).append(key)
        writer.update_serial_sets({SerialSet.PAIRED: (_keys(paired), _keys(unpaired))})
        return Changes(added, removed, updated)

    def describe(self, key: Key) -> str:
        assert isinstance(key, bytes)
        body, imsi = key.decode().split(":")
        return f"IMEI {body} with IMSI {imsi}"


DELTAS: dict[ListName, Callable[[], _Delta]] = {
    ListName.REGISTRATION: lambda: _ImeiDelta(
        ListName.REGISTRATION, (SerialSet.REGISTERED, SerialSet.PROVISIONAL), "approved_imei"
    ),
    ListName.STOLEN: lambda: _ImeiDelta(ListName.STOLEN, (SerialSet.STOLEN,), "imei"),
    ListName.BARRED: lambda: _ImeiDelta(ListName.BARRED, (SerialSet.BARRED,), "imei"),
    ListName.GOLDEN: lambda: _ImeiDelta(ListName.GOLDEN, (SerialSet.GOLDEN,), "golden_imei"),
    ListName.GSMA_TAC: lambda: _TacDelta(TacSet.ALLOCATED, records=True),
    ListName.BARRED_TAC: lambda: _TacDelta(TacSet.BARRED, records=False),
    ListName.PAIRING: _PairingDelta,
}
