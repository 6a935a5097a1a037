"""Policy: ordered rules mapping an IMEI's facts to a 3GPP equipment status.

A policy is written in TOML and compiled once into a lookup table indexed by the
fact bit set, so deciding a whole batch is one numpy take. Rules are tried in
order; the first whose conditions hold decides, else `default` does.

    home_mccs = ["510"]
    default = "BLACKLISTED"

    [[rules]]
    any = ["STOLEN", "BARRED", "TAC_BARRED"]   # at least one of these facts
    status = "BLACKLISTED"

A rule may also say `all = [...]` (every fact) and `none = [...]` (no such fact);
it holds when each condition it states holds.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from imeireg.server.check.facts import FACT_BITS, FACT_SPACE
from imeireg.v1 import legality_pb2 as pb

STATUS_PREFIX = "EQUIPMENT_STATUS_"
#: Status name (WHITELISTED, GREYLISTED, BLACKLISTED) → proto enum number.
STATUSES: dict[str, int] = {
    name.removeprefix(STATUS_PREFIX): number
    for name, number in pb.EquipmentStatus.items()
    if number != pb.EQUIPMENT_STATUS_UNSPECIFIED
}
_CONDITIONS = ("any", "all", "none")


class PolicyError(Exception):
    """A policy file is malformed; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class Rule:
    status: int
    any_of: int = 0  # fact bits; 0 = no such condition
    all_of: int = 0
    none_of: int = 0

    def holds(self, facts: int) -> bool:
        return (
            (not self.any_of or bool(facts & self.any_of))
            and (facts & self.all_of) == self.all_of
            and not facts & self.none_of
        )


@dataclass(frozen=True)
class Policy:
    """A compiled policy: `table[fact_bits]` is the status number."""

    name: str
    home_mccs: frozenset[str]
    rules: tuple[Rule, ...]
    default_status: int
    table: npt.NDArray[np.uint8]
    #: `home_mccs` as sorted numbers, as the compiled fact search takes them.
    home_mcc_numbers: npt.NDArray[np.int64]

    def decide(self, fact_bits: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint8]:
        """The status of every IMEI of a batch from its fact bits."""
        return self.table[fact_bits]

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise PolicyError(f"cannot read policy {path}: {error.strerror}") from error
        return cls.parse(text, name=str(path))

    @classmethod
    def default(cls) -> Policy:
        """Indonesia's whitelist model, shipped as policies/default.toml."""
        return cls.bundled("default")

    @classmethod
    def bundled(cls, stem: str) -> Policy:
        text = (
            resources.files("imeireg.server.check").joinpath("policies", f"{stem}.toml").read_text()
        )
        return cls.parse(text, name=f"{stem}.toml")

    @classmethod
    def parse(cls, text: str, *, name: str) -> Policy:
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise PolicyError(f"policy {name}: not valid TOML: {error}") from error
        unknown = set(document) - {"home_mccs", "default", "rules"}
        if unknown:
            raise PolicyError(f"policy {name}: unknown key(s) {', '.join(sorted(unknown))}")
        home_mccs = document.get("home_mccs", ["510"])
        if not isinstance(home_mccs, list) or not all(
            isinstance(mcc, str) and len(mcc) == 3 and mcc.isascii() and mcc.isdigit()
            for mcc in home_mccs
        ):
            raise PolicyError(f"policy {name}: home_mccs must be a list of 3-digit strings")
        default = _status(document.get("default", "BLACKLISTED"), f"policy {name}: default")
        raw_rules = document.get("rules", [])
        if not isinstance(raw_rules, list):
            raise PolicyError(f"policy {name}: rules must be an array of tables ([[rules]])")
        rules = tuple(_rule(raw, f"policy {name}: rule {i}") for i, raw in enumerate(raw_rules, 1))
        mcc_numbers = np.array(sorted(map(int, home_mccs)), dtype=np.int64)
        return cls(
            name, frozenset(home_mccs), rules, default, _compile(rules, default), mcc_numbers
        )


def _compile(rules: tuple[Rule, ...], default: int) -> npt.NDArray[np.uint8]:
    table = np.empty(FACT_SPACE, dtype=np.uint8)
    for facts in range(FACT_SPACE):
        table[facts] = next((rule.status for rule in rules if rule.holds(facts)), default)
    return table


def _status(value: Any, where: str) -> int:
    if not isinstance(value, str) or value not in STATUSES:
        raise PolicyError(f"{where}: status {value!r} is not one of {', '.join(STATUSES)}")
    return STATUSES[value]


def _rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: must be a table")
    unknown = set(raw) - {"status", *_CONDITIONS}
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if "status" not in raw:
        raise PolicyError(f"{where}: has no status")
    if not any(condition in raw for condition in _CONDITIONS):
        raise PolicyError(f"{where}: states none of any / all / none")
    masks = {
        condition: _facts(raw[condition], f"{where}: {condition}") if condition in raw else 0
        for condition in _CONDITIONS
    }
    return Rule(_status(raw["status"], where), masks["any"], masks["all"], masks["none"])


def _facts(names: Any, where: str) -> int:
    if not isinstance(names, list) or not names:
        raise PolicyError(f"{where}: must be a non-empty list of fact names")
    bits = 0
    for fact in names:
        if not isinstance(fact, str) or fact not in FACT_BITS:
            raise PolicyError(f"{where}: unknown fact {fact!r}; facts are {', '.join(FACT_BITS)}")
        bits |= FACT_BITS[fact]
    return bits
