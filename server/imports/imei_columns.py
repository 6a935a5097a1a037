"""IMEI columns of list files, read into IMEI keys exactly as a check reads a request's IMEIs.

Both readers go through the serving path's batch normaliser (`check.normalise`, held to
`imeireg.imei.parse_imei` by the tests), so an import accepts exactly the IMEI spellings
a check does; a 15-digit IMEI must carry its correct check digit (registries validate
it at provisioning time).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from imeireg.imei import BODY_DIGITS, IMEI_DIGITS, IMEISV_DIGITS, luhn_check_digit
from imeireg.server.check import facts
from imeireg.server.check.normalise import SERIAL_BITS, normalise_batch
from imeireg.server.imports.rows import RowErrors

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

_CHUNK_ROWS = 1 << 16
# normalise_batch works best on cache-sized slices (measured: 70 ns a row at 1,000
# rows, 150 ns a row at 500,000).
_NORMALISE_ROWS = 1 << 13


class ImeiColumn:
    """One IMEI column read row by row, validated a chunk of rows at a time."""

    def __init__(self, column: str, errors: RowErrors) -> None:
        self.column = column
        self._errors = errors
        self._texts: list[str] = []
        self._lines: list[int] = []
        self._added = 0
        self._keys: list[U64] = []
        self._positions: list[I64] = []
        self._valid_lines: list[I64] = []

    def add(self, line: int, text: str) -> None:
        self._texts.append(text)
        self._lines.append(line)
        if len(self._texts) >= _CHUNK_ROWS:
            self._flush()

    def finish(self) -> tuple[U64, I64, I64]:
        """The keys of the valid IMEIs, the positions of their rows in the order added, and
        their line numbers."""
        self._flush()
        if not self._keys:
            return np.empty(0, np.uint64), np.empty(0, np.int64), np.empty(0, np.int64)
        return (
            np.concatenate(self._keys),
            np.concatenate(self._positions),
            np.concatenate(self._valid_lines),
        )

    def _flush(self) -> None:
        if not self._texts:
            return
        batch = normalise_batch(self._texts)
        for i in np.flatnonzero(batch.flags).tolist():
            self._errors.add(self._lines[i], self._describe(self._texts[i], int(batch.flags[i])))
        good = np.flatnonzero(batch.flags == 0)
        self._keys.append(batch.keys[good])
        self._positions.append(good + self._added)
        self._valid_lines.append(np.asarray(self._lines, dtype=np.int64)[good])
        self._added += len(self._texts)
        self._texts, self._lines = [], []

    def _describe(self, text: str, flags: int) -> str:
        if flags & facts.INVALID_FORMAT:
            return (
                f"{self.column} {text!r} is not an IMEI "
                "(14-digit body, 15-digit IMEI or 16-digit IMEISV expected)"
            )
        digits = text.removeprefix("imei-")
        expected = luhn_check_digit(digits[:BODY_DIGITS])
        return f"{self.column} {text!r} has check digit {digits[-1]}, expected {expected}"


def valid_keys(column: pa.Array) -> U64 | None:
    """The keys of an Arrow column of IMEIs all spelt alike in digits and all valid;
    None for any other column (the row reader then reads it)."""
    if column.null_count or not len(column):
        return None if len(column) else np.empty(0, np.uint64)
    _, offsets_buffer, data_buffer = column.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[
        column.offset : column.offset + len(column) + 1
    ]
    width = int(offsets[1] - offsets[0])
    if width not in (BODY_DIGITS, IMEI_DIGITS, IMEISV_DIGITS) or (np.diff(offsets) != width).any():
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


def imei_body(key: int) -> str:
    """The 14-digit body of an IMEI key."""
    return f"{key >> SERIAL_BITS:08d}{key & ((1 << SERIAL_BITS) - 1):06d}"
