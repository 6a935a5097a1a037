"""Test support: a small real registry written as DIRBS files, and real server processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imeireg.imei import with_check_digit
from imeireg.server.imports.full import import_file
from imeireg.server.model import ListName
from imeireg.server.store import Store

GSMA_HEADER = "TAC|Manufacturer|Model_Name|Bands|Allocation_Date|Device_Type|Brand_Name"
REGISTRATION_HEADER = (
    "approved_imei,make,model,status,model_number,brand_name,device_type,radio_interface,device_id"
)

# TACs of the small registry: two allocated, one barred model, one never allocated.
PHONE_TAC = "35332211"
OTHER_TAC = "01234567"  # a reporting-body-01 TAC: leading zero kept
BARRED_TAC = "86000001"
UNALLOCATED_TAC = "99999999"
# The home network's MCCs as the default policy has them (its `home_mcc_numbers`, which
# the check in `imeireg.server.check.verdict` hands to the fact search): Indonesia's.
HOME_MCCS = np.array([510], dtype=np.int64)


def imei(tac: str, serial: int) -> str:
    """The 15-digit IMEI with TAC `tac` and serial `serial`."""
    return with_check_digit(f"{tac}{serial:06d}")


@dataclass(frozen=True)
class SmallRegistry:
    """IMEIs of the small registry, one per fact, named for what they show."""

    db: Path
    registered = imei(PHONE_TAC, 1)
    registered_other_tac = imei(OTHER_TAC, 500)
    provisional = imei(PHONE_TAC, 2)
    unregistered = imei(PHONE_TAC, 999_999)
    stolen = imei(PHONE_TAC, 3)
    barred = imei(PHONE_TAC, 4)
    golden_and_stolen = imei(PHONE_TAC, 5)
    paired = imei(PHONE_TAC, 6)  # not registered; paired with PAIRED_IMSI
    paired_imsi = "510101234567890"
    barred_tac = imei(BARRED_TAC, 1)  # registered, but its model is barred
    unallocated_tac = imei(UNALLOCATED_TAC, 1)  # registered, TAC not allocated


Answer = tuple[str, str, tuple[str, ...]]

#: Every fact of the small registry and an invalid IMEI, with the default policy's verdicts.
SMALL_REGISTRY_ANSWERS: list[Answer] = [
    (SmallRegistry.registered, "WHITELISTED", ("REGISTERED",)),
    (SmallRegistry.registered_other_tac, "WHITELISTED", ("REGISTERED",)),
    (SmallRegistry.provisional, "GREYLISTED", ("REGISTRATION_PROVISIONAL",)),
    (SmallRegistry.unregistered, "BLACKLISTED", ("NOT_REGISTERED",)),
    (SmallRegistry.stolen, "BLACKLISTED", ("REGISTERED", "STOLEN")),
    (SmallRegistry.barred, "BLACKLISTED", ("REGISTERED", "BARRED")),
    (SmallRegistry.golden_and_stolen, "WHITELISTED", ("REGISTERED", "STOLEN", "GOLDEN")),
    (SmallRegistry.barred_tac, "BLACKLISTED", ("TAC_BARRED", "REGISTERED")),
    (SmallRegistry.unallocated_tac, "BLACKLISTED", ("TAC_UNALLOCATED", "REGISTERED")),
    ("not-an-imei", "BLACKLISTED", ("INVALID_FORMAT",)),
]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def registration_row(imei_text: str, status: str = "") -> str:
    return f"{imei_text},Acme,A1,{status},A1-01,Acme,Smartphone,LTE,dev"


def list_files(directory: Path, registry: type[SmallRegistry]) -> dict[ListName, Path]:
    """DIRBS-format files of every list of the small registry."""
    r = registry
    return {
        ListName.GSMA_TAC: write(
            directory / "gsma.csv",
            [
                GSMA_HEADER,
                f"{PHONE_TAC}|Acme Devices|A1|GSM 900,LTE|15-Mar-2019|Smartphone|Acme",
                f"{OTHER_TAC}|Zero Mobile|Z0|LTE|01-Jan-2020|Feature phone|Zero",
                f"{BARRED_TAC}|Knockoff|K1|GSM 900|02-Feb-2018|Smartphone|",
            ],
        ),
        ListName.REGISTRATION: write(
            directory / "registration.csv",
            [
                REGISTRATION_HEADER,
                registration_row(r.registered),
                registration_row(r.registered_other_tac, "whitelist"),
                registration_row(r.provisional, "provisional"),
                registration_row(r.stolen),
                registration_row(r.barred),
                registration_row(r.golden_and_stolen),
                registration_row(r.barred_tac),
                registration_row(r.unallocated_tac),
            ],
        ),
        ListName.STOLEN: write(
            directory / "stolen.csv",
            [
                "imei,reporting_date,status",
                f"{r.stolen},20240102,",
                f"{r.golden_and_stolen},,blacklist",
            ],
        ),
        ListName.BARRED: write(directory / "barred.csv", ["imei", r.barred]),
        ListName.BARRED_TAC: write(directory / "barred_tac.csv", ["tac", BARRED_TAC]),
        ListName.GOLDEN: write(directory / "golden.csv", ["golden_imei", r.golden_and_stolen]),
        ListName.PAIRING: write(
            directory / "pairing.csv",
            ["imei,imsi,msisdn", f"{r.paired},{r.paired_imsi},6281234567"],
        ),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def imeireg_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "imeireg.cli", *args]


#: How long a server may take to become SERVING: generous, for a loaded machine. A
#: start-up waits up to this bound, polling; no test asserts that a start was quick.
START_TIMEOUT = 120.0
#: How long a server may drain after SIGTERM before its process group is killed.
STOP_GRACE = 60.0
#: How long a killed process may take to be gone.
KILL_TIMEOUT = 30.0
#: The start-up poll reconnects with short backoffs: gRPC's own grow to 2 minutes, and a
#: server that came up during one would be seen late.
HEALTH_POLL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]

#: The process group of every server started, so that the session's leak check
#: (conftest.py) also finds workers orphaned by the death of their supervisor.
STARTED_GROUPS: set[int] = set()


@dataclass
class ServerProcess:
    """An `imeireg serve` process, leader of its own process group; `target` is its address.

    `imeireg serve --workers N` forks its workers into that group, so `stop()` ends them
    all, even those a dead supervisor left behind.
    """

    process: subprocess.Popen[str]
    target: str

    def stop(self, signum: int = signal.SIGTERM, grace: float = STOP_GRACE) -> int:
        """Send `signum` to the server and wait up to `grace` s for it to exit, then SIGKILL
        its process group; whatever is left of the group once it is gone is killed too.

        Returns the server's exit code (negative: the signal that ended it).
        """
        pid = self.process.pid
        if self.process.returncode is None and not _exited(pid):
            # Not Popen.send_signal: it would reap a server that has just exited, and its
            # process group could then be another's by the time it is killed below.
            os.kill(pid, signum)
            os.kill(pid, signal.SIGCONT)  # a frozen (SIGSTOP) server must hear it too
            if not _wait_exited(pid, grace):
                _kill_group(pid)
                _wait_exited(pid, KILL_TIMEOUT)
        # Whatever is left of the group (workers of a supervisor that died) goes too: unless
        # reaped before this call, the server is a zombie until reaped below, so the group
        # id is still its own.
        _kill_group(pid)
        return self.process.wait(KILL_TIMEOUT)

    def log(self) -> str:
        """The server's stderr up to its end: once the server and its group are gone."""
        assert self.process.stderr is not None
        return self.process.stderr.read()


def _exited(pid: int) -> bool:
    """Whether the child `pid` has exited; it is left for its Popen to reap."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped already
        return True


def _wait_exited(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _exited(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError):  # no process left in the group
        os.killpg(pgid, signal.SIGKILL)


def start_server(
    db: Path, *extra: str, timeout: float = START_TIMEOUT, port: int | None = None
) -> ServerProcess:
    """Start `imeireg serve` on `port` (default: a free one) in a process group of its own,
    and wait up to `timeout` s until its health service says SERVING.

    The caller is given a running server or none: a server that does not start is killed,
    with its group, before the error is raised.
    """
    port = port or free_port()
    process = subprocess.Popen(
        imeireg_command("serve", "--db", str(db), "--port", str(port), *extra),
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    STARTED_GROUPS.add(process.pid)
    server = ServerProcess(process, f"127.0.0.1:{port}")
    try:
        problem = _wait_until_serving(server, timeout)
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    if problem is not None:
        code = server.stop(signal.SIGKILL)
        raise RuntimeError(f"imeireg serve {problem} (exit code {code}): {server.log()}")
    return server


def _wait_until_serving(server: ServerProcess, timeout: float) -> str | None:
    """None once the server says SERVING, else what went wrong."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(server.target, options=HEALTH_POLL_OPTIONS) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if _exited(server.process.pid):
                return "exited"
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return None
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    return f"did not become SERVING within {timeout} s"


@contextmanager
def running_server(
    db: Path, *extra: str, timeout: float = START_TIMEOUT, port: int | None = None
) -> Iterator[ServerProcess]:
    """A server for the `with` block, stopped at its end whatever happens in it."""
    server = start_server(db, *extra, timeout=timeout, port=port)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def running_servers(dbs: Sequence[Path]) -> Iterator[list[ServerProcess]]:
    """A server on each store, started side by side, all stopped at the end of the block.

    Should one fail to start, those that did are stopped before the error is raised.
    """
    started: list[ServerProcess] = []

    def start(db: Path) -> ServerProcess:
        server = start_server(db)
        started.append(server)  # at once: should another start fail, this one is stopped
        return server

    def stop_started() -> None:
        with ExitStack() as stops:  # every one is stopped, even if stopping one fails
            for server in started:
                stops.callback(server.stop)

    with ExitStack() as stack:
        stack.callback(stop_started)
        with ThreadPoolExecutor(len(dbs)) as pool:  # waits for every start, failed or not
            servers = list(pool.map(start, dbs))
        yield servers


def build_small_registry(directory: Path) -> SmallRegistry:
    db = directory / "registry"
    store = Store.create(db)
    try:
        for name, path in list_files(directory, SmallRegistry).items():
            import_file(store, name, path)
    finally:
        store.close()
    return SmallRegistry(db)
