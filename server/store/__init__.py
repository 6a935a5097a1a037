"""The registry store: the one room that knows it is LMDB.

`Store` opens an environment; `Store.read()` gives a `ReadView` (one snapshot, read
through named operations) and `Store.write()` a `StoreWriter` (one import, committed as
a new generation). `segments` derives the fact table's per-TAC segments from the
serial sets; `snapshots` exports, verifies and installs copies for replicas.
"""

from imeireg.server.store.registry import (
    HISTORY_GENERATIONS,
    SCHEMA_VERSION,
    SET_FACTS,
    ReadView,
    Store,
    StoreError,
    StoreWriter,
    bitmaps_by_tac,
    merge_edits,
)

__all__ = [
    "HISTORY_GENERATIONS",
    "SCHEMA_VERSION",
    "SET_FACTS",
    "ReadView",
    "Store",
    "StoreError",
    "StoreWriter",
    "bitmaps_by_tac",
    "merge_edits",
]
