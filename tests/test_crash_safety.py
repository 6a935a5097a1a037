"""Crash safety: a killed import, a killed server, a full disk or a read-only store leave the
registry whole, at its last committed generation, and serving.

An import is one LMDB write transaction. Its commit writes the new pages, syncs them, and
only then writes the meta page that points at them, so until that last write every reader,
and every process started after a crash, sees the previous generation. These tests kill
real `imeireg import` and `imeireg serve` processes at the worst moments, fill the disk
under an import and make the store read-only, then check the store's every key and value,
its generation and rows, and the answers of a server started on it.

A few need the host's help, and skip saying why without it: strace, to kill an import as
its commit syncs; root and mount, for a small disk that fills up; chattr, to make a store
read-only to root.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt
import pytest
from served import Served
from support import (
    REGISTRATION_HEADER,
    SMALL_REGISTRY_ANSWERS,
    ServerProcess,
    SmallRegistry,
    build_small_registry,
    free_port,
    imei,
    imeireg_command,
    registration_row,
    start_server,
    write,
)

from imeireg.cli_support import ExitCode
from imeireg.client import Client, ImeiregError, Verdict
from imeireg.client.models import reason_names
from imeireg.server.model import ListName, Snapshot
from imeireg.server.store import Store
from imeireg.v1 import legality_pb2 as pb

# /proc, the lock file's layout and mount are Linux's.
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux only")

R = SmallRegistry
Answer = tuple[str, str, tuple[str, ...]]
U64 = npt.NDArray[np.uint64]

# The small registry's answers under the default policy: what must survive every crash.
SMALL_ANSWERS = SMALL_REGISTRY_ANSWERS[:-1]  # the valid IMEIs
GENERATION = 7  # of the small registry: one import per list

# Sizes that make an import take a couple of seconds, most of it in its write transaction:
# that transaction's cost grows with the TACs it touches, the reading with the rows.
FULL_ROWS, FULL_TACS, FULL_FIRST_TAC = 1_000_000, 30_000, 35_000_000
DELTA_ROWS, DELTA_TACS, DELTA_FIRST_TAC = 60_000, 15_000, 35_100_000
MEDIUM_ROWS, MEDIUM_TACS, MEDIUM_FIRST_TAC = 100_000, 2_000, 35_200_000

TIMEOUT = 60.0
POLL = 0.002
# Where in its write transaction an import is killed, as a share of how long a calibration
# run's took: early enough that a run up to three times as fast is still inside it.
KILL_AT_FRACTION = 1 / 3
# LMDB's lock file (MDB_txninfo in lmdb's mdb.c) starts with this magic number; its
# writer mutex, a robust pthread mutex, starts on the second 64-byte cache line. While
# locked, the mutex's first word holds its owner's thread id (the top two bits are flags).
LOCK_MAGIC = 0xBEEFC0DE
WRITER_MUTEX_OFFSET = 64
THREAD_ID_MASK = 0x3FFF_FFFF


@dataclass(frozen=True)
class ImportFiles:
    """Large registration files, and a few of their IMEIs (none in the small registry)."""

    full: Path
    delta: Path  # adds only
    medium: Path  # a full list, smaller
    newcomers: list[str]

    def args(self, kind: str, db: Path) -> list[str]:
        """`imeireg` arguments importing the `kind` file (full, delta or medium) into `db`."""
        path: Path = getattr(self, kind)
        delta = ["--delta"] if kind == "delta" else []
        return ["import", "registration", str(path), *delta, "--db", str(db)]

    @property
    def answers(self) -> list[Answer]:
        """The small registry's answers about the newcomers."""
        return [
            (text, "BLACKLISTED", ("TAC_UNALLOCATED", "NOT_REGISTERED")) for text in self.newcomers
        ]


@pytest.fixture(scope="module")
def import_files(tmp_path_factory: pytest.TempPathFactory) -> ImportFiles:
    directory = tmp_path_factory.mktemp("import-files")
    rng = np.random.default_rng(2024)
    newcomers = []
    paths = []
    for name, rows, tacs, first_tac, change_type in [
        ("full.csv", FULL_ROWS, FULL_TACS, FULL_FIRST_TAC, None),
        ("delta.csv", DELTA_ROWS, DELTA_TACS, DELTA_FIRST_TAC, "add"),
        ("medium.csv", MEDIUM_ROWS, MEDIUM_TACS, MEDIUM_FIRST_TAC, None),
    ]:
        tac = first_tac + rng.integers(0, tacs, rows, dtype=np.uint64)
        serial = rng.integers(0, 1_000_000, rows, dtype=np.uint64)
        paths.append(
            write_registration(directory / name, tac * np.uint64(1_000_000) + serial, change_type)
        )
        newcomers.append(imei(f"{tac[0]:08d}", int(serial[0])))
    full, delta, medium = paths
    return ImportFiles(full, delta, medium, newcomers)


def write_registration(path: Path, bodies: U64, change_type: str | None) -> Path:
    """A registration file (a delta when `change_type` is given) of the IMEIs of these bodies.

    Written as one byte matrix: a Python step per row would cost more than the import.
    """
    digits = np.empty((len(bodies), 14), np.uint8)
    rest = bodies.copy()
    for position in range(13, -1, -1):
        digits[:, position] = rest % np.uint64(10)
        rest //= np.uint64(10)
    # Luhn over the body: every second digit, from the second, is doubled.
    doubled = digits[:, 1::2].astype(np.int64) * 2
    total = digits[:, ::2].sum(axis=1, dtype=np.int64) + (doubled // 10 + doubled % 10).sum(axis=1)
    check_digit = (10 - total % 10) % 10
    tail = registration_row("") + (f",{change_type}" if change_type else "") + "\n"
    rows = np.empty((len(bodies), 15 + len(tail)), np.uint8)
    rows[:, :14] = digits + ord("0")
    rows[:, 14] = check_digit + ord("0")
    rows[:, 15:] = np.frombuffer(tail.encode(), np.uint8)
    header = REGISTRATION_HEADER + (",change_type" if change_type else "") + "\n"
    path.write_bytes(header.encode() + rows.tobytes())
    return path


# The store, before and after.


@dataclass(frozen=True)
class RegistryState:
    """Everything a failed or killed import must leave as it was."""

    snapshot: Snapshot
    rows: dict[ListName, int]
    contents: dict[str, str]  # database name → SHA-256 of its keys and values, in order


def registry_state(store: Store) -> RegistryState:
    """The state of the store's newest generation, every database of it read in full."""
    with store.read() as view:
        contents = {}
        for name in view.database_names():
            digest = hashlib.sha256()
            for key, value in view.database_entries(name):
                digest.update(struct.pack(">II", len(key), len(value)) + key + value)
            contents[name] = digest.hexdigest()
        return RegistryState(view.snapshot(), view.rows(), contents)


def state_of(db: Path) -> RegistryState:
    store = Store.open(db)
    try:
        return registry_state(store)
    finally:
        store.close()


def answers(verdicts: list[Verdict]) -> list[Answer]:
    return [(v.imei, v.status, v.reasons) for v in verdicts]


def answers_from_store(db: Path, imeis: list[str]) -> list[Answer]:
    """The answers of the serving path, in process, from the newest generation of the store."""
    store = Store.open(db)
    served = Served(store)
    try:
        verdict = served.check(imeis)
    finally:
        served.close()
        store.close()
    return [
        (
            text,
            pb.EquipmentStatus.Name(status).removeprefix("EQUIPMENT_STATUS_"),
            reason_names(bits),
        )
        for text, status, bits in zip(
            imeis, verdict.statuses.tolist(), verdict.reasons.tolist(), strict=True
        )
    ]


def imeireg(
    *args: str, preexec_fn: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run an `imeireg` command to its end.

    The timeout turns a hang, say on a writer lock a killed import left held, into a failure.
    """
    return subprocess.run(
        imeireg_command(*args),
        check=False,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        preexec_fn=preexec_fn,
    )


# Watching an import's write transaction through LMDB's writer lock.


def holds_writer_lock(process: subprocess.Popen[str], db: Path) -> bool:
    """Whether a thread of `process` holds LMDB's writer lock on the store `db`."""
    with open(db / "lock.mdb", "rb") as lock:
        head = lock.read(WRITER_MUTEX_OFFSET + 4)
    (magic,) = struct.unpack_from("<I", head)
    assert magic == LOCK_MAGIC, f"{db / 'lock.mdb'} does not have LMDB's lock file layout"
    (word,) = struct.unpack_from("<I", head, WRITER_MUTEX_OFFSET)
    owner = word & THREAD_ID_MASK
    return owner != 0 and Path(f"/proc/{process.pid}/task/{owner}").exists()


def wait_for_write_transaction(process: subprocess.Popen[str], db: Path) -> float:
    """The time an import is first seen inside its write transaction."""
    deadline = time.monotonic() + TIMEOUT
    while not holds_writer_lock(process, db):
        if process.poll() is not None:
            _, stderr = process.communicate()
            pytest.fail(f"the import exited {process.returncode} before writing: {stderr}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the import did not begin writing within {TIMEOUT} s")
        time.sleep(POLL)
    return time.monotonic()


def seconds_in_write_transaction(process: subprocess.Popen[str], db: Path) -> float:
    """How long an import runs its write transaction, commit included; it must succeed."""
    began = wait_for_write_transaction(process, db)
    while holds_writer_lock(process, db):
        time.sleep(POLL)
    ended = time.monotonic()
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == ExitCode.OK, stderr
    return ended - began


def kill_inside_write_transaction(process: subprocess.Popen[str], db: Path, after: float) -> None:
    """SIGKILL an import `after` seconds into its write transaction, before its commit.

    Its commit would first write pages beyond the end of the data file, so a file of the
    same size and a lock still held mean the kill came before the commit began.
    """
    size = (db / "data.mdb").stat().st_size
    began = wait_for_write_transaction(process, db)
    time.sleep(max(0.0, began + after - time.monotonic()))
    in_time = holds_writer_lock(process, db) and (db / "data.mdb").stat().st_size == size
    process.kill()
    process.wait(TIMEOUT)
    if not in_time:
        pytest.fail(
            f"the import was committing before the kill, {after:.2f} s into its write "
            f"transaction: this run was more than {KILL_AT_FRACTION**-1:.0f} times as fast as "
            "its calibration run"
        )


# After the crash.


def assert_previous_generation_survives(
    tmp_path: Path, db: Path, held: Store, before: RegistryState, newcomer_answers: list[Answer]
) -> None:
    """The store is exactly `before`; a server started on it answers from it; and the next
    import commits, and is answered, although the killed import held the writer lock."""
    assert registry_state(held) == before
    expected = SMALL_ANSWERS + newcomer_answers
    imeis = [text for text, _, _ in expected]
    server = start_server(db)
    try:
        with Client(server.target) as client:
            verdicts = client.check(imeis)
            assert answers(verdicts) == expected
            assert {v.generation for v in verdicts} == {GENERATION}
            stolen = write(
                tmp_path / "stolen.csv", ["imei,reporting_date,status", f"{R.registered},,"]
            )
            after = imeireg("import", "stolen", str(stolen), "--force", "--db", str(db))
            assert after.returncode == ExitCode.OK, after.stderr
            deadline = time.monotonic() + TIMEOUT
            while (verdict := client.check([R.registered])[0]).generation == GENERATION:
                assert time.monotonic() < deadline, "the next import was never answered from"
                time.sleep(0.05)
        assert (verdict.status, verdict.reasons) == ("BLACKLISTED", ("REGISTERED", "STOLEN"))
        assert verdict.generation == GENERATION + 1
    finally:
        server.stop()
    assert registry_state(held).snapshot.generation == GENERATION + 1


@pytest.fixture
def held_registry(tmp_path: Path) -> Iterator[tuple[SmallRegistry, Store]]:
    """The small registry, kept open by this process throughout, as a running server keeps it.

    With the store open somewhere, LMDB keeps its lock file's state across a killed writer
    rather than resetting it, so the next writer must recover the dead writer's lock.
    """
    registry = build_small_registry(tmp_path / "live")
    held = Store.open(registry.db)
    yield registry, held
    held.close()


@pytest.mark.parametrize("kind", ["full", "delta"])
def test_an_import_killed_inside_its_write_transaction_changes_nothing(
    kind: str,
    tmp_path: Path,
    import_files: ImportFiles,
    held_registry: tuple[SmallRegistry, Store],
) -> None:
    calibration = build_small_registry(tmp_path / "calibration")
    with subprocess.Popen(
        imeireg_command(*import_files.args(kind, calibration.db)), stderr=subprocess.PIPE, text=True
    ) as process:
        transaction = seconds_in_write_transaction(process, calibration.db)
    registry, held = held_registry
    before = registry_state(held)
    with subprocess.Popen(
        imeireg_command(*import_files.args(kind, registry.db)), stderr=subprocess.PIPE, text=True
    ) as process:
        kill_inside_write_transaction(process, registry.db, after=transaction * KILL_AT_FRACTION)
    assert process.returncode == -signal.SIGKILL
    assert_previous_generation_survives(tmp_path, registry.db, held, before, import_files.answers)


@pytest.mark.parametrize("kind", ["full", "delta"])
def test_an_import_killed_after_writing_its_pages_but_not_its_meta_page_changes_nothing(
    kind: str,
    tmp_path: Path,
    import_files: ImportFiles,
    held_registry: tuple[SmallRegistry, Store],
) -> None:
    # The commit syncs its pages (fdatasync) before it writes the meta page that makes them
    # the new generation: strace kills the import as it asks for that sync.
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    registry, held = held_registry
    before = registry_state(held)
    pages = (registry.db / "data.mdb").stat().st_size
    strace = ["strace", "-f", "-qq", "-o", os.devnull, "-e", "trace=fdatasync"]
    killed = subprocess.run(
        [
            *strace,
            "-e",
            "inject=fdatasync:signal=SIGKILL",
            *imeireg_command(*import_files.args(kind, registry.db)),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    if killed.returncode != -signal.SIGKILL and "ptrace" in killed.stderr.lower():
        pytest.skip(f"strace cannot trace here: {killed.stderr.strip()}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (registry.db / "data.mdb").stat().st_size > pages  # its new pages were written
    assert_previous_generation_survives(tmp_path, registry.db, held, before, import_files.answers)


# A server killed under load.


def serve_on(db: Path, port: int) -> ServerProcess:
    """`imeireg serve` on `port`, once SERVING: the port a restart reuses."""
    return start_server(db, timeout=TIMEOUT, port=port)


@dataclass
class Load:
    """A client asking the small registry's questions in a thread, tallying what it gets."""

    client: Client
    answered: int = 0
    wrong: list[list[Answer]] = field(default_factory=list)
    failed: list[grpc.StatusCode] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        imeis = [text for text, _, _ in SMALL_ANSWERS]
        while not self.stopped.is_set():
            try:
                got = answers(self.client.check(imeis))
            except ImeiregError as error:
                self.failed.append(error.code)
                time.sleep(0.05)
                continue
            if got != SMALL_ANSWERS:
                self.wrong.append(got)
            self.answered += 1

    def wait_for(self, answered: int) -> None:
        deadline = time.monotonic() + TIMEOUT
        while self.answered < answered:
            assert time.monotonic() < deadline, f"{self.answered} answers, not {answered}"
            time.sleep(0.01)


@contextmanager
def under_load(client: Client) -> Iterator[Load]:
    load = Load(client)
    worker = threading.Thread(target=load.run)
    worker.start()
    try:
        yield load
    finally:
        load.stopped.set()
        worker.join()


def test_a_server_killed_under_load_restarts_on_its_port_and_its_client_recovers(
    small_registry: SmallRegistry,
) -> None:
    port = free_port()
    server = serve_on(small_registry.db, port)
    restarted: ServerProcess | None = None
    try:
        with Client(server.target) as client:
            with under_load(client) as load:
                load.wait_for(20)
                server.stop(signal.SIGKILL)
                answered_at_kill = load.answered
                restarted = serve_on(small_registry.db, port)
                load.wait_for(answered_at_kill + 20)
            verdicts = client.check([text for text, _, _ in SMALL_ANSWERS])
    finally:
        server.stop(signal.SIGKILL)
        if restarted is not None:
            restarted.stop()
    assert server.process.returncode == -signal.SIGKILL
    assert answers(verdicts) == SMALL_ANSWERS
    assert {v.generation for v in verdicts} == {GENERATION}
    assert load.wrong == []
    # While no server listens, calls fail fast as UNAVAILABLE once their retries are spent.
    assert set(load.failed) <= {grpc.StatusCode.UNAVAILABLE}


# A full disk, a read-only store.


def assert_one_line_store_error(result: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert result.returncode == ExitCode.STORE, result.stderr
    assert result.stderr.startswith("imeireg: ") and result.stderr.count("\n") == 1, result.stderr
    for part in parts:
        assert part in result.stderr


def assert_unchanged(db: Path, before: RegistryState, import_files: ImportFiles) -> None:
    assert state_of(db) == before
    expected = SMALL_ANSWERS + import_files.answers
    assert answers_from_store(db, [text for text, _, _ in expected]) == expected


def limit_file_size(limit: int) -> Callable[[], None]:
    """A preexec_fn capping the size of any file the process writes at `limit` bytes.

    A write past the cap then fails with EFBIG, as on a full disk (Python ignores SIGXFSZ).
    """

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@dataclass(frozen=True)
class LimitedImport:
    """A full import run with files capped just above the store's size, so it cannot commit."""

    db: Path
    before: RegistryState
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def limited_import(
    tmp_path_factory: pytest.TempPathFactory, import_files: ImportFiles
) -> LimitedImport:
    registry = build_small_registry(tmp_path_factory.mktemp("file-size-limit"))
    before = state_of(registry.db)
    limit = (registry.db / "data.mdb").stat().st_size + (64 << 10)
    result = imeireg(*import_files.args("medium", registry.db), preexec_fn=limit_file_size(limit))
    return LimitedImport(registry.db, before, result)


def test_an_import_over_the_file_size_limit_fails_in_one_line_and_changes_nothing(
    limited_import: LimitedImport, import_files: ImportFiles
) -> None:
    db = limited_import.db
    assert_one_line_store_error(
        limited_import.result, f"imeireg: {db}: cannot write (", "); nothing was changed\n"
    )
    assert_unchanged(db, limited_import.before, import_files)
    # Given room, the same import commits.
    again = imeireg(*import_files.args("medium", db))
    assert again.returncode == ExitCode.OK, again.stderr
    assert state_of(db).snapshot.generation == GENERATION + 1


def test_the_file_size_error_names_its_cause(limited_import: LimitedImport) -> None:
    cause = limited_import.result.stderr.removeprefix(f"imeireg: {limited_import.db}: ").lower()
    assert any(name in cause for name in ("file too large", "no space", "disk full")), cause


@contextmanager
def tmpfs(point: Path, size: int) -> Iterator[Path]:
    """A tmpfs of `size` bytes mounted on `point` (root only; skips the test otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
        check=False,
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=True)


def test_an_import_onto_a_full_disk_fails_in_one_line_and_changes_nothing(
    tmp_path: Path, import_files: ImportFiles
) -> None:
    registry = build_small_registry(tmp_path)
    store_bytes = sum(path.stat().st_size for path in registry.db.iterdir())
    with tmpfs(tmp_path / "disk", store_bytes + (256 << 10)) as disk:
        db = disk / "registry"
        shutil.copytree(registry.db, db)
        before = state_of(db)
        result = imeireg(*import_files.args("medium", db))
        assert_one_line_store_error(
            result, f"imeireg: {db}: cannot write (", "); nothing was changed\n"
        )
        assert_unchanged(db, before, import_files)


@contextmanager
def read_only(db: Path) -> Iterator[None]:
    """The store made read-only: by its mode bits, and for root, which ignores them, by
    making its files immutable (chattr +i)."""
    paths = [*db.iterdir(), db]
    for path in paths:
        path.chmod(0o555 if path.is_dir() else 0o444)
    immutable = False
    try:
        if os.geteuid() == 0:
            if shutil.which("chattr") is None:
                pytest.skip("root ignores mode bits, and chattr is not installed")
            immutable = True  # undone even if only some files could be made immutable
            made = subprocess.run(
                ["chattr", "+i", *map(str, paths)], check=False, capture_output=True, text=True
            )
            if made.returncode != 0:
                pytest.skip(
                    "root ignores mode bits, and chattr +i cannot make the store immutable "
                    f"here: {made.stderr.strip()}"
                )
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", *map(str, paths)], check=False)
        for path in paths:
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_an_import_into_a_read_only_store_fails_in_one_line_and_changes_nothing(
    small_registry: SmallRegistry, import_files: ImportFiles
) -> None:
    db = small_registry.db
    before = state_of(db)
    with read_only(db):
        result = imeireg(*import_files.args("medium", db))
    assert_one_line_store_error(result, f"imeireg: {db} is not a writable LMDB store: ")
    assert_unchanged(db, before, import_files)
