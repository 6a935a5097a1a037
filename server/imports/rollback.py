"""Rollback: the registry returned to its state before a generation, as a new generation.

The store keeps every import's before-images (see `store.registry`) for the last
HISTORY_GENERATIONS generations; a rollback replays them, newest first, and is logged
like an import, so it can itself be rolled back.
"""

from __future__ import annotations

from imeireg.server.model import ImportRecord
from imeireg.server.store import Store


def roll_back(store: Store, before: int) -> ImportRecord:
    """Return the registry to its state before generation `before`, as a new generation."""
    with store.write() as writer:
        replayed = writer.roll_back(before)
        return writer.commit_generation(
            None,
            mode="rollback",
            file_name=f"state before generation {before}",
            sha256="",
            rows=replayed,
            rolled_back_to=before,
        )
