"""The fact table's search, compiled: the facts of every IMEI of a batch in one pass.

`FactTable` lays the table out for a two-step search (every BLOCK-th key, then one
block); this module walks it for a whole batch and adds what the IMSIs say.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from imeireg.imei import MCC_DIGITS
from imeireg.server.check import facts
from imeireg.server.check.columns import TextColumn
from imeireg.server.check.fact_table import BLOCK, FactTable
from imeireg.server.check.normalise import ImeiBatch
from imeireg.server.compiled import BYTES, I64S, U16S, U32S, U64S, compiled

U8 = npt.NDArray[np.uint8]
U16 = npt.NDArray[np.uint16]
U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

_ZERO = ord("0")
# Queries searched in step; more only adds work once the misses of a group overlap.
_SEARCH_GROUP = 32
_INVALID_FORMAT = facts.INVALID_FORMAT
_INBOUND_ROAMER = facts.INBOUND_ROAMER


@compiled(f"uint16[::1]({U64S}, {U64S}, {U16S}, {U64S})")
def _lookup(sample: U64, keys: U64, found: U16, queries: U64) -> U16:
    out = np.empty(len(queries), np.uint16)
    low = np.empty(_SEARCH_GROUP, np.int64)
    for group in range(0, len(queries), _SEARCH_GROUP):
        members = min(_SEARCH_GROUP, len(queries) - group)
        # The last sampled key at or below each query (the table's first key is 0), by
        # halving, for a group of queries in step: their loads do not depend on one
        # another, so the processor waits for their cache misses together.
        low[:members] = 0
        size = len(sample)
        while size > 1:
            half = size >> 1
            for member in range(members):
                # Arithmetic, not a branch: a mispredicted branch would cancel the
                # loads already in flight.
                low[member] += half * (sample[low[member] + half] <= queries[group + member])
            size -= half
        # Then the last key at or below it within that sample's block.
        for member in range(members):
            query = queries[group + member]
            at = low[member] * BLOCK
            below = 0
            for offset in range(1, BLOCK):
                below += keys[at + offset] <= query
            out[group + member] = found[at + below]
    return out


def lookup(table: FactTable, keys: U64) -> U16:
    """The facts of each IMEI key (``tac << SERIAL_BITS | serial``): two-step search, as
    `FactTable` lays out, over every BLOCK-th key and then within one block."""
    found: U16 = _lookup(table.sample, table.keys, table.facts, keys)
    return found


@compiled(f"uint32[::1]({U64S}, {U64S}, {U16S}, {U64S}, {U32S}, {BYTES}, {I64S}, {I64S}, {I64S})")
def _batch_facts(  # noqa: PLR0917  (a compiled function takes its arguments by position)
    sample: U64,
    keys: U64,
    found: U16,
    queries: U64,
    flags: U32,
    imsi_chars: U8,
    imsi_starts: I64,
    imsi_lengths: I64,
    home_mccs: I64,
) -> U32:
    table_facts = _lookup(sample, keys, found, queries)
    out = np.empty(len(queries), np.uint32)
    for row in range(len(queries)):
        if flags[row] & _INVALID_FORMAT:
            out[row] = flags[row]  # no IMEI: nothing else is known of it
            continue
        out[row] = table_facts[row] | flags[row]
        if row >= len(imsi_lengths) or imsi_lengths[row] == 0:
            continue  # no IMSI given
        mcc = -1  # too short to have one: foreign
        if imsi_lengths[row] >= MCC_DIGITS:
            mcc = 0
            for at in range(imsi_starts[row], imsi_starts[row] + MCC_DIGITS):
                mcc = mcc * 10 + int(imsi_chars[at]) - _ZERO
        if mcc not in home_mccs:
            out[row] |= _INBOUND_ROAMER
    return out


def batch_facts(table: FactTable, batch: ImeiBatch, imsis: TextColumn, home_mccs: I64) -> U32:
    """The fact bits of every IMEI of a batch from the table, its format flags and, where
    `imsis` (empty, or aligned with the batch) gives one, whether its SIM is foreign.
    Rows with pairings keep `fact_table.HAS_PAIRING`, for the caller to look them up."""
    found: U32 = _batch_facts(
        table.sample,
        table.keys,
        table.facts,
        batch.keys,
        batch.flags,
        imsis.chars,
        imsis.starts,
        imsis.lengths,
        home_mccs,
    )
    return found
