"""Snapshots for replicas: export a consistent compacted copy of a store, verify it, install it.

A snapshot is a directory holding `data.mdb`, a compacted copy of the store taken from one
read transaction while servers serve and imports commit, and `manifest.json`, written last:
the generation copied, its rows per list and newest import, and each file's size and SHA-256.
A replica serves `--db CURRENT`, a symlink; `install` verifies a snapshot and repoints the
symlink at it in one rename, and each serving process switches to it (see serving/watcher.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import lmdb

from imeireg.server.model import ImportRecord
from imeireg.server.store import SCHEMA_VERSION, Store, StoreError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATA_FILE = "data.mdb"


class SnapshotError(Exception):
    """A snapshot cannot be written or does not match its manifest; one line for an operator."""


@dataclass(frozen=True, slots=True)
class FileDigest:
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a snapshot holds, and the digests that prove its files are those exported."""

    generation: int
    committed_at: float
    schema_version: int
    rows: dict[str, int]
    last_import: ImportRecord | None
    created_at: float
    files: dict[str, FileDigest]

    @property
    def size(self) -> int:
        return sum(digest.size for digest in self.files.values())

    def to_json(self) -> str:
        return json.dumps({"format_version": FORMAT_VERSION, **asdict(self)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, path: Path) -> Manifest:
        try:
            fields = json.loads(text)
            version = fields.pop("format_version")
            if version != FORMAT_VERSION:
                raise SnapshotError(
                    f"{path} has manifest format {version}; this imeireg reads {FORMAT_VERSION}"
                )
            last_import = fields.pop("last_import")
            files = {name: FileDigest(**digest) for name, digest in fields.pop("files").items()}
            manifest = cls(
                **fields,
                last_import=None if last_import is None else ImportRecord(**last_import),
                files=files,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise SnapshotError(f"{path} is not a snapshot manifest ({error!r})") from error
        if DATA_FILE not in files or any(Path(name).name != name for name in files):
            raise SnapshotError(f"{path} must list {DATA_FILE} and only plain file names")
        return manifest


def export(store_path: str | Path, directory: str | Path) -> Manifest:
    """Copy the store's newest committed generation, compacted, into a new or empty directory."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory} is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        empty = not any(directory.iterdir())
    except OSError as error:
        raise SnapshotError(f"cannot create {directory}: {error}") from error
    if not empty:
        raise FileExistsError(f"{directory} is not empty; export a snapshot into a new directory")
    store = Store.open(store_path)
    try:
        # One read transaction: the copy and the manifest describe the same generation,
        # whatever imports commit meanwhile.
        with store.read() as view:
            snapshot = view.snapshot()
            rows = {name.value: count for name, count in view.rows().items()}
            newest = view.import_log(limit=1)
            try:
                store.env.copy(str(directory), compact=True, txn=view.txn)
            except lmdb.Error as error:
                raise SnapshotError(f"cannot copy {store_path} to {directory}: {error}") from error
    finally:
        store.close()
    try:
        data = directory / DATA_FILE
        _fsync(data)
        manifest = Manifest(
            generation=snapshot.generation,
            committed_at=snapshot.committed_at,
            schema_version=SCHEMA_VERSION,
            rows=rows,
            last_import=newest[0] if newest else None,
            created_at=time.time(),
            files={DATA_FILE: _digest(data)},
        )
        _write_atomically(directory / MANIFEST, manifest.to_json())
    except OSError as error:
        raise SnapshotError(f"cannot write the snapshot in {directory}: {error}") from error
    return manifest


def verify(directory: str | Path) -> Manifest:
    """Check a snapshot's files against its manifest, and the store inside against both."""
    directory = Path(directory)
    path = directory / MANIFEST
    try:
        manifest = Manifest.from_json(path.read_text(encoding="utf-8"), path)
    except FileNotFoundError as error:
        raise SnapshotError(
            f"{directory} has no {MANIFEST}: not a snapshot, or its export did not finish"
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise SnapshotError(f"cannot read {path}: {error}") from error
    for name, expected in manifest.files.items():
        try:
            actual = _digest(directory / name)
        except OSError as error:
            raise SnapshotError(f"cannot read {directory / name}: {error}") from error
        if actual.size != expected.size:
            raise SnapshotError(
                f"{directory / name} has {actual.size} bytes; the manifest says {expected.size}"
            )
        if actual.sha256 != expected.sha256:
            raise SnapshotError(
                f"{directory / name} has sha256 {actual.sha256}; "
                f"the manifest says {expected.sha256}"
            )
    if manifest.schema_version != SCHEMA_VERSION:
        raise SnapshotError(
            f"{directory} holds store schema {manifest.schema_version}; "
            f"this imeireg reads schema {SCHEMA_VERSION}"
        )
    try:
        store = Store.open(directory)
    except StoreError as error:
        raise SnapshotError(str(error)) from error
    try:
        with store.read() as view:
            snapshot = view.snapshot()
            rows = {name.value: count for name, count in view.rows().items()}
    finally:
        store.close()
    found = (snapshot.generation, snapshot.committed_at, rows)
    expected_state = (manifest.generation, manifest.committed_at, manifest.rows)
    if found != expected_state:
        raise SnapshotError(
            f"{directory / DATA_FILE} holds generation {snapshot.generation} "
            f"(committed at {snapshot.committed_at}, rows {rows}); the manifest says generation "
            f"{manifest.generation} (committed at {manifest.committed_at}, rows {manifest.rows})"
        )
    return manifest


def install(source: str | Path, link: str | Path) -> Manifest:
    """Verify a snapshot, then atomically point the symlink `link` at it."""
    link = Path(link)
    if link.exists() and not link.is_symlink():
        raise FileExistsError(f"{link} exists and is not a symlink; give a new path or a symlink")
    manifest = verify(source)
    temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    try:
        temporary.unlink(missing_ok=True)
        os.symlink(Path(source).resolve(), temporary)
        # rename(2) replaces the link in one step: a server resolving it sees the old or the new.
        os.replace(temporary, link)
        _fsync(link.parent)
    except OSError as error:
        raise SnapshotError(f"cannot point {link} at {source}: {error}") from error
    return manifest


def _digest(path: Path) -> FileDigest:
    with path.open("rb") as file:
        sha256 = hashlib.file_digest(file, "sha256").hexdigest()
        return FileDigest(os.fstat(file.fileno()).st_size, sha256)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    _fsync(path.parent)
