"""Shared fixtures: a small real registry in a temp dir, and a real server on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ServerProcess, SmallRegistry, build_small_registry, start_server


@pytest.fixture
def small_registry(tmp_path: Path) -> SmallRegistry:
    """A real LMDB store holding every list of the small registry, for one test to change."""
    return build_small_registry(tmp_path)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real server on the small registry, shared by the tests of a module that only read."""
    running = start_server(build_small_registry(tmp_path_factory.mktemp("shared")).db)
    yield running
    running.stop()


@pytest.fixture
def server(small_registry: SmallRegistry) -> Iterator[ServerProcess]:
    """A real server answering from the small registry."""
    running = start_server(small_registry.db)
    yield running
    running.stop()


@pytest.fixture
def target(shared_server: ServerProcess) -> str:
    """The address of the shared server on the small registry."""
    return shared_server.target
