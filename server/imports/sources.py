"""Import sources: a registry list file (.csv, .csv.gz or a .zip holding one CSV).

Gives the header's columns (case-insensitive), then either each data row with its
line number (Python's csv module: exact, for error reports) or chosen columns in
large Arrow batches (pyarrow's CSV reader: fast, for valid files); the SHA-256
of the file as given; and a progress bar over the bytes on a terminal.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
from pyarrow import csv as arrow_csv
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

_HASH_CHUNK = 1 << 20
_ARROW_BLOCK = 16 << 20


class SourceError(Exception):
    """The file cannot be read as a list file at all (as opposed to invalid rows)."""


@dataclass(frozen=True, slots=True)
class Header:
    """Column name (lower-case, stripped) → position in a row."""

    positions: dict[str, int]
    width: int

    def missing(self, required: tuple[str, ...]) -> list[str]:
        return [name for name in required if name not in self.positions]

    def picker(self, names: tuple[str, ...]) -> Callable[[list[str]], tuple[str, ...]]:
        """A function taking the named fields out of a row, in the order named."""
        positions = [self.positions[name] for name in names]
        if len(positions) == 1:
            (only,) = positions
            return lambda row: (row[only],)
        return itemgetter(*positions)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as raw:
        while chunk := raw.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _Counting(io.RawIOBase):
    """A byte stream that reports how much of it has been read, for the progress bar."""

    def __init__(self, inner: IO[bytes], progress: Progress | None, task: TaskID | None) -> None:
        self._inner = inner
        self._progress = progress
        self._task = task

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(buffer))
        buffer[: len(data)] = data
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, len(data))
        return len(data)


@contextmanager
def open_rows(
    path: Path, delimiter: str, *, show_progress: bool = False
) -> Iterator[tuple[Header, Iterator[tuple[int, list[str]]]]]:
    """The header and the data rows (line number, fields) of a list file; blank lines skipped."""
    with ExitStack() as stack:
        counted = _counted(path, stack, show_progress=show_progress)
        text = io.TextIOWrapper(counted, encoding="utf-8-sig", newline="")
        reader = csv.reader(text, delimiter=delimiter)
        try:
            first = next(reader, None)
        except (UnicodeDecodeError, OSError, EOFError, csv.Error) as error:
            raise SourceError(f"{path}: cannot read: {error}") from error
        if first is None:
            raise SourceError(f"{path}: empty file (a header row is required)")
        header = Header({name.strip().lower(): i for i, name in enumerate(first)}, len(first))
        yield header, _rows(path, reader)


def read_header(path: Path, delimiter: str) -> Header:
    with open_rows(path, delimiter) as (header, _):
        return header


def read_columns(
    path: Path,
    delimiter: str,
    header: Header,
    names: tuple[str, ...],
    *,
    show_progress: bool = False,
) -> Iterator[list[pa.Array]]:
    """The named columns, as Arrow string arrays, a block of rows at a time.

    Raises pyarrow.ArrowException where the file is not well-formed CSV (a row
    with another number of fields, invalid UTF-8, ...); the row reader then
    tells exactly where.
    """
    wanted = [f"f{header.positions[name]}" for name in names]
    with ExitStack() as stack:
        table = arrow_csv.read_csv(
            _arrow_source(path, stack, show_progress=show_progress),
            read_options=arrow_csv.ReadOptions(
                skip_rows=1,
                column_names=[f"f{i}" for i in range(header.width)],
                block_size=_ARROW_BLOCK,
            ),
            parse_options=arrow_csv.ParseOptions(delimiter=delimiter),
            convert_options=arrow_csv.ConvertOptions(
                include_columns=wanted,
                column_types=dict.fromkeys(wanted, pa.string()),
                strings_can_be_null=False,
            ),
        )
    for batch in table.to_batches():
        yield [batch.column(name) for name in wanted]


def _arrow_source(path: Path, stack: ExitStack, *, show_progress: bool) -> str | IO[bytes]:
    """What pyarrow is to read: a plain file with no progress bar to advance by its path,
    so that pyarrow reads it on its own threads with no copy through Python (0.3 s less
    for a 900 MB file); else the bytes as `_counted` gives them."""
    if not show_progress and path.name.lower().endswith((".csv", ".txt")):
        return str(path)
    return _counted(path, stack, show_progress=show_progress)


def _counted(path: Path, stack: ExitStack, *, show_progress: bool) -> IO[bytes]:
    """The decompressed bytes of `path`, advancing a progress bar as they are read."""
    binary, size = _open_binary(path, stack)
    progress = None
    task: TaskID | None = None
    if show_progress:
        progress = stack.enter_context(
            Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
        )
        task = progress.add_task(f"reading {path.name}", total=size)
    counted: IO[bytes] = io.BufferedReader(
        _Counting(binary, progress, task), buffer_size=_HASH_CHUNK
    )
    if path.name.lower().endswith(".gz"):
        counted = stack.enter_context(gzip.GzipFile(fileobj=counted, mode="rb"))  # type: ignore[arg-type]
    return counted


def _rows(path: Path, reader: Any) -> Iterator[tuple[int, list[str]]]:
    try:
        for row in reader:
            if len(row) > 1 or (row and row[0].strip()):
                yield reader.line_num, row
    except (UnicodeDecodeError, OSError, EOFError, csv.Error) as error:
        raise SourceError(f"{path}:{reader.line_num + 1}: cannot read: {error}") from error


def _open_binary(path: Path, stack: ExitStack) -> tuple[IO[bytes], int]:
    """The CSV bytes of `path` and their length (compressed length for .gz)."""
    name = path.name.lower()
    try:
        if name.endswith(".zip"):
            archive = stack.enter_context(zipfile.ZipFile(path))
            members = [info for info in archive.infolist() if not info.is_dir()]
            if len(members) != 1:
                raise SourceError(
                    f"{path}: a .zip must hold exactly one CSV file, found {len(members)}"
                )
            return stack.enter_context(archive.open(members[0])), members[0].file_size
        if name.endswith((".csv", ".csv.gz", ".txt", ".txt.gz")):
            return stack.enter_context(path.open("rb")), path.stat().st_size
    except (OSError, zipfile.BadZipFile) as error:
        raise SourceError(
            f"{path}: cannot open: {getattr(error, 'strerror', None) or error}"
        ) from error
    raise SourceError(f"{path}: unsupported file type (expected .csv, .csv.gz or .zip)")
