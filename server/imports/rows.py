"""The rows of a list file as both importers read them: what each row says, what is wrong.

A row's fields are read by rules, one function per column, from the field's text to a
value or to what is wrong with it (a string). The row reader applies a rule to each
row's field; the column reader to each distinct value of an Arrow column (DIRBS files
repeat a handful of statuses and dates), so both read a field by the same rule.

An invalid row rejects the whole file: `RowErrors` gathers the problems with their line
numbers, and `ImportRejected` reports the first of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from imeireg.server.imports.sources import Header
from imeireg.server.model import Changes

MAX_ERRORS_SHOWN = 20
CHANGE_COLUMN = "change_type"

Rows = Iterator[tuple[int, list[str]]]
#: A rule reads one field: its value, or what is wrong with it.
Rule = Callable[[str], int | str]
I64 = npt.NDArray[np.int64]


class ImportRejected(Exception):
    """The file has invalid rows or columns; nothing was changed."""

    def __init__(self, path: Path, errors: list[str], total: int) -> None:
        self.path = path
        self.errors = errors
        self.total = total
        lines = [f"{path}: rejected, {total} error(s); nothing was changed", *errors]
        if total > len(errors):
            lines.append(f"... and {total - len(errors)} more")
        super().__init__("\n".join(lines))


@dataclass
class RowErrors:
    """The first errors of a file, in line order, and how many there were."""

    path: Path
    shown: list[tuple[int, str]] = field(default_factory=list)
    total: int = 0

    def add(self, line: int, message: str) -> None:
        self.total += 1
        if len(self.shown) < MAX_ERRORS_SHOWN * 4:
            self.shown.append((line, message))

    def raise_if_any(self) -> None:
        if self.total:
            first = sorted(self.shown)[:MAX_ERRORS_SHOWN]
            raise ImportRejected(self.path, [f"{self.path}:{n}: {m}" for n, m in first], self.total)


def require_columns(path: Path, header: Header, columns: tuple[str, ...]) -> None:
    """Reject the file at line 1 when its header lacks any of `columns`."""
    if missing := header.missing(columns):
        raise ImportRejected(
            path, [f"{path}:1: header lacks column(s) {', '.join(missing)}"], total=1
        )


class Change(IntEnum):
    """What a row does to its entry: a full file's rows all add; a delta's say which."""

    ADD = 0
    REMOVE = 1
    UPDATE = 2


def change_of(text: str) -> Change | str:
    """The rule of a delta's change_type column."""
    name = text.strip()
    try:
        return Change[name.upper()]
    except KeyError:
        return f"{CHANGE_COLUMN} {name!r} is not one of add, remove, update"


#: An entry's key: an IMEI key, a TAC, or an (IMEI body, IMSI) pair.
Key = int | tuple[str, str]


@dataclass(frozen=True, slots=True)
class Entry:
    """One valid row of a file: its change to one key of the list, and the key's new value."""

    line: int
    change: Change
    key: Key
    value: object  # the list's payload: a serial set, a model record, an MSISDN


def tally(leaving: Iterable[bool], existed: Iterable[bool]) -> Changes:
    """How a delta's entries changed their list, from whether each entry leaves it and
    whether its key was in it: one leaving is removed if it was there; one staying is
    updated if it was there, else added."""
    added = removed = updated = 0
    for leaves, present in zip(leaving, existed, strict=True):
        if leaves:
            removed += present
        elif present:
            updated += 1
        else:
            added += 1
    return Changes(added, removed, updated)


def with_changes(
    header: Header, rows: Rows, errors: RowErrors, *, delta: bool
) -> Iterator[tuple[int, list[str], Change]]:
    """The rows with as many fields as the header, and their changes: add for a full file,
    a delta's change_type column's; each other row is an error, and is left out."""
    width = header.width
    change_at = header.positions[CHANGE_COLUMN] if delta else None
    for line, row in rows:
        if len(row) != width:
            errors.add(line, f"{len(row)} fields where the header has {width}")
        elif change_at is None:
            yield line, row, Change.ADD
        elif isinstance(change := change_of(row[change_at]), str):
            errors.add(line, change)
        else:
            yield line, row, change


def by_value(column: pa.Array, rule: Rule) -> I64 | None:
    """A rule read down an Arrow column of strings, applied once per distinct value;
    None when the rule finds any value wrong (the row reader then tells where)."""
    encoded = pc.dictionary_encode(column)
    values = [rule(text) for text in encoded.dictionary.to_pylist()]
    if any(isinstance(value, str) for value in values):
        return None
    found: I64 = np.asarray(values, dtype=np.int64)[encoded.indices.to_numpy()]
    return found
