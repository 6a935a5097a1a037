"""Delta imports: DIRBS delta files add, remove or update entries of one list in place.

A delta file has its list's columns plus `change_type` (add | remove | update), and
is read by its list's spec (`lists`) as a full file is. It is read and validated
whole, then checked against the registry in the write transaction that applies it,
so a rejected file changes nothing:

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

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imeireg.server.imports.lists import LISTS, ListSpec
from imeireg.server.imports.rows import (
    CHANGE_COLUMN,
    Change,
    Entry,
    Key,
    RowErrors,
    require_columns,
)
from imeireg.server.imports.sources import open_rows, read_header, sha256_of
from imeireg.server.model import ImportRecord, ListName
from imeireg.server.store import ReadView, Store


@dataclass(frozen=True)
class DeltaChecks:
    """Which of the three delta checks to relax (all enforced by default)."""

    allow_existing_adds: bool = False
    allow_missing: bool = False
    allow_conflicts: bool = False


def import_delta(
    store: Store,
    list_name: ListName,
    path: Path,
    *,
    checks: DeltaChecks = DeltaChecks(),
    show_progress: bool = False,
) -> ImportRecord:
    """Apply the delta file `path` to `list_name` as one new generation, or change nothing."""
    spec = LISTS[list_name]
    header = read_header(path, spec.delimiter)
    require_columns(path, header, (*spec.columns, CHANGE_COLUMN))
    with ThreadPoolExecutor(max_workers=1) as hasher:
        digest = hasher.submit(sha256_of, path)
        read = spec.read_columns(path, header, delta=True)
        try:
            return _apply(store, spec, path, read, digest=digest, checks=checks)
        except _ExactLinesNeeded:
            pass
        errors = RowErrors(path)
        with open_rows(path, spec.delimiter, show_progress=show_progress) as (header, rows):
            read = spec.read_rows(header, rows, errors, delta=True)
        return _apply(store, spec, path, read, digest=digest, checks=checks, errors=errors)


class _ExactLinesNeeded(Exception):
    """A file read in column blocks, without line numbers, has an error to report."""


def _apply(
    store: Store,
    spec: ListSpec[Any],
    path: Path,
    read: object | None,
    *,
    digest: Future[str],
    checks: DeltaChecks,
    errors: RowErrors | None = None,
) -> ImportRecord:
    """Check the rows read and apply them as one generation, or reject the file.

    Without `errors`, the rows come from the fast reader: whatever is wrong with
    them raises _ExactLinesNeeded, for the row reader to report with line numbers.
    """
    if read is None:
        raise _ExactLinesNeeded
    found = errors if errors is not None else RowErrors(path)
    entries = _last_per_key(spec.entries(read), checks, found, spec)
    if found.total:  # report the file's other errors too, then reject it
        if errors is None:
            raise _ExactLinesNeeded
        with store.read() as view:
            _check_existing(spec, view, entries, checks=checks, errors=found)
        found.raise_if_any()
    sha256 = digest.result()
    with store.write() as writer:
        existed = _check_existing(spec, writer.view, entries, checks=checks, errors=found)
        if found.total and errors is None:
            raise _ExactLinesNeeded
        found.raise_if_any()
        changes = spec.apply(writer, entries, existed)
        total = writer.current_rows(spec.name) + changes.added - changes.removed
        writer.set_rows(spec.name, max(total, 0))
        return writer.commit_generation(
            spec.name,
            mode="delta",
            file_name=path.name,
            sha256=sha256,
            rows=len(entries),
            changes=changes,
        )


def _check_existing(
    spec: ListSpec[Any],
    view: ReadView,
    entries: list[Entry],
    *,
    checks: DeltaChecks,
    errors: RowErrors,
) -> list[bool]:
    """Whether the list has each entry's key; the entries that contradict it are errors."""
    existed = spec.existing(view, [entry.key for entry in entries])
    for entry, present in zip(entries, existed, strict=True):
        if present and entry.change is Change.ADD and not checks.allow_existing_adds:
            errors.add(entry.line, f"add of {spec.describe(entry.key)}, which the list already has")
        elif not present and entry.change is not Change.ADD and not checks.allow_missing:
            errors.add(
                entry.line,
                f"{entry.change.name.lower()} of {spec.describe(entry.key)}, "
                "which the list does not have",
            )
    return existed


def _last_per_key(
    rows: list[Entry], checks: DeltaChecks, errors: RowErrors, spec: ListSpec[Any]
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
                f"{entry.change.name.lower()} of {spec.describe(entry.key)}, "
                f"which line {earlier.line} gives as {earlier.change.name.lower()}",
            )
            continue
        last[entry.key] = entry
    return [last[key] for key in sorted(last)]
