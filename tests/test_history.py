"""History and rollback: the import log, and going back to the state before any kept generation."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from served import Served
from support import (
    PHONE_TAC,
    REGISTRATION_HEADER,
    SmallRegistry,
    build_small_registry,
    imei,
    imeireg_command,
    registration_row,
    start_server,
    write,
)

from imeireg.cli_support import ExitCode
from imeireg.server.check.verdict import batch_reasons
from imeireg.server.imports.delta import import_delta
from imeireg.server.imports.full import import_file
from imeireg.server.imports.rollback import roll_back
from imeireg.server.model import ImportRecord, ListName, SerialSet
from imeireg.server.store import Store, StoreError
from imeireg.server.store import registry as store_module

R = SmallRegistry
PROBES = [imei(PHONE_TAC, serial) for serial in range(0, 40)]


def contents(store: Store) -> dict[str, Any]:
    """Everything an import can change, as plain data: every database but the log's."""
    found: dict[str, Any] = {}
    with store.read() as view:
        for name in ("tac_sets", "gsma", "pairs", "segments", *SerialSet):
            found[name] = dict(view.database_entries(name))
        found["rows"] = view.rows()
    fresh = Served(store)
    found["facts"] = batch_reasons(fresh.state, PROBES).tolist()
    fresh.close()
    return found


def registration_delta(path: Path, *rows: tuple[str, str]) -> Path:
    lines = [f"{registration_row(text)},{change}" for text, change in rows]
    return write(path, [f"{REGISTRATION_HEADER},change_type", *lines])


@pytest.fixture
def registry(tmp_path: Path) -> SmallRegistry:
    return build_small_registry(tmp_path)


def apply_changes(tmp_path: Path, store: Store) -> list[dict[str, Any]]:
    """Full imports and deltas of several lists; the contents after each generation."""
    states = [contents(store)]
    steps: list[Callable[[], ImportRecord]] = [
        lambda: import_delta(
            store,
            ListName.REGISTRATION,
            registration_delta(
                tmp_path / "d1.csv", (imei(PHONE_TAC, 20), "add"), (R.registered, "remove")
            ),
        ),
        lambda: import_file(
            store,
            ListName.STOLEN,
            write(tmp_path / "stolen.csv", ["imei,reporting_date,status", f"{R.provisional},,"]),
            force=True,
        ),
        lambda: import_file(
            store,
            ListName.REGISTRATION,
            write(
                tmp_path / "registration.csv",
                [REGISTRATION_HEADER, *(registration_row(imei(PHONE_TAC, s)) for s in range(30))],
            ),
        ),
        lambda: import_delta(
            store,
            ListName.BARRED_TAC,
            write(tmp_path / "barred-tac.csv", ["tac,change_type", f"{PHONE_TAC},add"]),
        ),
        lambda: import_delta(
            store,
            ListName.PAIRING,
            write(
                tmp_path / "pairing.csv",
                ["imei,imsi,msisdn,change_type", f"{imei(PHONE_TAC, 9)},510101111111111,,add"],
            ),
        ),
    ]
    for step in steps:
        step()
        states.append(contents(store))
    return states


def test_rollback_returns_every_list_to_its_state_before_a_generation(
    tmp_path: Path, registry: SmallRegistry
) -> None:
    store = Store.open(registry.db, readonly=False)
    first = 8  # the small registry's 7 lists are generations 1 to 7
    states = apply_changes(tmp_path, store)
    served = Served(store)
    for target in (first + 3, first + 1, first):
        record = roll_back(store, target)
        assert (record.mode, record.list_name, record.rolled_back_to) == ("rollback", "", target)
        assert contents(store) == states[target - first]
        served.catch_up()
        assert batch_reasons(served.state, PROBES).tolist() == states[target - first]["facts"]
    # A rollback is a generation like any other, so it can be undone too.
    roll_back(store, record.generation)
    assert contents(store) == states[1]


def test_rollback_of_a_rollback_restores_what_it_undid(
    tmp_path: Path, registry: SmallRegistry
) -> None:
    store = Store.open(registry.db, readonly=False)
    states = apply_changes(tmp_path, store)
    record = roll_back(store, 3)
    assert contents(store)["rows"] != states[-1]["rows"]
    roll_back(store, record.generation)
    assert contents(store) == states[-1]


def test_rollback_refuses_generations_it_cannot_reach(
    tmp_path: Path, registry: SmallRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.open(registry.db, readonly=False)
    with pytest.raises(StoreError, match="no generation 8 to roll back: generations are 1 to 7"):
        roll_back(store, 8)
    monkeypatch.setattr(store_module, "HISTORY_GENERATIONS", 3)
    apply_changes(tmp_path, store)  # generations 8 to 12; before-images kept from 10 on
    with store.read() as view:
        assert view.history_kept() == 10
    with pytest.raises(StoreError, match="generation 9 is older than the kept history"):
        roll_back(store, 9)
    assert roll_back(store, 10).generation == 13


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(imeireg_command(*args), capture_output=True, text=True, check=False)


def test_history_and_rollback_commands(tmp_path: Path, registry: SmallRegistry) -> None:
    db = str(registry.db)
    delta = registration_delta(tmp_path / "d.csv", (imei(PHONE_TAC, 20), "add"))
    assert run("import", "registration", str(delta), "--delta", "--db", db).returncode == 0
    history = run("history", "--db", db)
    assert history.returncode == ExitCode.OK, history.stderr
    lines = history.stdout.splitlines()
    assert lines[0].split()[:8] == [
        "GEN", "COMMITTED", "(UTC)", "LIST", "MODE", "ROWS", "ADDED", "REMOVED"
    ]  # fmt: skip
    newest = lines[1].split()
    assert newest[0] == "8" and newest[3:9] == ["registration", "delta", "1", "1", "0", "0"]
    assert newest[9] == "d.csv" and len(newest[10]) == 64
    assert lines[-1] == "rollback possible to the state before any generation from 1 on"

    done = run("rollback", "8", "--db", db)
    assert done.returncode == ExitCode.OK, done.stderr
    assert "rolled back to the state before generation 8: generation 9" in done.stderr
    assert run("history", "--db", db, "--limit", "1").stdout.splitlines()[1].split()[3:5] == [
        "*",
        "rollback",
    ]
    refused = run("rollback", "42", "--db", db)
    assert refused.returncode == ExitCode.STORE
    assert "no generation 42 to roll back" in refused.stderr

    server = start_server(registry.db)
    try:
        info = run("info", "--target", server.target)
    finally:
        server.stop()
    assert info.returncode == ExitCode.OK, info.stderr
    assert "snapshot: generation 9" in info.stdout
    newest = info.stdout.split("FILE\n")[1].splitlines()[0].split()
    assert newest[:6] == ["9", *newest[1:3], "*", "rollback", "3"]
