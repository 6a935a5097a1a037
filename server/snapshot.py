"""Snapshots for replicas: export a consistent compacted copy of a store, verify it, install it.

A snapshot is a directory holding `data.mdb`, a compacted copy of the store taken from one
read transaction while servers serve and imports commit, and `manifest.json`, written last:
the generation copied, its rows per list and newest import, and each file's size and SHA-256.
A replica serves `--db CURRENT`, a symlink; `install` verifies a snapshot and repoints the
symlink at it in one rename, and each serving process switches to it (see app.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import lmdb

from imeireg.client.exit_codes import ExitCode
from imeireg.server.store import SCHEMA_VERSION, ImportRecord, Store, StoreError

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
        with store.read() as txn:
            snapshot = store.snapshot(txn)
            rows = {name.value: count for name, count in store.rows(txn).items()}
            newest = store.import_log(txn, limit=1)
            try:
                store.env.copy(str(directory), compact=True, txn=txn)
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
        with store.read() as txn:
            snapshot = store.snapshot(txn)
            rows = {name.value: count for name, count in store.rows(txn).items()}
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


# The `imeireg snapshot` commands.


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], default_db: Path
) -> None:
    """Register `imeireg snapshot export|verify|install` on the `imeireg` parser."""
    snapshot = commands.add_parser(
        "snapshot",
        help="export, verify and install snapshots of the store for replicas",
        description="A snapshot is a directory with a compacted copy of the store (data.mdb) "
        "and manifest.json (generation, rows per list, newest import, size and sha256 of each "
        "file). Replicas serve a symlink to one (`imeireg serve --db CURRENT`) and switch, "
        "without a restart, when `snapshot install` repoints it.",
    )
    actions = snapshot.add_subparsers(required=True, metavar="ACTION")

    exporting = actions.add_parser(
        "export",
        help="write a consistent compacted copy of the store and its manifest",
        description="Copy the newest committed generation of the store, compacted, into DIR, "
        "while servers keep serving and imports keep committing, then write DIR/manifest.json "
        f"last. Exit status: 0 done, {ExitCode.USAGE} DIR not empty, {ExitCode.STORE} the "
        "store is unreadable or the copy could not be written.",
    )
    exporting.add_argument("directory", type=Path, metavar="DIR", help="a new or empty directory")
    exporting.add_argument(
        "--db",
        type=Path,
        default=default_db,
        help=f"registry store to export (default: $IMEIREG_DB or {str(default_db)!r})",
    )
    exporting.set_defaults(func=_export)

    verifying = actions.add_parser(
        "verify",
        help="check a snapshot's files and store against its manifest",
        description="Recompute the size and sha256 of every file the manifest lists, open the "
        "store read-only and compare its schema, generation and rows with the manifest. "
        f"Exit status: 0 intact, {ExitCode.STORE} anything differs or is unreadable.",
    )
    verifying.add_argument("directory", type=Path, metavar="DIR", help="a snapshot directory")
    verifying.set_defaults(func=_verify)

    installing = actions.add_parser(
        "install",
        help="verify a snapshot, then atomically point a replica's symlink at it",
        description="Verify SRC, then replace the symlink CURRENT with one to SRC in one "
        "rename. Servers started with `--db CURRENT` switch to it within a second, without "
        "a restart or a failed call. Keep the previous snapshot until they have switched. "
        f"Exit status: 0 done, {ExitCode.USAGE} CURRENT is not a symlink, "
        f"{ExitCode.STORE} SRC fails verification.",
    )
    installing.add_argument("source", type=Path, metavar="SRC", help="a snapshot directory")
    installing.add_argument(
        "--link",
        type=Path,
        required=True,
        metavar="CURRENT",
        help="the symlink replicas serve (created if absent)",
    )
    installing.set_defaults(func=_install)


def _export(args: argparse.Namespace) -> int:
    try:
        manifest = export(args.db, args.directory)
    except FileExistsError as error:
        return _fail(str(error), ExitCode.USAGE)
    except SnapshotError as error:
        return _fail(str(error), ExitCode.STORE)
    print(
        f"exported generation {manifest.generation} of {args.db} to {args.directory}: "
        f"{manifest.size:,} bytes"
    )
    _print_files(manifest)
    return ExitCode.OK


def _verify(args: argparse.Namespace) -> int:
    try:
        manifest = verify(args.directory)
    except SnapshotError as error:
        return _fail(str(error), ExitCode.STORE)
    print(
        f"{args.directory}: intact snapshot of generation {manifest.generation}, "
        f"{manifest.size:,} bytes"
    )
    _print_files(manifest)
    return ExitCode.OK


def _install(args: argparse.Namespace) -> int:
    previous = os.path.realpath(args.link) if args.link.is_symlink() else None
    try:
        manifest = install(args.source, args.link)
    except FileExistsError as error:
        return _fail(str(error), ExitCode.USAGE)
    except SnapshotError as error:
        return _fail(str(error), ExitCode.STORE)
    print(
        f"{args.link} -> {args.source.resolve()} (generation {manifest.generation})"
        + (f", was {previous}" if previous else "")
    )
    return ExitCode.OK


def _print_files(manifest: Manifest) -> None:
    for name, digest in manifest.files.items():
        print(f"  {name}  {digest.size:,} bytes  sha256 {digest.sha256}")


def _fail(message: str, code: ExitCode) -> int:
    print(f"imeireg: {message}", file=sys.stderr)
    return code
