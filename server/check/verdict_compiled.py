"""The last step of a batch's check, compiled: each IMEI's facts from the table and its
format flags combined with what its IMSI says, and the policy's status read from its
table, in one pass without a numpy step per fact.

The rows whose IMEI has pairings and came with an IMSI are handed back: whether the
two are paired is the store's to say (`verdict`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from imeireg.server.check import facts
from imeireg.server.check.columns import TextColumn
from imeireg.server.check.fact_table import HAS_PAIRING
from imeireg.server.check.imsis import is_foreign
from imeireg.server.check.normalise import ImeiBatch
from imeireg.server.check.policy import Policy
from imeireg.server.compiled import BYTES, I64S, U16S, U32S, compiled

U8 = npt.NDArray[np.uint8]
U16 = npt.NDArray[np.uint16]
U32 = npt.NDArray[np.uint32]
I64 = npt.NDArray[np.int64]

_INVALID_FORMAT = facts.INVALID_FORMAT
_INBOUND_ROAMER = facts.INBOUND_ROAMER


@compiled(
    "Tuple((uint32[::1], uint8[::1], int64[::1]))"
    f"({U32S}, {U16S}, {BYTES}, {I64S}, {I64S}, {I64S}, {BYTES})"
)
def _verdicts(  # noqa: PLR0917  (a compiled function takes its arguments by position)
    flags: U32,
    table_facts: U16,
    imsi_chars: U8,
    imsi_starts: I64,
    imsi_lengths: I64,
    home_mccs: I64,
    statuses_of: U8,
) -> tuple[U32, U8, I64]:
    count = len(flags)
    reasons = np.empty(count, np.uint32)
    statuses = np.empty(count, np.uint8)
    to_pair = np.empty(count, np.int64)
    pairings = 0
    for row in range(count):
        reason = flags[row]
        if not reason & _INVALID_FORMAT:  # with no IMEI, nothing else is known of it
            reason |= table_facts[row] & ~HAS_PAIRING
            given = row < len(imsi_lengths) and imsi_lengths[row] > 0
            if given and is_foreign(imsi_chars, imsi_starts[row], imsi_lengths[row], home_mccs):
                reason |= _INBOUND_ROAMER
            if given and table_facts[row] & HAS_PAIRING:
                to_pair[pairings] = row
                pairings += 1
        if reason >= len(statuses_of):
            raise IndexError("fact bits outside the policy's table")
        reasons[row] = reason
        statuses[row] = statuses_of[reason]
    return reasons, statuses, to_pair[:pairings]


def verdicts(
    batch: ImeiBatch, table_facts: U16, imsis: TextColumn, policy: Policy
) -> tuple[U32, U8, I64]:
    """The fact bits and status of every IMEI of a normalised batch, given the facts the
    table holds of each; and the rows whose IMEI has pairings and was given an IMSI.
    `imsis` is empty or aligned with the batch."""
    answer: tuple[U32, U8, I64] = _verdicts(
        batch.flags,
        table_facts,
        imsis.chars,
        imsis.starts,
        imsis.lengths,
        policy.home_mcc_numbers,
        policy.table,
    )
    return answer
