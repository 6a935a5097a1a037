"""Delta imports: every list's add, remove and update; the three checks and their flags."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from served import Served
from support import (
    GSMA_HEADER,
    OTHER_TAC,
    PHONE_TAC,
    REGISTRATION_HEADER,
    UNALLOCATED_TAC,
    SmallRegistry,
    build_small_registry,
    imei,
    imeireg_command,
    registration_row,
    write,
)

from imeireg.cli_support import ExitCode
from imeireg.server.check import fact_table_edits, facts
from imeireg.server.check.fact_table import HAS_PAIRING, FactTable
from imeireg.server.check.fact_table_search import lookup
from imeireg.server.check.normalise import normalise_batch
from imeireg.server.check.verdict import batch_reasons
from imeireg.server.imports.delta import DeltaChecks, import_delta
from imeireg.server.imports.full import import_file
from imeireg.server.imports.lists import LISTS
from imeireg.server.imports.rows import Entry, ImportRejected, RowErrors
from imeireg.server.imports.sources import open_rows, read_header
from imeireg.server.model import ListName, SerialSet, TacSet
from imeireg.server.serving import build
from imeireg.server.store import Store

R = SmallRegistry
NEW = imei(PHONE_TAC, 777)
NEW_OTHER_TAC = imei(OTHER_TAC, 42)


@pytest.fixture
def registry(tmp_path: Path) -> SmallRegistry:
    return build_small_registry(tmp_path)


@pytest.fixture
def store(registry: SmallRegistry) -> Store:
    return Store.open(registry.db, readonly=False)


def delta(path: Path, header: str, rows: list[str]) -> Path:
    return write(path, [f"{header},change_type", *rows])


def registration_delta(path: Path, *rows: tuple[str, str, str]) -> Path:
    """Rows of (IMEI, status, change type)."""
    lines = [f"{registration_row(text, status)},{change}" for text, status, change in rows]
    return delta(path, REGISTRATION_HEADER, lines)


def fact_names(store: Store, *imeis: str, imsi: str = "") -> list[list[str]]:
    """The facts a state built afresh finds for each IMEI."""
    fresh = Served(store)
    try:
        found = batch_reasons(fresh.state, list(imeis), [imsi] * len(imeis) if imsi else [])
    finally:
        fresh.close()
    return [facts.fact_names(int(bits)) for bits in found]


def state(store: Store) -> tuple[int, dict[ListName, int]]:
    with store.read() as view:
        return view.snapshot().generation, view.rows()


def test_registration_delta_adds_removes_and_changes_status(tmp_path: Path, store: Store) -> None:
    path = registration_delta(
        tmp_path / "registration-delta.csv",
        (NEW, "", "add"),
        (NEW_OTHER_TAC, "provisional", "add"),
        (R.provisional, "whitelist", "update"),
        (R.registered, "", "remove"),
    )
    generation, rows = state(store)
    record = import_delta(store, ListName.REGISTRATION, path)
    assert (record.mode, record.generation, record.rows) == ("delta", generation + 1, 4)
    assert (record.added, record.removed, record.updated) == (2, 1, 1)
    with store.read() as view:
        assert view.rows()[ListName.REGISTRATION] == rows[ListName.REGISTRATION] + 1
    assert fact_names(store, NEW, NEW_OTHER_TAC, R.provisional, R.registered) == [
        ["REGISTERED"],
        ["REGISTRATION_PROVISIONAL"],
        ["REGISTERED"],
        ["NOT_REGISTERED"],
    ]


def test_stolen_delta_blocks_and_unblocks(tmp_path: Path, store: Store) -> None:
    path = delta(
        tmp_path / "stolen-delta.csv",
        "imei,reporting_date,status",
        [f"{R.registered},20261128,,add", f"{R.stolen},,recovered,update"],
    )
    record = import_delta(store, ListName.STOLEN, path)
    assert (record.added, record.removed, record.updated) == (1, 1, 0)
    assert fact_names(store, R.registered, R.stolen) == [
        ["REGISTERED", "STOLEN"],
        ["REGISTERED"],
    ]


@pytest.mark.parametrize(
    ("list_name", "header", "set_name"),
    [
        (ListName.BARRED, "imei", "BARRED"),
        (ListName.GOLDEN, "golden_imei", "GOLDEN"),
    ],
)
def test_imei_list_deltas(
    tmp_path: Path, store: Store, list_name: ListName, header: str, set_name: str
) -> None:
    path = delta(tmp_path / "delta.csv", header, [f"{NEW},add", f"{R.registered},add"])
    import_delta(store, list_name, path)
    assert fact_names(store, NEW, R.registered) == [
        ["NOT_REGISTERED", set_name],
        ["REGISTERED", set_name],
    ]
    import_delta(store, list_name, delta(tmp_path / "undo.csv", header, [f"{NEW},remove"]))
    assert fact_names(store, NEW) == [["NOT_REGISTERED"]]


def test_gsma_delta_allocates_updates_and_withdraws_tacs(tmp_path: Path, store: Store) -> None:
    path = write(
        tmp_path / "gsma-delta.csv",
        [
            f"{GSMA_HEADER}|change_type",
            f"{UNALLOCATED_TAC}|Newco|N1|LTE|01-Jun-2026|Smartphone|Newco|add",
            f"{PHONE_TAC}|Acme Devices|A1 Pro|LTE|15-Mar-2019|Smartphone|Acme|update",
            f"{OTHER_TAC}|||||||remove",
        ],
    )
    record = import_delta(store, ListName.GSMA_TAC, path)
    assert (record.added, record.removed, record.updated) == (1, 1, 1)
    assert fact_names(store, R.unallocated_tac, R.registered_other_tac) == [
        ["REGISTERED"],
        ["TAC_UNALLOCATED", "REGISTERED"],
    ]
    with store.read() as view:
        assert view.gsma_record(PHONE_TAC)["model_name"] == "A1 Pro"  # type: ignore[index]
        assert view.gsma_record(OTHER_TAC) is None


def test_barred_tac_delta(tmp_path: Path, store: Store) -> None:
    path = delta(tmp_path / "barred-tac.csv", "tac", [f"{PHONE_TAC},add", "86000001,remove"])
    import_delta(store, ListName.BARRED_TAC, path)
    assert fact_names(store, R.registered, R.barred_tac) == [
        ["TAC_BARRED", "REGISTERED"],
        ["REGISTERED"],
    ]


def test_pairing_delta_keys_pairs_by_imei_and_imsi(tmp_path: Path, store: Store) -> None:
    other_imsi = "510109999999999"
    path = delta(
        tmp_path / "pairing.csv",
        "imei,imsi,msisdn",
        [
            f"{R.paired},{other_imsi},628111,add",
            f"{R.paired},{R.paired_imsi},628222,update",
            f"{NEW},{other_imsi},,add",
        ],
    )
    record = import_delta(store, ListName.PAIRING, path)
    assert (record.added, record.removed, record.updated) == (2, 0, 1)
    assert fact_names(store, R.paired, NEW, imsi=other_imsi) == [
        ["NOT_REGISTERED", "PAIRED"],
        ["NOT_REGISTERED", "PAIRED"],
    ]
    path = delta(
        tmp_path / "unpair.csv",
        "imei,imsi,msisdn",
        [f"{R.paired},{R.paired_imsi},,remove", f"{NEW},{other_imsi},,remove"],
    )
    import_delta(store, ListName.PAIRING, path)
    assert fact_names(store, R.paired, imsi=R.paired_imsi) == [["NOT_REGISTERED"]]
    assert fact_names(store, R.paired, NEW, imsi=other_imsi) == [
        ["NOT_REGISTERED", "PAIRED"],
        ["NOT_REGISTERED"],
    ]
    with store.read() as view:
        paired = view.serials(SerialSet.PAIRED, int(NEW[:8]))
    assert paired is not None and 777 not in paired and 6 in paired


def rejection(store: Store, list_name: ListName, path: Path, **checks: bool) -> ImportRejected:
    before = state(store)
    with pytest.raises(ImportRejected) as raised:
        import_delta(store, list_name, path, checks=DeltaChecks(**checks))
    assert state(store) == before, "a rejected delta changed nothing"
    return raised.value


def test_each_check_rejects_the_file_whole_with_line_numbers(tmp_path: Path, store: Store) -> None:
    path = registration_delta(
        tmp_path / "bad.csv",
        (NEW, "", "add"),  # line 2: fine
        (R.registered, "", "add"),  # line 3: already registered
        (R.unregistered, "", "remove"),  # line 4: not registered
        (R.unregistered, "", "update"),  # line 5: same key, another change type
        (imei(PHONE_TAC, 888), "", "update"),  # line 6: not registered
        (imei(PHONE_TAC, 889), "", "replace"),  # line 7: no such change type
    )
    rejected = rejection(store, ListName.REGISTRATION, path)
    assert rejected.errors == [
        f"{path}:3: add of IMEI {R.registered[:14]}, which the list already has",
        f"{path}:4: remove of IMEI {R.unregistered[:14]}, which the list does not have",
        f"{path}:5: update of IMEI {R.unregistered[:14]}, which line 4 gives as remove",
        f"{path}:6: update of IMEI 35332211000888, which the list does not have",
        f"{path}:7: change_type 'replace' is not one of add, remove, update",
    ]
    assert fact_names(store, NEW) == [["NOT_REGISTERED"]]


@pytest.mark.parametrize(
    ("list_name", "file", "problem"),
    [
        (
            ListName.REGISTRATION,
            (REGISTRATION_HEADER, registration_row("1234")),
            "approved_imei '1234' is not an IMEI "
            "(14-digit body, 15-digit IMEI or 16-digit IMEISV expected)",
        ),
        (
            ListName.STOLEN,
            ("imei,reporting_date,status", f"{NEW},2026-13-01,"),
            "reporting_date '2026-13-01' is not a date like 20200418 or 2020-04-18",
        ),
        (ListName.BARRED_TAC, ("tac", "3533221"), "tac '3533221' is not a TAC (8 digits expected)"),
        (
            ListName.GSMA_TAC,
            (GSMA_HEADER, f"{UNALLOCATED_TAC}|Newco|N1|LTE|2026-06-01|Smartphone|Newco"),
            "allocation_date '2026-06-01' is not a date like 15-Mar-2019",
        ),
        (
            ListName.PAIRING,
            ("imei,imsi,msisdn", f"{NEW},51010,"),
            "imsi '51010' is not an IMSI (6 to 15 digits expected)",
        ),
        (
            ListName.PAIRING,
            ("imei,imsi,msisdn", f"{NEW},510101234567890,62-81"),
            "msisdn '62-81' is not an MSISDN (up to 15 digits expected)",
        ),
    ],
)
def test_a_delta_row_is_checked_by_the_rules_of_a_full_files_row(
    tmp_path: Path, store: Store, list_name: ListName, file: tuple[str, str], problem: str
) -> None:
    """Both imports read a list by its one spec: the same row, the same error."""
    header, row = file
    full = write(tmp_path / "full.csv", [header, row])
    with pytest.raises(ImportRejected) as rejected:
        import_file(store, list_name, full, force=True)
    assert rejected.value.errors == [f"{full}:2: {problem}"]
    separator = LISTS[list_name].delimiter
    changes = write(
        tmp_path / "delta.csv", [f"{header}{separator}change_type", f"{row}{separator}add"]
    )
    assert rejection(store, list_name, changes).errors == [f"{changes}:2: {problem}"]


def test_the_flags_relax_one_check_each(tmp_path: Path, store: Store) -> None:
    existing = registration_delta(tmp_path / "existing.csv", (R.registered, "provisional", "add"))
    assert "already has" in str(rejection(store, ListName.REGISTRATION, existing))
    import_delta(
        store, ListName.REGISTRATION, existing, checks=DeltaChecks(allow_existing_adds=True)
    )
    assert fact_names(store, R.registered) == [["REGISTRATION_PROVISIONAL"]]

    missing = registration_delta(
        tmp_path / "missing.csv", (R.unregistered, "", "remove"), (NEW, "", "update")
    )
    assert "does not have" in str(rejection(store, ListName.REGISTRATION, missing))
    record = import_delta(
        store, ListName.REGISTRATION, missing, checks=DeltaChecks(allow_missing=True)
    )
    assert (record.added, record.removed, record.updated) == (1, 0, 0)
    assert fact_names(store, R.unregistered, NEW) == [["NOT_REGISTERED"], ["REGISTERED"]]

    conflict = registration_delta(
        tmp_path / "conflict.csv", (NEW, "", "remove"), (NEW, "provisional", "update")
    )
    assert "which line 2 gives as remove" in str(rejection(store, ListName.REGISTRATION, conflict))
    import_delta(store, ListName.REGISTRATION, conflict, checks=DeltaChecks(allow_conflicts=True))
    assert fact_names(store, NEW) == [["REGISTRATION_PROVISIONAL"]]


def test_a_repeated_key_with_one_change_type_takes_its_last_row(
    tmp_path: Path, store: Store
) -> None:
    path = registration_delta(tmp_path / "d.csv", (NEW, "", "add"), (NEW, "provisional", "add"))
    import_delta(store, ListName.REGISTRATION, path)
    assert fact_names(store, NEW) == [["REGISTRATION_PROVISIONAL"]]


def test_a_delta_needs_the_change_type_column(tmp_path: Path, store: Store) -> None:
    path = write(tmp_path / "d.csv", [REGISTRATION_HEADER, registration_row(NEW)])
    rejected = rejection(store, ListName.REGISTRATION, path)
    assert rejected.errors == [f"{path}:1: header lacks column(s) change_type"]


def test_a_served_state_follows_deltas_like_a_fresh_build(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state built from the previous one after deltas answers as one built from scratch.

    A delta of an IMEI list is applied to the table key by key; one of a TAC list saves
    the whole table, which the next state maps in place; neither reassembles the table.
    """
    # Registrations on 300 other TACs, so that a delta changes a small part of the table.
    many = [registration_row(imei(f"{tac:08d}", s)) for tac in range(300) for s in (1, 5, 9)]
    import_delta(
        store,
        ListName.REGISTRATION,
        delta(tmp_path / "many.csv", REGISTRATION_HEADER, [f"{row},add" for row in many]),
    )
    served = Served(store)
    calls: list[str] = []
    count_table_builds(monkeypatch, calls)
    probes = [
        imei(tac, serial)
        for tac in (PHONE_TAC, OTHER_TAC, UNALLOCATED_TAC, "86000001", "00000007")
        for serial in range(0, 1200, 7)
    ]

    def answers_like_a_fresh_build(expected_calls: list[str]) -> None:
        calls.clear()  # an import that changes TAC sets assembles the table it saves
        served.catch_up()
        assert calls == expected_calls
        calls.clear()
        fresh = Served(store)
        calls.clear()
        found = batch_reasons(served.state, probes).tolist()
        assert found == batch_reasons(fresh.state, probes).tolist()
        fresh.close()

    for step in range(6):
        adds = [imei(PHONE_TAC, s) for s in range(100 * step + 10, 100 * step + 70)]
        removes = (
            [imei(PHONE_TAC, s) for s in range(100 * step - 90, 100 * step - 60)] if step else []
        )
        import_delta(
            store,
            ListName.REGISTRATION,
            registration_delta(
                tmp_path / f"d{step}.csv",
                *[(text, "", "add") for text in adds],
                *[(text, "", "remove") for text in removes],
            ),
        )
        answers_like_a_fresh_build(["edited"])
        stolen = delta(
            tmp_path / f"s{step}.csv",
            "imei,reporting_date,status",
            [f"{imei(OTHER_TAC, 3 * step)},,,add"],
        )
        import_delta(store, ListName.STOLEN, stolen)
        change = "add" if step % 2 == 0 else "remove"
        barred = delta(tmp_path / f"b{step}.csv", "tac", [f"00000007,{change}"])
        import_delta(store, ListName.BARRED_TAC, barred)
        # A generation that changes a TAC set saves the whole table: the next state maps
        # it where it lies and builds nothing.
        answers_like_a_fresh_build([])


def count_table_builds(monkeypatch: pytest.MonkeyPatch, calls: list[str]) -> None:
    """Record in `calls` each way a state's build makes a table: assembled from every
    segment, spliced, or edited (a delta's edits, in `serving.build`)."""
    for method in ("assemble", "splice"):
        monkeypatch.setattr(FactTable, method, counting(getattr(FactTable, method), method, calls))
    monkeypatch.setattr(build, "edited", counting(fact_table_edits.edited, "edited", calls))


def counting(method: Any, name: str, calls: list[str]) -> Any:
    def counted(*args: Any) -> Any:
        calls.append(name)
        return method(*args)

    return counted


def test_the_command_line_applies_a_delta_and_checks_its_flags(
    tmp_path: Path, registry: SmallRegistry
) -> None:
    path = registration_delta(tmp_path / "d.csv", (NEW, "", "add"))
    done = subprocess.run(
        imeireg_command("import", "registration", str(path), "--delta", "--db", str(registry.db)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == ExitCode.OK, done.stderr
    assert "imported registration (delta)" in done.stderr
    assert "(1 added, 0 removed, 0 updated)" in done.stderr
    again = subprocess.run(
        imeireg_command("import", "registration", str(path), "--delta", "--db", str(registry.db)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == ExitCode.BAD_INPUT
    assert f"{path}:2: add of IMEI {NEW[:14]}, which the list already has" in again.stderr
    misuse = subprocess.run(
        imeireg_command(
            "import", "registration", str(path), "--allow-missing", "--db", str(registry.db)
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    assert misuse.returncode == ExitCode.USAGE
    assert "--allow-* flags apply to --delta imports only" in misuse.stderr


def read_both(list_name: ListName, path: Path) -> tuple[list[Entry] | None, list[Entry]]:
    """The rows of a delta file as the column reader and as the row reader read them."""
    spec = LISTS[list_name]
    errors = RowErrors(path)
    with open_rows(path, spec.delimiter) as (header, rows):
        exact = spec.entries(spec.read_rows(header, rows, errors, delta=True))
    assert not errors.total
    fast = spec.read_columns(path, header, delta=True)
    return None if fast is None else spec.entries(fast), exact


@pytest.mark.parametrize(
    ("list_name", "header", "rows"),
    [
        (
            ListName.REGISTRATION,
            REGISTRATION_HEADER,
            [
                f"{registration_row(NEW)},add",
                f"{registration_row(R.provisional, ' WhiteList ')},Update",
                f"{registration_row(R.registered, 'pending')}, REMOVE ",
                f"{registration_row('imei-' + NEW_OTHER_TAC, 'provisional')},add",
            ],
        ),
        (
            ListName.STOLEN,
            "imei,reporting_date,status",
            [
                f"{NEW},20261128,,add",
                f"{R.stolen},2026-11-28,recovered,update",
                f"{R.barred},,,remove",
            ],
        ),
        (ListName.GOLDEN, "golden_imei", [f"{NEW},add", f"{R.registered},remove"]),
    ],
)
def test_the_column_reader_reads_a_valid_delta_as_the_row_reader_does(
    tmp_path: Path, list_name: ListName, header: str, rows: list[str]
) -> None:
    fast, exact = read_both(list_name, delta(tmp_path / "d.csv", header, rows))
    if list_name is ListName.REGISTRATION:
        assert fast is None  # a PEI spelling: the row reader's case
        fast, exact = read_both(list_name, delta(tmp_path / "d.csv", header, rows[:3]))
    assert fast == exact


def test_errors_found_after_a_column_read_name_their_exact_lines(
    tmp_path: Path, store: Store
) -> None:
    """The column reader skips blank lines; an error is reported from a second, exact read."""
    path = write(
        tmp_path / "d.csv",
        [f"{REGISTRATION_HEADER},change_type", "", f"{registration_row(R.registered)},add"],
    )
    spec = LISTS[ListName.REGISTRATION]
    header = read_header(path, spec.delimiter)
    assert spec.read_columns(path, header, delta=True) is not None, "read in column blocks"
    rejected = rejection(store, ListName.REGISTRATION, path)
    assert rejected.errors == [
        f"{path}:3: add of IMEI {R.registered[:14]}, which the list already has"
    ]


def test_a_starting_index_maps_the_saved_table_and_catches_up_on_deltas(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last full import saved the table; a server starting later maps it where it lies
    and applies the deltas committed since, as one set of edits."""
    for step in range(3):
        adds = [(imei(PHONE_TAC, 2000 + 10 * step + s), "", "add") for s in range(5)]
        import_delta(
            store, ListName.REGISTRATION, registration_delta(tmp_path / f"{step}.csv", *adds)
        )
    with store.read() as view:
        saved = view.saved_table()
        current = view.snapshot().generation
    assert saved is not None and saved[0] == current - 3
    calls: list[str] = []
    count_table_builds(monkeypatch, calls)
    started = Served(store)
    assert calls == ["edited"]
    monkeypatch.undo()
    with store.read() as view:
        with_every_segment = FactTable.assemble(
            view.segments_by_tac(),
            view.tac_set(TacSet.ALLOCATED),
            view.tac_set(TacSet.BARRED),
        )
    probes = [imei(tac, s) for tac in (PHONE_TAC, OTHER_TAC, "86000001") for s in range(0, 2100, 3)]
    batch = normalise_batch(probes)
    expected = lookup(with_every_segment, batch.keys).astype(np.uint32) & ~np.uint32(HAS_PAIRING)
    assert batch_reasons(started.state, probes).tolist() == expected.tolist()
    started.close()


def test_a_table_mapped_in_place_outlives_the_generations_that_leave_it_unchanged(
    tmp_path: Path, store: Store
) -> None:
    served = Served(store)
    pages = served.state.table_pages
    assert pages is not None, "started from the saved table"
    before = batch_reasons(served.state, [R.registered, R.stolen]).tolist()
    for step in range(20):  # model records only: the table stays, new pages are written
        path = write(
            tmp_path / f"g{step}.csv",
            [
                f"{GSMA_HEADER}|change_type",
                f"{PHONE_TAC}|Acme|A{step}|LTE|15-Mar-2019|Phone||update",
            ],
        )
        import_delta(store, ListName.GSMA_TAC, path)
        served.catch_up()
    assert served.state.table_pages is pages
    assert batch_reasons(served.state, [R.registered, R.stolen]).tolist() == before
    served.close()
