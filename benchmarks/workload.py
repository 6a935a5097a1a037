"""The query workload: IMEIs as operators' EIRs send them to the registry, deterministic by seed.

The mix, as shares of all queries (`MIX`):

| kind              | share | what is sent |
|-------------------|-------|--------------|
| registered        | 80 %  | a registered phone's 15-digit IMEI |
| unregistered      |  8 %  | an allocated TAC, a serial on no list |
| unallocated_tac   |  3 %  | a TAC the GSMA never allocated |
| wrong_check_digit |  3 %  | a registered phone whose 15th digit is wrong |
| malformed         |  1 %  | no IMEI: 13 digits, a letter in the TAC, or a PEI one digit short |
| stolen            |  3 %  | a phone reported stolen |
| inbound_roamer    |  2 %  | a registered or unregistered phone with a foreign SIM (MCC not 510) |

Only the roamers carry an IMSI; a batch none of whose queries is a roamer sends no IMSIs.
Queries are shuffled, so every batch has about the same mix. The peers (Redis,
PostgreSQL) are sent the same queries as 14-digit bodies: their first 14 characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from benchmarks.registry import SERIAL_SPACE, U64, Registry
from benchmarks.textrows import luhn_imeis


class Kind(IntEnum):
    REGISTERED = 0
    UNREGISTERED = 1
    UNALLOCATED_TAC = 2
    WRONG_CHECK_DIGIT = 3
    MALFORMED = 4
    STOLEN = 5
    INBOUND_ROAMER = 6


MIX: dict[Kind, float] = {
    Kind.REGISTERED: 0.80,
    Kind.UNREGISTERED: 0.08,
    Kind.UNALLOCATED_TAC: 0.03,
    Kind.WRONG_CHECK_DIGIT: 0.03,
    Kind.MALFORMED: 0.01,
    Kind.STOLEN: 0.03,
    Kind.INBOUND_ROAMER: 0.02,
}
# Singapore, Malaysia, Australia, China, USA: where Indonesia's inbound roamers come from.
ROAMING_MCCS = (525, 502, 505, 460, 310)
PEER_BODY_CHARS = 14
_MAX_DRAWS = 64


@dataclass(frozen=True)
class Batch:
    """One request: IMEIs as sent, and IMSIs aligned with them or none at all."""

    imeis: list[str]
    imsis: list[str]

    @property
    def bodies(self) -> list[str]:
        """What a membership peer is asked: the first 14 characters of each IMEI."""
        return [imei[:PEER_BODY_CHARS] for imei in self.imeis]


@dataclass(frozen=True)
class Workload:
    """A shuffled pool of queries; batches are consecutive slices of it, cycled."""

    imeis: list[str]
    imsis: list[str]  # "" where no IMSI is sent
    kinds: npt.NDArray[np.uint8]

    def batches(self, size: int) -> list[Batch]:
        """The pool cut into batches of `size` (the last partial one dropped)."""
        batches = []
        for start in range(0, len(self.imeis) - size + 1, size):
            imsis = self.imsis[start : start + size]
            batches.append(Batch(self.imeis[start : start + size], imsis if any(imsis) else []))
        return batches

    def shares(self) -> dict[Kind, float]:
        counts = np.bincount(self.kinds, minlength=len(Kind))
        return {kind: float(counts[kind]) / len(self.kinds) for kind in Kind}


def generate(registry: Registry, queries: int, seed: int | None = None) -> Workload:
    """`queries` queries against `registry` in the documented mix, the same for the same seed."""
    rng = np.random.default_rng([registry.seed if seed is None else seed, 100])
    kinds = rng.choice(len(Kind), size=queries, p=[MIX[kind] for kind in Kind]).astype(np.uint8)
    counts = np.bincount(kinds, minlength=len(Kind))
    imeis = np.empty(queries, dtype=object)
    imsis = np.full(queries, "", dtype=object)

    def registered(count: int) -> U64:
        positions = rng.integers(0, registry.complete.count, size=count, dtype=np.uint64)
        return registry.complete.body_at(positions)

    def place(kind: Kind, texts: list[str]) -> None:
        imeis[kinds == kind] = texts

    place(Kind.REGISTERED, _imei_texts(luhn_imeis(registered(int(counts[Kind.REGISTERED])))))
    place(
        Kind.UNREGISTERED,
        _imei_texts(luhn_imeis(registry.fresh_bodies(rng, int(counts[Kind.UNREGISTERED])))),
    )
    place(
        Kind.UNALLOCATED_TAC,
        _imei_texts(
            luhn_imeis(_unallocated_bodies(rng, registry, int(counts[Kind.UNALLOCATED_TAC])))
        ),
    )
    right = luhn_imeis(registered(int(counts[Kind.WRONG_CHECK_DIGIT])))
    shift = rng.integers(1, 10, size=len(right), dtype=np.uint64)  # any other digit
    wrong = right - right % np.uint64(10) + (right + shift) % np.uint64(10)
    place(Kind.WRONG_CHECK_DIGIT, _imei_texts(wrong))
    place(Kind.MALFORMED, _malformed(rng, registered(int(counts[Kind.MALFORMED]))))
    stolen = registry.stolen[rng.integers(0, len(registry.stolen), size=int(counts[Kind.STOLEN]))]
    place(Kind.STOLEN, _imei_texts(luhn_imeis(stolen)))

    roamers = int(counts[Kind.INBOUND_ROAMER])
    half = roamers // 2
    roaming = np.concatenate([registered(half), registry.fresh_bodies(rng, roamers - half)])
    place(Kind.INBOUND_ROAMER, _imei_texts(luhn_imeis(rng.permutation(roaming))))
    imsis[kinds == Kind.INBOUND_ROAMER] = _foreign_imsis(rng, roamers)
    return Workload(list(imeis), list(imsis), kinds)


def _imei_texts(imeis: U64) -> list[str]:
    return [f"{imei:015d}" for imei in imeis.tolist()]


def _unallocated_bodies(rng: np.random.Generator, registry: Registry, count: int) -> U64:
    """Bodies on random TACs that the GSMA never allocated."""
    catalogue = registry.catalogue
    tacs = np.empty(0, np.uint64)
    for _ in range(_MAX_DRAWS):  # all but 0.3 % of 8-digit TACs are unallocated
        if len(tacs) >= count:
            break
        drawn = rng.integers(0, 10**8, size=2 * count + 16, dtype=np.uint64)
        tacs = np.concatenate([tacs, drawn[catalogue.index_of(drawn) == len(catalogue.tacs)]])
    serials = rng.integers(0, SERIAL_SPACE, size=count, dtype=np.uint64)
    bodies: U64 = tacs[:count] * np.uint64(SERIAL_SPACE) + serials
    return bodies


def _malformed(rng: np.random.Generator, bodies: U64) -> list[str]:
    """Strings that are no IMEI, none of whose first 14 characters are a registered body."""
    texts = []
    for imei, form in zip(
        _imei_texts(luhn_imeis(bodies)), rng.integers(0, 3, size=len(bodies)).tolist(), strict=True
    ):
        if form == 0:
            texts.append(imei[:13])  # a digit lost
        elif form == 1:
            texts.append(imei[:3] + "X" + imei[4:])  # a letter in the TAC
        else:
            texts.append("imei-" + imei[:14])  # a 5G PEI one digit short
    return texts


def _foreign_imsis(rng: np.random.Generator, count: int) -> list[str]:
    mccs = rng.choice(np.array(ROAMING_MCCS, dtype=np.uint64), size=count)
    mncs = rng.integers(1, 100, size=count, dtype=np.uint64)
    msins = rng.integers(0, 10**10, size=count, dtype=np.uint64)
    imsis = mccs * np.uint64(10**12) + mncs * np.uint64(10**10) + msins
    return [f"{imsi:015d}" for imsi in imsis.tolist()]
