"""Delimited text rows rendered from numpy columns, with no Python object per row.

A file of 10^7 rows is written as bytes built by numpy scatter operations: each
column is either zero-padded decimal numbers (`Digits`) or a choice among a few
texts (`Choice`, e.g. a maker's name per TAC), and every row is the columns
joined by a delimiter and ended by a newline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

_ZERO = ord("0")
_MAX_WIDTH = 19  # decimal digits of the largest uint64 that numpy's arithmetic keeps exact


@dataclass(frozen=True)
class Digits:
    """Non-negative integers written as exactly `width` decimal digits, leading zeros kept."""

    values: U64
    width: int

    def __post_init__(self) -> None:
        if not 1 <= self.width <= _MAX_WIDTH:
            raise ValueError(f"width {self.width} is not 1 to {_MAX_WIDTH}")

    def __len__(self) -> int:
        return len(self.values)


class TextTable:
    """A small table of ASCII texts, encoded once as one byte matrix per text length."""

    def __init__(self, texts: Sequence[str]) -> None:
        encoded = [text.encode("ascii") for text in texts]
        self.lengths = np.array([len(text) for text in encoded], dtype=np.int64)
        # For each length: the row in that length's matrix of every text (-1 if another length).
        self.by_length: dict[int, tuple[U8, I64]] = {}
        for length in sorted(set(self.lengths.tolist()) - {0}):
            members = np.flatnonzero(self.lengths == length)
            matrix = np.frombuffer(b"".join(encoded[i] for i in members), dtype=np.uint8)
            slot = np.full(len(encoded), -1, dtype=np.int64)
            slot[members] = np.arange(len(members))
            self.by_length[length] = (matrix.reshape(len(members), length), slot)

    def __len__(self) -> int:
        return len(self.lengths)


@dataclass(frozen=True)
class Choice:
    """Per row, one text of a table: `table[index[row]]`."""

    table: TextTable
    index: I64

    def __len__(self) -> int:
        return len(self.index)


Column = Digits | Choice


def render(columns: Sequence[Column], delimiter: str = ",") -> bytes:
    """The rows made of `columns` (all of one length), each ended by a newline, as ASCII bytes."""
    count = len(columns[0])
    if any(len(column) != count for column in columns):
        raise ValueError("columns differ in length")
    if count == 0:
        return b""
    widths = [_widths(column) for column in columns]
    row_lengths = np.sum(widths, axis=0) + len(columns)  # a delimiter or newline after each
    row_ends = np.cumsum(row_lengths)
    out = np.empty(int(row_ends[-1]), dtype=np.uint8)
    field_start = row_ends - row_lengths
    for column, width in zip(columns, widths, strict=True):
        if isinstance(column, Digits):
            _scatter_digits(out, field_start, column)
        else:
            _scatter_choice(out, field_start, column)
        out[field_start + width] = ord(delimiter)
        field_start = field_start + width + 1
    out[row_ends - 1] = ord("\n")
    return out.tobytes()


def _widths(column: Column) -> I64:
    if isinstance(column, Digits):
        return np.full(len(column), column.width, dtype=np.int64)
    widths: I64 = column.table.lengths[column.index]
    return widths


def _scatter_digits(out: U8, starts: I64, column: Digits) -> None:
    powers = 10 ** np.arange(column.width - 1, -1, -1, dtype=np.uint64)
    digits = (column.values[:, None] // powers % np.uint64(10)).astype(np.uint8) + np.uint8(_ZERO)
    out[starts[:, None] + np.arange(column.width)] = digits


def _scatter_choice(out: U8, starts: I64, column: Choice) -> None:
    row_lengths = column.table.lengths[column.index]
    # Texts of one length form a matrix, so each length is one scatter.
    for length, (matrix, slot) in column.table.by_length.items():
        rows = np.flatnonzero(row_lengths == length)
        if len(rows):
            out[starts[rows, None] + np.arange(length)] = matrix[slot[column.index[rows]]]


def luhn_imeis(bodies: U64) -> U64:
    """15-digit IMEIs as numbers: each 14-digit body followed by its Luhn check digit."""
    powers = 10 ** np.arange(13, -1, -1, dtype=np.uint64)
    digits = (bodies[:, None] // powers % np.uint64(10)).astype(np.uint8)
    doubled = digits[:, 1::2] * np.uint8(2)
    total = digits[:, 0::2].sum(axis=1, dtype=np.uint64) + (
        doubled - np.uint8(9) * (doubled > 9)
    ).sum(axis=1, dtype=np.uint64)
    check = (np.uint64(10) - total % np.uint64(10)) % np.uint64(10)
    imeis: U64 = bodies * np.uint64(10) + check
    return imeis
