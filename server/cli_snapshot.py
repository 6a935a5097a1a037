"""The `imeireg snapshot export|verify|install` commands, over `store.snapshots`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from imeireg.cli_support import ExitCode, fail
from imeireg.server.store import StoreError
from imeireg.server.store.snapshots import Manifest, SnapshotError, export, install, verify


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


# A StoreError (a missing or unreadable store) exits as STORE, like a snapshot that fails.


def _export(args: argparse.Namespace) -> int:
    try:
        manifest = export(args.db, args.directory)
    except FileExistsError as error:
        return fail(str(error), ExitCode.USAGE)
    except (SnapshotError, StoreError) as error:
        return fail(str(error), ExitCode.STORE)
    print(
        f"exported generation {manifest.generation} of {args.db} to {args.directory}: "
        f"{manifest.size:,} bytes"
    )
    _print_files(manifest)
    return ExitCode.OK


def _verify(args: argparse.Namespace) -> int:
    try:
        manifest = verify(args.directory)
    except (SnapshotError, StoreError) as error:
        return fail(str(error), ExitCode.STORE)
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
        return fail(str(error), ExitCode.USAGE)
    except (SnapshotError, StoreError) as error:
        return fail(str(error), ExitCode.STORE)
    print(
        f"{args.link} -> {args.source.resolve()} (generation {manifest.generation})"
        + (f", was {previous}" if previous else "")
    )
    return ExitCode.OK


def _print_files(manifest: Manifest) -> None:
    for name, digest in manifest.files.items():
        print(f"  {name}  {digest.size:,} bytes  sha256 {digest.sha256}")
