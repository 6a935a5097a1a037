"""Policies (`imeireg.server.policy`): the shipped rules, and what a policy file may say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imeireg.server.check import facts
from imeireg.server.check.facts import (
    BARRED,
    CHECK_DIGIT_MISMATCH,
    GOLDEN,
    INBOUND_ROAMER,
    INVALID_FORMAT,
    NOT_REGISTERED,
    PAIRED,
    REGISTERED,
    REGISTRATION_PROVISIONAL,
    STOLEN,
    TAC_BARRED,
    TAC_UNALLOCATED,
)
from imeireg.server.check.policy import Policy, PolicyError
from imeireg.v1 import legality_pb2 as pb

WHITELISTED = pb.EQUIPMENT_STATUS_WHITELISTED
GREYLISTED = pb.EQUIPMENT_STATUS_GREYLISTED
BLACKLISTED = pb.EQUIPMENT_STATUS_BLACKLISTED


def status_of(policy: Policy, fact_bits: int) -> int:
    return int(policy.decide(np.array([fact_bits], dtype=np.uint32))[0])


def default_policy_by_hand(bits: int) -> int:
    """Indonesia's whitelist model as an if-chain, written from domain.md rather than the TOML."""
    if bits & INVALID_FORMAT:
        return BLACKLISTED
    if bits & GOLDEN:
        return WHITELISTED
    if bits & (STOLEN | BARRED | TAC_BARRED):
        return BLACKLISTED
    if bits & (PAIRED | INBOUND_ROAMER):
        return WHITELISTED
    if bits & TAC_UNALLOCATED:
        return BLACKLISTED
    if bits & REGISTERED:
        return WHITELISTED
    if bits & REGISTRATION_PROVISIONAL:
        return GREYLISTED
    return BLACKLISTED


@pytest.mark.parametrize(
    ("fact_bits", "status"),
    [
        pytest.param(INVALID_FORMAT, BLACKLISTED, id="invalid-format"),
        pytest.param(GOLDEN | NOT_REGISTERED, WHITELISTED, id="golden"),
        pytest.param(GOLDEN | STOLEN | REGISTERED, WHITELISTED, id="golden-even-if-stolen"),
        pytest.param(
            GOLDEN | TAC_BARRED | TAC_UNALLOCATED | NOT_REGISTERED,
            WHITELISTED,
            id="golden-beats-all",
        ),
        pytest.param(STOLEN | REGISTERED, BLACKLISTED, id="stolen-registered"),
        pytest.param(BARRED | REGISTERED, BLACKLISTED, id="barred-registered"),
        pytest.param(TAC_BARRED | REGISTERED, BLACKLISTED, id="tac-barred-registered"),
        pytest.param(STOLEN | PAIRED | REGISTERED, BLACKLISTED, id="stolen-beats-paired"),
        pytest.param(
            BARRED | INBOUND_ROAMER | NOT_REGISTERED, BLACKLISTED, id="barred-beats-roamer"
        ),
        pytest.param(PAIRED | NOT_REGISTERED, WHITELISTED, id="paired-unregistered"),
        pytest.param(
            PAIRED | TAC_UNALLOCATED | NOT_REGISTERED, WHITELISTED, id="paired-unallocated"
        ),
        pytest.param(INBOUND_ROAMER | NOT_REGISTERED, WHITELISTED, id="roamer-unregistered"),
        pytest.param(
            INBOUND_ROAMER | TAC_UNALLOCATED | NOT_REGISTERED, WHITELISTED, id="roamer-unallocated"
        ),
        pytest.param(TAC_UNALLOCATED | REGISTERED, BLACKLISTED, id="unallocated-registered"),
        pytest.param(TAC_UNALLOCATED | NOT_REGISTERED, BLACKLISTED, id="unallocated-unregistered"),
        pytest.param(REGISTERED, WHITELISTED, id="registered"),
        pytest.param(
            REGISTERED | CHECK_DIGIT_MISMATCH, WHITELISTED, id="registered-check-digit-mismatch"
        ),
        pytest.param(REGISTRATION_PROVISIONAL, GREYLISTED, id="provisional"),
        pytest.param(
            REGISTRATION_PROVISIONAL | CHECK_DIGIT_MISMATCH, GREYLISTED, id="provisional-mismatch"
        ),
        pytest.param(NOT_REGISTERED, BLACKLISTED, id="not-registered"),
        pytest.param(
            NOT_REGISTERED | CHECK_DIGIT_MISMATCH, BLACKLISTED, id="not-registered-mismatch"
        ),
    ],
)
def test_default_policy_rule_by_rule(fact_bits: int, status: int) -> None:
    assert status_of(Policy.default(), fact_bits) == status


def test_default_policy_decides_every_fact_set_in_rule_order() -> None:
    every_fact_set = np.arange(facts.FACT_SPACE, dtype=np.uint32)
    expected = [default_policy_by_hand(bits) for bits in range(facts.FACT_SPACE)]
    assert Policy.default().decide(every_fact_set).tolist() == expected


def test_default_policy_is_the_bundled_whitelist_model_for_home_mcc_510() -> None:
    policy = Policy.default()
    assert policy.name == "default.toml"
    assert policy.home_mccs == frozenset({"510"})
    assert policy.default_status == BLACKLISTED


def test_decide_keeps_the_batch_order() -> None:
    batch = np.array([REGISTERED, STOLEN | REGISTERED, REGISTRATION_PROVISIONAL], dtype=np.uint32)
    decided = Policy.default().decide(batch)
    assert decided.dtype == np.uint8
    assert decided.tolist() == [WHITELISTED, BLACKLISTED, GREYLISTED]


@pytest.mark.parametrize(
    ("fact_bits", "status"),
    [
        pytest.param(NOT_REGISTERED, WHITELISTED, id="unregistered"),
        pytest.param(REGISTERED, WHITELISTED, id="registered"),
        pytest.param(STOLEN | NOT_REGISTERED, BLACKLISTED, id="stolen"),
        pytest.param(BARRED | NOT_REGISTERED, BLACKLISTED, id="barred"),
        pytest.param(TAC_BARRED | NOT_REGISTERED, BLACKLISTED, id="tac-barred"),
        pytest.param(GOLDEN | STOLEN | NOT_REGISTERED, WHITELISTED, id="golden-even-if-stolen"),
        pytest.param(TAC_UNALLOCATED | NOT_REGISTERED, GREYLISTED, id="unallocated"),
        pytest.param(INVALID_FORMAT, BLACKLISTED, id="invalid-format"),
    ],
)
def test_blacklist_model_allows_unregistered_phones_unless_stolen_or_barred(
    fact_bits: int, status: int
) -> None:
    assert status_of(Policy.bundled("blacklist-model"), fact_bits) == status


def test_all_condition_needs_every_fact() -> None:
    policy = Policy.parse(
        'default = "BLACKLISTED"\n'
        "[[rules]]\n"
        'all = ["REGISTERED", "PAIRED"]\n'
        'status = "GREYLISTED"\n',
        name="site.toml",
    )
    assert status_of(policy, REGISTERED | PAIRED) == GREYLISTED
    assert status_of(policy, REGISTERED | PAIRED | STOLEN) == GREYLISTED
    assert status_of(policy, REGISTERED) == BLACKLISTED
    assert status_of(policy, PAIRED) == BLACKLISTED


def test_none_condition_excludes_every_fact() -> None:
    policy = Policy.parse(
        'default = "GREYLISTED"\n'
        "[[rules]]\n"
        'any = ["REGISTERED"]\n'
        'none = ["CHECK_DIGIT_MISMATCH", "TAC_UNALLOCATED"]\n'
        'status = "WHITELISTED"\n',
        name="site.toml",
    )
    assert status_of(policy, REGISTERED) == WHITELISTED
    assert status_of(policy, REGISTERED | CHECK_DIGIT_MISMATCH) == GREYLISTED
    assert status_of(policy, REGISTERED | TAC_UNALLOCATED) == GREYLISTED
    assert status_of(policy, NOT_REGISTERED) == GREYLISTED


def test_none_condition_alone_excludes_every_fact() -> None:
    policy = Policy.parse(
        'default = "BLACKLISTED"\n[[rules]]\nnone = ["STOLEN", "BARRED"]\nstatus = "WHITELISTED"\n',
        name="site.toml",
    )
    assert status_of(policy, NOT_REGISTERED) == WHITELISTED
    assert status_of(policy, NOT_REGISTERED | STOLEN) == BLACKLISTED
    assert status_of(policy, REGISTERED | BARRED) == BLACKLISTED


def test_conditions_of_one_rule_must_all_hold() -> None:
    policy = Policy.parse(
        'default = "BLACKLISTED"\n'
        "[[rules]]\n"
        'any = ["REGISTERED", "REGISTRATION_PROVISIONAL"]\n'
        'all = ["PAIRED"]\n'
        'none = ["STOLEN"]\n'
        'status = "WHITELISTED"\n',
        name="site.toml",
    )
    assert status_of(policy, REGISTRATION_PROVISIONAL | PAIRED) == WHITELISTED
    assert status_of(policy, REGISTERED | PAIRED) == WHITELISTED
    assert status_of(policy, NOT_REGISTERED | PAIRED) == BLACKLISTED
    assert status_of(policy, REGISTERED) == BLACKLISTED
    assert status_of(policy, REGISTERED | PAIRED | STOLEN) == BLACKLISTED


def test_first_rule_that_holds_decides() -> None:
    policy = Policy.parse(
        "[[rules]]\n"
        'any = ["REGISTERED"]\n'
        'status = "GREYLISTED"\n'
        "[[rules]]\n"
        'any = ["REGISTERED"]\n'
        'status = "WHITELISTED"\n',
        name="site.toml",
    )
    assert status_of(policy, REGISTERED) == GREYLISTED


def test_omitted_keys_default_to_home_mcc_510_and_blacklisting() -> None:
    policy = Policy.parse("", name="empty.toml")
    assert policy.home_mccs == frozenset({"510"})
    assert policy.rules == ()
    assert status_of(policy, REGISTERED) == BLACKLISTED


def test_home_mccs_are_read() -> None:
    policy = Policy.parse('home_mccs = ["510", "525"]', name="site.toml")
    assert policy.home_mccs == frozenset({"510", "525"})


def test_load_reads_a_policy_file_and_names_it_by_path(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('default = "WHITELISTED"\n', encoding="utf-8")
    policy = Policy.load(path)
    assert policy.name == str(path)
    assert status_of(policy, NOT_REGISTERED) == WHITELISTED


def test_load_of_a_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"cannot read policy .*missing\.toml"):
        Policy.load(tmp_path / "missing.toml")


RULE = '[[rules]]\nany = ["STOLEN"]\nstatus = "BLACKLISTED"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("rules = [", r"policy site\.toml: not valid TOML", id="bad-toml"),
        pytest.param(
            'colour = "red"\nhome = 1\n',
            r"policy site\.toml: unknown key\(s\) colour, home",
            id="unknown-top-level-keys",
        ),
        pytest.param(
            '[[rules]]\nany = ["STOLEN"]\nstatus = "BLACKLISTED"\nwhen = "always"\n',
            r"rule 1: unknown key\(s\) when",
            id="unknown-rule-key",
        ),
        pytest.param(
            RULE + '[[rules]]\nany = ["LOST"]\nstatus = "BLACKLISTED"\n',
            r"rule 2: any: unknown fact 'LOST'",
            id="unknown-fact",
        ),
        pytest.param(
            '[[rules]]\nany = ["REGISTERED"]\nnone = ["REASON_STOLEN"]\nstatus = "WHITELISTED"\n',
            r"rule 1: none: unknown fact 'REASON_STOLEN'",
            id="fact-with-proto-prefix",
        ),
        pytest.param(
            '[[rules]]\nany = ["REGISTERED"]\nall = ["UNSPECIFIED"]\nstatus = "WHITELISTED"\n',
            r"rule 1: all: unknown fact 'UNSPECIFIED'",
            id="unspecified-fact",
        ),
        pytest.param(
            '[[rules]]\nany = ["STOLEN"]\nstatus = "REDLISTED"\n',
            r"rule 1: status 'REDLISTED' is not one of WHITELISTED, GREYLISTED, BLACKLISTED",
            id="unknown-rule-status",
        ),
        pytest.param(
            'default = "UNSPECIFIED"\n',
            r"policy site\.toml: default: status 'UNSPECIFIED' is not one of",
            id="unspecified-default-status",
        ),
        pytest.param(
            '[[rules]]\nany = ["STOLEN"]\n', r"rule 1: has no status", id="rule-without-status"
        ),
        pytest.param(
            '[[rules]]\nstatus = "BLACKLISTED"\n',
            r"rule 1: states none of any / all / none",
            id="rule-without-conditions",
        ),
        pytest.param(
            '[[rules]]\nany = []\nstatus = "BLACKLISTED"\n',
            r"rule 1: any: must be a non-empty list of fact names",
            id="empty-any",
        ),
        pytest.param(
            '[[rules]]\nany = "STOLEN"\nstatus = "BLACKLISTED"\n',
            r"rule 1: any: must be a non-empty list of fact names",
            id="any-not-a-list",
        ),
        pytest.param("rules = 1\n", r"rules must be an array of tables", id="rules-not-array"),
        pytest.param("rules = [1]\n", r"rule 1: must be a table", id="rule-not-table"),
        pytest.param(
            'home_mccs = "510"\n', r"home_mccs must be a list of 3-digit strings", id="mcc-str"
        ),
        pytest.param(
            "home_mccs = [510]\n", r"home_mccs must be a list of 3-digit strings", id="mcc-int"
        ),
        pytest.param(
            'home_mccs = ["51"]\n', r"home_mccs must be a list of 3-digit strings", id="mcc-short"
        ),
        pytest.param(
            'home_mccs = ["5100"]\n', r"home_mccs must be a list of 3-digit strings", id="mcc-long"
        ),
        pytest.param(
            'home_mccs = ["\uff15\uff11\uff10"]\n',  # fullwidth 510
            r"home_mccs must be a list of 3-digit strings",
            id="mcc-fullwidth",
        ),
    ],
)
def test_malformed_policy_is_rejected_with_a_message(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Policy.parse(text, name="site.toml")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('default = ["BLACKLISTED"]\n', id="default-list"),
        pytest.param('[[rules]]\nany = ["STOLEN"]\nstatus = ["BLACKLISTED"]\n', id="status-list"),
        pytest.param('[[rules]]\nany = [["STOLEN"]]\nstatus = "BLACKLISTED"\n', id="nested-facts"),
    ],
)
def test_non_string_status_or_fact_is_a_policy_error(text: str) -> None:
    with pytest.raises(PolicyError, match=r"policy site\.toml"):
        Policy.parse(text, name="site.toml")
