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
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pyroaring import BitMap

from imeireg.imei import TAC_DIGITS, is_digits, luhn_check_digit
from imeireg.server.check import facts
from imeireg.server.check.normalise import SERIAL_BITS, normalise_batch
from imeireg.server.check.sorted_arrays import sorted_contains, sorted_unique
from imeireg.server.imports.sources import Header, open_rows, read_columns, read_header, sha256_of
from imeireg.server.model import Changes, ImportRecord, ListName, SerialSet, TacSet
from imeireg.server.store import Store, StoreWriter, pair_key

SAFETY_RATIO = 0.75
MAX_ERRORS_SHOWN = 20
_CHUNK_ROWS = 1 << 16
# normalise_batch works best on cache-sized slices (measured: 70 ns a row at 1,000
# rows, 150 ns a row at 500,000).
_NORMALISE_ROWS = 1 << 13
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


class _Builder(Protocol):
    """Turns the rows of one list file into the store's representation of that list."""

    columns: tuple[str, ...]
    #: The columns `read_fast` needs; empty when the list is always read row by row.
    fast_columns: tuple[str, ...]

    def read(self, header: Header, rows: Rows, errors: RowErrors) -> None: ...

    def read_fast(self, batches: Iterator[list[pa.Array]]) -> bool:
        """Read the whole file from column batches; False if any row needs `read`'s report."""
        ...

    @property
    def rows(self) -> int: ...

    def write(self, writer: StoreWriter) -> Changes:
        """Replace the list in the store; return how it changed."""
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
    header = read_header(path, delimiter)
    missing = header.missing(builder.columns)
    if missing:
        raise ImportRejected(
            path, [f"{path}:1: header lacks column(s) {', '.join(missing)}"], total=1
        )
    # Hashing the file (hashlib frees the GIL) overlaps with reading it.
    with ThreadPoolExecutor(max_workers=1) as hasher:
        digest = hasher.submit(sha256_of, path)
        if not _read_fast(builder, path, delimiter, header, show_progress=show_progress):
            errors = RowErrors(path)
            with open_rows(path, delimiter, show_progress=show_progress) as (header, rows):
                builder.read(header, rows, errors)
            errors.raise_if_any()
    with store.write() as writer:
        _refuse_if_much_smaller(writer, list_name, builder.rows, path, force=force)
        changes = builder.write(writer)
        writer.set_rows(list_name, builder.rows)
        return writer.commit_generation(
            list_name,
            mode="full",
            file_name=path.name,
            sha256=digest.result(),
            rows=builder.rows,
            changes=changes,
        )


def _read_fast(
    builder: _Builder, path: Path, delimiter: str, header: Header, *, show_progress: bool
) -> bool:
    """Read a file with pyarrow when the list allows it and every row is valid.

    Valid files, the usual case, are read a block at a time without a Python step
    per row; any irregularity sends the file to the row reader, which reports
    each problem with its line number.
    """
    if not builder.fast_columns:
        return False
    batches = read_columns(
        path, delimiter, header, builder.fast_columns, show_progress=show_progress
    )
    try:
        return builder.read_fast(batches)
    except pa.ArrowException:
        return False


def valid_keys(column: pa.Array) -> U64 | None:
    """The keys of a column of IMEIs all spelt alike and valid; None for any other column."""
    if column.null_count or not len(column):
        return None if len(column) else np.empty(0, np.uint64)
    _, offsets_buffer, data_buffer = column.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[
        column.offset : column.offset + len(column) + 1
    ]
    width = int(offsets[1] - offsets[0])
    if width not in (14, 15, 16) or (np.diff(offsets) != width).any():
        return None
    rows = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]].reshape(-1, width)
    keys = np.empty(len(rows), dtype=np.uint64)
    for start in range(0, len(rows), _NORMALISE_ROWS):
        # Slice by slice, so that every temporary array stays in the cache.
        digits = rows[start : start + _NORMALISE_ROWS] - np.uint8(ord("0"))
        if digits.max() > 9:  # below '0' wraps around to above 9
            return None
        batch = normalise_batch(digits)
        if batch.flags.any():
            return None
        keys[start : start + _NORMALISE_ROWS] = batch.keys
    return keys


def import_serial_sets(
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


class ImeiColumn:
    """One IMEI column, validated a chunk at a time.

    Each row carries a small tag, e.g. complete or provisional registration.
    """

    def __init__(self, column: str, errors: RowErrors) -> None:
        self.column = column
        self._errors = errors
        self._texts: list[str] = []
        self._lines: list[int] = []
        self._tags: list[int] = []
        self._keys: list[U64] = []
        self._key_tags: list[npt.NDArray[np.uint8]] = []
        self._key_lines: list[npt.NDArray[np.int64]] = []

    def add(self, line: int, text: str, tag: int = 0) -> None:
        self._texts.append(text)
        self._lines.append(line)
        self._tags.append(tag)
        if len(self._texts) >= _CHUNK_ROWS:
            self._flush()

    def finish(self) -> tuple[U64, npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
        """IMEI keys (see normalise.py), their tags and line numbers, for the valid rows."""
        self._flush()
        if not self._keys:
            return np.empty(0, np.uint64), np.empty(0, np.uint8), np.empty(0, np.int64)
        return (
            np.concatenate(self._keys),
            np.concatenate(self._key_tags),
            np.concatenate(self._key_lines),
        )

    def _flush(self) -> None:
        if not self._texts:
            return
        batch = normalise_batch(self._texts)
        for i in np.flatnonzero(batch.flags).tolist():
            self._errors.add(self._lines[i], self._describe(self._texts[i], int(batch.flags[i])))
        good = batch.flags == 0
        self._keys.append(batch.keys[good])
        self._key_tags.append(np.asarray(self._tags, dtype=np.uint8)[good])
        self._key_lines.append(np.asarray(self._lines, dtype=np.int64)[good])
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


def bitmaps_by_tac(keys: U64) -> Iterator[tuple[int, BitMap]]:
    """Group sorted, distinct IMEI keys (tac << 20 | serial) into a bitmap of serials per TAC."""
    if not len(keys):
        return
    tacs = (keys >> np.uint64(SERIAL_BITS)).astype(np.uint32)
    serials = (keys & np.uint64((1 << SERIAL_BITS) - 1)).astype(np.uint32)
    starts = np.flatnonzero(np.r_[True, tacs[1:] != tacs[:-1]])
    ends = np.r_[starts[1:], len(tacs)]
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        yield int(tacs[start]), BitMap(array("I", serials[start:end].tobytes()))


def well_formed(header: Header, rows: Rows, errors: RowErrors) -> Rows:
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
        # A row filter needs the exact reader.
        self.fast_columns: tuple[str, ...] = () if keep else (imei_column,)
        self._target = target
        self._extra = extra
        self._keep = keep
        self._members = np.empty(0, np.uint64)
        self._rows = 0

    def read(self, header: Header, rows: Rows, errors: RowErrors) -> None:
        imeis = ImeiColumn(self.columns[0], errors)
        pick = header.picker(self.columns)
        for line, row in well_formed(header, rows, errors):
            imei, *extra = pick(row)
            kept, problem = (
                self._keep([field.strip() for field in extra]) if self._keep else (True, None)
            )
            if problem:
                errors.add(line, problem)
            imeis.add(line, imei.strip(), tag=0 if kept else 1)
        keys, tags, _ = imeis.finish()
        self._rows = len(sorted_unique(keys))
        self._members = sorted_unique(keys[tags == 0])

    def read_fast(self, batches: Iterator[list[pa.Array]]) -> bool:
        found = []
        for (imeis,) in batches:
            keys = valid_keys(imeis)
            if keys is None:
                return False
            found.append(keys)
        self._members = sorted_unique(np.concatenate(found)) if found else np.empty(0, np.uint64)
        self._rows = len(self._members)
        return True

    @property
    def rows(self) -> int:
        return self._rows

    def write(self, writer: StoreWriter) -> Changes:
        return writer.replace_serial_set(self._target, bitmaps_by_tac(self._members))


_COMPLETE, _PROVISIONAL = 0, 1
COMPLETE_STATUSES = pa.array(["", "whitelist"])


class _RegistrationBuilder:
    """The national registration list: complete registrations and provisional ones."""

    columns: tuple[str, ...] = (
        "approved_imei", "make", "model", "status", "model_number",
        "brand_name", "device_type", "radio_interface", "device_id",
    )  # fmt: skip
    fast_columns: tuple[str, ...] = ("approved_imei", "status")

    def __init__(self) -> None:
        self._complete = np.empty(0, np.uint64)
        self._provisional = np.empty(0, np.uint64)

    def read(self, header: Header, rows: Rows, errors: RowErrors) -> None:
        imeis = ImeiColumn("approved_imei", errors)
        pick = header.picker(("approved_imei", "status"))
        add = imeis.add
        for line, row in well_formed(header, rows, errors):
            imei, status = pick(row)
            complete = not status or status.strip().lower() in ("", "whitelist")
            add(line, imei.strip(), _COMPLETE if complete else _PROVISIONAL)
        keys, tags, _ = imeis.finish()
        self._sort(keys, tags == _COMPLETE)

    def read_fast(self, batches: Iterator[list[pa.Array]]) -> bool:
        found, complete = [], []
        for imeis, status in batches:
            keys = valid_keys(imeis)
            if keys is None:
                return False
            found.append(keys)
            normalised = pc.utf8_lower(pc.utf8_trim_whitespace(status))
            complete.append(
                pc.is_in(normalised, value_set=COMPLETE_STATUSES).to_numpy(zero_copy_only=False)
            )
        if found:
            self._sort(np.concatenate(found), np.concatenate(complete))
        return True

    def _sort(self, keys: U64, complete: npt.NDArray[np.bool_]) -> None:
        self._complete = sorted_unique(keys[complete])
        # A complete registration supersedes a provisional one for the same IMEI.
        provisional = sorted_unique(keys[~complete])
        self._provisional = provisional[~sorted_contains(self._complete, provisional)]

    @property
    def rows(self) -> int:
        return len(self._complete) + len(self._provisional)

    def write(self, writer: StoreWriter) -> Changes:
        # Counted per set: a registration turning complete counts as one removed, one added.
        complete = writer.replace_serial_set(SerialSet.REGISTERED, bitmaps_by_tac(self._complete))
        provisional = writer.replace_serial_set(
            SerialSet.PROVISIONAL, bitmaps_by_tac(self._provisional)
        )
        return Changes(complete.added + provisional.added, complete.removed + provisional.removed)


class _RowsOnly:
    """A list small enough, or with rows varied enough, to be read row by row only."""

    fast_columns: tuple[str, ...] = ()

    def read_fast(self, batches: Iterator[list[pa.Array]]) -> bool:
        return False


class _PairingBuilder(_RowsOnly):
    """IMEI-IMSI exception pairs: the set of paired IMEIs plus the pairs themselves."""

    columns: tuple[str, ...] = ("imei", "imsi", "msisdn")

    def __init__(self) -> None:
        self._pairs: dict[bytes, bytes] = {}
        self._keys = np.empty(0, np.uint64)

    def read(self, header: Header, rows: Rows, errors: RowErrors) -> None:
        imeis = ImeiColumn("imei", errors)
        subscribers: dict[int, tuple[str, str]] = {}
        pick = header.picker(self.columns)
        for line, row in well_formed(header, rows, errors):
            imei, imsi, msisdn = (field.strip() for field in pick(row))
            if problem := pairing_problem(imsi, msisdn):
                errors.add(line, problem)
            subscribers[line] = (imsi, msisdn)
            imeis.add(line, imei)
        keys, _, lines = imeis.finish()
        for key, line in zip(keys.tolist(), lines.tolist(), strict=True):
            imsi, msisdn = subscribers[line]
            self._pairs[pair_key(pair_body(key), imsi)] = msisdn.encode("ascii")
        self._keys = sorted_unique(keys)

    @property
    def rows(self) -> int:
        return len(self._pairs)

    def write(self, writer: StoreWriter) -> Changes:
        writer.replace_serial_set(SerialSet.PAIRED, bitmaps_by_tac(self._keys))
        return writer.replace_records(writer.store.pairs, self._pairs)


def pairing_problem(imsi: str, msisdn: str) -> str | None:
    """What is wrong with a pairing's IMSI and MSISDN, if anything."""
    if not (is_digits(imsi) and 6 <= len(imsi) <= 15):
        return f"imsi {imsi!r} is not an IMSI (6 to 15 digits expected)"
    if msisdn and not (is_digits(msisdn.removeprefix("+")) and len(msisdn) <= 16):
        return f"msisdn {msisdn!r} is not an MSISDN (up to 15 digits expected)"
    return None


def pair_body(key: int) -> str:
    """The 14-digit body of an IMEI key."""
    return f"{key >> SERIAL_BITS:08d}{key & ((1 << SERIAL_BITS) - 1):06d}"


def parse_tac(text: str) -> int | None:
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


GSMA_COLUMNS = ("tac", "manufacturer", "model_name", "bands", "allocation_date", "device_type")


class GsmaRows:
    """Reads rows of the GSMA TAC database: a TAC and its model record, or what is wrong."""

    def __init__(self, header: Header) -> None:
        self._pick = header.picker(GSMA_COLUMNS)
        self._brand = header.picker(("brand_name",)) if "brand_name" in header.positions else None

    def parse(self, row: list[str]) -> tuple[int, bytes] | str:
        text, manufacturer, model, bands, allocated, device_type = (
            field.strip() for field in self._pick(row)
        )
        tac = parse_tac(text)
        if tac is None:
            return f"tac {text!r} is not a TAC (8 digits expected)"
        date = iso_date_of_gsma(allocated) if allocated else ""
        if date is None:
            return f"allocation_date {allocated!r} is not a date like 15-Mar-2019"
        record = {
            "manufacturer": manufacturer,
            "model_name": model,
            "brand_name": self._brand(row)[0].strip() if self._brand else "",
            "device_type": device_type,
            "bands": bands,
            "allocation_date": date,
        }
        return tac, json.dumps(record).encode()


class _GsmaBuilder(_RowsOnly):
    """The GSMA TAC database: the allocated TACs and their model records."""

    columns: tuple[str, ...] = GSMA_COLUMNS

    def __init__(self) -> None:
        self._records: dict[bytes, bytes] = {}
        self._tacs = BitMap()

    def read(self, header: Header, rows: Rows, errors: RowErrors) -> None:
        first_line: dict[int, int] = {}
        gsma = GsmaRows(header)
        for line, row in well_formed(header, rows, errors):
            parsed = gsma.parse(row)
            if isinstance(parsed, str):
                errors.add(line, parsed)
                continue
            tac, record = parsed
            if tac in first_line:
                errors.add(line, f"tac {tac:08d} repeats line {first_line[tac]}")
                continue
            first_line[tac] = line
            self._records[f"{tac:08d}".encode("ascii")] = record
            self._tacs.add(tac)

    @property
    def rows(self) -> int:
        return len(self._tacs)

    def write(self, writer: StoreWriter) -> Changes:
        writer.replace_tac_set(TacSet.ALLOCATED, self._tacs)
        return writer.replace_gsma_records(self._records)


class _BarredTacBuilder(_RowsOnly):
    """Whole models (TACs) barred by the regulator."""

    columns: tuple[str, ...] = ("tac",)

    def __init__(self) -> None:
        self._tacs = BitMap()

    def read(self, header: Header, rows: Rows, errors: RowErrors) -> None:
        pick = header.picker(self.columns)
        for line, row in well_formed(header, rows, errors):
            text = pick(row)[0].strip()
            tac = parse_tac(text)
            if tac is None:
                errors.add(line, f"tac {text!r} is not a TAC (8 digits expected)")
            else:
                self._tacs.add(tac)

    @property
    def rows(self) -> int:
        return len(self._tacs)

    def write(self, writer: StoreWriter) -> Changes:
        return writer.replace_tac_set(TacSet.BARRED, self._tacs)


def stolen_status(fields: list[str]) -> tuple[bool, str | None]:
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
        _ImeiSetBuilder(SerialSet.STOLEN, "imei", ("reporting_date", "status"), stolen_status),
        ",",
    ),
    ListName.BARRED: lambda: (_ImeiSetBuilder(SerialSet.BARRED, "imei"), ","),
    ListName.BARRED_TAC: lambda: (_BarredTacBuilder(), ","),
    ListName.GOLDEN: lambda: (_ImeiSetBuilder(SerialSet.GOLDEN, "golden_imei"), ","),
    ListName.PAIRING: lambda: (_PairingBuilder(), ","),
}


def list_format(list_name: ListName) -> tuple[tuple[str, ...], str]:
    """The columns a full file of `list_name` must have, and its delimiter."""
    builder, delimiter = _BUILDERS[list_name]()
    return builder.columns, delimiter


def roll_back(store: Store, before: int) -> ImportRecord:
    """Return the registry to its state before generation `before`, as a new generation.

    Replays the before-images that every import keeps (see store.py), newest first;
    the rollback is logged like an import and can itself be rolled back.
    """
    with store.write() as writer:
        replayed = writer.roll_back(before)
        return writer.commit_generation(
            None,
            mode="rollback",
            file_name=f"state before generation {before}",
            sha256="",
            rows=replayed,
            rolled_back_to=before,
        )
