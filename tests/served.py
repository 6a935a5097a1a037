"""A serving state kept current in process, as a server's watcher keeps it, for tests that
check the serving core without a server: `catch_up()` is the watcher's build and swap."""

from __future__ import annotations

from collections.abc import Sequence

from imeireg.server.check.policy import Policy
from imeireg.server.check.verdict import BatchVerdict, check
from imeireg.server.serving.build import first_state, next_state
from imeireg.server.serving.state import ServingState, release
from imeireg.server.store import Store


class Served:
    """The state answers come from, built from `store` (which stays the caller's to close)."""

    def __init__(self, store: Store, policy: Policy | None = None) -> None:
        self.store = store
        self.policy = policy or Policy.default()
        self.state: ServingState = first_state(store, self.policy)

    def check(self, imeis: Sequence[str], imsis: Sequence[str] = ()) -> BatchVerdict:
        return check(self.state, imeis, imsis)

    def catch_up(self) -> ServingState:
        """Build the state of the store's newest snapshot, as the watcher does, and swap."""
        built = next_state(self.store, self.state)
        if built is not None:
            release(self.state, built)
            self.state = built
        return self.state

    def close(self) -> None:
        self.state.close()
