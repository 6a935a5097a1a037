"""Snapshots for replicas: export, verify, install, and replicas answering from them."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from support import (
    PHONE_TAC,
    SmallRegistry,
    imeireg_command,
    start_server,
    write,
)

from imeireg.cli_support import ExitCode
from imeireg.server.imports.full import import_file
from imeireg.server.model import ListName
from imeireg.server.store import SCHEMA_VERSION, Store
from imeireg.server.store import snapshots as snapshot
from imeireg.v1 import legality_pb2 as pb
from imeireg.v1 import legality_pb2_grpc as pb_grpc

R = SmallRegistry
WHITELISTED = pb.EQUIPMENT_STATUS_WHITELISTED
BLACKLISTED = pb.EQUIPMENT_STATUS_BLACKLISTED
SMALL_REGISTRY_ROWS = {
    "gsma-tac": 3,
    "registration": 8,
    "stolen": 2,
    "barred": 1,
    "barred-tac": 1,
    "golden": 1,
    "pairing": 1,
}


def imeireg(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        imeireg_command(*args), check=False, capture_output=True, text=True, timeout=60
    )


def import_stolen(db: Path, path: Path) -> None:
    store = Store.create(db)
    try:
        import_file(store, ListName.STOLEN, path, force=True)
    finally:
        store.close()


def test_an_export_is_a_verified_copy_of_the_generation_it_names(
    tmp_path: Path, small_registry: SmallRegistry
) -> None:
    manifest = snapshot.export(small_registry.db, tmp_path / "snap")
    data = (tmp_path / "snap" / "data.mdb").read_bytes()
    assert sorted(path.name for path in (tmp_path / "snap").iterdir()) == [
        "data.mdb",
        "manifest.json",
    ]
    assert (manifest.generation, manifest.schema_version) == (7, SCHEMA_VERSION)
    assert manifest.rows == SMALL_REGISTRY_ROWS
    assert manifest.last_import is not None
    assert (manifest.last_import.list_name, manifest.last_import.generation) == ("pairing", 7)
    assert manifest.last_import.committed_at == manifest.committed_at
    assert manifest.files == {
        "data.mdb": snapshot.FileDigest(len(data), hashlib.sha256(data).hexdigest())
    }
    assert len(data) <= (small_registry.db / "data.mdb").stat().st_size  # compacted
    assert snapshot.verify(tmp_path / "snap") == manifest


def test_the_commands_export_verify_and_install_with_a_summary(
    tmp_path: Path, small_registry: SmallRegistry
) -> None:
    exported = imeireg("snapshot", "export", str(tmp_path / "snap"), "--db", str(small_registry.db))
    assert exported.returncode == ExitCode.OK, exported.stderr
    size = (tmp_path / "snap" / "data.mdb").stat().st_size
    assert exported.stdout.startswith(
        f"exported generation 7 of {small_registry.db} to {tmp_path / 'snap'}: {size:,} bytes\n"
        f"  data.mdb  {size:,} bytes  sha256 "
    )
    verified = imeireg("snapshot", "verify", str(tmp_path / "snap"))
    assert verified.returncode == ExitCode.OK, verified.stderr
    assert verified.stdout.startswith(
        f"{tmp_path / 'snap'}: intact snapshot of generation 7, {size:,} bytes\n"
    )
    installed = imeireg(
        "snapshot", "install", str(tmp_path / "snap"), "--link", str(tmp_path / "current")
    )
    assert installed.returncode == ExitCode.OK, installed.stderr
    assert installed.stdout == f"{tmp_path / 'current'} -> {tmp_path / 'snap'} (generation 7)\n"
    assert os.readlink(tmp_path / "current") == str(tmp_path / "snap")


def test_an_export_into_a_non_empty_directory_is_refused(
    tmp_path: Path, small_registry: SmallRegistry
) -> None:
    (tmp_path / "snap").mkdir()
    write(tmp_path / "snap" / "notes.txt", ["keep me"])
    result = imeireg("snapshot", "export", str(tmp_path / "snap"), "--db", str(small_registry.db))
    assert result.returncode == ExitCode.USAGE
    assert result.stderr == (
        f"imeireg: {tmp_path / 'snap'} is not empty; export a snapshot into a new directory\n"
    )
    assert sorted(path.name for path in (tmp_path / "snap").iterdir()) == ["notes.txt"]


def test_an_export_of_a_missing_store_fails_as_a_store_error(tmp_path: Path) -> None:
    result = imeireg("snapshot", "export", str(tmp_path / "snap"), "--db", str(tmp_path / "none"))
    assert result.returncode == ExitCode.STORE
    assert f"no registry store at {tmp_path / 'none'}" in result.stderr


def flip_a_byte(directory: Path) -> str:
    data = bytearray((directory / "data.mdb").read_bytes())
    data[-1] ^= 0xFF
    (directory / "data.mdb").write_bytes(data)
    return f"{directory / 'data.mdb'} has sha256 {hashlib.sha256(data).hexdigest()}; "


def append_a_page(directory: Path) -> str:
    with (directory / "data.mdb").open("ab") as file:
        file.write(bytes(4096))
    size = (directory / "data.mdb").stat().st_size
    return f"{directory / 'data.mdb'} has {size} bytes; the manifest says {size - 4096}"


def claim_another_generation(directory: Path) -> str:
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["generation"] = 8
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return f"{directory / 'data.mdb'} holds generation 7 "


def lose_the_manifest(directory: Path) -> str:
    (directory / "manifest.json").unlink()
    return f"{directory} has no manifest.json: not a snapshot, or its export did not finish"


def garble_the_manifest(directory: Path) -> str:
    (directory / "manifest.json").write_text('{"format_version": 1, "generation": 7}')
    return f"{directory / 'manifest.json'} is not a snapshot manifest "


@pytest.mark.parametrize(
    "tamper",
    [flip_a_byte, append_a_page, claim_another_generation, lose_the_manifest, garble_the_manifest],
)
def test_a_tampered_snapshot_fails_verification_with_one_line(
    tmp_path: Path, small_registry: SmallRegistry, tamper: Callable[[Path], str]
) -> None:
    directory = tmp_path / "snap"
    snapshot.export(small_registry.db, directory)
    expected = tamper(directory)
    with pytest.raises(snapshot.SnapshotError) as failure:
        snapshot.verify(directory)
    message = str(failure.value)
    assert expected in message
    assert "\n" not in message


def test_verify_and_install_refuse_a_tampered_snapshot_or_a_real_directory(
    tmp_path: Path, small_registry: SmallRegistry
) -> None:
    snapshot.export(small_registry.db, tmp_path / "snap")
    expected = flip_a_byte(tmp_path / "snap")
    verified = imeireg("snapshot", "verify", str(tmp_path / "snap"))
    assert verified.returncode == ExitCode.STORE
    assert verified.stderr.startswith(f"imeireg: {expected}")
    installed = imeireg(
        "snapshot", "install", str(tmp_path / "snap"), "--link", str(tmp_path / "current")
    )
    assert installed.returncode == ExitCode.STORE
    assert not (tmp_path / "current").is_symlink()
    (tmp_path / "directory").mkdir()
    replacing = imeireg(
        "snapshot", "install", str(tmp_path / "snap"), "--link", str(tmp_path / "directory")
    )
    assert replacing.returncode == ExitCode.USAGE
    assert replacing.stderr == (
        f"imeireg: {tmp_path / 'directory'} exists and is not a symlink; "
        "give a new path or a symlink\n"
    )


def test_exports_while_imports_commit_copy_exactly_the_generation_they_name(
    tmp_path: Path, small_registry: SmallRegistry
) -> None:
    # Generations alternate between a stolen list of one row and one of two rows.
    one = write(tmp_path / "one.csv", ["imei,reporting_date,status", f"{R.registered},,"])
    two = write(
        tmp_path / "two.csv",
        ["imei,reporting_date,status", f"{R.stolen},,", f"{R.golden_and_stolen},,"],
    )
    stop = threading.Event()
    generations = []

    def keep_importing() -> None:
        while not stop.is_set():
            for path in (one, two):
                import_stolen(small_registry.db, path)

    importer = threading.Thread(target=keep_importing)
    importer.start()
    try:
        for number in range(3):
            directory = tmp_path / f"snap{number}"
            result = imeireg("snapshot", "export", str(directory), "--db", str(small_registry.db))
            assert result.returncode == ExitCode.OK, result.stderr
            manifest = snapshot.verify(directory)  # the copy holds the manifest's generation
            generations.append(manifest.generation)
            assert manifest.last_import is not None
            assert manifest.last_import.generation == manifest.generation
            assert manifest.rows["stolen"] == (1 if manifest.generation % 2 == 0 else 2)
    finally:
        stop.set()
        importer.join()
    assert generations == sorted(generations)
    assert generations[0] > 7 and generations[-1] > generations[0]


def every_request(registry: type[SmallRegistry]) -> list[tuple[list[str], list[str]]]:
    imeis = [
        value
        for name, value in vars(registry).items()
        if isinstance(value, str) and not name.startswith("_") and name != "paired_imsi"
    ]
    imsis = ["" if i % 2 else registry.paired_imsi for i in range(len(imeis))]
    return [([i], []) for i in imeis] + [(imeis, []), (imeis, imsis)]


def test_a_replica_on_an_export_answers_exactly_like_the_original(
    tmp_path: Path, small_registry: SmallRegistry
) -> None:
    snapshot.export(small_registry.db, tmp_path / "snap")
    original = start_server(small_registry.db)
    replica = start_server(tmp_path / "snap")
    try:
        answers = []
        for server in (original, replica):
            with grpc.insecure_channel(server.target) as channel:
                stub = pb_grpc.LegalityServiceStub(channel)
                checks = [
                    stub.CheckImeis(pb.CheckImeisRequest(imeis=imeis, imsis=imsis), timeout=60)
                    for imeis, imsis in every_request(R)
                ]
                tacs = stub.LookupTacs(
                    pb.LookupTacsRequest(tacs=[PHONE_TAC, "01234567", "86000001", "99999999"]),
                    timeout=60,
                )
                info = stub.GetRegistryInfo(pb.GetRegistryInfoRequest(), timeout=60)
            answers.append([message.SerializeToString() for message in [*checks, tacs, info]])
            assert checks[0].snapshot.generation == 7
        assert answers[0] == answers[1]
    finally:
        original.stop()
        replica.stop()


Answer = tuple[float, int, list[int]]  # when, generation, statuses of [registered, stolen]


class CheckLoop:
    """Clients checking [registered, stolen] in a loop, each on its own channel, until exit."""

    def __init__(self, target: str, clients: int) -> None:
        self.target = target
        self.answers: list[list[Answer]] = [[] for _ in range(clients)]
        self.failures: list[grpc.RpcError] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._ask, args=(a,)) for a in self.answers]

    def __enter__(self) -> CheckLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _ask(self, answers: list[Answer]) -> None:
        request = pb.CheckImeisRequest(imeis=[R.registered, R.stolen])
        with grpc.insecure_channel(self.target) as channel:
            stub = pb_grpc.LegalityServiceStub(channel)
            while not self._stop.is_set():
                try:
                    response = stub.CheckImeis(request, timeout=60)
                except grpc.RpcError as error:
                    self.failures.append(error)
                    continue
                answers.append(
                    (time.monotonic(), response.snapshot.generation, list(response.statuses))
                )

    def wait_for(self, generation: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(
            answers and answers[-1][1] == generation for answers in self.answers
        ):
            time.sleep(0.05)


def test_a_replica_switches_to_a_newer_snapshot_without_a_failed_call(
    tmp_path: Path, small_registry: SmallRegistry
) -> None:
    current = tmp_path / "current"
    snapshot.export(small_registry.db, tmp_path / "snap7")
    snapshot.install(tmp_path / "snap7", current)
    stolen = write(tmp_path / "stolen8.csv", ["imei,reporting_date,status", f"{R.registered},,"])
    import_stolen(small_registry.db, stolen)
    snapshot.export(small_registry.db, tmp_path / "snap8")
    (tmp_path / "broken").mkdir()
    # What each generation answers for [registered, stolen]: generation 8 swapped them.
    expected = {7: [WHITELISTED, BLACKLISTED], 8: [BLACKLISTED, WHITELISTED]}

    server = start_server(current, "--workers", "2")
    try:
        with CheckLoop(server.target, clients=2) as load:
            # A directory that is no store: each worker logs it and keeps serving generation 7.
            os.symlink(tmp_path / "broken", tmp_path / "broken-link")
            os.replace(tmp_path / "broken-link", current)
            time.sleep(1.2)
            snapshot.install(tmp_path / "snap8", current)
            installed_at = time.monotonic()
            load.wait_for(8, timeout=60)
            time.sleep(0.3)
    finally:
        assert server.stop() == 0
    assert load.failures == []
    for answers in load.answers:
        generations = [generation for _, generation, _ in answers]
        assert generations == sorted(generations)  # never back to the older snapshot
        assert set(generations) == {7, 8}
        assert all(statuses == expected[generation] for _, generation, statuses in answers)
        first_new = next(at for at, generation, _ in answers if generation == 8)
        assert first_new - installed_at < 2
    log = server.log()
    assert log.count(f"switched to snapshot {tmp_path / 'snap8'} generation 8 (was 7)") == 2
    assert log.count(f"not switching to snapshot {tmp_path / 'broken'}") == 2
