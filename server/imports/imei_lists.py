"""The lists that are sets of IMEIs: registration, stolen, barred and golden.

Each is kept in one or more serial sets (see `store`), keyed by the IMEI. A row names
one IMEI and, through its list's `set_field`, the set it joins: a registration is
complete when its status is empty or "whitelist" and provisional otherwise; a stolen
report blocks when its status is empty or "blacklist", and otherwise puts the IMEI in
no set. A stolen report's date must be a date when given.

A full file makes each IMEI a member of the first set any of its rows names: a
complete registration supersedes a provisional one, and a blocking report of a stolen
phone any report that does not block. A delta's last row for an IMEI puts it in the
set that row names, and takes it out of the list's other sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from pyroaring import BitMap

from imeireg.imei import is_digits
from imeireg.server.check.normalise import SERIAL_BITS
from imeireg.server.check.sorted_arrays import sorted_contains, sorted_unique
from imeireg.server.imports.imei_columns import ImeiColumn, imei_body, valid_keys
from imeireg.server.imports.rows import (
    CHANGE_COLUMN,
    Change,
    Entry,
    Key,
    RowErrors,
    Rows,
    Rule,
    by_value,
    change_of,
    tally,
    with_changes,
)
from imeireg.server.imports.sources import Header, read_columns
from imeireg.server.model import Changes, ListName, SerialSet
from imeireg.server.store import ReadView, StoreWriter, bitmaps_by_tac

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

#: A row's set when it puts its IMEI in none of its list's sets.
NO_SET = -1
_WRONG = -2
# Distinct texts of a field whose values a row reader keeps: DIRBS files repeat a handful
# of statuses and some thousands of dates.
_KNOWN_TEXTS = 1 << 16
_NO_ROWS = np.empty(0, np.int64)


def registration_set(status: str) -> int:
    """The rule of a registration's status: complete (0) or provisional (1)."""
    return 0 if status.strip().lower() in ("", "whitelist") else 1


def stolen_set(status: str) -> int:
    """The rule of a stolen report's status: blocking (0, the stolen set) or not (NO_SET)."""
    return 0 if status.strip().lower() in ("", "blacklist") else NO_SET


def reporting_date(text: str) -> int | str:
    """The rule of a stolen report's date: none, YYYYMMDD or YYYY-MM-DD."""
    date = text.strip()
    digits = date.replace("-", "") if len(date) == 10 and date[4] == date[7] == "-" else date
    if not date or (
        len(digits) == 8
        and is_digits(digits)
        and 1 <= int(digits[4:6]) <= 12
        and 1 <= int(digits[6:]) <= 31
    ):
        return 0
    return f"reporting_date {date!r} is not a date like 20200418 or 2020-04-18"


@dataclass(frozen=True)
class Field:
    """A column a row must get right, and the rule that reads it."""

    column: str
    rule: Rule


@dataclass(frozen=True)
class ImeiRows:
    """The valid rows of an IMEI list file: each one's IMEI key and the set it names."""

    keys: U64
    sets: I64  # an index into the list's sets, or NO_SET
    changes: I64 | None  # None: every row adds (a full file)
    lines: I64 | None  # None: a line per row from line 2 (read in column blocks)


@dataclass(frozen=True)
class _SetMembers:
    """A full file's IMEIs, as members of each set of their list."""

    sets: tuple[SerialSet, ...]
    members: tuple[U64, ...]  # sorted, distinct keys, per set
    rows: int  # distinct IMEIs, whether in a set or not

    def write(self, writer: StoreWriter) -> Changes:
        # Counted per set: a registration turning complete counts as one removed, one added.
        added = removed = 0
        for which, keys in zip(self.sets, self.members, strict=True):
            changes = writer.replace_serial_set(which, bitmaps_by_tac(keys))
            added, removed = added + changes.added, removed + changes.removed
        return Changes(added, removed)


@dataclass(frozen=True)
class ImeiList:
    """The spec of a list of IMEIs: its columns (the IMEI's first), its sets and fields."""

    name: ListName
    columns: tuple[str, ...]
    sets: tuple[SerialSet, ...]
    #: The field that names a row's set; without it, every row names the first.
    set_field: Field | None = None
    #: Other fields a row must get right.
    checked: tuple[Field, ...] = ()
    delimiter: str = ","

    @property
    def _fields(self) -> tuple[Field, ...]:
        return (*((self.set_field,) if self.set_field else ()), *self.checked)

    def read_rows(self, header: Header, rows: Rows, errors: RowErrors, *, delta: bool) -> ImeiRows:
        """The valid rows, read one by one; a delta's removes need only their IMEI."""
        imeis = ImeiColumn(self.columns[0], errors)
        imei_at = header.positions[self.columns[0]]
        # Each field's values by text: a rule runs once per distinct text, as in columns.
        fields: list[tuple[Rule, int, bool, dict[str, int | str]]] = [
            (field.rule, header.positions[field.column], field is self.set_field, {})
            for field in self._fields
        ]
        sets: list[int] = []  # or _WRONG, for a row with a wrong field
        changes: list[Change] = []
        for line, row, change in with_changes(header, rows, errors, delta=delta):
            target = NO_SET
            if change is not Change.REMOVE:
                target = 0
                for rule, at, names_set, known in fields:
                    text = row[at]
                    value = known.get(text)
                    if value is None:
                        value = rule(text)
                        if len(known) < _KNOWN_TEXTS:
                            known[text] = value
                    if isinstance(value, str):
                        errors.add(line, value)
                        target = _WRONG
                    elif names_set and target != _WRONG:
                        target = value
            # A row with a wrong field still has its IMEI checked, so that every problem
            # of the row is told; it is then left out.
            imeis.add(line, row[imei_at].strip())
            sets.append(target)
            if delta:
                changes.append(change)
        keys, positions, lines = imeis.finish()
        targets = np.asarray(sets, dtype=np.int64)[positions]
        right = targets != _WRONG
        return ImeiRows(
            keys[right],
            targets[right],
            np.asarray(changes, dtype=np.int64)[positions[right]] if delta else None,
            lines[right],
        )

    def read_columns(
        self, path: Path, header: Header, *, delta: bool, show_progress: bool = False
    ) -> ImeiRows | None:
        """Every row, read in column blocks, when every one is valid; else None.

        Valid files, the usual case, are read a block at a time without a Python step
        per row; any irregularity sends the file to the row reader, which reports each
        problem with its line number.
        """
        fields = self._fields
        names = (self.columns[0], *(field.column for field in fields))
        keys, sets, changes = [], [], []
        try:
            for imeis, *texts in read_columns(
                path,
                self.delimiter,
                header,
                (*names, CHANGE_COLUMN) if delta else names,
                show_progress=show_progress,
            ):
                found = valid_keys(imeis)
                if found is None:
                    return None
                target: I64 = np.zeros(len(imeis), dtype=np.int64)
                for field, text in zip(fields, texts[: len(fields)], strict=True):
                    values = by_value(text, field.rule)
                    if values is None:
                        return None
                    if field is self.set_field:
                        target = values
                if delta:
                    change = by_value(texts[-1], change_of)
                    if change is None:
                        return None
                    target = np.where(change == Change.REMOVE, NO_SET, target)
                    changes.append(change)
                keys.append(found)
                sets.append(target)
        except pa.ArrowException:
            return None
        if not keys:  # a header and no rows
            return ImeiRows(np.empty(0, np.uint64), _NO_ROWS, _NO_ROWS if delta else None, None)
        return ImeiRows(
            np.concatenate(keys),
            np.concatenate(sets),
            np.concatenate(changes) if delta else None,
            None,
        )

    def replacement(self, read: ImeiRows) -> _SetMembers:
        members: list[U64] = []
        for index in range(len(self.sets)):
            named = read.sets == index
            members.append(
                _without(sorted_unique(read.keys if named.all() else read.keys[named]), members)
            )
        rows = sum(map(len, members))
        unlisted = read.sets == NO_SET
        if unlisted.any():  # IMEIs in no set are rows of the list too
            rows += len(_without(sorted_unique(read.keys[unlisted]), members))
        return _SetMembers(self.sets, tuple(members), rows)

    def entries(self, read: ImeiRows) -> list[Entry]:
        lines = range(2, 2 + len(read.keys)) if read.lines is None else read.lines.tolist()
        changes = [Change.ADD] * len(read.keys) if read.changes is None else read.changes.tolist()
        return [
            Entry(line, Change(change), key, target)
            for line, change, key, target in zip(
                lines, changes, read.keys.tolist(), read.sets.tolist(), strict=True
            )
        ]

    def existing(self, view: ReadView, keys: Sequence[Key]) -> list[bool]:
        members = BitMap()
        found = []
        current_tac = -1
        for key in keys:
            assert isinstance(key, int)
            tac, serial = key >> SERIAL_BITS, key & ((1 << SERIAL_BITS) - 1)
            if tac != current_tac:
                current_tac, members = tac, BitMap()
                for which in self.sets:
                    members |= view.serials(which, tac) or BitMap()
            found.append(serial in members)
        return found

    def apply(
        self, writer: StoreWriter, entries: Sequence[Entry], existed: Sequence[bool]
    ) -> Changes:
        joining: list[list[int]] = [[] for _ in self.sets]
        leaving: list[list[int]] = [[] for _ in self.sets]
        for entry in entries:
            assert isinstance(entry.key, int)
            for index in range(len(self.sets)):
                (joining if index == entry.value else leaving)[index].append(entry.key)
        writer.update_serial_set_members(
            {
                which: (_sorted_keys(joining[index]), _sorted_keys(leaving[index]))
                for index, which in enumerate(self.sets)
                if joining[index] or leaving[index]
            }
        )
        return tally((entry.value == NO_SET for entry in entries), existed)

    def describe(self, key: Key) -> str:
        assert isinstance(key, int)
        return f"IMEI {imei_body(key)}"


def _without(keys: U64, others: list[U64]) -> U64:
    """The sorted, distinct `keys` that none of `others` (each sorted, distinct) holds."""
    for other in others:
        keys = keys[~sorted_contains(other, keys)]
    return keys


def _sorted_keys(keys: list[int]) -> U64:
    return np.array(keys, dtype=np.uint64)  # entries come in key order: already sorted


_REGISTRATION_COLUMNS = (
    "approved_imei", "make", "model", "status", "model_number",
    "brand_name", "device_type", "radio_interface", "device_id",
)  # fmt: skip
REGISTRATION = ImeiList(
    ListName.REGISTRATION,
    _REGISTRATION_COLUMNS,
    (SerialSet.REGISTERED, SerialSet.PROVISIONAL),
    set_field=Field("status", registration_set),
)
STOLEN = ImeiList(
    ListName.STOLEN,
    ("imei", "reporting_date", "status"),
    (SerialSet.STOLEN,),
    set_field=Field("status", stolen_set),
    checked=(Field("reporting_date", reporting_date),),
)
BARRED = ImeiList(ListName.BARRED, ("imei",), (SerialSet.BARRED,))
GOLDEN = ImeiList(ListName.GOLDEN, ("golden_imei",), (SerialSet.GOLDEN,))
