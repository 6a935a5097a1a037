"""The registry's domain types, shared by every room: lists, serial and TAC sets, snapshots,
the import log. Plain values, no storage: the store, the imports, the serving state and the
fronts all speak of these.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ListName(StrEnum):
    """The lists a registry keeps, named as on the command line."""

    GSMA_TAC = "gsma-tac"
    REGISTRATION = "registration"
    STOLEN = "stolen"
    BARRED = "barred"
    BARRED_TAC = "barred-tac"
    GOLDEN = "golden"
    PAIRING = "pairing"


class SerialSet(StrEnum):
    """Per-TAC roaring bitmaps of serials: the membership index of the IMEI-level lists."""

    REGISTERED = "registered"
    PROVISIONAL = "provisional"
    STOLEN = "stolen"
    BARRED = "barred"
    GOLDEN = "golden"
    PAIRED = "paired"  # IMEIs that have at least one pairing in `pairs`


class TacSet(StrEnum):
    """Roaring bitmaps of whole TACs."""

    ALLOCATED = "allocated"
    BARRED = "barred"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One committed state of the registry."""

    generation: int
    committed_at: float  # Unix time; 0.0 before the first import


@dataclass(frozen=True, slots=True)
class ImportRecord:
    """The log entry of one committed import or rollback."""

    list_name: str  # a ListName value; "" for a rollback
    mode: str  # "full", "delta" or "rollback"
    file_name: str
    sha256: str
    rows: int  # distinct entries in the file (full, delta) or restored (rollback)
    generation: int
    committed_at: float
    added: int = 0  # entries the list gained
    removed: int = 0  # entries it lost
    updated: int = 0  # entries kept with a new value (status, model record, MSISDN)
    rolled_back_to: int = 0  # a rollback's target: the state before this generation


@dataclass(frozen=True, slots=True)
class Changes:
    """What one import did to its list, for the log."""

    added: int = 0
    removed: int = 0
    updated: int = 0
