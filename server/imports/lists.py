"""The registry's lists, one spec each, read by the full and the delta importer alike.

A list's spec (in the module of its kind: `imei_lists`, `tac_lists`, `pairing_list`)
holds everything about it: its file's columns and delimiter, the rules its fields
follow, its key, what a full file makes of it (`replacement`) and how a delta's
entries change it (`existing`, `apply`). Its readers read a full file (every row adds)
or a delta (each row's change_type says what it does) by the same rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from imeireg.server.imports.imei_lists import BARRED, GOLDEN, REGISTRATION, STOLEN
from imeireg.server.imports.pairing_list import PAIRING
from imeireg.server.imports.rows import Entry, Key, RowErrors, Rows
from imeireg.server.imports.sources import Header
from imeireg.server.imports.tac_lists import BARRED_TAC, GSMA_TAC
from imeireg.server.model import Changes, ListName
from imeireg.server.store import ReadView, StoreWriter

Read = TypeVar("Read")


class Replacement(Protocol):
    """What a valid full file makes of its list, ready to replace it."""

    @property
    def rows(self) -> int:
        """The list's distinct entries."""
        ...

    def write(self, writer: StoreWriter) -> Changes:
        """Replace the list in the store; return how it changed."""
        ...


class ListSpec(Protocol[Read]):
    """One list: its file format and rules, and how full and delta imports change it."""

    @property
    def name(self) -> ListName: ...

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns a full file's header must have; a delta's adds change_type."""
        ...

    @property
    def delimiter(self) -> str: ...

    def read_rows(self, header: Header, rows: Rows, errors: RowErrors, *, delta: bool) -> Read:
        """The valid rows, read one by one; the invalid ones are errors."""
        ...

    def read_columns(
        self, path: Path, header: Header, *, delta: bool, show_progress: bool = False
    ) -> Read | None:
        """All the rows, read in column blocks, when every one is valid; else None.

        Their line numbers assume one line per row: only an error needs them, and an
        error has the file read again row by row.
        """
        ...

    def replacement(self, read: Read) -> Replacement:
        """What a full file's rows make of the list."""
        ...

    def entries(self, read: Read) -> list[Entry]:
        """A delta's rows, in file order."""
        ...

    def existing(self, view: ReadView, keys: Sequence[Key]) -> list[bool]:
        """Whether the list has each key in the view's snapshot."""
        ...

    def apply(
        self, writer: StoreWriter, entries: Sequence[Entry], existed: Sequence[bool]
    ) -> Changes:
        """Write a delta's entries (one per key) into the list; count what they did."""
        ...

    def describe(self, key: Key) -> str:
        """A key as an error message names it."""
        ...


LISTS: dict[ListName, ListSpec[Any]] = {
    spec.name: spec
    for spec in (GSMA_TAC, REGISTRATION, STOLEN, BARRED, BARRED_TAC, GOLDEN, PAIRING)
}
