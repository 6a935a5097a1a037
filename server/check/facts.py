"""Facts about an IMEI as reason bits: bit k is the proto `Reason` numbered k.

The proto enum is the single source of the names and numbers; this module gives
them as bit masks for the vectorised hot path and the policy compiler.
"""

from __future__ import annotations

from imeireg.v1 import legality_pb2 as pb

REASON_PREFIX = "REASON_"

#: Fact name (without the REASON_ prefix) → bit mask, in proto order.
FACT_BITS: dict[str, int] = {
    name.removeprefix(REASON_PREFIX): 1 << number
    for name, number in pb.Reason.items()
    if number != pb.REASON_UNSPECIFIED
}

INVALID_FORMAT = FACT_BITS["INVALID_FORMAT"]
CHECK_DIGIT_MISMATCH = FACT_BITS["CHECK_DIGIT_MISMATCH"]
TAC_UNALLOCATED = FACT_BITS["TAC_UNALLOCATED"]
TAC_BARRED = FACT_BITS["TAC_BARRED"]
REGISTERED = FACT_BITS["REGISTERED"]
REGISTRATION_PROVISIONAL = FACT_BITS["REGISTRATION_PROVISIONAL"]
NOT_REGISTERED = FACT_BITS["NOT_REGISTERED"]
STOLEN = FACT_BITS["STOLEN"]
BARRED = FACT_BITS["BARRED"]
GOLDEN = FACT_BITS["GOLDEN"]
PAIRED = FACT_BITS["PAIRED"]
INBOUND_ROAMER = FACT_BITS["INBOUND_ROAMER"]

#: One more than the largest reason bit set: the size of a policy's lookup table.
FACT_SPACE = max(FACT_BITS.values()) << 1


def fact_names(bits: int) -> list[str]:
    """The names of the facts set in `bits`, in proto order."""
    return [name for name, bit in FACT_BITS.items() if bits & bit]
