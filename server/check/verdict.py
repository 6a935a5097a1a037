"""The check: IMEI strings → normalised keys → facts → the policy's statuses, from one state.

`check(state, imeis, imsis)` is what every front calls. It reads nothing but the state
it is given (pairings through the state's pinned view of the store), so one call answers
from exactly one snapshot, and says which.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from imeireg.imei import MCC_DIGITS, parse_imei
from imeireg.server.check import facts
from imeireg.server.check.columns import TextColumn
from imeireg.server.check.fact_table import HAS_PAIRING
from imeireg.server.check.fact_table_search import lookup
from imeireg.server.check.normalise import SERIAL_BITS
from imeireg.server.check.normalise_compiled import normalise_column
from imeireg.server.check.verdict_compiled import verdicts
from imeireg.server.model import Snapshot
from imeireg.server.serving.state import ServingState

U8 = npt.NDArray[np.uint8]
U32 = npt.NDArray[np.uint32]

# Up to this size a batch is answered IMEI by IMEI: numpy's fixed cost per
# operation outweighs its gain on a few IMEIs (single checks at attach time).
SMALL_BATCH = 16


@dataclass(frozen=True, slots=True)
class BatchVerdict:
    """Aligned columns answering one batch: status numbers and reason bit sets."""

    statuses: U8
    reasons: U32
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class TacRecord:
    """What the registry knows of one TAC."""

    tac: str
    allocated: bool
    barred: bool
    model: dict[str, str]


def check(state: ServingState, imeis: Sequence[str], imsis: Sequence[str] = ()) -> BatchVerdict:
    """Answer one batch of IMEI strings (a `TextColumn` of a request's bytes, or any
    sequence), with IMSIs aligned to it or none."""
    if len(imeis) <= SMALL_BATCH:
        pairs = zip(imeis, imsis or _NO_IMSIS, strict=False)  # no IMSIs: as many as needed
        reasons = np.fromiter(
            (facts_of(state, imei, imsi) for imei, imsi in pairs), np.uint32, len(imeis)
        )
        return BatchVerdict(state.policy.decide(reasons), reasons, state.snapshot)
    reasons, statuses = _batch(state, imeis, imsis)
    return BatchVerdict(statuses, reasons, state.snapshot)


_NO_IMSIS = itertools.repeat("")


def batch_reasons(state: ServingState, imeis: Sequence[str], imsis: Sequence[str] = ()) -> U32:
    """The fact bits of every IMEI of a batch; `imsis` is empty or aligned with it."""
    return _batch(state, imeis, imsis)[0]


def _batch(state: ServingState, imeis: Sequence[str], imsis: Sequence[str]) -> tuple[U32, U8]:
    """The fact bits and statuses of a batch: normalised, looked up in the fact table, and
    decided, each in one compiled pass; then the pairings asked of the store."""
    column = TextColumn.of(imsis)
    batch = normalise_column(TextColumn.of(imeis))
    table_facts = lookup(state.table, batch.keys)
    reasons, statuses, to_pair = verdicts(batch, table_facts, column, state.policy)
    # Rows whose IMEI has pairings and came with an IMSI: few, each a read of the store.
    for row in to_pair.tolist():
        tac, serial = divmod(int(batch.keys[row]), 1 << SERIAL_BITS)
        if state.view.is_paired(f"{tac:08d}{serial:06d}", column[row]):
            reasons[row] |= facts.PAIRED
            statuses[row] = state.policy.decide(reasons[row : row + 1])[0]
    return reasons, statuses


def facts_of(state: ServingState, imei: str, imsi: str = "") -> int:
    """The fact bits of one IMEI: `batch_reasons` for a batch of one, without numpy's
    fixed costs."""
    parsed = parse_imei(imei)
    if parsed is None:
        return facts.INVALID_FORMAT
    tac, serial = int(parsed.tac), int(parsed.serial)
    table = state.table
    key = np.uint64(tac << SERIAL_BITS | serial)
    found = int(table.facts[int(table.keys.searchsorted(key, "right")) - 1])
    if found & HAS_PAIRING:
        found ^= HAS_PAIRING
        if imsi and state.view.is_paired(f"{tac:08d}{serial:06d}", imsi):
            found |= facts.PAIRED
    if imsi and imsi[:MCC_DIGITS] not in state.policy.home_mccs:
        found |= facts.INBOUND_ROAMER
    if parsed.check_digit_mismatch:
        found |= facts.CHECK_DIGIT_MISMATCH
    return found


def tac_records(state: ServingState, tacs: Sequence[str]) -> list[TacRecord]:
    """What the state's snapshot knows of each TAC (8 digits each)."""
    return [
        TacRecord(
            tac,
            int(tac) in state.allocated,
            int(tac) in state.barred_tacs,
            state.view.gsma_record(tac) or {},
        )
        for tac in tacs
    ]
