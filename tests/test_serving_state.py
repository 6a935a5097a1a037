"""The serving state (`imeireg.server.serving`) and the check over it, on a real LMDB store.

A batch of up to SMALL_BATCH IMEIs is answered IMEI by IMEI (`facts_of`), a larger
one column by column (`batch_reasons`); both must give the same answer for every IMEI,
with and without IMSIs. A state answers from its own snapshot whatever commits
after it was built; the state built next from it must answer from the new
generation, exactly as a state built afresh on the store does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from served import Served
from support import (
    BARRED_TAC,
    GSMA_HEADER,
    OTHER_TAC,
    PHONE_TAC,
    REGISTRATION_HEADER,
    UNALLOCATED_TAC,
    SmallRegistry,
    build_small_registry,
    imei,
    registration_row,
    write,
)

from imeireg.imei import luhn_check_digit, parse_imei, with_check_digit
from imeireg.server.check import facts
from imeireg.server.check.policy import Policy
from imeireg.server.check.verdict import SMALL_BATCH, batch_reasons
from imeireg.server.fronts.grpc.wire import request_columns
from imeireg.server.imports.full import import_file
from imeireg.server.model import ListName
from imeireg.server.store import Store
from imeireg.v1 import legality_pb2 as pb

R = SmallRegistry
HOME_IMSI = "510109999999999"  # a home subscriber with no pairing
ROAMING_IMSI = "525011234567890"
IMSIS = ("", R.paired_imsi, HOME_IMSI, ROAMING_IMSI)
NEIGHBOUR_TAC = "35332212"  # next to PHONE_TAC, on no list
TACS = (PHONE_TAC, OTHER_TAC, BARRED_TAC, UNALLOCATED_TAC, NEIGHBOUR_TAC, "35332210", "00000000")
REGISTRY_IMEIS = (
    R.registered,
    R.registered_other_tac,
    R.provisional,
    R.unregistered,
    R.stolen,
    R.barred,
    R.golden_and_stolen,
    R.paired,
    R.barred_tac,
    R.unallocated_tac,
)

Answers = list[tuple[int, int]]  # (status, reasons) per IMEI


@pytest.fixture(scope="module")
def checker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A state of the small registry, for tests that only read (hypothesis reuses it)."""
    store = Store.open(build_small_registry(tmp_path_factory.mktemp("state")).db)
    served = Served(store)
    yield served
    served.close()
    store.close()


@pytest.fixture
def writable(small_registry: SmallRegistry) -> Iterator[Served]:
    """A state whose store also takes imports, for tests that change the registry."""
    store = Store.create(small_registry.db)
    served = Served(store)
    yield served
    served.close()
    store.close()


def answers(
    checker: Served,
    imeis: Sequence[str],
    imsis: Sequence[str] = (),
) -> Answers:
    verdict = checker.check(imeis, imsis)
    return list(zip(verdict.statuses.tolist(), verdict.reasons.tolist(), strict=True))


def answered_one_by_one(checker: Served, imeis: Sequence[str]) -> Answers:
    return [answer for text in imeis for answer in answers(checker, [text])]


def answered_in_one_batch(checker: Served, imeis: Sequence[str]) -> Answers:
    """Padded past SMALL_BATCH so that the batch takes the vectorised path."""
    padding = [R.registered] * (SMALL_BATCH + 1)
    return answers(checker, [*imeis, *padding])[: len(imeis)]


def repeated_past_small_batch(items: list[str]) -> list[str]:
    return items * (SMALL_BATCH // len(items) + 1)


serials = st.one_of(
    st.integers(min_value=0, max_value=10),
    st.integers(min_value=495, max_value=505),
    st.integers(min_value=999_990, max_value=999_999),
    st.integers(min_value=0, max_value=999_999),
)
bodies = st.builds(lambda tac, serial: f"{tac}{serial:06d}", st.sampled_from(TACS), serials)
imeis = st.one_of(st.sampled_from(REGISTRY_IMEIS), bodies.map(with_check_digit))
bad_check_digit_imeis = st.builds(
    lambda body, offset: body + str((luhn_check_digit(body) + offset) % 10),
    bodies,
    st.integers(min_value=1, max_value=9),
)
imeisvs = st.builds(str.__add__, bodies, st.sampled_from(["00", "07", "99"]))
any_spelling = st.one_of(
    imeis,
    bodies,
    imeisvs,
    bad_check_digit_imeis,
    imeis.map("imei-".__add__),
    imeisvs.map("imeisv-".__add__),
    st.text(max_size=18),
    imeis.map(lambda text: text[:5] + "x" + text[6:]),
)
same_length_spellings = st.sampled_from([imeis, bad_check_digit_imeis, bodies, imeisvs]).flatmap(
    lambda spelling: st.lists(spelling, min_size=1, max_size=SMALL_BATCH)
)


@settings(max_examples=300)
@given(st.lists(any_spelling, min_size=1, max_size=SMALL_BATCH), st.data())
def test_small_and_large_batches_give_the_same_answers(
    checker: Served, texts: list[str], data: st.DataObject
) -> None:
    imsis = data.draw(
        st.one_of(
            st.just([]),
            st.lists(st.sampled_from(IMSIS), min_size=len(texts), max_size=len(texts)),
        )
    )
    small = answers(checker, texts, imsis)
    many_texts = repeated_past_small_batch(texts)
    many_imsis = repeated_past_small_batch(imsis) if imsis else []
    assert len(many_texts) > SMALL_BATCH
    assert answers(checker, many_texts, many_imsis) == small * (len(many_texts) // len(texts))


@settings(max_examples=150)
@given(same_length_spellings)
def test_batches_give_the_same_answers_as_strings_and_as_columns_of_request_bytes(
    checker: Served, texts: list[str]
) -> None:
    small = answers(checker, texts)
    many = repeated_past_small_batch(texts)
    copies = len(many) // len(texts)
    assert answers(checker, many) == small * copies
    for batch in (many, texts):
        columns = request_columns(pb.CheckImeisRequest(imeis=batch).SerializeToString())
        assert columns is not None
        imeis, _ = columns
        assert answers(checker, imeis) == small * (len(batch) // len(texts))


WHITELISTED, GREYLISTED, BLACKLISTED = 1, 2, 3


@pytest.mark.parametrize(
    ("text", "imsi", "status", "reasons"),
    [
        (R.registered, "", WHITELISTED, facts.REGISTERED),
        (R.registered_other_tac, "", WHITELISTED, facts.REGISTERED),
        (R.provisional, "", GREYLISTED, facts.REGISTRATION_PROVISIONAL),
        (R.unregistered, "", BLACKLISTED, facts.NOT_REGISTERED),
        (R.stolen, "", BLACKLISTED, facts.REGISTERED | facts.STOLEN),
        (R.barred, "", BLACKLISTED, facts.REGISTERED | facts.BARRED),
        (
            R.golden_and_stolen,
            "",
            WHITELISTED,
            facts.REGISTERED | facts.STOLEN | facts.GOLDEN,
        ),
        (R.paired, "", BLACKLISTED, facts.NOT_REGISTERED),
        (R.paired, HOME_IMSI, BLACKLISTED, facts.NOT_REGISTERED),
        (R.paired, R.paired_imsi, WHITELISTED, facts.NOT_REGISTERED | facts.PAIRED),
        (R.unregistered, ROAMING_IMSI, WHITELISTED, facts.NOT_REGISTERED | facts.INBOUND_ROAMER),
        (R.barred_tac, "", BLACKLISTED, facts.REGISTERED | facts.TAC_BARRED),
        (R.unallocated_tac, "", BLACKLISTED, facts.REGISTERED | facts.TAC_UNALLOCATED),
        (imei(NEIGHBOUR_TAC, 1), "", BLACKLISTED, facts.TAC_UNALLOCATED | facts.NOT_REGISTERED),
        (R.registered[:-1] + "0", "", WHITELISTED, facts.REGISTERED | facts.CHECK_DIGIT_MISMATCH),
        ("imei-" + R.stolen, "", BLACKLISTED, facts.REGISTERED | facts.STOLEN),
        (R.provisional[:14] + "07", "", GREYLISTED, facts.REGISTRATION_PROVISIONAL),
        (R.registered[:14] + "x", "", BLACKLISTED, facts.INVALID_FORMAT),
        (R.registered[:14] + "x", ROAMING_IMSI, BLACKLISTED, facts.INVALID_FORMAT),
    ],
)
def test_each_fact_of_the_small_registry_is_answered_on_both_paths(
    checker: Served, text: str, imsi: str, status: int, reasons: int
) -> None:
    assert answers(checker, [text], [imsi]) == [(status, reasons)]
    many = answers(checker, [text] * (SMALL_BATCH + 1), [imsi] * (SMALL_BATCH + 1))
    assert many == [(status, reasons)] * (SMALL_BATCH + 1)


def probe_imeis() -> list[str]:
    """Every IMEI of the small registry, the edges of every TAC, and random serials."""
    rng = random.Random(20240418)
    probes = list(REGISTRY_IMEIS)
    for tac in TACS:
        picked = {0, 1, 2, 3, 4, 5, 6, 7, 499, 500, 501, 999_998, 999_999}
        picked |= {rng.randrange(1_000_000) for _ in range(20)}
        probes += [imei(tac, serial) for serial in sorted(picked)]
    probes += [R.stolen[:14], "imei-" + R.golden_and_stolen, R.registered[:14] + "12", "12345"]
    return probes


def tac_of(text: str) -> str | None:
    parsed = parse_imei(text)
    return None if parsed is None else parsed.tac


def restolen(before: Answers, probes: list[str], stolen: set[str], policy: Policy) -> Answers:
    """The answers once the stolen list is `stolen` (bodies), all other lists unchanged."""
    reasons = []
    for (_, found), text in zip(before, probes, strict=True):
        parsed = parse_imei(text)
        if parsed is None:
            reasons.append(found)
        else:
            reasons.append(found & ~facts.STOLEN | (facts.STOLEN if parsed.body in stolen else 0))
    statuses = policy.decide(np.array(reasons, dtype=np.uint32)).tolist()
    return list(zip(statuses, reasons, strict=True))


def test_after_an_import_the_same_index_answers_the_new_generation(
    tmp_path: Path, small_registry: SmallRegistry, writable: Served
) -> None:
    probes = probe_imeis()
    before = answered_in_one_batch(writable, probes)
    assert answered_one_by_one(writable, probes) == before
    generation = writable.state.snapshot.generation
    new_stolen = [R.registered, R.registered_other_tac, imei(NEIGHBOUR_TAC, 0)]
    path = write(
        tmp_path / "stolen2.csv",
        ["imei,reporting_date,status", *(f"{text},," for text in new_stolen)],
    )
    assert import_file(writable.store, ListName.STOLEN, path).generation == generation + 1

    # Until the next state is built, the state answers from the snapshot it pinned.
    pinned = batch_reasons(writable.state, probes)
    assert pinned.tolist() == [found for _, found in before]
    assert answered_in_one_batch(writable, probes) == before

    writable.catch_up()
    after = answered_in_one_batch(writable, probes)
    assert writable.state.snapshot.generation == generation + 1
    assert writable.check([R.stolen]).snapshot.generation == generation + 1
    expected = restolen(before, probes, {text[:14] for text in new_stolen}, writable.policy)
    assert after == expected
    assert answered_one_by_one(writable, probes) == after
    assert after[probes.index(R.registered)] == (BLACKLISTED, facts.REGISTERED | facts.STOLEN)
    assert after[probes.index(R.stolen)] == (WHITELISTED, facts.REGISTERED)
    assert after[probes.index(imei(NEIGHBOUR_TAC, 0))] == (
        BLACKLISTED,
        facts.TAC_UNALLOCATED | facts.NOT_REGISTERED | facts.STOLEN,
    )
    untouched = [i for i, text in enumerate(probes) if tac_of(text) in (BARRED_TAC, "35332210")]
    assert untouched
    assert [after[i] for i in untouched] == [before[i] for i in untouched]

    fresh = Served(writable.store)
    try:
        assert fresh.state.snapshot.generation == generation + 1
        assert answered_in_one_batch(fresh, probes) == after
        assert answered_one_by_one(fresh, probes) == after
    finally:
        fresh.close()


def test_imports_committed_between_two_requests_are_all_answered(
    tmp_path: Path, small_registry: SmallRegistry, writable: Served
) -> None:
    probes = probe_imeis()
    generation = writable.state.snapshot.generation
    gsma = write(
        tmp_path / "gsma2.csv",
        [
            GSMA_HEADER,
            f"{PHONE_TAC}|Acme Devices|A1|GSM 900,LTE|15-Mar-2019|Smartphone|Acme",
            f"{BARRED_TAC}|Knockoff|K1|GSM 900|02-Feb-2018|Smartphone|",
            f"{NEIGHBOUR_TAC}|Acme Devices|A2|LTE|01-Jan-2021|Smartphone|Acme",
        ],
    )
    # Every registration but OTHER_TAC's only one: that TAC is then on no serial list.
    registration = write(
        tmp_path / "registration2.csv",
        [
            REGISTRATION_HEADER,
            *map(registration_row, (R.registered, R.stolen, R.barred, R.golden_and_stolen)),
            *map(registration_row, (R.barred_tac, R.unallocated_tac)),
            registration_row(R.provisional, "provisional"),
            registration_row(imei(NEIGHBOUR_TAC, 999_999), "provisional"),
        ],
    )
    import_file(writable.store, ListName.GSMA_TAC, gsma)
    import_file(writable.store, ListName.REGISTRATION, registration)

    writable.catch_up()
    after = answered_in_one_batch(writable, probes)
    assert writable.state.snapshot.generation == generation + 2
    assert after[probes.index(R.registered_other_tac)] == (
        BLACKLISTED,
        facts.TAC_UNALLOCATED | facts.NOT_REGISTERED,
    )
    assert after[probes.index(imei(NEIGHBOUR_TAC, 999_999))] == (
        GREYLISTED,
        facts.REGISTRATION_PROVISIONAL,
    )
    assert after[probes.index(imei(NEIGHBOUR_TAC, 999_998))] == (
        BLACKLISTED,
        facts.NOT_REGISTERED,
    )
    assert after[probes.index(R.unallocated_tac)] == (
        BLACKLISTED,
        facts.REGISTERED | facts.TAC_UNALLOCATED,
    )
    assert answered_one_by_one(writable, probes) == after

    fresh = Served(writable.store)
    try:
        assert answered_in_one_batch(fresh, probes) == after
    finally:
        fresh.close()
