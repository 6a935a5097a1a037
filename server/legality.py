"""The path through the house: IMEI strings → normalised columns → facts → policy → statuses.

One call answers one batch from one pinned registry snapshot, column by column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from imeireg.server.index import RegistryIndex
from imeireg.server.normalise import normalise_batch
from imeireg.server.policy import Policy
from imeireg.server.store import Snapshot


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

    def check(self, imeis: Sequence[str], imsis: Sequence[str] = ()) -> BatchVerdict:
        snapshot = self.index.refresh()
        reasons = self.index.facts(normalise_batch(imeis), imsis, self.policy.home_mccs)
        return BatchVerdict(self.policy.decide(reasons), reasons, snapshot)
