"""A generated registry written as DIRBS-format list files, and loaded by imeireg's importers.

Files are written with `textrows` a chunk of rows at a time, so a registration
list of 10^7 rows takes seconds and little memory. Every IMEI is written as a
15-digit IMEI with its correct Luhn check digit, as registries receive them.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.registry import (
    BRANDS,
    I64,
    MAKERS,
    MODELS_PER_MAKER,
    SERIAL_SPACE,
    U64,
    Registry,
    allocation_dates,
    model_names,
    model_numbers,
)
from benchmarks.textrows import Choice, Column, Digits, TextTable, luhn_imeis, render
from imeireg.server.imports.demo import DEVICE_TYPES
from imeireg.server.imports.full import import_file
from imeireg.server.model import ListName
from imeireg.server.store import Store

CHUNK_ROWS = 1 << 18
GSMA_HEADER = "TAC|Manufacturer|Model_Name|Bands|Allocation_Date|Device_Type|Brand_Name"
REGISTRATION_HEADER = (
    "approved_imei,make,model,status,model_number,brand_name,device_type,radio_interface,device_id"
)
# Import order: the TAC database first, as a registry would load it.
FILE_NAMES = {
    ListName.GSMA_TAC: "gsma-tac.txt",
    ListName.REGISTRATION: "registration.csv",
    ListName.STOLEN: "stolen.csv",
    ListName.BARRED: "barred.csv",
    ListName.BARRED_TAC: "barred-tac.csv",
    ListName.GOLDEN: "golden.csv",
    ListName.PAIRING: "pairing.csv",
}
_FIRST_REPORT = datetime.date(2020, 4, 18)  # stolen reports since the whitelist began
_REPORTING_DAYS = 2_000
_DEVICE_ID_DIGITS = 10
_STATUSES = TextTable(("", "whitelist", "provisional"))
_STOLEN_STATUSES = TextTable(("", "blacklist"))


@dataclass(frozen=True)
class ImportTiming:
    """One list imported with `import_file`: its rows and how long the import took."""

    list_name: ListName
    path: Path
    file_bytes: int
    rows: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def write_files(registry: Registry, directory: Path) -> dict[ListName, Path]:
    """Write every list of `registry` into `directory` as DIRBS-format files."""
    directory.mkdir(parents=True, exist_ok=True)
    writers = {
        ListName.GSMA_TAC: lambda: _gsma_chunks(registry),
        ListName.REGISTRATION: lambda: _registration_chunks(registry),
        ListName.STOLEN: lambda: _stolen_chunks(registry),
        ListName.BARRED: lambda: _imei_chunks("imei", registry.barred),
        ListName.BARRED_TAC: lambda: _tac_chunks("TAC", np.sort(registry.catalogue.barred)),
        ListName.GOLDEN: lambda: _imei_chunks("golden_imei", registry.golden),
        ListName.PAIRING: lambda: _pairing_chunks(registry),
    }
    paths = {}
    for name, file_name in FILE_NAMES.items():
        path = directory / file_name
        with path.open("wb") as out:
            for chunk in writers[name]():
                out.write(chunk)
        paths[name] = path
    return paths


def import_files(files: dict[ListName, Path], db: Path) -> list[ImportTiming]:
    """Load every file with imeireg's importer into a new store at `db`, one generation each."""
    store = Store.create(db)
    timings = []
    try:
        for name, path in files.items():
            started = time.perf_counter()
            record = import_file(store, name, path)
            timings.append(
                ImportTiming(
                    name, path, path.stat().st_size, record.rows, time.perf_counter() - started
                )
            )
    finally:
        store.close()
    return timings


def _gsma_chunks(registry: Registry) -> Iterator[bytes]:
    catalogue = registry.catalogue
    order = np.argsort(catalogue.tacs)
    device_type = catalogue.device_type[order]
    yield (GSMA_HEADER + "\n").encode()
    yield render(
        [
            Digits(catalogue.tacs[order], 8),
            Choice(TextTable(MAKERS), catalogue.maker[order]),
            Choice(TextTable(model_names()), catalogue.model[order]),
            Choice(TextTable([bands for _, bands, _, _ in DEVICE_TYPES]), device_type),
            Choice(TextTable(allocation_dates()), catalogue.allocated_on[order]),
            Choice(TextTable([name for name, *_ in DEVICE_TYPES]), device_type),
            Choice(TextTable(BRANDS), catalogue.maker[order]),
        ],
        delimiter="|",
    )


def _registration_chunks(registry: Registry) -> Iterator[bytes]:
    """Complete registrations (a device_id per block, per personal import), then provisional."""
    rows = _RegistrationRows(registry)
    yield (REGISTRATION_HEADER + "\n").encode()
    complete = registry.complete
    status = np.where(registry.complete_whitelist, 1, 0)
    for run, bodies in complete.chunks(CHUNK_ROWS):
        yield rows.render(bodies, status[run], (run + 1).astype(np.uint64))
    first_id = len(complete.lengths) + 1
    for start in range(0, len(registry.provisional), CHUNK_ROWS):
        bodies = registry.provisional[start : start + CHUNK_ROWS]
        ids = np.arange(first_id + start, first_id + start + len(bodies), dtype=np.uint64)
        yield rows.render(bodies, np.full(len(bodies), 2), ids)


class _RegistrationRows:
    """Registration rows. The columns before and after the status follow the TAC's model, so
    each pair of them is one choice among pre-joined texts, a table per model."""

    def __init__(self, registry: Registry) -> None:
        catalogue = registry.catalogue
        self._catalogue = catalogue
        names, numbers = model_names(), model_numbers()
        kinds = len(DEVICE_TYPES)
        # The extra last entry of each table is what a traveller declares at customs for a
        # phone whose TAC the GSMA never allocated.
        self._make_model = TextTable(
            [
                *(f"{MAKERS[i // MODELS_PER_MAKER]},{name}" for i, name in enumerate(names)),
                "Generic,Android Phone",
            ]
        )
        self._details = TextTable(
            [
                *(
                    f"{number},{BRANDS[i // MODELS_PER_MAKER]},{kind},{radio}"
                    for i, number in enumerate(numbers)
                    for kind, _, radio, _ in DEVICE_TYPES
                ),
                ",,Smartphone,2G/3G/4G",
            ]
        )
        self._model = np.append(catalogue.model, len(names))
        self._detail = np.append(
            catalogue.model * kinds + catalogue.device_type, len(names) * kinds
        )

    def render(self, bodies: U64, status: I64, device_ids: U64) -> bytes:
        at = self._catalogue.index_of(bodies // np.uint64(SERIAL_SPACE))
        return render(
            [
                Digits(luhn_imeis(bodies), 15),
                Choice(self._make_model, self._model[at]),
                Choice(_STATUSES, status),
                Choice(self._details, self._detail[at]),
                Digits(device_ids, _DEVICE_ID_DIGITS),
            ]
        )


def _stolen_chunks(registry: Registry) -> Iterator[bytes]:
    rng = np.random.default_rng([registry.seed, 10])
    count = len(registry.stolen)
    days = [
        f"{_FIRST_REPORT + datetime.timedelta(days=day):%Y%m%d}" for day in range(_REPORTING_DAYS)
    ]
    yield b"imei,reporting_date,status\n"
    yield render(
        [
            Digits(luhn_imeis(registry.stolen), 15),
            Choice(TextTable(days), rng.integers(0, _REPORTING_DAYS, size=count)),
            Choice(_STOLEN_STATUSES, rng.integers(0, 2, size=count)),
        ]
    )


def _imei_chunks(header: str, bodies: U64) -> Iterator[bytes]:
    yield (header + "\n").encode()
    yield render([Digits(luhn_imeis(bodies), 15)])


def _tac_chunks(header: str, tacs: U64) -> Iterator[bytes]:
    yield (header + "\n").encode()
    yield render([Digits(tacs, 8)])


def _pairing_chunks(registry: Registry) -> Iterator[bytes]:
    rng = np.random.default_rng([registry.seed, 11])
    count = len(registry.paired)
    msisdns = np.uint64(628 * 10**9) + rng.integers(0, 10**9, size=count, dtype=np.uint64)
    columns: list[Column] = [
        Digits(luhn_imeis(registry.paired), 15),
        Digits(registry.paired_imsis, 15),
        Digits(msisdns, 12),
    ]
    yield b"imei,imsi,msisdn\n"
    yield render(columns)
