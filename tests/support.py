"""Test support: a small real registry written as DIRBS files, and real server processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imeireg.imei import with_check_digit
from imeireg.server.importers import import_file
from imeireg.server.store import ListName, Store

GSMA_HEADER = "TAC|Manufacturer|Model_Name|Bands|Allocation_Date|Device_Type|Brand_Name"
REGISTRATION_HEADER = (
    "approved_imei,make,model,status,model_number,brand_name,device_type,radio_interface,device_id"
)

# TACs of the small registry: two allocated, one barred model, one never allocated.
PHONE_TAC = "35332211"
OTHER_TAC = "01234567"  # a reporting-body-01 TAC: leading zero kept
BARRED_TAC = "86000001"
UNALLOCATED_TAC = "99999999"
# The home network's MCCs as `RegistryIndex.facts` takes them: Indonesia's, as the default policy.
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
    return [sys.executable, "-m", "imeireg.server.cli", *args]


@dataclass
class ServerProcess:
    """An `imeireg serve` process; `target` is its address."""

    process: subprocess.Popen[str]
    target: str

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout)

    def log(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read()


def start_server(
    db: Path, *extra: str, timeout: float = 20, port: int | None = None
) -> ServerProcess:
    """Start `imeireg serve` on `port` (default: a free one) and wait until its health
    service says SERVING."""
    port = port or free_port()
    process = subprocess.Popen(
        imeireg_command("serve", "--db", str(db), "--port", str(port), *extra),
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    server = ServerProcess(process, f"127.0.0.1:{port}")
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"imeireg serve exited {process.returncode}: {server.log()}")
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return server
            except grpc.RpcError:
                time.sleep(0.05)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"imeireg serve did not become SERVING within {timeout} s")


def build_small_registry(directory: Path) -> SmallRegistry:
    db = directory / "registry"
    store = Store.create(db)
    try:
        for name, path in list_files(directory, SmallRegistry).items():
            import_file(store, name, path)
    finally:
        store.close()
    return SmallRegistry(db)
