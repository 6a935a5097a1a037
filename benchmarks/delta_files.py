"""The updates benchmark's deltas: drawn from a generated registry, written as DIRBS delta files.

Delta k (from 1) of `plan`: an odd k is a registration delta, half of its IMEIs new
registrations (fresh IMEIs on allocated TACs; one in twenty provisional, as customs
records a phone whose papers are pending) and half registrations removed; an even k
is a stolen delta, reports of registered phones. Every IMEI is touched by one delta
at most: adds are on no list yet, removes and reports are complete registrations on
no other list, and none is in `keep` (the load's queries, whose answers must not
move). Deltas are deterministic by seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt

from benchmarks.registry import U64, Registry
from benchmarks.textrows import luhn_imeis
from imeireg.server.check import facts
from imeireg.server.model import ListName

U8 = npt.NDArray[np.uint8]
U32 = npt.NDArray[np.uint32]

REGISTRATION_HEADER = (
    "approved_imei,make,model,status,model_number,brand_name,device_type,radio_interface,"
    "device_id,change_type"
)
STOLEN_HEADER = "imei,reporting_date,status,change_type"
PROVISIONAL_EVERY = 20
REPORTING_DATE = "20261128"
_DRAW_MARGIN = 1.25  # drawn per IMEI wanted, before the exclusions
_MAX_DRAWS = 16


class Change(IntEnum):
    """What a delta does to one IMEI."""

    REGISTERED = 0  # a new complete registration
    PROVISIONAL = 1  # a new provisional registration
    DEREGISTERED = 2  # its registration removed
    STOLEN = 3  # reported stolen


_REGISTRATION_BITS = facts.REGISTERED | facts.REGISTRATION_PROVISIONAL | facts.NOT_REGISTERED
# The registration fact each change leaves; a stolen report leaves registration as it was.
_REGISTRATION_AFTER = {
    Change.REGISTERED: facts.REGISTERED,
    Change.PROVISIONAL: facts.REGISTRATION_PROVISIONAL,
    Change.DEREGISTERED: facts.NOT_REGISTERED,
}


@dataclass(frozen=True)
class Delta:
    """One delta file: the IMEI bodies it touches, sorted, and what it does to each."""

    number: int  # from 1, in the order they are applied
    list_name: ListName
    bodies: U64
    changes: U8  # a Change per body
    path: Path


def plan(
    registry: Registry, *, count: int, size: int, keep: U64, directory: Path, seed: int
) -> list[Delta]:
    """`count` deltas of `size` IMEIs each against `registry`, written into `directory`."""
    registrations = (count + 1) // 2
    reports = count // 2
    adds_per_delta = size // 2
    removes_per_delta = size - adds_per_delta
    rng = np.random.default_rng([seed, 200])
    fresh = _fresh(rng, registry, registrations * adds_per_delta, keep)
    registered = _registered(
        rng, registry, registrations * removes_per_delta + reports * size, keep
    )
    removed, stolen = np.split(registered, [registrations * removes_per_delta])
    directory.mkdir(parents=True, exist_ok=True)
    deltas = []
    for k in range(1, count + 1):
        if k % 2:
            n = k // 2
            adds = fresh[n * adds_per_delta : (n + 1) * adds_per_delta]
            provisional = np.arange(len(adds)) % PROVISIONAL_EVERY == 0
            bodies = np.concatenate(
                [adds, removed[n * removes_per_delta : (n + 1) * removes_per_delta]]
            )
            changes = np.concatenate(
                [
                    np.where(provisional, Change.PROVISIONAL, Change.REGISTERED),
                    np.full(removes_per_delta, Change.DEREGISTERED),
                ]
            ).astype(np.uint8)
            name = ListName.REGISTRATION
        else:
            n = k // 2 - 1
            bodies = stolen[n * size : (n + 1) * size]
            changes = np.full(size, Change.STOLEN, dtype=np.uint8)
            name = ListName.STOLEN
        order = np.argsort(bodies)
        delta = Delta(
            k, name, bodies[order], changes[order], directory / f"delta-{k:03d}-{name}.csv"
        )
        _write(delta)
        deltas.append(delta)
    return deltas


def facts_after(reasons: U32, changes: Sequence[int] | U8) -> U32:
    """The fact bits of IMEIs after each one's change: only the changed list's fact moves."""
    after = reasons.copy()
    for change in Change:
        touched = np.asarray(changes) == change
        if change is Change.STOLEN:
            after[touched] |= np.uint32(facts.STOLEN)
        else:
            after[touched] &= np.uint32(~_REGISTRATION_BITS & 0xFFFF)
            after[touched] |= np.uint32(_REGISTRATION_AFTER[change])
    return after


def _fresh(rng: np.random.Generator, registry: Registry, count: int, keep: U64) -> U64:
    """`count` distinct bodies on no list and not in `keep`, in random order."""
    wanted = int(count * _DRAW_MARGIN) + 16
    for _ in range(_MAX_DRAWS):
        drawn = registry.fresh_bodies(rng, wanted)
        drawn = drawn[~np.isin(drawn, keep)]
        if len(drawn) >= count:
            return rng.permutation(drawn)[:count]
        wanted *= 2
    raise RuntimeError(f"could not draw {count:,} fresh IMEIs for the deltas")


def _registered(rng: np.random.Generator, registry: Registry, count: int, keep: U64) -> U64:
    """`count` distinct complete registrations on no other list and not in `keep`, shuffled."""
    excluded = np.sort(np.concatenate([registry.stolen, registry.barred, registry.golden, keep]))
    population = registry.complete.count
    wanted = min(population, int(count * _DRAW_MARGIN) + 16)
    positions = rng.choice(population, size=wanted, replace=False).astype(np.uint64)
    bodies = registry.complete.body_at(positions)
    bodies = bodies[~np.isin(bodies, excluded)]
    if len(bodies) < count:
        raise ValueError(
            f"{population:,} registrations leave {len(bodies):,} to remove or report stolen; "
            f"the deltas need {count:,}: fewer or smaller deltas, or a larger registry"
        )
    return bodies[:count]


def _write(delta: Delta) -> None:
    imeis = [f"{imei:015d}" for imei in luhn_imeis(delta.bodies).tolist()]
    if delta.list_name is ListName.STOLEN:
        lines = [STOLEN_HEADER, *(f"{imei},{REPORTING_DATE},,add" for imei in imeis)]
    else:
        lines = [REGISTRATION_HEADER]
        for imei, change in zip(imeis, delta.changes.tolist(), strict=True):
            if change == Change.DEREGISTERED:
                lines.append(f"{imei},,,,,,,,,remove")
            else:
                # What customs records for a personal import: a generic model, its own id.
                status = "provisional" if change == Change.PROVISIONAL else "whitelist"
                lines.append(
                    f"{imei},Generic,Android Phone,{status},,,Smartphone,2G/3G/4G,"
                    f"{delta.number:03d}{imei[8:14]},add"
                )
    delta.path.write_text("\n".join(lines) + "\n", encoding="ascii")
