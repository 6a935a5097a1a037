"""Set operations on sorted uint64 arrays, faster than numpy 2's general ones for our sizes.

numpy 2.4's hash-based `np.unique` and `np.isin` take over a second per million
values here; sorting and binary search take tens of milliseconds.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
V = TypeVar("V", npt.NDArray[np.uint16], npt.NDArray[np.int64])


def sorted_unique(values: U64) -> U64:
    """The distinct values, sorted."""
    ordered = np.sort(values)
    keep = np.empty(len(ordered), dtype=np.bool_)
    keep[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def sorted_contains(sorted_set: U64, values: U64) -> npt.NDArray[np.bool_]:
    """Whether each value is in `sorted_set` (sorted, distinct): `np.isin` by binary search."""
    if not len(sorted_set):
        return np.zeros(len(values), dtype=np.bool_)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    found: npt.NDArray[np.bool_] = sorted_set[at] == values
    return found


def overwrite_steps(steps: U64, values: V, keys: U64, new_values: V) -> tuple[U64, V]:
    """A step function (sorted `steps`, the `values` from each on) with each of `keys`
    (sorted, distinct) given its own step of `new_values`, the old values resuming one
    key later. Costs a copy of the arrays and a binary search per key; repeated values
    are left for the caller to merge."""
    resumes = keys + np.uint64(1)
    resumes = resumes[~sorted_contains(keys, resumes)]
    resumed = values[np.searchsorted(steps, resumes, side="right") - 1]
    # The old steps at an edited key are overwritten.
    first = np.searchsorted(steps, keys, side="left")
    counts = np.searchsorted(steps, keys, side="right") - first
    starts = np.repeat(first - np.cumsum(counts) + counts, counts)
    overwritten = starts + np.arange(int(counts.sum()))
    steps, values = np.delete(steps, overwritten), np.delete(values, overwritten)
    inserted = np.concatenate([keys, resumes])
    order = np.argsort(inserted, kind="stable")
    inserted, inserted_values = inserted[order], np.concatenate([new_values, resumed])[order]
    at = np.searchsorted(steps, inserted)
    return np.insert(steps, at, inserted), np.insert(values, at, inserted_values)
