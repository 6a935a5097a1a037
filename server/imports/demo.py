"""The demo registry: a deterministic national registry to try the service on, built from a seed.

`build_demo` writes DIRBS-format list files (a GSMA TAC catalogue, about a million
registrations, mostly manufacturers' blocks of sequential serials, and small
stolen, barred, golden and pairing lists) and loads them with the ordinary
importers into a new store, one generation per list.

A handful of example IMEIs, one for each rule of the default policy, are planted
in serials the bulk data never uses and are drawn from their own random stream,
so that they depend on the seed alone, not on the size of the demo: the README
quotes them, and a small test build has the same ones.
"""

from __future__ import annotations

import datetime
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from imeireg.imei import BODY_DIGITS, IMEI_DIGITS
from imeireg.server.check import facts
from imeireg.server.check.policy import STATUSES
from imeireg.server.imports.full import import_file
from imeireg.server.model import ListName
from imeireg.server.store import Store
from imeireg.v1 import legality_pb2 as pb

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

DEFAULT_SEED = 2020
DEFAULT_REGISTERED = 1_000_000
MIN_REGISTERED = 1_000
MAX_REGISTERED = 5_000_000

_SERIAL_SPACE = 1_000_000
# Bulk data stays below this serial in every TAC; the examples live above it,
# so no bulk list can ever touch an example, whatever the size of the demo.
_BULK_SERIALS = 900_000
_POPULAR_MODELS = 40  # the examples are phones of common models

_ALLOCATED_TACS = 320
_ALLOCATED_ONLY_TACS = 40  # models on the market that nobody registered
_BARRED_TACS = 2
_UNALLOCATED_TACS = 4  # used by a few personal imports (counterfeits, grey market)
_REPORTING_BODIES = ("35", "35", "86", "86", "01")  # BABT, TAF; CTIA's 01 keeps a leading zero

# Fictional makers: real vendors' names on invented TACs would misinform.
_MAKERS = (
    ("PT Nusantara Seluler Indonesia", "Nusantara", "NS"),
    ("Garuda Mobile Technology", "Garuda", "GM"),
    ("Komodo Devices Ltd", "Komodo", "KD"),
    ("Rinjani Electronics Co", "Rinjani", "RJ"),
    ("Batavia Telecom Equipment", "Batavia", "BT"),
    ("Sunda Strait Wireless", "Sunda", "SS"),
    ("Borneo IoT Solutions", "Borneo", "BI"),
    ("Maluku Modem Works", "Maluku", "MM"),
)
# (GSMA device type, bands, radio interface, share of the catalogue)
DEVICE_TYPES = (
    ("Smartphone", "GSM 900,GSM 1800,WCDMA FDD Band I,LTE FDD Band 3,LTE TDD Band 40",
     "2G/3G/4G", 0.70),
    ("Mobile Phone/Feature phone", "GSM 900,GSM 1800", "2G", 0.15),
    ("Tablet", "WCDMA FDD Band I,LTE FDD Band 3,LTE FDD Band 8", "3G/4G", 0.07),
    ("Modem", "LTE FDD Band 1,LTE FDD Band 3,LTE TDD Band 40", "4G", 0.04),
    ("IoT Device", "GSM 900,LTE FDD Band 8", "2G/4G", 0.04),
)  # fmt: skip
_SERIES = "ACMXZ"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_FIRST_ALLOCATION = datetime.date(2012, 1, 1)
_ALLOCATION_DAYS = 3000

_FACTORY_SHARE = 0.92  # of complete registrations; the rest are personal imports
_BLOCK_SIZES = (200, 30_000)  # log-uniform: small runs up to a big model's shipment
_FIRST_BLOCK_SERIAL = 50_000  # a model's first block starts below this serial
_BLOCK_GAP = 5_000  # serials a maker leaves unused between two blocks, at most
_UNALLOCATED_IMPORT_SHARE = 0.005  # of personal imports
# Sizes of the other lists, per complete registration.
_PROVISIONAL_SHARE = 0.004
_STOLEN_SHARE = 0.002
_BARRED_SHARE = 0.000_1
_PAIRED_SHARE = 0.001
_GOLDEN_IMEIS = 40
_HOME_MNCS = ("01", "10", "11", "21", "89")  # Indonesian operators, after MCC 510
_ROAMING_MNCS = ("01", "05")  # Singapore's, after MCC 525
_FIRST_REPORT = datetime.date(2020, 4, 18)  # stolen reports since the whitelist began
_REPORTING_DAYS = 2000
_REGISTRATION_STATUSES = ("", "whitelist", "provisional")  # maker's block, one by one, provisional
_CHUNK_ROWS = 100_000
_STATUS_NAMES = {number: name for name, number in STATUSES.items()}


@dataclass(frozen=True, slots=True)
class DemoExample:
    """One IMEI of the demo and what a check of it answers under the default policy."""

    name: str
    imei: str  # as an EIR sends it
    imsi: str  # "" when checked without one
    status: int  # EquipmentStatus number
    reasons: int  # fact bits, as the answer's reason bit set
    note: str


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What `build_demo` wrote: distinct rows per list, and the example IMEIs."""

    db_path: Path
    rows: dict[ListName, int]
    examples: tuple[DemoExample, ...]

    def example(self, name: str) -> DemoExample:
        return next(example for example in self.examples if example.name == name)

    def table(self) -> str:
        """The examples as an aligned text table, to print after a build."""
        header = ("example", "IMEI", "IMSI", "status", "reasons")
        lines = [header] + [
            (
                example.name,
                example.imei,
                example.imsi or "-",
                _STATUS_NAMES[example.status],
                " ".join(facts.fact_names(example.reasons)),
            )
            for example in self.examples
        ]
        widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in lines
        )


@dataclass(frozen=True)
class _Catalogue:
    """The GSMA TAC database of the demo, one entry per allocated TAC, plus its roles."""

    tacs: U64
    maker: I64  # index into _MAKERS
    device_type: I64  # index into DEVICE_TYPES
    model: list[str]  # series letter + number, e.g. "A52"
    allocated_on: list[str]  # DD-Mon-YYYY
    registering: I64  # indices of the TACs that have registrations, most popular first
    popularity: npt.NDArray[np.float64]  # aligned with registering, sums to 1
    allocated_only: I64
    barred: I64  # among registering
    unallocated: U64  # TACs missing from the catalogue

    def brand(self, i: int) -> str:
        return _MAKERS[self.maker[i]][1]

    def model_name(self, i: int) -> str:
        return f"{self.brand(i)} {self.model[i]}"

    def model_number(self, i: int) -> str:
        return f"{_MAKERS[self.maker[i]][2]}-{self.model[i]}"


@dataclass(frozen=True)
class _Lists:
    """Every IMEI-level list of the demo as bodies (tac * 10**6 + serial), in file order."""

    complete: U64
    factory_rows: int  # the first rows of `complete` come from makers' blocks, the rest one by one
    device_id: I64  # registration request of each complete row: one per block, one per import
    provisional: U64
    stolen: U64
    barred: U64
    golden: U64
    paired: U64
    paired_imsi: list[str]


def build_demo(
    db_path: Path, *, seed: int = DEFAULT_SEED, registered: int = DEFAULT_REGISTERED
) -> DemoSummary:
    """Create a store at `db_path` holding a demo registry of `registered` complete registrations.

    Refuses a path that already holds a store: a demo must never overwrite a real registry.
    """
    if not MIN_REGISTERED <= registered <= MAX_REGISTERED:
        raise ValueError(
            f"a demo has {MIN_REGISTERED:,} to {MAX_REGISTERED:,} registered IMEIs, "
            f"not {registered:,}"
        )
    if (db_path / "data.mdb").exists():
        raise FileExistsError(f"{db_path} already holds a registry store; choose a new path")
    catalogue = _catalogue(np.random.default_rng([seed, 0]))
    planted, examples = _examples(np.random.default_rng([seed, 1]), catalogue)
    lists = _bulk(np.random.default_rng([seed, 2]), catalogue, registered, planted)
    with tempfile.TemporaryDirectory(prefix="imeireg-demo-") as scratch:
        files = _write_files(Path(scratch), np.random.default_rng([seed, 3]), catalogue, lists)
        store = Store.create(db_path)
        try:
            for name, (path, _) in files.items():
                import_file(store, name, path)
        finally:
            store.close()
    return DemoSummary(db_path, {name: rows for name, (_, rows) in files.items()}, examples)


def imei_strings(bodies: U64) -> list[str]:
    """The 15-digit IMEIs (body + Luhn check digit, zeros kept) of bodies tac * 10**6 + serial."""
    powers = 10 ** np.arange(BODY_DIGITS - 1, -1, -1, dtype=np.uint64)
    digits = (bodies[:, None] // powers % np.uint64(10)).astype(np.uint8)
    doubled = digits[:, 1::2] * np.uint8(2)
    total = digits[:, 0::2].sum(axis=1) + (doubled - np.uint8(9) * (doubled > 9)).sum(axis=1)
    check = ((10 - total % 10) % 10).astype(np.uint8)
    text = np.column_stack([digits, check]) + np.uint8(ord("0"))
    joined = text.tobytes().decode("ascii")
    return [joined[start : start + IMEI_DIGITS] for start in range(0, len(joined), IMEI_DIGITS)]


def _catalogue(rng: np.random.Generator) -> _Catalogue:
    wanted = _ALLOCATED_TACS + _UNALLOCATED_TACS
    tacs = np.empty(0, np.uint64)
    while len(tacs) < wanted:
        reporting_bodies = rng.choice(_REPORTING_BODIES, size=wanted).astype(np.uint64)
        drawn = reporting_bodies * np.uint64(10**6) + rng.integers(0, 10**6, wanted, np.uint64)
        tacs = _distinct_in_order(np.concatenate([tacs, drawn]))
    shares = np.array([share for *_, share in DEVICE_TYPES])
    series = rng.choice(list(_SERIES), size=_ALLOCATED_TACS).tolist()
    numbers = rng.integers(1, 100, size=_ALLOCATED_TACS).tolist()
    days = rng.integers(0, _ALLOCATION_DAYS, size=_ALLOCATED_TACS).tolist()
    dates = [_FIRST_ALLOCATION + datetime.timedelta(days=day) for day in days]
    roles = rng.permutation(_ALLOCATED_TACS)
    registering = roles[_ALLOCATED_ONLY_TACS:]
    # A few models sell most phones: a Zipf-like share by popularity rank.
    popularity = 1 / np.arange(1, len(registering) + 1) ** 0.8
    return _Catalogue(
        tacs=tacs[:_ALLOCATED_TACS],
        maker=rng.integers(0, len(_MAKERS), size=_ALLOCATED_TACS),
        device_type=rng.choice(len(DEVICE_TYPES), size=_ALLOCATED_TACS, p=shares / shares.sum()),
        model=[f"{letter}{number}" for letter, number in zip(series, numbers, strict=True)],
        allocated_on=[f"{d.day:02d}-{_MONTHS[d.month - 1]}-{d.year}" for d in dates],
        registering=registering,
        popularity=popularity / popularity.sum(),
        allocated_only=roles[:_ALLOCATED_ONLY_TACS],
        # Popular models, so that barring them cuts off many registered phones.
        barred=registering[rng.choice(np.arange(5, 30), size=_BARRED_TACS, replace=False)],
        unallocated=tacs[_ALLOCATED_TACS:wanted],
    )


@dataclass(frozen=True)
class _Planted:
    """The example IMEIs' bodies, by the lists they are on."""

    complete: U64
    provisional: U64
    stolen: U64
    barred: U64
    golden: U64
    paired: U64
    paired_imsi: list[str]


def _examples(
    rng: np.random.Generator, catalogue: _Catalogue
) -> tuple[_Planted, tuple[DemoExample, ...]]:
    """The examples, and the list entries that make each answer as it says."""
    registering = catalogue.registering
    popular = registering[~np.isin(registering, catalogue.barred)][:_POPULAR_MODELS]
    tac_indices = [
        *rng.choice(popular, size=7, replace=False).tolist(),
        int(catalogue.allocated_only[0]),
        int(catalogue.barred[0]),
    ]
    tacs = np.append(catalogue.tacs[tac_indices], catalogue.unallocated[0])
    serials = rng.choice(_SERIAL_SPACE - _BULK_SERIALS, size=len(tacs), replace=False)
    bodies = tacs * np.uint64(_SERIAL_SPACE) + serials.astype(np.uint64) + np.uint64(_BULK_SERIALS)
    (
        registered, stolen, barred, golden_stolen, provisional, paired, mismatched,
        unregistered, barred_tac, unallocated,
    ) = bodies.tolist()  # fmt: skip
    imei = dict(zip(bodies.tolist(), imei_strings(bodies), strict=True))
    paired_imsi, other_imsi = _imsis(rng, "510", _HOME_MNCS, 2)
    (roamer_imsi,) = _imsis(rng, "525", _ROAMING_MNCS, 1)
    # Any wrong digit will do; handsets send a spare 0 there.
    wrong_check = (int(imei[mismatched][-1]) + 1) % 10
    sent_mismatched = imei[mismatched][:-1] + str(wrong_check)

    white = pb.EQUIPMENT_STATUS_WHITELISTED
    grey = pb.EQUIPMENT_STATUS_GREYLISTED
    black = pb.EQUIPMENT_STATUS_BLACKLISTED
    examples = (
        DemoExample("registered", imei[registered], "", white, facts.REGISTERED,
                    "registered by its maker"),
        DemoExample("provisional", imei[provisional], "", grey, facts.REGISTRATION_PROVISIONAL,
                    "registration not yet complete"),
        DemoExample("unregistered", imei[unregistered], "", black, facts.NOT_REGISTERED,
                    "allocated TAC, never registered"),
        DemoExample("stolen", imei[stolen], "", black, facts.REGISTERED | facts.STOLEN,
                    "registered, then reported stolen"),
        DemoExample("barred", imei[barred], "", black, facts.REGISTERED | facts.BARRED,
                    "registered, then barred by the regulator"),
        DemoExample("golden_stolen", imei[golden_stolen], "", white,
                    facts.NOT_REGISTERED | facts.STOLEN | facts.GOLDEN,
                    "golden: allowed although stolen and unregistered"),
        DemoExample("barred_tac", imei[barred_tac], "", black, facts.REGISTERED | facts.TAC_BARRED,
                    "registered, but its whole model (TAC) is barred"),
        DemoExample("paired", imei[paired], paired_imsi, white,
                    facts.NOT_REGISTERED | facts.PAIRED,
                    "unregistered, allowed with the subscriber it is paired with"),
        DemoExample("paired_other_imsi", imei[paired], other_imsi, black, facts.NOT_REGISTERED,
                    "the same IMEI with another Indonesian SIM"),
        DemoExample("unallocated_tac", imei[unallocated], "", black,
                    facts.REGISTERED | facts.TAC_UNALLOCATED,
                    "registered, but its TAC is not in the GSMA database"),
        DemoExample("check_digit_mismatch", sent_mismatched, "", white,
                    facts.REGISTERED | facts.CHECK_DIGIT_MISMATCH,
                    "registered IMEI sent with a wrong check digit, which does not block"),
        DemoExample("inbound_roamer", imei[unregistered], roamer_imsi, white,
                    facts.NOT_REGISTERED | facts.INBOUND_ROAMER,
                    "the unregistered IMEI with a foreign SIM (MCC 525)"),
    )  # fmt: skip
    planted = _Planted(
        complete=_u64([registered, stolen, barred, barred_tac, unallocated, mismatched]),
        provisional=_u64([provisional]),
        stolen=_u64([stolen, golden_stolen]),
        barred=_u64([barred]),
        golden=_u64([golden_stolen]),
        paired=_u64([paired]),
        paired_imsi=[paired_imsi],
    )
    return planted, examples


def _bulk(
    rng: np.random.Generator, catalogue: _Catalogue, registered: int, planted: _Planted
) -> _Lists:
    """The bulk of every list around the planted examples, `registered` complete in all."""
    bulk_complete = registered - len(planted.complete)
    blocks, block_ids = _factory_blocks(rng, catalogue, round(bulk_complete * _FACTORY_SHARE))
    # Personal imports: mostly popular models, a few on TACs the GSMA never allocated.
    import_tacs = np.concatenate([catalogue.tacs[catalogue.registering], catalogue.unallocated])
    import_weights = np.concatenate([
        catalogue.popularity * (1 - _UNALLOCATED_IMPORT_SHARE),
        np.full(_UNALLOCATED_TACS, _UNALLOCATED_IMPORT_SHARE / _UNALLOCATED_TACS),
    ])  # fmt: skip
    personal = _fresh(rng, import_tacs, import_weights, bulk_complete - len(blocks), blocks)
    complete = np.concatenate([blocks, personal, planted.complete])
    one_by_one = len(complete) - len(blocks)
    device_id = np.concatenate([block_ids, block_ids.max() + 1 + np.arange(one_by_one)])

    model_tacs = catalogue.tacs[catalogue.registering]
    provisional = _fresh(
        rng, model_tacs, catalogue.popularity, round(registered * _PROVISIONAL_SHARE), complete
    )
    stolen = round(registered * _STOLEN_SHARE)
    bulk_registered = complete[: len(blocks) + len(personal)]
    reported = rng.choice(
        bulk_registered, size=stolen + round(registered * _BARRED_SHARE), replace=False
    )
    taken = np.concatenate([complete, provisional])
    golden = _fresh(rng, model_tacs, catalogue.popularity, _GOLDEN_IMEIS, taken)
    paired = _fresh(
        rng,
        model_tacs,
        catalogue.popularity,
        round(registered * _PAIRED_SHARE),
        np.append(taken, golden),
    )
    # Some family plans: a tenth of the paired phones are paired with a second SIM too.
    paired = np.concatenate([paired, paired[: len(paired) // 10]])
    return _Lists(
        complete=complete,
        factory_rows=len(blocks),
        device_id=device_id,
        provisional=np.concatenate([provisional, planted.provisional]),
        stolen=np.concatenate([reported[:stolen], planted.stolen]),
        barred=np.concatenate([reported[stolen:], planted.barred]),
        golden=np.concatenate([golden, planted.golden]),
        paired=np.concatenate([paired, planted.paired]),
        paired_imsi=[*_imsis(rng, "510", _HOME_MNCS, len(paired)), *planted.paired_imsi],
    )


def _factory_blocks(rng: np.random.Generator, catalogue: _Catalogue, total: int) -> tuple[U64, I64]:
    """`total` IMEI bodies in blocks of sequential serials, and the block (device_id) of each."""
    low, high = np.log(_BLOCK_SIZES)
    lengths = np.empty(0, np.int64)
    while lengths.sum() < total:
        drawn = np.exp(rng.uniform(low, high, size=64)).astype(np.int64)
        lengths = np.concatenate([lengths, drawn])
    ends = np.cumsum(lengths)
    last = int(np.searchsorted(ends, total))
    lengths = lengths[: last + 1]
    lengths[-1] -= ends[last] - total
    model = rng.choice(len(catalogue.registering), size=len(lengths), p=catalogue.popularity)
    gaps = rng.integers(0, _BLOCK_GAP, size=len(lengths))
    first_serial = rng.integers(0, _FIRST_BLOCK_SERIAL, size=len(catalogue.registering))

    # Blocks of one model follow each other through its serial space, with gaps.
    order = np.argsort(model, kind="stable")
    model, lengths, gaps = model[order], lengths[order], gaps[order]
    spans = gaps + lengths
    before = np.cumsum(spans) - spans
    new_model = np.r_[True, model[1:] != model[:-1]]
    model_start = np.maximum.accumulate(np.where(new_model, before, 0))
    starts = first_serial[model] + before - model_start + gaps
    if int((starts + lengths).max()) > _BULK_SERIALS:
        raise ValueError("too many registrations for the demo's TAC catalogue")

    block = np.repeat(np.arange(len(lengths)), lengths)
    offsets = np.arange(len(block)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    tacs = catalogue.tacs[catalogue.registering[model]]
    bodies = tacs[block] * np.uint64(_SERIAL_SPACE) + (starts[block] + offsets).astype(np.uint64)
    return bodies, order[block] + 1


def _fresh(
    rng: np.random.Generator, tacs: U64, weights: npt.NDArray[np.float64], count: int, taken: U64
) -> U64:
    """`count` distinct random bodies on TACs drawn by weight, none of them in `taken`."""
    sorted_taken = np.sort(taken)
    found = np.empty(0, np.uint64)
    while len(found) < count:
        wanted = 2 * (count - len(found)) + 16
        drawn = rng.choice(tacs, size=wanted, p=weights) * np.uint64(_SERIAL_SPACE)
        drawn += rng.integers(0, _BULK_SERIALS, size=wanted, dtype=np.uint64)
        drawn = drawn[~_contains(sorted_taken, drawn)]
        found = _distinct_in_order(np.concatenate([found, drawn]))
    return found[:count]


def _distinct_in_order(values: U64) -> U64:
    _, first = np.unique(values, return_index=True)
    return values[np.sort(first)]


def _contains(sorted_values: U64, values: U64) -> npt.NDArray[np.bool_]:
    """Membership in a non-empty sorted array, by binary search.

    np.isin and plain np.unique take over a second per million values on numpy 2.4
    (their hash-based path), against milliseconds for a sort and a search.
    """
    at = np.searchsorted(sorted_values, values).clip(max=len(sorted_values) - 1)
    found: npt.NDArray[np.bool_] = sorted_values[at] == values
    return found


def _distinct_count(values: U64) -> int:
    ordered = np.sort(values)
    return int(np.count_nonzero(ordered[1:] != ordered[:-1])) + int(len(ordered) > 0)


def _imsis(rng: np.random.Generator, mcc: str, mncs: tuple[str, ...], count: int) -> list[str]:
    networks = rng.choice(mncs, size=count).tolist()
    subscribers = rng.integers(0, 10**10, size=count).tolist()
    return [
        f"{mcc}{mnc}{subscriber:010d}"
        for mnc, subscriber in zip(networks, subscribers, strict=True)
    ]


def _u64(values: list[int]) -> U64:
    return np.array(values, dtype=np.uint64)


def _write_files(
    directory: Path, rng: np.random.Generator, catalogue: _Catalogue, lists: _Lists
) -> dict[ListName, tuple[Path, int]]:
    """Write every list as a DIRBS-format file: its path and distinct rows, in import order."""
    tacs = catalogue.tacs.tolist()
    reported_on = [
        _FIRST_REPORT + datetime.timedelta(days=day)
        for day in rng.integers(0, _REPORTING_DAYS, size=len(lists.stolen)).tolist()
    ]
    stolen_status = rng.choice(("", "blacklist"), size=len(lists.stolen)).tolist()
    paired_imeis = imei_strings(lists.paired)
    # A fifth of the pairs name no MSISDN, which the pairing list allows.
    msisdns = [
        f"628{number}" if listed else ""
        for number, listed in zip(
            rng.integers(10**8, 10**9, size=len(lists.paired)).tolist(),
            (rng.random(len(lists.paired)) >= 0.2).tolist(),
            strict=True,
        )
    ]
    return {
        ListName.GSMA_TAC: (
            _write_csv(
                directory / "gsma-tac.txt",
                "TAC|Manufacturer|Model_Name|Bands|Allocation_Date|Device_Type|Brand_Name",
                [[_gsma_row(catalogue, i) for i in range(len(tacs))]],
            ),
            len(tacs),
        ),
        ListName.REGISTRATION: (
            _write_csv(
                directory / "registration.csv",
                "approved_imei,make,model,status,model_number,brand_name,device_type,"
                "radio_interface,device_id",
                _registration_rows(catalogue, lists),
            ),
            _distinct_count(np.concatenate([lists.complete, lists.provisional])),
        ),
        ListName.STOLEN: (
            _write_csv(
                directory / "stolen.csv",
                "imei,reporting_date,status",
                [[
                    f"{imei},{day:%Y%m%d},{status}"
                    for imei, day, status in zip(
                        imei_strings(lists.stolen), reported_on, stolen_status, strict=True
                    )
                ]],
            ),
            _distinct_count(lists.stolen),
        ),
        ListName.BARRED: (
            _write_csv(directory / "barred.csv", "imei", [imei_strings(lists.barred)]),
            _distinct_count(lists.barred),
        ),
        ListName.BARRED_TAC: (
            _write_csv(
                directory / "barred-tac.csv",
                "TAC",
                [[f"{tacs[i]:08d}" for i in catalogue.barred.tolist()]],
            ),
            len(catalogue.barred),
        ),
        ListName.GOLDEN: (
            _write_csv(directory / "golden.csv", "golden_imei", [imei_strings(lists.golden)]),
            _distinct_count(lists.golden),
        ),
        ListName.PAIRING: (
            _write_csv(
                directory / "pairing.csv",
                "imei,imsi,msisdn",
                [[
                    f"{imei},{imsi},{msisdn}"
                    for imei, imsi, msisdn in zip(
                        paired_imeis, lists.paired_imsi, msisdns, strict=True
                    )
                ]],
            ),
            len(set(zip(paired_imeis, lists.paired_imsi, strict=True))),
        ),
    }  # fmt: skip


def _write_csv(path: Path, header: str, chunks: Iterable[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(header + "\n")
        for rows in chunks:
            out.write("".join(row + "\n" for row in rows))
    return path


def _gsma_row(catalogue: _Catalogue, i: int) -> str:
    maker, brand, _ = _MAKERS[catalogue.maker[i]]
    device_type, bands, _, _ = DEVICE_TYPES[catalogue.device_type[i]]
    return (
        f"{int(catalogue.tacs[i]):08d}|{maker}|{catalogue.model_name(i)}|{bands}"
        f"|{catalogue.allocated_on[i]}|{device_type}|{brand}"
    )


def _registration_rows(catalogue: _Catalogue, lists: _Lists) -> Iterator[list[str]]:
    """The registration file in chunks: complete rows (makers' blocks first), then provisional."""
    details = {
        int(tac): _registration_details(catalogue, i) for i, tac in enumerate(catalogue.tacs)
    }
    for tac in catalogue.unallocated.tolist():
        # What a traveller declares at customs for a phone of no known model.
        details[tac] = ("Generic,Android Phone", ",,Smartphone,2G/3G/4G")
    bodies = np.concatenate([lists.complete, lists.provisional])
    device_ids = np.concatenate(
        [lists.device_id, lists.device_id.max() + 1 + np.arange(len(lists.provisional))]
    )
    status = np.full(len(bodies), 1, dtype=np.int64)
    status[: lists.factory_rows] = 0
    status[len(lists.complete) :] = 2
    for start in range(0, len(bodies), _CHUNK_ROWS):
        part = bodies[start : start + _CHUNK_ROWS]
        rows = zip(
            imei_strings(part),
            (part // np.uint64(_SERIAL_SPACE)).tolist(),
            status[start : start + _CHUNK_ROWS].tolist(),
            device_ids[start : start + _CHUNK_ROWS].tolist(),
            strict=True,
        )
        yield [
            f"{imei},{details[tac][0]},{_REGISTRATION_STATUSES[kind]},{details[tac][1]},{device_id}"
            for imei, tac, kind, device_id in rows
        ]


def _registration_details(catalogue: _Catalogue, i: int) -> tuple[str, str]:
    """(make,model) and (model_number,brand_name,device_type,radio_interface) of a TAC's rows."""
    _, _, radio, _ = DEVICE_TYPES[catalogue.device_type[i]]
    device_type = DEVICE_TYPES[catalogue.device_type[i]][0]
    brand = catalogue.brand(i)
    return (
        f"{brand},{catalogue.model_name(i)}",
        f"{catalogue.model_number(i)},{brand},{device_type},{radio}",
    )
