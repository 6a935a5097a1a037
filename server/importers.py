"""Full imports of the registry's lists from DIRBS-compatible files.

`import_file` reads and validates the whole file first: any invalid row rejects
the file with file:line and the reason, and nothing is written. A valid file
then replaces its list in one LMDB write transaction, which also bumps the
generation and logs the import. The DIRBS safety rule refuses a full list with
fewer than 75 % of the current rows unless forced.

IMEI columns are validated a chunk at a time with the serving path's own batch
normaliser, so an import accepts exactly the IMEI spellings a check does; a
15-digit IMEI must carry its correct check digit (registries validate it at
provisioning time).
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
from pyroaring import BitMap

from imeireg.imei import TAC_DIGITS, is_digits, luhn_check_digit
from imeireg.server import facts
from imeireg.server.normalise import normalise_batch
from imeireg.server.sources import Header, open_rows, sha256_of
from imeireg.server.store import (
    ImportRecord,
    ListName,
    SerialSet,
    Store,
    StoreWriter,
    TacSet,
    pair_key,
)

SAFETY_RATIO = 0.75
MAX_ERRORS_SHOWN = 20
_CHUNK_ROWS = 1 << 16
_SERIAL_SPACE = 1_000_000
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}

U64 = npt.NDArray[np.uint64]
Rows = Iterator[tuple[int, list[str]]]


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


class ImportRefused(Exception):
    """The safety rule refused a much smaller full list than the current one; nothing changed."""


@dataclass
class _Errors:
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


class _Builder(Protocol):
    """Turns the rows of one list file into the store's representation of that list."""

    columns: tuple[str, ...]

    def read(self, header: Header, rows: Rows, errors: _Errors) -> None: ...

    @property
    def rows(self) -> int: ...

    def write(self, writer: StoreWriter) -> BitMap:
        """Replace the list in the store; return the TACs whose serial sets changed."""
        ...


def import_file(
    store: Store,
    list_name: ListName,
    path: Path,
    *,
    force: bool = False,
    show_progress: bool = False,
) -> ImportRecord:
    """Replace `list_name` with the contents of `path` as one new generation."""
    builder, delimiter = _BUILDERS[list_name]()
    errors = _Errors(path)
    with open_rows(path, delimiter, show_progress=show_progress) as (header, rows):
        missing = header.missing(builder.columns)
        if missing:
            raise ImportRejected(
                path, [f"{path}:1: header lacks column(s) {', '.join(missing)}"], total=1
            )
        builder.read(header, rows, errors)
    errors.raise_if_any()
    digest = sha256_of(path)
    with store.write() as writer:
        current = writer.current_rows(list_name)
        if not force and builder.rows < SAFETY_RATIO * current:
            raise ImportRefused(
                f"{path}: {builder.rows} rows is fewer than {SAFETY_RATIO:.0%} of the {current} "
                f"rows of the current {list_name} list; refusing (use --force if this is meant)"
            )
        touched = builder.write(writer)
        writer.set_rows(list_name, builder.rows)
        return writer.commit_generation(
            list_name,
            mode="full",
            file_name=path.name,
            sha256=digest,
            rows=builder.rows,
            touched=touched,
        )


class _ImeiColumn:
    """One IMEI column, validated a chunk at a time.

    Each row carries a small tag, e.g. complete or provisional registration.
    """

    def __init__(self, column: str, errors: _Errors) -> None:
        self.column = column
        self._errors = errors
        self._texts: list[str] = []
        self._lines: list[int] = []
        self._tags: list[int] = []
        self._bodies: list[U64] = []
        self._body_tags: list[npt.NDArray[np.uint8]] = []
        self._body_lines: list[npt.NDArray[np.int64]] = []

    def add(self, line: int, text: str, tag: int = 0) -> None:
        self._texts.append(text)
        self._lines.append(line)
        self._tags.append(tag)
        if len(self._texts) >= _CHUNK_ROWS:
            self._flush()

    def finish(self) -> tuple[U64, npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
        """Bodies as tac * 10**6 + serial, their tags and line numbers, for the valid rows."""
        self._flush()
        if not self._bodies:
            return np.empty(0, np.uint64), np.empty(0, np.uint8), np.empty(0, np.int64)
        return (
            np.concatenate(self._bodies),
            np.concatenate(self._body_tags),
            np.concatenate(self._body_lines),
        )

    def _flush(self) -> None:
        if not self._texts:
            return
        batch = normalise_batch(self._texts)
        for i in np.flatnonzero(batch.flags).tolist():
            self._errors.add(self._lines[i], self._describe(self._texts[i], int(batch.flags[i])))
        good = batch.flags == 0
        bodies = batch.tacs[good].astype(np.uint64) * _SERIAL_SPACE + batch.serials[good]
        self._bodies.append(bodies)
        self._body_tags.append(np.asarray(self._tags, dtype=np.uint8)[good])
        self._body_lines.append(np.asarray(self._lines, dtype=np.int64)[good])
        self._texts, self._lines, self._tags = [], [], []

    def _describe(self, text: str, flags: int) -> str:
        if flags & facts.INVALID_FORMAT:
            return (
                f"{self.column} {text!r} is not an IMEI "
                "(14-digit body, 15-digit IMEI or 16-digit IMEISV expected)"
            )
        digits = text.removeprefix("imei-")
        expected = luhn_check_digit(digits[:14])
        return f"{self.column} {text!r} has check digit {digits[-1]}, expected {expected}"


def sorted_unique(values: U64) -> U64:
    """`np.unique` by sorting: numpy 2's default hash-based unique is several times slower here."""
    ordered = np.sort(values)
    keep = np.empty(len(ordered), dtype=np.bool_)
    keep[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def bitmaps_by_tac(bodies: U64) -> dict[int, BitMap]:
    """Group IMEI bodies (tac * 10**6 + serial) into one roaring bitmap of serials per TAC."""
    if not len(bodies):
        return {}
    bodies = sorted_unique(bodies)
    tacs = (bodies // _SERIAL_SPACE).astype(np.uint32)
    serials = (bodies % _SERIAL_SPACE).astype(np.uint32)
    starts = np.flatnonzero(np.r_[True, tacs[1:] != tacs[:-1]])
    ends = np.r_[starts[1:], len(tacs)]
    return {
        int(tacs[start]): BitMap(array("I", serials[start:end].tobytes()))
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True)
    }


def _well_formed(header: Header, rows: Rows, errors: _Errors) -> Rows:
    """The rows with as many fields as the header; the others are errors."""
    width = header.width
    for line, row in rows:
        if len(row) == width:
            yield line, row
        else:
            errors.add(line, f"{len(row)} fields where the header has {width}")


class _ImeiSetBuilder:
    """A list that is a set of IMEIs (stolen, barred, golden), with an optional per-row filter.

    `keep(row_fields) -> (kept, error)` decides whether a valid row's IMEI joins the set
    (the stolen list keeps only blocking statuses) or why the row is invalid.
    """

    def __init__(
        self,
        target: SerialSet,
        imei_column: str,
        extra: tuple[str, ...] = (),
        keep: Callable[[list[str]], tuple[bool, str | None]] | None = None,
    ) -> None:
        self.columns = (imei_column, *extra)
        self._target = target
        self._extra = extra
        self._keep = keep
        self._members = np.empty(0, np.uint64)
        self._rows = 0

    def read(self, header: Header, rows: Rows, errors: _Errors) -> None:
        imeis = _ImeiColumn(self.columns[0], errors)
        pick = header.picker(self.columns)
        for line, row in _well_formed(header, rows, errors):
            imei, *extra = pick(row)
            kept, problem = (
                self._keep([field.strip() for field in extra]) if self._keep else (True, None)
            )
            if problem:
                errors.add(line, problem)
            imeis.add(line, imei.strip(), tag=0 if kept else 1)
        bodies, tags, _ = imeis.finish()
        self._rows = len(sorted_unique(bodies))
        self._members = bodies[tags == 0]

    @property
    def rows(self) -> int:
        return self._rows

    def write(self, writer: StoreWriter) -> BitMap:
        return writer.replace_serial_set(self._target, bitmaps_by_tac(self._members))


_COMPLETE, _PROVISIONAL = 0, 1


class _RegistrationBuilder:
    """The national registration list: complete registrations and provisional ones."""

    columns: tuple[str, ...] = (
        "approved_imei", "make", "model", "status", "model_number",
        "brand_name", "device_type", "radio_interface", "device_id",
    )  # fmt: skip

    def __init__(self) -> None:
        self._complete = np.empty(0, np.uint64)
        self._provisional = np.empty(0, np.uint64)

    def read(self, header: Header, rows: Rows, errors: _Errors) -> None:
        imeis = _ImeiColumn("approved_imei", errors)
        pick = header.picker(("approved_imei", "status"))
        add = imeis.add
        for line, row in _well_formed(header, rows, errors):
            imei, status = pick(row)
            complete = not status or status.strip().lower() in ("", "whitelist")
            add(line, imei.strip(), _COMPLETE if complete else _PROVISIONAL)
        bodies, tags, _ = imeis.finish()
        self._complete = sorted_unique(bodies[tags == _COMPLETE])
        # A complete registration supersedes a provisional one for the same IMEI.
        provisional = sorted_unique(bodies[tags == _PROVISIONAL])
        self._provisional = provisional[
            ~np.isin(provisional, self._complete, assume_unique=True, kind="sort")
        ]

    @property
    def rows(self) -> int:
        return len(self._complete) + len(self._provisional)

    def write(self, writer: StoreWriter) -> BitMap:
        touched = writer.replace_serial_set(SerialSet.REGISTERED, bitmaps_by_tac(self._complete))
        return touched | writer.replace_serial_set(
            SerialSet.PROVISIONAL, bitmaps_by_tac(self._provisional)
        )


class _PairingBuilder:
    """IMEI-IMSI exception pairs: the set of paired IMEIs plus the pairs themselves."""

    columns: tuple[str, ...] = ("imei", "imsi", "msisdn")

    def __init__(self) -> None:
        self._pairs: dict[bytes, bytes] = {}
        self._bodies = np.empty(0, np.uint64)

    def read(self, header: Header, rows: Rows, errors: _Errors) -> None:
        imeis = _ImeiColumn("imei", errors)
        subscribers: dict[int, tuple[str, str]] = {}
        pick = header.picker(self.columns)
        for line, row in _well_formed(header, rows, errors):
            imei, imsi, msisdn = (field.strip() for field in pick(row))
            if not (is_digits(imsi) and 6 <= len(imsi) <= 15):
                errors.add(line, f"imsi {imsi!r} is not an IMSI (6 to 15 digits expected)")
            elif msisdn and not (is_digits(msisdn.removeprefix("+")) and len(msisdn) <= 16):
                errors.add(line, f"msisdn {msisdn!r} is not an MSISDN (up to 15 digits expected)")
            subscribers[line] = (imsi, msisdn)
            imeis.add(line, imei)
        bodies, _, lines = imeis.finish()
        for body, line in zip(bodies.tolist(), lines.tolist(), strict=True):
            imsi, msisdn = subscribers[line]
            self._pairs[pair_key(f"{body:014d}", imsi)] = msisdn.encode("ascii")
        self._bodies = bodies

    @property
    def rows(self) -> int:
        return len(self._pairs)

    def write(self, writer: StoreWriter) -> BitMap:
        writer.replace_records(writer.store.pairs, self._pairs)
        return writer.replace_serial_set(SerialSet.PAIRED, bitmaps_by_tac(self._bodies))


def _parse_tac(text: str) -> int | None:
    return int(text) if len(text) == TAC_DIGITS and is_digits(text) else None


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


class _GsmaBuilder:
    """The GSMA TAC database: the allocated TACs and their model records."""

    columns: tuple[str, ...] = (
        "tac",
        "manufacturer",
        "model_name",
        "bands",
        "allocation_date",
        "device_type",
    )

    def __init__(self) -> None:
        self._records: dict[bytes, bytes] = {}
        self._tacs = BitMap()

    def read(self, header: Header, rows: Rows, errors: _Errors) -> None:
        first_line: dict[int, int] = {}
        pick = header.picker(self.columns)
        brand = header.picker(("brand_name",)) if "brand_name" in header.positions else None
        for line, row in _well_formed(header, rows, errors):
            text, manufacturer, model, bands, allocated, device_type = (
                field.strip() for field in pick(row)
            )
            tac = _parse_tac(text)
            date = iso_date_of_gsma(allocated) if allocated else ""
            if tac is None:
                errors.add(line, f"tac {text!r} is not a TAC (8 digits expected)")
                continue
            if date is None:
                errors.add(line, f"allocation_date {allocated!r} is not a date like 15-Mar-2019")
                continue
            if tac in first_line:
                errors.add(line, f"tac {text} repeats line {first_line[tac]}")
                continue
            first_line[tac] = line
            record = {
                "manufacturer": manufacturer,
                "model_name": model,
                "brand_name": brand(row)[0].strip() if brand else "",
                "device_type": device_type,
                "bands": bands,
                "allocation_date": date,
            }
            self._records[text.encode("ascii")] = json.dumps(record).encode()
            self._tacs.add(tac)

    @property
    def rows(self) -> int:
        return len(self._tacs)

    def write(self, writer: StoreWriter) -> BitMap:
        writer.replace_records(writer.store.gsma, self._records)
        writer.replace_tac_set(TacSet.ALLOCATED, self._tacs)
        return BitMap()


class _BarredTacBuilder:
    """Whole models (TACs) barred by the regulator."""

    columns: tuple[str, ...] = ("tac",)

    def __init__(self) -> None:
        self._tacs = BitMap()

    def read(self, header: Header, rows: Rows, errors: _Errors) -> None:
        pick = header.picker(self.columns)
        for line, row in _well_formed(header, rows, errors):
            text = pick(row)[0].strip()
            tac = _parse_tac(text)
            if tac is None:
                errors.add(line, f"tac {text!r} is not a TAC (8 digits expected)")
            else:
                self._tacs.add(tac)

    @property
    def rows(self) -> int:
        return len(self._tacs)

    def write(self, writer: StoreWriter) -> BitMap:
        writer.replace_tac_set(TacSet.BARRED, self._tacs)
        return BitMap()


def _stolen_status(fields: list[str]) -> tuple[bool, str | None]:
    reporting_date, status = fields
    if reporting_date and not _is_reporting_date(reporting_date):
        return False, f"reporting_date {reporting_date!r} is not a date like 20200418 or 2020-04-18"
    return status.lower() in ("", "blacklist"), None


def _is_reporting_date(text: str) -> bool:
    digits = text.replace("-", "") if len(text) == 10 and text[4] == text[7] == "-" else text
    if len(digits) != 8 or not is_digits(digits):
        return False
    month, day = int(digits[4:6]), int(digits[6:])
    return 1 <= month <= 12 and 1 <= day <= 31


_BUILDERS: dict[ListName, Callable[[], tuple[_Builder, str]]] = {
    ListName.GSMA_TAC: lambda: (_GsmaBuilder(), "|"),
    ListName.REGISTRATION: lambda: (_RegistrationBuilder(), ","),
    ListName.STOLEN: lambda: (
        _ImeiSetBuilder(SerialSet.STOLEN, "imei", ("reporting_date", "status"), _stolen_status),
        ",",
    ),
    ListName.BARRED: lambda: (_ImeiSetBuilder(SerialSet.BARRED, "imei"), ","),
    ListName.BARRED_TAC: lambda: (_BarredTacBuilder(), ","),
    ListName.GOLDEN: lambda: (_ImeiSetBuilder(SerialSet.GOLDEN, "golden_imei"), ","),
    ListName.PAIRING: lambda: (_PairingBuilder(), ","),
}
