"""The expected answer to every query of a workload, from imeireg's own check, called in-process.

The load driver compares sampled answers of every system with these. They are
also checked against the generator's ground truth: the checker must find on
the registration list exactly the queries whose bodies the generator put there.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.registry import Registry
from benchmarks.workload import Kind, Workload
from imeireg.server.check import facts
from imeireg.server.check.policy import STATUSES
from imeireg.server.check.verdict import check
from imeireg.server.serving.build import opened_state

_CHUNK = 10_000
_STATUS_NAMES = {number: name for name, number in STATUSES.items()}
_ON_REGISTRATION_LIST = facts.REGISTERED | facts.REGISTRATION_PROVISIONAL


@dataclass(frozen=True)
class Answers:
    statuses: bytes  # per query: its EquipmentStatus number
    members: bytes  # per query: 1 when the registration list holds its 14-digit body
    by_kind: dict[str, dict[str, int]]  # query kind → status name → queries
    disagreements: int  # queries on whose registration the checker and the generator differ


def expected(db: Path, registry: Registry, workload: Workload) -> Answers:
    statuses, reasons = [], []
    with opened_state(db) as state:
        for start in range(0, len(workload.imeis), _CHUNK):
            imsis = workload.imsis[start : start + _CHUNK]
            verdict = check(
                state, workload.imeis[start : start + _CHUNK], imsis if any(imsis) else []
            )
            statuses.append(verdict.statuses)
            reasons.append(verdict.reasons)
    status = np.concatenate(statuses)
    members = (np.concatenate(reasons) & _ON_REGISTRATION_LIST) != 0
    by_kind: dict[str, Counter[str]] = {kind.name.lower(): Counter() for kind in Kind}
    for kind, number in zip(workload.kinds.tolist(), status.tolist(), strict=True):
        by_kind[Kind(kind).name.lower()][_STATUS_NAMES[number]] += 1
    return Answers(
        statuses=status.astype(np.uint8).tobytes(),
        members=members.astype(np.uint8).tobytes(),
        by_kind={kind: dict(counts) for kind, counts in by_kind.items()},
        disagreements=int(np.count_nonzero(members != _truth(registry, workload))),
    )


def _truth(registry: Registry, workload: Workload) -> np.typing.NDArray[np.bool_]:
    """Whether the generator put each query's body on the registration list."""
    malformed = workload.kinds == Kind.MALFORMED
    bodies = np.array(
        [0 if bad else int(imei[:14]) for imei, bad in zip(workload.imeis, malformed, strict=True)],
        dtype=np.uint64,
    )
    provisional = np.sort(registry.provisional)
    at = np.searchsorted(provisional, bodies).clip(max=len(provisional) - 1)
    listed = registry.complete.contains(bodies) | (provisional[at] == bodies)
    truth: np.typing.NDArray[np.bool_] = listed & ~malformed
    return truth
