"""The benchmark registry: a national registry of any size, deterministic by seed, held compactly.

Its shape follows what a real registry holds:
- 255,000 TACs allocated by the GSMA. The models sold in the country grow with the registry,
  one TAC per 160 registrations (at least 200, at most 60 % of the allocated TACs), with a
  Zipf-like popularity: a few models sell most phones, half the models a few dozen phones
  or fewer. That is a national registry's spread: a real registration file of 10^7 rows
  spans 62,309 TACs, and 10^7 registrations here span about 63,000 (62,500 models, and
  personal imports on a few hundred more). An import pays per TAC (a bitmap and a fact-table
  segment each), so a registry six times less spread, as here before (one TAC per 1,000
  registrations), flattered the import rate.
  A few hundred TACs the GSMA never allocated turn up in personal imports (counterfeits).
- Complete registrations: 97 % in makers' factory blocks of sequential serials (log-uniform,
  200 to 30,000 long, placed through the TAC's serial space with gaps), 3 % personal imports
  scattered one by one.
- Provisional registrations (0.5 % of the complete ones, unregistered otherwise), stolen (0.3 %,
  among the registered), barred (0.01 %), golden (0.01 %, a tenth of them also stolen) and
  pairing (0.1 %, unregistered phones paired with a home SIM, a tenth with a second one).

Registered IMEIs are kept as runs of serials (`SerialRuns`: TAC, first serial, length), so
10^9 IMEIs never exist as Python objects; `SerialRuns.by_tac()` yields them TAC by TAC for
a direct store feed. Other lists are small enough to be arrays of IMEI bodies
(tac * 10**6 + serial).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from imeireg.server.imports.demo import DEVICE_TYPES

U64 = npt.NDArray[np.uint64]
U32 = npt.NDArray[np.uint32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Membership = Callable[[U64], npt.NDArray[np.bool_]]

SERIAL_SPACE = 1_000_000  # six-digit serials per TAC
DEFAULT_SEED = 2020

ALLOCATED_TACS = 255_000
REGISTRATIONS_PER_MODEL = 160  # 10^7 registrations on 62,500 TACs, as a national file
MIN_REGISTERING = 200
MAX_REGISTERING_SHARE = 0.6  # of allocated TACs
UNALLOCATED_TACS = 500
BARRED_TACS = 20
ZIPF_EXPONENT = 1.1
ZIPF_OFFSET = 5  # flattens the very top of the popularity curve
_REPORTING_BODIES = (35, 86, 1)  # BABT, TAF and CTIA's 01, whose TACs keep a leading zero
_REPORTING_WEIGHTS = (0.75, 0.2, 0.05)

FACTORY_FILL = 0.85  # a TAC's factory blocks fill at most this share of its serial space
_SPAN_LIMIT = 0.95  # blocks and the gaps between them stay within this share
BLOCK_SIZES = (200, 30_000)
BLOCK_GAP = 5_000
PERSONAL_SHARE = 0.03
UNALLOCATED_IMPORT_SHARE = 0.005  # of personal imports
PROVISIONAL_SHARE = 0.005
STOLEN_SHARE = 0.003
BARRED_SHARE = 0.000_1
GOLDEN_SHARE = 0.000_1
PAIRED_SHARE = 0.001
HOME_MCC = 510
HOME_MNCS = (1, 10, 11, 21, 89)

# Fictional makers: real vendors' names on invented TACs would misinform.
_PLACES = (
    "Nusantara", "Garuda", "Komodo", "Rinjani", "Batavia", "Sunda", "Borneo", "Maluku",
    "Toba", "Bromo", "Merapi", "Lombok", "Sulawesi", "Papua", "Bali", "Java", "Flores",
    "Bintan", "Natuna", "Sumba",
)  # fmt: skip
_KINDS = ("Mobile", "Devices")
MAKERS = tuple(f"{place} {kind}" for place in _PLACES for kind in _KINDS)
BRANDS = tuple(maker.split()[0] for maker in MAKERS)
MODELS_PER_MAKER = 500  # five series letters times 100 numbers
_SERIES = "ACMXZ"
_FIRST_ALLOCATION = datetime.date(2005, 1, 1)
ALLOCATION_DAYS = 7000
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MAX_DRAWS = 64  # bound on every rejection-sampling loop


def model_names() -> list[str]:
    """Model name of model index maker * MODELS_PER_MAKER + m, e.g. 'Garuda X42'."""
    return [
        f"{brand} {_SERIES[m // 100]}{m % 100 + 1}"
        for brand in BRANDS
        for m in range(MODELS_PER_MAKER)
    ]


def model_numbers() -> list[str]:
    """Model number of each model index, e.g. 'GA-X42'."""
    return [
        f"{brand[:2].upper()}-{_SERIES[m // 100]}{m % 100 + 1}"
        for brand in BRANDS
        for m in range(MODELS_PER_MAKER)
    ]


def allocation_dates() -> list[str]:
    """GSMA allocation dates (DD-Mon-YYYY) by day index."""
    days = (_FIRST_ALLOCATION + datetime.timedelta(days=d) for d in range(ALLOCATION_DAYS))
    return [f"{d.day:02d}-{_MONTHS[d.month - 1]}-{d.year}" for d in days]


@dataclass(frozen=True)
class Catalogue:
    """The GSMA TAC database. Arrays are aligned with `tacs`, which is in popularity order:
    the first `registering` TACs have registrations, most popular first."""

    tacs: U64
    maker: I64  # index into MAKERS
    model: I64  # index into model_names()
    device_type: I64  # index into DEVICE_TYPES
    allocated_on: I64  # index into allocation_dates()
    registering: int
    popularity: F64  # of the registering TACs, sums to 1
    barred: U64  # TAC numbers, among the registering ones
    unallocated: U64  # TAC numbers the GSMA never allocated

    def index_of(self, tacs: U64) -> I64:
        """Position of each TAC in `tacs`; len(self.tacs) for an unallocated one."""
        order = np.argsort(self.tacs)
        ordered = self.tacs[order]
        at = np.searchsorted(ordered, tacs).clip(max=len(ordered) - 1)
        index: I64 = np.where(ordered[at] == tacs, order[at], len(self.tacs))
        return index


@dataclass(frozen=True)
class SerialRuns:
    """IMEI bodies as runs of sequential serials, sorted by TAC then first serial, disjoint."""

    tacs: U64
    starts: U32
    lengths: U32

    @property
    def count(self) -> int:
        return int(self.lengths.sum(dtype=np.uint64))

    @property
    def keys(self) -> U64:
        """The body of each run's first IMEI."""
        keys: U64 = self.tacs * np.uint64(SERIAL_SPACE) + self.starts
        return keys

    def contains(self, bodies: U64) -> npt.NDArray[np.bool_]:
        keys = self.keys
        run = np.searchsorted(keys, bodies, side="right").astype(np.int64) - 1
        safe = run.clip(min=0)
        inside: npt.NDArray[np.bool_] = (run >= 0) & (bodies < keys[safe] + self.lengths[safe])
        return inside

    def body_at(self, positions: U64) -> U64:
        """The bodies at these positions of the runs' IMEIs in order."""
        ends = np.cumsum(self.lengths, dtype=np.uint64)
        run = np.searchsorted(ends, positions, side="right")
        offsets = positions - (ends[run] - self.lengths[run])
        bodies: U64 = self.keys[run] + offsets
        return bodies

    def chunks(self, rows: int) -> Iterator[tuple[I64, U64]]:
        """(run of each IMEI, IMEI bodies) in order, about `rows` IMEIs at a time."""
        ends = np.cumsum(self.lengths, dtype=np.int64)
        keys = self.keys
        first = 0
        while first < len(self.lengths):
            last = max(
                first + 1, int(np.searchsorted(ends, ends[first] - self.lengths[first] + rows))
            )
            lengths = self.lengths[first:last].astype(np.int64)
            run = np.repeat(np.arange(first, last), lengths)
            before = np.repeat(np.cumsum(lengths) - lengths, lengths)
            offsets = (np.arange(len(run)) - before).astype(np.uint64)
            yield run, keys[run] + offsets
            first = last

    def without(self, bodies: U64) -> tuple[SerialRuns, I64]:
        """These runs with `bodies` (distinct, each in a run) taken out, and the run each
        remaining piece comes from."""
        # A body taken out ends the piece before it and begins the one after: with the
        # runs' own bounds, the n-th begin and the n-th end bound the n-th piece.
        keys = self.keys
        begins = np.sort(np.concatenate([keys, bodies + np.uint64(1)]))
        ends = np.sort(np.concatenate([keys + self.lengths, bodies]))
        kept = ends > begins
        begins, ends = begins[kept], ends[kept]
        pieces = SerialRuns(
            begins // np.uint64(SERIAL_SPACE),
            (begins % np.uint64(SERIAL_SPACE)).astype(np.uint32),
            (ends - begins).astype(np.uint32),
        )
        origin: I64 = np.searchsorted(keys, begins, side="right").astype(np.int64) - 1
        return pieces, origin

    def by_tac(self) -> Iterator[tuple[int, U32, U32]]:
        """(TAC, first serials, lengths) of every TAC's runs: the feed for a direct store load."""
        bounds = np.flatnonzero(np.r_[True, self.tacs[1:] != self.tacs[:-1], True])
        for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            yield int(self.tacs[start]), self.starts[start:end], self.lengths[start:end]


@dataclass(frozen=True)
class Registry:
    """Every list of a generated registry."""

    seed: int
    catalogue: Catalogue
    complete: SerialRuns  # complete registrations: factory blocks and single personal imports
    complete_whitelist: npt.NDArray[np.bool_]  # per run: status "whitelist" (else empty)
    provisional: U64
    stolen: U64
    barred: U64
    golden: U64
    paired: U64
    paired_imsis: U64

    @property
    def registered(self) -> int:
        """Rows of the registration list: complete and provisional registrations."""
        return self.complete.count + len(self.provisional)

    def listed(self, bodies: U64) -> npt.NDArray[np.bool_]:
        """Whether each body is on any IMEI list of the registry."""
        found = self.complete.contains(bodies)
        for members in (self.provisional, self.stolen, self.barred, self.golden, self.paired):
            found |= _contains(np.sort(members), bodies)
        return found

    def with_registrations(self, *, removed: U64, complete: U64, provisional: U64) -> Registry:
        """This registry with complete registrations `removed` and new ones added, complete
        and provisional: the registration list after deltas, for a later full import."""
        pieces, origin = self.complete.without(np.sort(removed))
        tacs = np.concatenate([pieces.tacs, complete // np.uint64(SERIAL_SPACE)])
        starts = np.concatenate(
            [pieces.starts, (complete % np.uint64(SERIAL_SPACE)).astype(np.uint32)]
        )
        order = np.argsort(tacs * np.uint64(SERIAL_SPACE) + starts, kind="stable")
        lengths = np.concatenate([pieces.lengths, np.ones(len(complete), np.uint32)])
        whitelist = np.concatenate(
            [self.complete_whitelist[origin], np.ones(len(complete), np.bool_)]
        )
        return replace(
            self,
            complete=SerialRuns(tacs[order], starts[order], lengths[order]),
            complete_whitelist=whitelist[order],
            provisional=np.concatenate([self.provisional, provisional]),
        )

    def fresh_bodies(self, rng: np.random.Generator, count: int) -> U64:
        """`count` distinct bodies on allocated TACs (by popularity) that are on no list."""
        catalogue = self.catalogue
        tacs = catalogue.tacs
        weights = np.zeros(len(tacs))
        weights[: catalogue.registering] = catalogue.popularity * 0.9
        weights[catalogue.registering :] = 0.1 / (len(tacs) - catalogue.registering)
        return _fresh(rng, tacs, weights, count, self.listed)


def generate(registered: int, seed: int = DEFAULT_SEED) -> Registry:
    """A registry with `registered` complete registrations, the same for the same seed."""
    if registered < 1_000:
        raise ValueError(f"a benchmark registry has at least 1,000 registrations, not {registered}")
    catalogue = _catalogue(np.random.default_rng([seed, 0]), registered)
    rng = np.random.default_rng([seed, 1])
    personal = round(registered * PERSONAL_SHARE)
    factory, factory_counts = _factory_runs(rng, catalogue, registered - personal)

    # Personal imports follow what sells (the factory counts), plus a few unallocated TACs.
    import_tacs = np.concatenate([catalogue.tacs[: catalogue.registering], catalogue.unallocated])
    import_weights = np.concatenate(
        [
            factory_counts / factory_counts.sum() * (1 - UNALLOCATED_IMPORT_SHARE),
            np.full(UNALLOCATED_TACS, UNALLOCATED_IMPORT_SHARE / UNALLOCATED_TACS),
        ]
    )
    singles = _fresh(rng, import_tacs, import_weights, personal, factory.contains)
    complete = _merge(factory, singles)
    whitelist = rng.random(len(complete.lengths)) < 0.5
    whitelist[complete.lengths == 1] = True  # customs registers personal imports one by one

    taken: list[U64] = []

    def taken_or_registered(bodies: U64) -> npt.NDArray[np.bool_]:
        found = complete.contains(bodies)
        for members in taken:
            found |= _contains(members, bodies)
        return found

    weights = factory_counts / factory_counts.sum()
    sold_tacs = catalogue.tacs[: catalogue.registering]
    provisional = _fresh(
        rng, sold_tacs, weights, round(registered * PROVISIONAL_SHARE), taken_or_registered
    )
    taken.append(np.sort(provisional))
    reported = complete.body_at(
        _distinct_sample(rng, complete.count, round(registered * (STOLEN_SHARE + BARRED_SHARE)))
    )
    stolen_count = round(registered * STOLEN_SHARE)
    stolen, barred = reported[:stolen_count], reported[stolen_count:]
    golden_count = max(10, round(registered * GOLDEN_SHARE))
    golden_fresh = _fresh(
        rng, sold_tacs, weights, golden_count - golden_count // 10, taken_or_registered
    )
    taken.append(np.sort(golden_fresh))
    golden = np.concatenate([golden_fresh, stolen[: golden_count // 10]])
    paired_once = _fresh(
        rng, sold_tacs, weights, max(10, round(registered * PAIRED_SHARE)), taken_or_registered
    )
    # Family plans: a tenth of the paired phones are paired with a second SIM too.
    paired = np.concatenate([paired_once, paired_once[: len(paired_once) // 10]])
    return Registry(
        seed=seed,
        catalogue=catalogue,
        complete=complete,
        complete_whitelist=whitelist,
        provisional=provisional,
        stolen=stolen,
        barred=barred,
        golden=golden,
        paired=paired,
        paired_imsis=home_imsis(rng, len(paired)),
    )


def home_imsis(rng: np.random.Generator, count: int) -> U64:
    """IMSIs of Indonesian subscribers (MCC 510), 15 digits."""
    mncs = rng.choice(np.array(HOME_MNCS, dtype=np.uint64), size=count)
    msins = rng.integers(0, 10**10, size=count, dtype=np.uint64)
    imsis: U64 = np.uint64(HOME_MCC * 10**12) + mncs * np.uint64(10**10) + msins
    return imsis


def _catalogue(rng: np.random.Generator, registered: int) -> Catalogue:
    wanted = ALLOCATED_TACS + UNALLOCATED_TACS
    tacs = np.empty(0, np.uint64)
    for _ in range(_MAX_DRAWS):
        bodies = rng.choice(
            np.array(_REPORTING_BODIES, np.uint64), size=wanted, p=_REPORTING_WEIGHTS
        )
        drawn = bodies * np.uint64(10**6) + rng.integers(0, 10**6, wanted, dtype=np.uint64)
        tacs = _distinct_in_order(np.concatenate([tacs, drawn]))
        if len(tacs) >= wanted:
            break
    allocated = tacs[:ALLOCATED_TACS]
    count = len(allocated)
    registering = min(
        max(MIN_REGISTERING, round(registered / REGISTRATIONS_PER_MODEL)),
        round(count * MAX_REGISTERING_SHARE),
    )
    ranks = np.arange(registering, dtype=np.float64)
    popularity = 1 / (ranks + ZIPF_OFFSET) ** ZIPF_EXPONENT
    shares = np.array([share for *_, share in DEVICE_TYPES])
    maker = rng.integers(0, len(MAKERS), size=count)
    # Popular models, so that barring them cuts off many registered phones.
    barred = allocated[rng.choice(np.arange(20, registering), size=BARRED_TACS, replace=False)]
    return Catalogue(
        tacs=allocated,
        maker=maker,
        model=maker * MODELS_PER_MAKER + rng.integers(0, MODELS_PER_MAKER, size=count),
        device_type=rng.choice(len(DEVICE_TYPES), size=count, p=shares / shares.sum()),
        allocated_on=rng.integers(0, ALLOCATION_DAYS, size=count),
        registering=registering,
        popularity=popularity / popularity.sum(),
        barred=barred,
        unallocated=tacs[ALLOCATED_TACS:wanted],
    )


def _capped_counts(rng: np.random.Generator, total: int, weights: F64, cap: int) -> I64:
    """`total` split by `weights` with no share above `cap` (water-filling), summing exactly."""
    if total > cap * len(weights):
        raise ValueError(f"{total:,} registrations do not fit in {len(weights):,} TACs")
    capped = np.zeros(len(weights), dtype=np.bool_)
    expected = weights * (total / weights.sum())
    for _ in range(_MAX_DRAWS):
        over = ~capped & (expected > cap)
        if not over.any():
            break
        capped |= over
        free = total - cap * int(capped.sum())
        expected = np.where(capped, cap, weights * (free / weights[~capped].sum()))
    counts = np.floor(expected).astype(np.int64)
    remainder = total - int(counts.sum())
    if remainder > 0:
        fraction = expected - counts
        extra = rng.choice(len(weights), size=remainder, replace=False, p=fraction / fraction.sum())
        counts[extra] += 1
    capped_counts: I64 = counts
    return capped_counts


def _factory_runs(
    rng: np.random.Generator, catalogue: Catalogue, total: int
) -> tuple[SerialRuns, F64]:
    """`total` IMEIs in factory blocks over the registering TACs; also the count per TAC."""
    cap = int(SERIAL_SPACE * FACTORY_FILL)
    counts = _capped_counts(rng, total, catalogue.popularity, cap)
    # A stream of log-uniform block lengths, cut where one TAC's share ends and the next begins.
    low, high = np.log(BLOCK_SIZES)
    mean = (BLOCK_SIZES[1] - BLOCK_SIZES[0]) / (high - low)
    lengths = np.empty(0, np.int64)
    for _ in range(_MAX_DRAWS):
        more = np.exp(rng.uniform(low, high, size=int(total / mean * 1.1) + 64)).astype(np.int64)
        lengths = np.concatenate([lengths, more])
        if lengths.sum() >= total:
            break
    stream_ends = np.cumsum(lengths)
    tac_ends = np.cumsum(counts)
    ends = np.union1d(stream_ends[stream_ends < total], tac_ends)
    begins = np.r_[0, ends[:-1]]
    block_lengths = ends - begins
    block_tac = np.searchsorted(tac_ends, begins, side="right")

    # Gaps between blocks, shrunk where a TAC is nearly full so its blocks stay in its space.
    gaps = rng.integers(0, BLOCK_GAP, size=len(block_lengths))
    gap_sums = np.bincount(block_tac, weights=gaps, minlength=len(counts))
    room = SERIAL_SPACE * _SPAN_LIMIT - counts
    scale = np.minimum(1.0, room / np.maximum(gap_sums, 1))
    gaps = np.floor(gaps * scale[block_tac]).astype(np.int64)
    spans = counts + np.bincount(block_tac, weights=gaps, minlength=len(counts)).astype(np.int64)
    first_serial = (rng.random(len(counts)) * (SERIAL_SPACE - spans + 1)).astype(np.int64)
    steps = gaps + block_lengths
    through = np.cumsum(steps)
    group_first = np.searchsorted(block_tac, block_tac, side="left")
    before_group = through[group_first] - steps[group_first]
    starts = first_serial[block_tac] + (through - steps - before_group) + gaps

    runs = _sorted_runs(
        catalogue.tacs[block_tac], starts.astype(np.uint32), block_lengths.astype(np.uint32)
    )
    return runs, counts.astype(np.float64)


def _sorted_runs(tacs: U64, starts: U32, lengths: U32) -> SerialRuns:
    order = np.argsort(tacs * np.uint64(SERIAL_SPACE) + starts, kind="stable")
    return SerialRuns(tacs[order], starts[order], lengths[order])


def _merge(runs: SerialRuns, singles: U64) -> SerialRuns:
    return _sorted_runs(
        np.concatenate([runs.tacs, singles // np.uint64(SERIAL_SPACE)]),
        np.concatenate([runs.starts, (singles % np.uint64(SERIAL_SPACE)).astype(np.uint32)]),
        np.concatenate([runs.lengths, np.ones(len(singles), np.uint32)]),
    )


def _fresh(
    rng: np.random.Generator,
    tacs: U64,
    weights: F64,
    count: int,
    taken: Membership,
) -> U64:
    """`count` distinct bodies on TACs drawn by weight, with `taken(bodies)` false for each.

    Draws are made per TAC (a multinomial) and sorted before the membership test, so that
    10^7 draws against 10^9 registrations take seconds: binary searches of sorted keys
    walk memory in order.
    """
    probabilities = weights / weights.sum()
    found = np.empty(0, np.uint64)
    for _ in range(_MAX_DRAWS):
        if len(found) >= count:
            keep = rng.choice(len(found), size=count, replace=False)
            fresh: U64 = found[keep]
            return fresh
        wanted = 2 * (count - len(found)) + 16
        per_tac = rng.multinomial(wanted, probabilities)
        drawn = np.repeat(tacs, per_tac) * np.uint64(SERIAL_SPACE)
        drawn += rng.integers(0, SERIAL_SPACE, size=len(drawn), dtype=np.uint64)
        drawn = np.sort(drawn)
        found = _sorted_unique(np.concatenate([found, drawn[~taken(drawn)]]))
    raise RuntimeError(f"could not draw {count:,} fresh IMEIs in {_MAX_DRAWS} rounds")


def _distinct_sample(rng: np.random.Generator, population: int, count: int) -> U64:
    """`count` distinct positions in range(population), in random order."""
    if count > population:
        raise ValueError(f"cannot pick {count:,} of {population:,}")
    found = np.empty(0, np.uint64)
    for _ in range(_MAX_DRAWS):
        if len(found) >= count:
            return rng.permutation(found)[:count]
        drawn = rng.integers(0, population, size=2 * (count - len(found)) + 16, dtype=np.uint64)
        found = _sorted_unique(np.concatenate([found, drawn]))
    raise RuntimeError(f"could not pick {count:,} distinct positions in {_MAX_DRAWS} rounds")


def _sorted_unique(values: U64) -> U64:
    """The distinct values, sorted (numpy 2's hash-based np.unique is slower on big arrays)."""
    ordered = np.sort(values)
    distinct: U64 = ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if len(ordered) else ordered
    return distinct


def _distinct_in_order(values: U64) -> U64:
    _, first = np.unique(values, return_index=True)
    distinct: U64 = values[np.sort(first)]
    return distinct


def _contains(sorted_values: U64, values: U64) -> npt.NDArray[np.bool_]:
    """Membership in a sorted array, by binary search."""
    if not len(sorted_values):
        return np.zeros(len(values), dtype=np.bool_)
    at = np.searchsorted(sorted_values, values).clip(max=len(sorted_values) - 1)
    found: npt.NDArray[np.bool_] = sorted_values[at] == values
    return found
