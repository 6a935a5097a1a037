"""Full imports: every list from good files, broken files rejected whole, the 75 % rule, the log."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroaring import BitMap
from support import (
    GSMA_HEADER,
    PHONE_TAC,
    REGISTRATION_HEADER,
    SmallRegistry,
    imei,
    imeireg_command,
    list_files,
    registration_row,
    write,
)

from imeireg.cli_support import ExitCode
from imeireg.imei import is_digits, parse_imei, with_check_digit
from imeireg.server.check.normalise import SERIAL_BITS
from imeireg.server.imports import full as importers
from imeireg.server.imports.full import ImportRefused, import_file
from imeireg.server.imports.imei_columns import valid_keys
from imeireg.server.imports.rollback import roll_back
from imeireg.server.imports.rows import ImportRejected
from imeireg.server.imports.sources import SourceError
from imeireg.server.model import ListName, SerialSet, TacSet
from imeireg.server.store import Store

# Blocks and scattered serials of one TAC, as 15-digit IMEIs.
FIFTEEN_DIGITS = [
    imei(PHONE_TAC, serial) for serial in [*range(100, 400), *range(5000, 90000, 997)]
]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.create(tmp_path / "db")


def serials(store: Store, which: SerialSet, tac: str) -> list[int]:
    with store.read() as view:
        found = view.serials(which, int(tac))
    return [] if found is None else list(found)


def generation(store: Store) -> int:
    with store.read() as view:
        return view.snapshot().generation


def test_every_list_imports_and_is_logged_with_its_sha256(tmp_path: Path, store: Store) -> None:
    files = list_files(tmp_path, SmallRegistry)
    for expected_generation, (name, path) in enumerate(files.items(), start=1):
        record = import_file(store, name, path)
        assert record.generation == expected_generation
        assert record.list_name == name.value
        assert record.mode == "full"
        assert record.file_name == path.name
        assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    with store.read() as view:
        rows = view.rows()
        log = view.import_log()
        assert set(view.tac_set(TacSet.ALLOCATED)) == {35332211, 1234567, 86000001}
        assert set(view.tac_set(TacSet.BARRED)) == {86000001}
        assert view.gsma_record("01234567") == {
            "manufacturer": "Zero Mobile",
            "model_name": "Z0",
            "brand_name": "Zero",
            "device_type": "Feature phone",
            "bands": "LTE",
            "allocation_date": "2020-01-01",
        }
        assert view.is_paired(SmallRegistry.paired[:14], SmallRegistry.paired_imsi)
        assert not view.is_paired(SmallRegistry.paired[:14], "510109999999999")
    assert rows == {
        ListName.GSMA_TAC: 3,
        ListName.REGISTRATION: 8,
        ListName.STOLEN: 2,
        ListName.BARRED: 1,
        ListName.BARRED_TAC: 1,
        ListName.GOLDEN: 1,
        ListName.PAIRING: 1,
    }
    assert [entry.generation for entry in log] == [7, 6, 5, 4, 3, 2, 1]
    assert serials(store, SerialSet.REGISTERED, PHONE_TAC) == [1, 3, 4, 5]
    assert serials(store, SerialSet.PROVISIONAL, PHONE_TAC) == [2]
    assert serials(store, SerialSet.STOLEN, PHONE_TAC) == [3, 5]
    assert serials(store, SerialSet.GOLDEN, PHONE_TAC) == [5]
    assert serials(store, SerialSet.REGISTERED, "01234567") == [500]


def test_a_full_import_replaces_the_whole_list(tmp_path: Path, store: Store) -> None:
    first = write(tmp_path / "a.csv", ["imei", imei(PHONE_TAC, 1), imei(PHONE_TAC, 2)])
    second = write(tmp_path / "b.csv", ["imei", imei(PHONE_TAC, 7), imei("01234567", 8)])
    import_file(store, ListName.BARRED, first)
    import_file(store, ListName.BARRED, second)
    assert serials(store, SerialSet.BARRED, PHONE_TAC) == [7]
    assert serials(store, SerialSet.BARRED, "01234567") == [8]


def test_imei_spellings_are_normalised_and_duplicates_counted_once(
    tmp_path: Path, store: Store
) -> None:
    body = f"{PHONE_TAC}000042"
    path = write(
        tmp_path / "golden.csv",
        ["golden_imei", body, imei(PHONE_TAC, 42), body + "07", f"  {body}  ", ""],
    )
    record = import_file(store, ListName.GOLDEN, path)
    assert record.rows == 1
    assert serials(store, SerialSet.GOLDEN, PHONE_TAC) == [42]


def test_a_complete_registration_supersedes_a_provisional_one(tmp_path: Path, store: Store) -> None:
    both = imei(PHONE_TAC, 9)
    path = write(
        tmp_path / "registration.csv",
        [
            REGISTRATION_HEADER,
            registration_row(both, "provisional"),
            registration_row(both, "WHITELIST"),
            registration_row(imei(PHONE_TAC, 10), "pending"),
        ],
    )
    assert import_file(store, ListName.REGISTRATION, path).rows == 2
    assert serials(store, SerialSet.REGISTERED, PHONE_TAC) == [9]
    assert serials(store, SerialSet.PROVISIONAL, PHONE_TAC) == [10]


def test_stolen_rows_block_only_with_an_empty_or_blacklist_status(
    tmp_path: Path, store: Store
) -> None:
    path = write(
        tmp_path / "stolen.csv",
        [
            "imei,reporting_date,status",
            f"{imei(PHONE_TAC, 1)},20240101,",
            f"{imei(PHONE_TAC, 2)},2024-01-02,Blacklist",
            f"{imei(PHONE_TAC, 3)},20240103,recovered",
        ],
    )
    assert import_file(store, ListName.STOLEN, path).rows == 3
    assert serials(store, SerialSet.STOLEN, PHONE_TAC) == [1, 2]


def test_column_names_are_case_insensitive_in_any_order_with_extra_columns(
    tmp_path: Path, store: Store
) -> None:
    path = write(
        tmp_path / "pairing.csv",
        ["MSISDN, Extra ,IMSI,Imei", f"6281,x,510101234567890,{imei(PHONE_TAC, 1)}"],
    )
    assert import_file(store, ListName.PAIRING, path).rows == 1
    assert serials(store, SerialSet.PAIRED, PHONE_TAC) == [1]


@pytest.mark.parametrize("suffix", [".csv.gz", ".zip"])
def test_compressed_files_import_like_plain_csv(tmp_path: Path, store: Store, suffix: str) -> None:
    text = f"imei\n{imei(PHONE_TAC, 11)}\n{imei(PHONE_TAC, 12)}\n"
    path = tmp_path / f"barred{suffix}"
    if suffix == ".zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("barred.csv", text)
    else:
        path.write_bytes(gzip.compress(text.encode()))
    record = import_file(store, ListName.BARRED, path)
    assert record.rows == 2
    assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert serials(store, SerialSet.BARRED, PHONE_TAC) == [11, 12]


def test_a_zip_must_hold_exactly_one_file(tmp_path: Path, store: Store) -> None:
    path = tmp_path / "two.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.csv", "imei\n")
        archive.writestr("b.csv", "imei\n")
    with pytest.raises(SourceError, match="exactly one CSV file, found 2"):
        import_file(store, ListName.BARRED, path)


def test_unknown_file_types_and_empty_files_are_refused(tmp_path: Path, store: Store) -> None:
    with pytest.raises(SourceError, match="unsupported file type"):
        import_file(store, ListName.BARRED, write(tmp_path / "barred.xlsx", ["imei"]))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SourceError, match="header row is required"):
        import_file(store, ListName.BARRED, tmp_path / "empty.csv")


def test_a_missing_column_rejects_the_file_at_line_1(tmp_path: Path, store: Store) -> None:
    path = write(tmp_path / "stolen.csv", ["imei,status", f"{imei(PHONE_TAC, 1)},"])
    with pytest.raises(ImportRejected) as rejected:
        import_file(store, ListName.STOLEN, path)
    assert rejected.value.errors == [f"{path}:1: header lacks column(s) reporting_date"]


def test_invalid_rows_reject_the_whole_file_with_line_numbers_and_change_nothing(
    tmp_path: Path, store: Store
) -> None:
    good = write(tmp_path / "good.csv", [REGISTRATION_HEADER, registration_row(imei(PHONE_TAC, 1))])
    import_file(store, ListName.REGISTRATION, good)
    wrong_check_digit = imei(PHONE_TAC, 2)[:-1] + str((int(imei(PHONE_TAC, 2)[-1]) + 1) % 10)
    bad = write(
        tmp_path / "bad.csv",
        [
            REGISTRATION_HEADER,
            registration_row(imei(PHONE_TAC, 3)),
            registration_row("1234"),
            registration_row(wrong_check_digit),
            registration_row(imei(PHONE_TAC, 4)),
            registration_row("35332211x00001"),
        ],
    )
    with pytest.raises(ImportRejected) as rejected:
        import_file(store, ListName.REGISTRATION, bad)
    expected_digit = imei(PHONE_TAC, 2)[-1]
    assert rejected.value.total == 3
    assert rejected.value.errors == [
        f"{bad}:3: approved_imei '1234' is not an IMEI "
        "(14-digit body, 15-digit IMEI or 16-digit IMEISV expected)",
        f"{bad}:4: approved_imei '{wrong_check_digit}' has check digit "
        f"{wrong_check_digit[-1]}, expected {expected_digit}",
        f"{bad}:6: approved_imei '35332211x00001' is not an IMEI "
        "(14-digit body, 15-digit IMEI or 16-digit IMEISV expected)",
    ]
    assert generation(store) == 1
    assert serials(store, SerialSet.REGISTERED, PHONE_TAC) == [1]


def test_only_the_first_20_errors_are_listed_with_the_count_of_the_rest(
    tmp_path: Path, store: Store
) -> None:
    path = write(tmp_path / "barred.csv", ["imei", *(f"bad{i}" for i in range(25))])
    with pytest.raises(ImportRejected) as rejected:
        import_file(store, ListName.BARRED, path)
    assert rejected.value.total == 25
    assert len(rejected.value.errors) == 20
    assert rejected.value.errors[0].startswith(f"{path}:2: imei 'bad0'")
    assert str(rejected.value).endswith("... and 5 more")


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("3533221|A|M|LTE|01-Jan-2020|Phone", "tac '3533221' is not a TAC"),
        ("35332211|A|M|LTE|2020-01-01|Phone", "allocation_date '2020-01-01' is not a date"),
        ("35332211|A|M|LTE|31-Foo-2020|Phone", "allocation_date '31-Foo-2020' is not a date"),
    ],
)
def test_gsma_rows_are_validated(tmp_path: Path, store: Store, row: str, problem: str) -> None:
    path = write(tmp_path / "gsma.csv", [GSMA_HEADER.rsplit("|", 1)[0], row])
    with pytest.raises(ImportRejected, match=f"gsma.csv:2: {problem}"):
        import_file(store, ListName.GSMA_TAC, path)


def test_a_repeated_tac_in_the_gsma_file_is_rejected(tmp_path: Path, store: Store) -> None:
    row = "35332211|A|M|LTE|01-Jan-2020|Phone|B"
    path = write(tmp_path / "gsma.csv", [GSMA_HEADER, row, row])
    with pytest.raises(ImportRejected, match=r"gsma\.csv:3: tac 35332211 repeats line 2"):
        import_file(store, ListName.GSMA_TAC, path)


def test_pairing_rows_need_an_imsi(tmp_path: Path, store: Store) -> None:
    path = write(tmp_path / "pairing.csv", ["imei,imsi,msisdn", f"{imei(PHONE_TAC, 1)},51010,"])
    with pytest.raises(ImportRejected, match=r"pairing\.csv:2: imsi '51010' is not an IMSI"):
        import_file(store, ListName.PAIRING, path)


def test_the_safety_rule_refuses_a_much_smaller_list_unless_forced(
    tmp_path: Path, store: Store
) -> None:
    full = write(tmp_path / "full.csv", ["imei", *(imei(PHONE_TAC, i) for i in range(100))])
    import_file(store, ListName.BARRED, full)
    just_enough = write(tmp_path / "75.csv", ["imei", *(imei(PHONE_TAC, i) for i in range(75))])
    truncated = write(tmp_path / "74.csv", ["imei", *(imei(PHONE_TAC, i) for i in range(74))])
    with pytest.raises(ImportRefused, match="74 rows is fewer than 75% of the 100 rows"):
        import_file(store, ListName.BARRED, truncated)
    assert generation(store) == 1
    assert len(serials(store, SerialSet.BARRED, PHONE_TAC)) == 100
    import_file(store, ListName.BARRED, just_enough)
    record = import_file(store, ListName.BARRED, write(tmp_path / "1.csv", ["imei"]), force=True)
    assert record.rows == 0
    assert serials(store, SerialSet.BARRED, PHONE_TAC) == []


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        imeireg_command(*args), check=False, capture_output=True, text=True, timeout=60
    )


def test_the_import_command_reports_each_outcome_by_exit_code(tmp_path: Path) -> None:
    db = tmp_path / "db"
    full = write(tmp_path / "full.csv", ["imei", *(imei(PHONE_TAC, i) for i in range(4))])
    ok = run_cli("import", "barred", str(full), "--db", str(db))
    assert ok.returncode == ExitCode.OK, ok.stderr
    assert "imported barred (full) from" in ok.stderr and "generation 1" in ok.stderr
    assert "(4 added, 0 removed, 0 updated)" in ok.stderr

    broken = write(tmp_path / "broken.csv", ["imei", "nope"])
    rejected = run_cli("import", "barred", str(broken), "--db", str(db))
    assert rejected.returncode == ExitCode.BAD_INPUT
    assert f"{broken}:2: imei 'nope' is not an IMEI" in rejected.stderr

    small = write(tmp_path / "small.csv", ["imei", imei(PHONE_TAC, 1)])
    refused = run_cli("import", "barred", str(small), "--db", str(db))
    assert refused.returncode == ExitCode.REFUSED
    assert "--force" in refused.stderr
    forced = run_cli("import", "barred", str(small), "--db", str(db), "--force")
    assert forced.returncode == ExitCode.OK, forced.stderr

    missing = run_cli("import", "barred", str(tmp_path / "absent.csv"), "--db", str(db))
    assert missing.returncode == ExitCode.BAD_INPUT
    assert "absent.csv: cannot open" in missing.stderr

    unknown = run_cli("import", "whitelist", str(full), "--db", str(db))
    assert unknown.returncode == ExitCode.USAGE


def test_a_store_that_is_not_lmdb_is_a_store_error(tmp_path: Path) -> None:
    db = tmp_path / "db"
    db.mkdir()
    (db / "data.mdb").write_bytes(b"not an lmdb file" * 512)
    result = run_cli("import", "barred", str(write(tmp_path / "b.csv", ["imei"])), "--db", str(db))
    assert result.returncode == ExitCode.STORE
    assert result.stderr.startswith(f"imeireg: {db}")
    assert len(result.stderr.strip().splitlines()) == 1


def stolen_row(i: int, text: str) -> str:
    """A stolen report of `text`, with each spelling of a date and of a status in turn."""
    date = ("", "20240101", "2024-01-02")[i % 3]
    status = ("", "recovered", " Blacklist ", "stolen")[i % 4]
    return f"{text},{date},{status}"


def provisional_every_third_row(i: int, text: str) -> str:
    return registration_row(text, " WhiteList " if i % 3 else "provisional")


@pytest.mark.parametrize(
    ("name", "lines"),
    [
        (ListName.REGISTRATION, [REGISTRATION_HEADER, *map(registration_row, FIFTEEN_DIGITS)]),
        (
            ListName.STOLEN,
            [
                "imei,reporting_date,status",
                *(stolen_row(*row) for row in enumerate(FIFTEEN_DIGITS)),
            ],
        ),
        (ListName.BARRED, ["imei", *FIFTEEN_DIGITS]),
        (ListName.GOLDEN, ["golden_imei", *(text[:14] for text in FIFTEEN_DIGITS)]),
    ],
)
def test_valid_large_lists_are_read_in_columns_without_the_row_reader(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch, name: ListName, lines: list[str]
) -> None:
    def no_row_reader(*args: object, **kwargs: object) -> None:
        raise AssertionError("the row reader was used for a valid file")

    monkeypatch.setattr(importers, "open_rows", no_row_reader)
    record = import_file(store, name, write(tmp_path / "list.csv", lines))
    assert record.rows == len(FIFTEEN_DIGITS)


@pytest.mark.parametrize(
    ("name", "header", "row"),
    [
        (ListName.REGISTRATION, REGISTRATION_HEADER, provisional_every_third_row),
        (ListName.STOLEN, "imei,reporting_date,status", stolen_row),
    ],
)
def test_the_columnar_and_row_readers_build_the_same_list(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: ListName,
    header: str,
    row: Callable[[int, str], str],
) -> None:
    columnar = Store.create(tmp_path / "columnar")
    by_rows = Store.create(tmp_path / "rows")
    # Some IMEIs twice, said otherwise the second time: the list's rules choose between them.
    texts = [*FIFTEEN_DIGITS, *FIFTEEN_DIGITS[:50]]
    with monkeypatch.context() as patched:
        patched.setattr(importers, "open_rows", None)  # the file must be read in columns
        first = import_file(
            columnar,
            name,
            write(tmp_path / "a.csv", [header, *(row(*at) for at in enumerate(texts))]),
        )
    # One IMEI padded with spaces is valid but not columnar: the whole file goes row by row.
    padded = [*texts[:-1], f" {texts[-1]} "]
    second = import_file(
        by_rows, name, write(tmp_path / "b.csv", [header, *(row(*at) for at in enumerate(padded))])
    )
    assert (first.rows, first.added) == (second.rows, second.added)
    assert first.rows == len(FIFTEEN_DIGITS)
    for which in SerialSet:
        assert serials(columnar, which, PHONE_TAC) == serials(by_rows, which, PHONE_TAC)
    with columnar.read() as a, by_rows.read() as b:
        assert a.segments_by_tac() == b.segments_by_tac()


ASCII_DIGITS = "0123456789"
bodies = st.text(alphabet=ASCII_DIGITS, min_size=14, max_size=14)
imeis = bodies.map(with_check_digit)
spellings = st.one_of(
    imeis,
    bodies,
    st.builds(str.__add__, bodies, st.text(alphabet=ASCII_DIGITS, min_size=2, max_size=2)),
    st.text(alphabet=ASCII_DIGITS, min_size=15, max_size=15),  # mostly a wrong check digit
    imeis.map("imei-".__add__),
    st.text(max_size=17),
)


@given(
    st.one_of(st.lists(imeis), st.lists(bodies), st.lists(spellings)),
    st.lists(imeis, max_size=3),
)
def test_a_column_of_imeis_reads_as_the_reference_parses_it_or_not_at_all(
    texts: list[str], before: list[str]
) -> None:
    """The column reader's keys are `parse_imei`'s; it leaves to the row reader any column
    that is not all valid IMEIs of one digit spelling (an Arrow slice, as a block can be)."""
    keys = valid_keys(pa.array([*before, *texts], pa.string())[len(before) :])
    parsed = [parse_imei(text) for text in texts]
    one_spelling = len({len(text) for text in texts}) == 1 and all(map(is_digits, texts))
    if one_spelling and all(found and not found.check_digit_mismatch for found in parsed):
        assert keys is not None
        assert keys.tolist() == [
            int(found.tac) << SERIAL_BITS | int(found.serial) for found in parsed if found
        ]
    else:
        assert keys is None or (not texts and not len(keys))


def test_serial_sets_fed_directly_import_like_a_file(tmp_path: Path, store: Store) -> None:
    registered = [(int("01234567"), BitMap([7])), (int(PHONE_TAC), BitMap(range(0, 5000)))]
    record = importers.import_bitmaps(
        store,
        ListName.REGISTRATION,
        {SerialSet.REGISTERED: iter(registered), SerialSet.PROVISIONAL: iter([])},
        rows=5001,
        source="generator seed 1",
    )
    assert (record.generation, record.rows, record.file_name, record.sha256) == (
        1,
        5001,
        "generator seed 1",
        "",
    )
    assert serials(store, SerialSet.REGISTERED, "01234567") == [7]
    assert len(serials(store, SerialSet.REGISTERED, PHONE_TAC)) == 5000
    with pytest.raises(ValueError, match="TACs must come in ascending order"):
        importers.import_bitmaps(
            store,
            ListName.REGISTRATION,
            {SerialSet.REGISTERED: reversed(registered)},
            rows=5001,
            source="generator seed 1",
        )
    with pytest.raises(ImportRefused, match="generator seed 2: 1 rows is fewer than 75%"):
        importers.import_bitmaps(
            store, ListName.REGISTRATION, {}, rows=1, source="generator seed 2"
        )


def gsma_file(path: Path, models: int, maker: str = "Acme") -> Path:
    """A GSMA TAC database of `models` TACs, every model named apart."""
    bands = "GSM 900,GSM 1800,WCDMA FDD Band I,LTE FDD Band 3,LTE TDD Band 40"
    rows = [
        f"{35000000 + 37 * i:08d}|{maker} Devices|{maker[0]}{i * 7919 % 100_000}|{bands}|"
        f"{1 + i % 28:02d}-Mar-{2010 + i % 15}|{('Smartphone', 'Modem', 'Tablet')[i % 3]}|{maker}"
        for i in range(models)
    ]
    return write(path, [GSMA_HEADER, *rows])


def gsma_records(store: Store) -> dict[str, dict[str, str] | None]:
    with store.read() as view:
        tacs = [key.decode() for key, _ in view.database_entries("gsma")]
        return {tac: view.gsma_record(tac) for tac in tacs}


def test_gsma_records_are_stored_deflated_and_read_back_whole(tmp_path: Path, store: Store) -> None:
    path = gsma_file(tmp_path / "gsma.csv", 2000)
    import_file(store, ListName.GSMA_TAC, path)
    records = gsma_records(store)
    assert len(records) == 2000
    assert records["35000037"] == {
        "manufacturer": "Acme Devices",
        "model_name": "A7919",
        "brand_name": "Acme",
        "device_type": "Modem",
        "bands": "GSM 900,GSM 1800,WCDMA FDD Band I,LTE FDD Band 3,LTE TDD Band 40",
        "allocation_date": "2011-03-02",
    }
    with store.read() as view:
        stored = sum(len(value) for _, value in view.database_entries("gsma"))
    as_json = sum(len(json.dumps(record)) for record in records.values())
    assert stored * 4 < as_json


def test_a_gsma_record_stored_as_plain_json_still_reads(tmp_path: Path, store: Store) -> None:
    import_file(store, ListName.GSMA_TAC, gsma_file(tmp_path / "gsma.csv", 10))
    record = {"manufacturer": "Old", "model_name": "O1", "brand_name": "", "device_type": "",
              "bands": "", "allocation_date": ""}  # fmt: skip
    with store.env.begin(write=True) as txn:  # as a store written before records were deflated
        gsma = store.env.open_db(b"gsma", txn=txn, create=False)
        txn.put(b"99999999", json.dumps(record).encode(), db=gsma)
    assert gsma_records(store)["99999999"] == record


def test_rolling_back_a_gsma_import_restores_the_records_it_replaced(
    tmp_path: Path, store: Store
) -> None:
    import_file(store, ListName.GSMA_TAC, gsma_file(tmp_path / "first.csv", 300, maker="Acme"))
    first = gsma_records(store)
    replaced = import_file(
        store, ListName.GSMA_TAC, gsma_file(tmp_path / "second.csv", 300, maker="Zeta")
    )
    assert gsma_records(store) != first
    roll_back(store, replaced.generation)
    assert gsma_records(store) == first
