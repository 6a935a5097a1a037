"""The demo registry (`imeireg.server.demo`): what it loads, and how its examples answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from served import Served

from imeireg.imei import with_check_digit
from imeireg.server.imports.demo import DemoSummary, build_demo, imei_strings
from imeireg.server.model import ListName, SerialSet, TacSet
from imeireg.server.store import Store
from imeireg.v1 import legality_pb2 as pb

REGISTERED = 20_000

# The README's table: the examples of seed 2020, the same at any size of the demo.
README_EXAMPLES = [
    ("registered", "018712799132626", "", pb.EQUIPMENT_STATUS_WHITELISTED),
    ("provisional", "868827409324438", "", pb.EQUIPMENT_STATUS_GREYLISTED),
    ("unregistered", "868619089928327", "", pb.EQUIPMENT_STATUS_BLACKLISTED),
    ("stolen", "864799279338992", "", pb.EQUIPMENT_STATUS_BLACKLISTED),
    ("barred", "865687479359513", "", pb.EQUIPMENT_STATUS_BLACKLISTED),
    ("golden_stolen", "350476829860194", "", pb.EQUIPMENT_STATUS_WHITELISTED),
    ("barred_tac", "864791819838375", "", pb.EQUIPMENT_STATUS_BLACKLISTED),
    ("paired", "357782419042108", "510011295193695", pb.EQUIPMENT_STATUS_WHITELISTED),
    ("paired_other_imsi", "357782419042108", "510898755893837", pb.EQUIPMENT_STATUS_BLACKLISTED),
    ("unallocated_tac", "350789069141053", "", pb.EQUIPMENT_STATUS_BLACKLISTED),
    ("check_digit_mismatch", "861073049627967", "", pb.EQUIPMENT_STATUS_WHITELISTED),
    ("inbound_roamer", "868619089928327", "525018563230814", pb.EQUIPMENT_STATUS_WHITELISTED),
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoSummary:
    return build_demo(tmp_path_factory.mktemp("demo") / "registry", registered=REGISTERED)


@pytest.fixture
def store(demo: DemoSummary) -> Iterator[Store]:
    store = Store.open(demo.db_path)
    yield store
    store.close()


def serials_of(store: Store, which: SerialSet) -> dict[int, list[int]]:
    """Every TAC of a serial set and its serials, read straight from the store."""
    with store.read() as view:
        tacs = [int.from_bytes(key, "big") for key, _ in view.database_entries(which)]
        return {tac: list(view.serials(which, tac) or []) for tac in tacs}


def test_examples_are_the_readme_ones(demo: DemoSummary) -> None:
    assert [(e.name, e.imei, e.imsi, e.status) for e in demo.examples] == README_EXAMPLES


def test_examples_depend_on_the_seed_not_on_the_size(tmp_path: Path, demo: DemoSummary) -> None:
    small = build_demo(tmp_path / "small", registered=1_000)
    other_seed = build_demo(tmp_path / "other", seed=7, registered=1_000)
    assert small.examples == demo.examples
    assert {e.imei for e in other_seed.examples}.isdisjoint(e.imei for e in demo.examples)


def test_every_example_answers_as_told_through_the_check(demo: DemoSummary, store: Store) -> None:
    served = Served(store)
    try:
        verdict = served.check([e.imei for e in demo.examples], [e.imsi for e in demo.examples])
    finally:
        served.close()
    answers = list(zip(verdict.statuses.tolist(), verdict.reasons.tolist(), strict=True))
    assert answers == [(e.status, e.reasons) for e in demo.examples]
    assert verdict.snapshot.generation == len(ListName)


def test_paired_example_is_blacklisted_without_its_imsi(demo: DemoSummary, store: Store) -> None:
    served = Served(store)
    try:
        verdict = served.check([demo.example("paired").imei])
    finally:
        served.close()
    assert verdict.statuses.tolist() == [pb.EQUIPMENT_STATUS_BLACKLISTED]


def test_store_holds_the_rows_written_for_every_list(demo: DemoSummary, store: Store) -> None:
    with store.read() as view:
        assert view.rows() == demo.rows
        log = view.import_log()
    assert [record.list_name for record in reversed(log)] == [name.value for name in ListName]
    assert all(record.mode == "full" for record in log)


def test_list_sizes(demo: DemoSummary) -> None:
    assert demo.rows[ListName.GSMA_TAC] == 320
    assert demo.rows[ListName.BARRED_TAC] == 2
    assert REGISTERED < demo.rows[ListName.REGISTRATION] <= REGISTERED * 1.01
    assert 20 <= demo.rows[ListName.STOLEN] <= 100
    assert 1 <= demo.rows[ListName.BARRED] <= demo.rows[ListName.STOLEN]
    assert 10 <= demo.rows[ListName.GOLDEN] <= 100
    assert 10 <= demo.rows[ListName.PAIRING] <= 100


def test_registered_counts_the_complete_registrations(store: Store) -> None:
    registered = serials_of(store, SerialSet.REGISTERED)
    provisional = serials_of(store, SerialSet.PROVISIONAL)
    assert sum(map(len, registered.values())) == REGISTERED
    assert 50 <= sum(map(len, provisional.values())) <= 200


def test_registrations_come_mostly_in_blocks_of_sequential_serials(store: Store) -> None:
    registered = serials_of(store, SerialSet.REGISTERED)
    follow_on = sum(int((np.diff(serials) == 1).sum()) for serials in registered.values())
    assert follow_on >= 0.85 * REGISTERED
    longest_tac = max(registered.values(), key=len)
    assert len(longest_tac) >= 1_000


def test_tacs_allocated_only_barred_and_unallocated(demo: DemoSummary, store: Store) -> None:
    with store.read() as view:
        allocated = set(view.tac_set(TacSet.ALLOCATED))
        barred = set(view.tac_set(TacSet.BARRED))
    listed = {tac for which in SerialSet for tac in serials_of(store, which)}
    registered_tacs = set(serials_of(store, SerialSet.REGISTERED))
    assert len(allocated) == 320
    assert len(allocated - listed) >= 40
    assert len(barred) == 2
    assert barred <= allocated & registered_tacs
    unallocated = registered_tacs - allocated
    assert 1 <= len(unallocated) <= 4
    assert int(demo.example("unallocated_tac").imei[:8]) in unallocated


def test_gsma_records_carry_model_data(demo: DemoSummary, store: Store) -> None:
    tac = demo.example("registered").imei[:8]
    assert tac.startswith("0")  # the CTIA reporting body keeps its leading zero
    with store.read() as view:
        record = view.gsma_record(tac)
        missing = view.gsma_record(demo.example("unallocated_tac").imei[:8])
    assert record is not None
    assert missing is None
    assert record["manufacturer"]
    assert record["model_name"].startswith(record["brand_name"] + " ")
    assert record["device_type"]
    assert record["allocation_date"][:2] == "20"


def test_pairings_are_with_indonesian_imsis(demo: DemoSummary, store: Store) -> None:
    with store.read() as view:
        pairs = [key.decode() for key, _ in view.database_entries("pairs")]
    assert len(pairs) == demo.rows[ListName.PAIRING]
    assert all(pair.split(":")[1].startswith("510") for pair in pairs)
    paired = demo.example("paired")
    assert f"{paired.imei[:14]}:{paired.imsi}" in pairs


def test_same_seed_writes_the_same_files(tmp_path: Path, demo: DemoSummary) -> None:
    again = build_demo(tmp_path / "again", registered=REGISTERED)
    hashes = []
    for path in (demo.db_path, again.db_path):
        store = Store.open(path)
        with store.read() as view:
            hashes.append([(r.list_name, r.sha256) for r in view.import_log()])
        store.close()
    assert hashes[0] == hashes[1]
    assert again.examples == demo.examples


def test_an_existing_store_is_never_overwritten(demo: DemoSummary) -> None:
    with pytest.raises(FileExistsError, match="already holds a registry store"):
        build_demo(demo.db_path, registered=1_000)


@pytest.mark.parametrize("registered", [999, 5_000_001])
def test_size_out_of_range_is_refused(tmp_path: Path, registered: int) -> None:
    with pytest.raises(ValueError, match="registered IMEIs"):
        build_demo(tmp_path / "registry", registered=registered)
    assert not (tmp_path / "registry").exists()


def test_table_lists_every_example(demo: DemoSummary) -> None:
    lines = demo.table().splitlines()
    assert lines[0].split() == ["example", "IMEI", "IMSI", "status", "reasons"]
    assert lines[8].split() == [
        "paired",
        "357782419042108",
        "510011295193695",
        "WHITELISTED",
        "NOT_REGISTERED",
        "PAIRED",
    ]
    assert len(lines) == 1 + len(demo.examples)


@given(st.lists(st.integers(min_value=0, max_value=10**14 - 1), max_size=50))
def test_imei_strings_are_bodies_with_their_check_digit(bodies: list[int]) -> None:
    expected = [with_check_digit(f"{body:014d}") for body in bodies]
    assert imei_strings(np.array(bodies, dtype=np.uint64)) == expected


def test_the_readme_shows_the_table_that_imeireg_demo_prints(demo: DemoSummary) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert demo.table() in readme
