"""PostgreSQL 15 as a peer: Debian's server in a temporary cluster on loopback, a DIRBS-like table.

`registration_list(imei_norm text primary key, status text)` holds the
registration list as DIRBS keeps it (imei_norm = the 14-digit body), loaded with
COPY; a batch is one `imei_norm = ANY($1)` query. It answers membership only.
PostgreSQL refuses to run as root, so as root the cluster belongs to the
`postgres` user that Debian's package creates.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from benchmarks.registry import Registry
from benchmarks.servers import LOOPBACK, free_port, pinned, stop
from benchmarks.textrows import Choice, Digits, TextTable, render

COPY_ROWS = 1 << 18
_USER = "bench"
_SYSTEM_USER = "postgres"
_START_TIMEOUT = 60.0
_STATUSES = TextTable(("", "whitelist", "provisional"))
_SETTINGS = {
    "listen_addresses": LOOPBACK,
    "fsync": "off",  # a benchmark cluster: nothing here must survive a crash
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "512MB",
    "max_connections": "50",
}


@dataclass
class PostgresPeer:
    conninfo: str
    version: str = ""
    load_seconds: float = 0.0
    rows: int = 0

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.conninfo, autocommit=True)

    def table_bytes(self) -> int:
        """pg_total_relation_size of the table: heap, primary key index and TOAST."""
        with self.connect() as connection:
            row = connection.execute(
                "SELECT pg_total_relation_size('registration_list')"
            ).fetchone()
        return int(row[0]) if row else 0

    def load(self, registry: Registry) -> None:
        """COPY the registration list, then add the primary key and analyse, as a bulk load does."""
        began = time.perf_counter()
        with self.connect() as connection:
            connection.execute("DROP TABLE IF EXISTS registration_list")
            connection.execute(
                "CREATE TABLE registration_list (imei_norm text NOT NULL, status text)"
            )
            with (
                connection.cursor() as cursor,
                cursor.copy(
                    "COPY registration_list (imei_norm, status) FROM STDIN (FORMAT csv)"
                ) as copy,
            ):
                for chunk in _registration_csv(registry):
                    copy.write(chunk)
            connection.execute("ALTER TABLE registration_list ADD PRIMARY KEY (imei_norm)")
            connection.execute("VACUUM ANALYZE registration_list")
            row = connection.execute("SELECT count(*) FROM registration_list").fetchone()
            self.rows = int(row[0]) if row else 0
        self.load_seconds = time.perf_counter() - began


def _registration_csv(registry: Registry) -> Iterator[bytes]:
    whitelist = np.where(registry.complete_whitelist, 1, 0)
    for run, bodies in registry.complete.chunks(COPY_ROWS):
        yield render([Digits(bodies, 14), Choice(_STATUSES, whitelist[run])])
    provisional = registry.provisional
    for start in range(0, len(provisional), COPY_ROWS):
        bodies = provisional[start : start + COPY_ROWS]
        yield render([Digits(bodies, 14), Choice(_STATUSES, np.full(len(bodies), 2))])


def binaries() -> Path | None:
    """The newest installed PostgreSQL server's bin directory (Debian's layout)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_major_version)
    return Path(found[-1]).parent if found else None


def _major_version(path: str) -> int:
    major = Path(path).parent.parent.name
    return int(major) if major.isdigit() else 0


def postgres_version() -> str:
    bin_dir = binaries()
    if bin_dir is None:
        return "not installed"
    return subprocess.run(
        [str(bin_dir / "postgres"), "--version"], check=False, capture_output=True, text=True
    ).stdout.strip()


@contextmanager
def postgres_server(cpus: Sequence[int]) -> Iterator[PostgresPeer]:
    """A new cluster on a free loopback port, socket in its temporary directory; removed after."""
    bin_dir = binaries()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    as_root = os.geteuid() == 0
    user = _SYSTEM_USER if as_root else None
    directory = Path(tempfile.mkdtemp(prefix="imeireg-bench-postgres-"))
    try:
        if as_root:
            account = pwd.getpwnam(_SYSTEM_USER)
            os.chown(directory, account.pw_uid, account.pw_gid)
        data = directory / "data"
        subprocess.run(
            [
                str(bin_dir / "initdb"), "-D", str(data), "-U", _USER, "-A", "trust",
                "-E", "UTF8", "--locale=C", "--no-sync",
            ],
            check=True, capture_output=True, user=user, group=user,
        )  # fmt: skip
        port = free_port()
        settings = [arg for key, value in _SETTINGS.items() for arg in ("-c", f"{key}={value}")]
        command = pinned(
            [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(directory),
             *settings],
            cpus,
        )  # fmt: skip
        log = directory / "postgres.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, user=user, group=user
            )
        try:
            peer = PostgresPeer(f"host={LOOPBACK} port={port} user={_USER} dbname=postgres")
            _wait_ready(peer, process, log)
            yield peer
        finally:
            stop(process, signal.SIGINT)  # fast shutdown: clients are gone, data is scratch
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _wait_ready(peer: PostgresPeer, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited: {log.read_text()[-500:]}")
        try:
            with peer.connect() as connection:
                row = connection.execute("SHOW server_version").fetchone()
            peer.version = f"PostgreSQL {row[0] if row else '?'}"
            return
        except psycopg.OperationalError:
            time.sleep(0.1)
    raise RuntimeError(f"postgres did not accept connections within {_START_TIMEOUT:.0f} s")
