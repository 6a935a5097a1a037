"""Full imports: a list file replaces its whole list, as one new generation, or nothing.

`import_file` reads and validates the whole file first, by its list's spec (`lists`):
any invalid row rejects the file with file:line and the reason, and nothing is
written. A valid file then replaces its list in one write transaction of the store,
which also bumps the generation and logs the import. The DIRBS safety rule refuses a
full list with fewer than 75 % of the current rows unless forced.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pyroaring import BitMap

from imeireg.server.imports.lists import LISTS
from imeireg.server.imports.rows import RowErrors, require_columns
from imeireg.server.imports.sources import open_rows, read_header, sha256_of
from imeireg.server.model import Changes, ImportRecord, ListName, SerialSet
from imeireg.server.store import Store, StoreWriter

SAFETY_RATIO = 0.75


class ImportRefused(Exception):
    """The safety rule refused a much smaller full list than the current one; nothing changed."""


def import_file(
    store: Store,
    list_name: ListName,
    path: Path,
    *,
    force: bool = False,
    show_progress: bool = False,
) -> ImportRecord:
    """Replace `list_name` with the contents of `path` as one new generation."""
    spec = LISTS[list_name]
    header = read_header(path, spec.delimiter)
    require_columns(path, header, spec.columns)
    # Hashing the file (hashlib frees the GIL) overlaps with reading it.
    with ThreadPoolExecutor(max_workers=1) as hasher:
        digest = hasher.submit(sha256_of, path)
        read = spec.read_columns(path, header, delta=False, show_progress=show_progress)
        if read is None:
            errors = RowErrors(path)
            with open_rows(path, spec.delimiter, show_progress=show_progress) as (header, rows):
                read = spec.read_rows(header, rows, errors, delta=False)
            errors.raise_if_any()
        replacement = spec.replacement(read)
    with store.write() as writer:
        _refuse_if_much_smaller(writer, list_name, replacement.rows, path, force=force)
        changes = replacement.write(writer)
        writer.set_rows(list_name, replacement.rows)
        return writer.commit_generation(
            list_name,
            mode="full",
            file_name=path.name,
            sha256=digest.result(),
            rows=replacement.rows,
            changes=changes,
        )


def import_bitmaps(
    store: Store,
    list_name: ListName,
    sets: Mapping[SerialSet, Iterable[tuple[int, BitMap]]],
    *,
    rows: int,
    source: str,
    force: bool = False,
) -> ImportRecord:
    """A full import fed straight from (TAC, serials) bitmaps instead of a file.

    For registries too large for a CSV file (a generator at 10**9 IMEIs): each
    set's pairs are written as they are produced, in one transaction, with the
    safety rule and the log entry of a file import (`source` as its file name,
    no SHA-256).
    """
    with store.write() as writer:
        _refuse_if_much_smaller(writer, list_name, rows, source, force=force)
        added = removed = 0
        for which, bitmaps in sets.items():
            changes = writer.replace_serial_set(which, bitmaps)
            added, removed = added + changes.added, removed + changes.removed
        writer.set_rows(list_name, rows)
        return writer.commit_generation(
            list_name,
            mode="full",
            file_name=source,
            sha256="",
            rows=rows,
            changes=Changes(added, removed),
        )


def _refuse_if_much_smaller(
    writer: StoreWriter, list_name: ListName, rows: int, source: object, *, force: bool
) -> None:
    current = writer.current_rows(list_name)
    if not force and rows < SAFETY_RATIO * current:
        raise ImportRefused(
            f"{source}: {rows} rows is fewer than {SAFETY_RATIO:.0%} of the {current} "
            f"rows of the current {list_name} list; refusing (use --force if this is meant)"
        )
