"""The pairing list: IMEI-IMSI exception pairs, each with an MSISDN.

Keyed by the pair (the IMEI's 14-digit body and the IMSI), so one IMEI may be paired
with several subscribers; the MSISDN is what an update changes. A row's IMSI and
MSISDN are checked whatever its change, the IMSI being half its key. The store keeps
the paired IMEIs (the `paired` serial set) in step with the pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from imeireg.imei import is_digits
from imeireg.server.imports.imei_columns import ImeiColumn, imei_body
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
from imeireg.server.model import Changes, ListName
from imeireg.server.store import ReadView, StoreWriter

Pair = tuple[str, str]  # (14-digit IMEI body, IMSI)


def pairing_problem(imsi: str, msisdn: str) -> str | None:
    """What is wrong with a pairing's IMSI and MSISDN, if anything."""
    if not (is_digits(imsi) and 6 <= len(imsi) <= 15):
        return f"imsi {imsi!r} is not an IMSI (6 to 15 digits expected)"
    if msisdn and not (is_digits(msisdn.removeprefix("+")) and len(msisdn) <= 16):
        return f"msisdn {msisdn!r} is not an MSISDN (up to 15 digits expected)"
    return None


@dataclass(frozen=True)
class _Pairings:
    """A full file's pairings: (IMEI body, IMSI) → MSISDN."""

    pairings: dict[Pair, str]

    @property
    def rows(self) -> int:
        return len(self.pairings)

    def write(self, writer: StoreWriter) -> Changes:
        return writer.replace_pairings(self.pairings)


@dataclass(frozen=True)
class PairingList:
    """The spec of the pairing list: its columns, IMEI's, IMSI's and MSISDN's in that order."""

    name: ListName
    columns: tuple[str, str, str]
    delimiter: str = ","

    def read_rows(
        self, header: Header, rows: Rows, errors: RowErrors, *, delta: bool
    ) -> list[Entry]:
        """The valid rows, in file order, each keyed by its pair."""
        imeis = ImeiColumn(self.columns[0], errors)
        imei_at, imsi_at, msisdn_at = (header.positions[column] for column in self.columns)
        added: list[tuple[Change, str, str] | None] = []
        for line, row, change in with_changes(header, rows, errors, delta=delta):
            imsi, msisdn = row[imsi_at].strip(), row[msisdn_at].strip()
            problem = pairing_problem(imsi, msisdn)
            if problem:
                errors.add(line, problem)
            imeis.add(line, row[imei_at].strip())
            added.append(None if problem else (change, imsi, msisdn))
        keys, positions, lines = imeis.finish()
        entries = []
        for key, at, line in zip(keys.tolist(), positions.tolist(), lines.tolist(), strict=True):
            if (valid := added[at]) is not None:
                change, imsi, msisdn = valid
                entries.append(Entry(line, change, (imei_body(key), imsi), msisdn))
        return entries

    def read_columns(
        self, path: Path, header: Header, *, delta: bool, show_progress: bool = False
    ) -> list[Entry] | None:
        """None: pairing lists are small enough, and varied enough, to be read row by row."""
        return None

    def replacement(self, read: list[Entry]) -> _Pairings:
        return _Pairings(_pairings(read))

    def entries(self, read: list[Entry]) -> list[Entry]:
        return read

    def existing(self, view: ReadView, keys: Sequence[Key]) -> list[bool]:
        return [isinstance(key, tuple) and view.is_paired(*key) for key in keys]

    def apply(
        self, writer: StoreWriter, entries: Sequence[Entry], existed: Sequence[bool]
    ) -> Changes:
        writer.update_pairings(
            _pairings(entry for entry in entries if entry.change is not Change.REMOVE),
            _pairings(entry for entry in entries if entry.change is Change.REMOVE),
        )
        return tally((entry.change is Change.REMOVE for entry in entries), existed)

    def describe(self, key: Key) -> str:
        assert isinstance(key, tuple)
        body, imsi = key
        return f"IMEI {body} with IMSI {imsi}"


def _pairings(entries: Iterable[Entry]) -> dict[Pair, str]:
    """(IMEI body, IMSI) → MSISDN; a pair's last row's when repeated."""
    return {
        entry.key: entry.value
        for entry in entries
        if isinstance(entry.key, tuple) and isinstance(entry.value, str)
    }


PAIRING = PairingList(ListName.PAIRING, ("imei", "imsi", "msisdn"))
