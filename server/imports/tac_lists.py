"""The lists of whole TACs: the GSMA TAC database and the barred TACs.

Both are keyed by the TAC (8 digits). The GSMA database gives each TAC its model
record (manufacturer, model name, brand, device type, bands, allocation date as
DD-Mon-YYYY); a full GSMA file names each TAC once, and a delta's remove needs only
the TAC. The store keeps the allocated TACs as those with a record.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyroaring import BitMap

from imeireg.imei import TAC_DIGITS, is_digits
from imeireg.server.imports.rows import (
    Change,
    Entry,
    Key,
    RowErrors,
    Rows,
    tally,
    with_changes,
)
from imeireg.server.imports.sources import Header
from imeireg.server.model import Changes, ListName, TacSet
from imeireg.server.store import ReadView, StoreWriter

_MONTHS = {
    m: i
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
Record = dict[str, str]


def tac_of(text: str) -> int | str:
    """The rule of a TAC column: the TAC, or what is wrong with it."""
    tac = text.strip()
    if len(tac) == TAC_DIGITS and is_digits(tac):
        return int(tac)
    return f"tac {tac!r} is not a TAC (8 digits expected)"


def iso_date_of_gsma(text: str) -> str | None:
    """'15-Mar-2019' (GSMA's DD-Mon-YYYY, English months) → '2019-03-15'; None if malformed."""
    parts = text.split("-")
    if len(parts) != 3 or not (is_digits(parts[0]) and is_digits(parts[2]) and len(parts[2]) == 4):
        return None
    month = _MONTHS.get(parts[1].lower())
    day = int(parts[0])
    if month is None or not 1 <= day <= 31:
        return None
    return f"{parts[2]}-{month:02d}-{day:02d}"


class _ModelRecords:
    """Reads a GSMA row's model record, or what is wrong with it."""

    def __init__(self, header: Header) -> None:
        self._pick = header.picker(
            ("manufacturer", "model_name", "bands", "allocation_date", "device_type")
        )
        self._brand = header.positions.get("brand_name")

    def read(self, row: list[str]) -> Record | str:
        manufacturer, model, bands, allocated, device_type = (
            field.strip() for field in self._pick(row)
        )
        date = iso_date_of_gsma(allocated) if allocated else ""
        if date is None:
            return f"allocation_date {allocated!r} is not a date like 15-Mar-2019"
        return {
            "manufacturer": manufacturer,
            "model_name": model,
            "brand_name": row[self._brand].strip() if self._brand is not None else "",
            "device_type": device_type,
            "bands": bands,
            "allocation_date": date,
        }


@dataclass(frozen=True)
class _TacMembers:
    """A full file's TACs, and their model records when the list keeps them."""

    which: TacSet
    tacs: BitMap
    records: dict[int, Record] | None

    @property
    def rows(self) -> int:
        return len(self.tacs)

    def write(self, writer: StoreWriter) -> Changes:
        if self.records is None:
            return writer.replace_tac_set(self.which, self.tacs)
        return writer.replace_gsma_records(self.records)


@dataclass(frozen=True)
class TacList:
    """The spec of a list of TACs: its columns (the TAC's first) and TAC set, and whether
    each TAC has a model record (the GSMA database)."""

    name: ListName
    columns: tuple[str, ...]
    tac_set: TacSet
    records: bool
    delimiter: str = ","

    def read_rows(
        self, header: Header, rows: Rows, errors: RowErrors, *, delta: bool
    ) -> list[Entry]:
        """The valid rows, in file order, each keyed by its TAC."""
        records = _ModelRecords(header) if self.records else None
        tac_at = header.positions[self.columns[0]]
        first_line: dict[int, int] = {}
        entries = []
        for line, row, change in with_changes(header, rows, errors, delta=delta):
            tac = tac_of(row[tac_at])
            if isinstance(tac, str):
                errors.add(line, tac)
                continue
            record = None
            if records is not None and change is not Change.REMOVE:
                record = records.read(row)
                if isinstance(record, str):
                    errors.add(line, record)
                    continue
                if not delta:  # a full GSMA file names each TAC once
                    if tac in first_line:
                        errors.add(line, f"tac {tac:08d} repeats line {first_line[tac]}")
                        continue
                    first_line[tac] = line
            entries.append(Entry(line, change, tac, record))
        return entries

    def read_columns(
        self, path: Path, header: Header, *, delta: bool, show_progress: bool = False
    ) -> list[Entry] | None:
        """None: TAC lists are small enough to be read row by row."""
        return None

    def replacement(self, read: list[Entry]) -> _TacMembers:
        return _TacMembers(self.tac_set, _tacs(read), _records(read) if self.records else None)

    def entries(self, read: list[Entry]) -> list[Entry]:
        return read

    def existing(self, view: ReadView, keys: Sequence[Key]) -> list[bool]:
        tacs = view.tac_set(self.tac_set)
        return [isinstance(key, int) and key in tacs for key in keys]

    def apply(
        self, writer: StoreWriter, entries: Sequence[Entry], existed: Sequence[bool]
    ) -> Changes:
        staying = [entry for entry in entries if entry.change is not Change.REMOVE]
        leaving = [entry for entry in entries if entry.change is Change.REMOVE]
        if self.records:
            writer.update_gsma_records(_records(staying), _tacs(leaving))
        else:
            writer.update_tac_set(self.tac_set, _tacs(staying), _tacs(leaving))
        return tally((entry.change is Change.REMOVE for entry in entries), existed)

    def describe(self, key: Key) -> str:
        assert isinstance(key, int)
        return f"tac {key:08d}"


def _tacs(entries: Iterable[Entry]) -> BitMap:
    return BitMap(entry.key for entry in entries if isinstance(entry.key, int))


def _records(entries: Iterable[Entry]) -> dict[int, Record]:
    """TAC → model record; a TAC's last row's when repeated."""
    return {
        entry.key: entry.value
        for entry in entries
        if isinstance(entry.key, int) and isinstance(entry.value, dict)
    }


GSMA_TAC = TacList(
    ListName.GSMA_TAC,
    ("tac", "manufacturer", "model_name", "bands", "allocation_date", "device_type"),
    TacSet.ALLOCATED,
    records=True,
    delimiter="|",
)
BARRED_TAC = TacList(ListName.BARRED_TAC, ("tac",), TacSet.BARRED, records=False)
