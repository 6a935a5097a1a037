"""The path through the house: IMEI strings → normalised columns → facts → policy → statuses.

One call answers one batch from one pinned registry snapshot, column by column.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from imeireg.imei import parse_imei
from imeireg.server import facts
from imeireg.server.columns import TextColumn
from imeireg.server.index import RegistryIndex
from imeireg.server.kernels import normalise_column
from imeireg.server.policy import Policy
from imeireg.server.store import Snapshot

# Up to this size a batch is answered IMEI by IMEI: numpy's fixed cost per
# operation outweighs its gain on a few IMEIs (single checks at attach time).
SMALL_BATCH = 16


@dataclass(frozen=True, slots=True)
class BatchVerdict:
    """Aligned columns answering one batch: status numbers and reason bit sets."""

    statuses: npt.NDArray[np.uint8]
    reasons: npt.NDArray[np.uint32]
    snapshot: Snapshot


class LegalityChecker:
    """Checks batches of IMEIs against the newest committed registry snapshot under one policy."""

    def __init__(self, index: RegistryIndex, policy: Policy) -> None:
        self.index = index
        self.policy = policy
        self._home_mccs = np.array(sorted(map(int, policy.home_mccs)), dtype=np.int64)

    def check(self, imeis: Sequence[str], imsis: Sequence[str] = ()) -> BatchVerdict:
        """Answer one batch of IMEI strings (a `TextColumn` of a request's bytes, or any
        sequence), with IMSIs aligned to it or none."""
        snapshot = self.index.refresh()
        if len(imeis) <= SMALL_BATCH:
            reasons = np.fromiter(
                map(self._facts_of, imeis, imsis or itertools.repeat("")), np.uint32, len(imeis)
            )
        else:
            batch = normalise_column(TextColumn.of(imeis))
            reasons = self.index.facts(batch, imsis, self._home_mccs)
        return BatchVerdict(self.policy.decide(reasons), reasons, snapshot)

    def _facts_of(self, imei: str, imsi: str) -> int:
        parsed = parse_imei(imei)
        if parsed is None:
            return facts.INVALID_FORMAT
        found = self.index.facts_of(
            int(parsed.tac), int(parsed.serial), imsi, self.policy.home_mccs
        )
        return found | (facts.CHECK_DIGIT_MISMATCH if parsed.check_digit_mismatch else 0)
