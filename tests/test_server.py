"""End to end over gRPC: a real server process on a free port, answering from a real LMDB store."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Queue

import grpc
import lmdb
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from support import (
    PHONE_TAC,
    ServerProcess,
    SmallRegistry,
    imei,
    imeireg_command,
    start_server,
    write,
)

from imeireg.cli_support import ExitCode
from imeireg.server.imports.full import import_file
from imeireg.server.model import ListName
from imeireg.server.store import Store
from imeireg.v1 import legality_pb2 as pb
from imeireg.v1 import legality_pb2_grpc as pb_grpc

WHITELISTED = pb.EQUIPMENT_STATUS_WHITELISTED
GREYLISTED = pb.EQUIPMENT_STATUS_GREYLISTED
BLACKLISTED = pb.EQUIPMENT_STATUS_BLACKLISTED
# A new generation is answered from within the watcher's poll and build: well under a
# second here; a loaded machine may take far longer, and only a broken server never does.
GENERATION_SWITCH_WAIT = 60.0
SHUTDOWN_WAIT = 60.0


@pytest.fixture
def stub(shared_server: ServerProcess) -> Iterator[pb_grpc.LegalityServiceStub]:
    with grpc.insecure_channel(shared_server.target) as channel:
        yield pb_grpc.LegalityServiceStub(channel)


def reason_names(bits: int) -> set[str]:
    return {
        name.removeprefix("REASON_") for name, number in pb.Reason.items() if bits & (1 << number)
    }


def check(
    stub: pb_grpc.LegalityServiceStub, imeis: list[str], imsis: list[str] | None = None
) -> pb.CheckImeisResponse:
    response: pb.CheckImeisResponse = stub.CheckImeis(
        pb.CheckImeisRequest(imeis=imeis, imsis=imsis or []), timeout=60
    )
    return response


def bad_request(error: grpc.RpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)
    assert status is not None
    details = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(details)
    return [(v.field, v.description) for v in details.field_violations]


R = SmallRegistry
CASES = [
    ("registered", R.registered, "", WHITELISTED, {"REGISTERED"}),
    ("registered, TAC with a leading 0", R.registered_other_tac, "", WHITELISTED, {"REGISTERED"}),
    ("provisional", R.provisional, "", GREYLISTED, {"REGISTRATION_PROVISIONAL"}),
    ("not registered", R.unregistered, "", BLACKLISTED, {"NOT_REGISTERED"}),
    ("stolen", R.stolen, "", BLACKLISTED, {"REGISTERED", "STOLEN"}),
    ("barred", R.barred, "", BLACKLISTED, {"REGISTERED", "BARRED"}),
    (
        "golden beats stolen",
        R.golden_and_stolen,
        "",
        WHITELISTED,
        {"REGISTERED", "STOLEN", "GOLDEN"},
    ),
    ("barred TAC", R.barred_tac, "", BLACKLISTED, {"REGISTERED", "TAC_BARRED"}),
    ("unallocated TAC", R.unallocated_tac, "", BLACKLISTED, {"REGISTERED", "TAC_UNALLOCATED"}),
    ("paired with its IMSI", R.paired, R.paired_imsi, WHITELISTED, {"NOT_REGISTERED", "PAIRED"}),
    ("paired, other IMSI", R.paired, "510109999999999", BLACKLISTED, {"NOT_REGISTERED"}),
    (
        "inbound roamer",
        R.unregistered,
        "525011234567890",
        WHITELISTED,
        {"NOT_REGISTERED", "INBOUND_ROAMER"},
    ),
    (
        "roamer, stolen",
        R.stolen,
        "525011234567890",
        BLACKLISTED,
        {"REGISTERED", "STOLEN", "INBOUND_ROAMER"},
    ),
    ("14-digit body", R.registered[:14], "", WHITELISTED, {"REGISTERED"}),
    ("IMEISV", R.registered[:14] + "42", "", WHITELISTED, {"REGISTERED"}),
    ("PEI imei-", "imei-" + R.registered, "", WHITELISTED, {"REGISTERED"}),
    ("PEI imeisv-", "imeisv-" + R.registered[:14] + "01", "", WHITELISTED, {"REGISTERED"}),
    (
        "spare 0 for the check digit",
        R.registered[:14] + ("0" if R.registered[-1] != "0" else "1"),
        "",
        WHITELISTED,
        {"REGISTERED", "CHECK_DIGIT_MISMATCH"},
    ),
    ("malformed", "35332211-000001", "", BLACKLISTED, {"INVALID_FORMAT"}),
    ("empty", "", "", BLACKLISTED, {"INVALID_FORMAT"}),
]


@pytest.mark.parametrize(
    ("given", "imsi", "status", "reasons"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_each_list_has_its_effect_on_the_status(
    stub: pb_grpc.LegalityServiceStub, given: str, imsi: str, status: int, reasons: set[str]
) -> None:
    response = check(stub, [given], [imsi] if imsi else None)
    assert (list(response.statuses), reason_names(response.reasons[0])) == ([status], reasons)
    assert response.snapshot.generation == 7


def test_a_batch_is_answered_in_request_order(stub: pb_grpc.LegalityServiceStub) -> None:
    imeis = [case[1] for case in CASES] * 3
    imsis = [case[2] for case in CASES] * 3
    batch = check(stub, imeis, imsis)
    singles = [check(stub, [i], [s]) for i, s in zip(imeis, imsis, strict=True)]
    assert list(batch.statuses) == [s.statuses[0] for s in singles]
    assert list(batch.reasons) == [s.reasons[0] for s in singles]
    assert len(batch.statuses) == len(imeis)


def test_the_largest_batch_is_answered(stub: pb_grpc.LegalityServiceStub) -> None:
    imeis = [imei(PHONE_TAC, serial) for serial in range(10_000)]
    response = check(stub, imeis)
    assert len(response.statuses) == 10_000
    assert response.statuses[1] == WHITELISTED
    assert response.statuses[2] == GREYLISTED
    assert response.statuses[9_999] == BLACKLISTED


@pytest.mark.parametrize("count", [0, 10_001])
def test_empty_and_oversized_batches_are_invalid_arguments(
    stub: pb_grpc.LegalityServiceStub, count: int
) -> None:
    with pytest.raises(grpc.RpcError) as failure:
        check(stub, [R.registered] * count)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(failure.value) == [("imeis", f"{count} IMEIs given; 1 to 10000 allowed")]


def test_imsis_must_be_aligned_with_the_imeis(stub: pb_grpc.LegalityServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as failure:
        check(stub, [R.registered, R.stolen], ["510101234567890"])
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(failure.value) == [
        ("imsis", "1 IMSIs given for 2 IMEIs; give none or one per IMEI")
    ]


def test_a_malformed_imsi_is_named_by_its_position(stub: pb_grpc.LegalityServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as failure:
        check(stub, [R.registered, R.stolen, R.paired], ["", "51010x", "5101"])
    assert bad_request(failure.value) == [
        ("imsis[1]", "'51010x' is not an IMSI (6 to 15 digits, or empty for none)"),
        ("imsis[2]", "'5101' is not an IMSI (6 to 15 digits, or empty for none)"),
    ]


def stream_request(imeis: list[str]) -> pb.StreamCheckImeisRequest:
    return pb.StreamCheckImeisRequest(check=pb.CheckImeisRequest(imeis=imeis))


def test_the_stream_answers_each_request_in_order(stub: pb_grpc.LegalityServiceStub) -> None:
    batches = [
        [R.registered],
        [R.stolen, R.provisional],
        [R.unregistered] * 3,
        [R.golden_and_stolen],
    ]
    answers = list(stub.StreamCheckImeis(iter(map(stream_request, batches)), timeout=60))
    assert [list(a.check.statuses) for a in answers] == [
        [WHITELISTED],
        [BLACKLISTED, GREYLISTED],
        [BLACKLISTED] * 3,
        [WHITELISTED],
    ]


def test_an_invalid_request_ends_the_stream_after_the_answers_before_it(
    stub: pb_grpc.LegalityServiceStub,
) -> None:
    answers = stub.StreamCheckImeis(
        iter([stream_request([R.registered]), stream_request([])]), timeout=60
    )
    assert list(next(answers).check.statuses) == [WHITELISTED]
    with pytest.raises(grpc.RpcError) as failure:
        next(answers)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(failure.value) == [("check.imeis", "0 IMEIs given; 1 to 10000 allowed")]


def test_tac_lookup_gives_models_and_marks_unknown_tacs(stub: pb_grpc.LegalityServiceStub) -> None:
    response = stub.LookupTacs(
        pb.LookupTacsRequest(tacs=[PHONE_TAC, "99999999", "86000001", "01234567"]), timeout=60
    )
    known, unknown, barred, zero = response.tacs
    assert (known.tac, known.allocated, known.barred) == (PHONE_TAC, True, False)
    assert (known.manufacturer, known.model_name, known.brand_name) == (
        "Acme Devices",
        "A1",
        "Acme",
    )
    assert (known.device_type, known.bands, known.allocation_date) == (
        "Smartphone",
        "GSM 900,LTE",
        "2019-03-15",
    )
    assert unknown == pb.TacInfo(tac="99999999", allocated=False)
    assert (barred.allocated, barred.barred) == (True, True)
    assert (zero.tac, zero.model_name) == ("01234567", "Z0")


@pytest.mark.parametrize(
    ("tacs", "violation"),
    [
        ([], ("tacs", "0 TACs given; 1 to 1000 allowed")),
        (["35332211"] * 1001, ("tacs", "1001 TACs given; 1 to 1000 allowed")),
        (["35332211", "3533221"], ("tacs[1]", "'3533221' is not a TAC (8 digits)")),
    ],
)
def test_tac_lookup_limits(
    stub: pb_grpc.LegalityServiceStub, tacs: list[str], violation: tuple[str, str]
) -> None:
    with pytest.raises(grpc.RpcError) as failure:
        stub.LookupTacs(pb.LookupTacsRequest(tacs=tacs), timeout=60)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(failure.value) == [violation]


def test_registry_info_describes_the_snapshot(stub: pb_grpc.LegalityServiceStub) -> None:
    info = stub.GetRegistryInfo(pb.GetRegistryInfoRequest(), timeout=60)
    assert info.schema_version == 2
    assert info.snapshot.generation == 7
    assert info.tac_count == 3
    assert {pb.RegistryList.Name(entry.list): entry.rows for entry in info.lists} == {
        "REGISTRY_LIST_GSMA_TAC": 3,
        "REGISTRY_LIST_REGISTRATION": 8,
        "REGISTRY_LIST_STOLEN": 2,
        "REGISTRY_LIST_BARRED": 1,
        "REGISTRY_LIST_BARRED_TAC": 1,
        "REGISTRY_LIST_GOLDEN": 1,
        "REGISTRY_LIST_PAIRING": 1,
    }
    newest = info.recent_imports[0]
    assert [record.generation for record in info.recent_imports] == [7, 6, 5, 4, 3, 2, 1]
    assert (newest.list, newest.mode, newest.file_name, newest.rows) == (
        pb.REGISTRY_LIST_PAIRING,
        pb.IMPORT_MODE_FULL,
        "pairing.csv",
        1,
    )
    assert len(newest.sha256) == 64
    assert newest.commit_time == info.snapshot.commit_time


def test_an_import_committed_while_serving_is_answered_from_soon_after_and_only_then(
    tmp_path: Path, small_registry: SmallRegistry, server: ServerProcess
) -> None:
    """The watcher builds the new generation's state off the event loop and swaps it in:
    every answer meanwhile comes whole from the old generation, every one after from the
    new, and the server says how long the build took and how late its loop ran."""
    stub = pb_grpc.LegalityServiceStub(grpc.insecure_channel(server.target))
    before = check(stub, [R.registered, R.stolen])
    assert list(before.statuses) == [WHITELISTED, BLACKLISTED]
    stolen = write(tmp_path / "stolen2.csv", ["imei,reporting_date,status", f"{R.registered},,"])
    store = Store.create(small_registry.db)
    try:
        import_file(store, ListName.STOLEN, stolen, force=True)
    finally:
        store.close()
    deadline = time.monotonic() + GENERATION_SWITCH_WAIT
    while (after := check(stub, [R.registered, R.stolen])).snapshot == before.snapshot:
        assert list(after.statuses) == [WHITELISTED, BLACKLISTED]
        assert time.monotonic() < deadline, "the new generation was never answered from"
        time.sleep(0.05)
    assert list(after.statuses) == [BLACKLISTED, WHITELISTED]
    assert reason_names(after.reasons[0]) == {"REGISTERED", "STOLEN"}
    assert after.snapshot.generation == before.snapshot.generation + 1
    server.stop()
    assert re.search(
        r"now answering from generation 8 \(was 7\): built in \d+ ms; "
        r"the event loop's worst lag meanwhile [\d.]+ ms",
        server.log(),
    )


def test_health_is_serving_then_not_serving_while_draining(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        service = "imeireg.v1.LegalityService"
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == (
            health_pb2.HealthCheckResponse.SERVING
        )
        watch = health.Watch(health_pb2.HealthCheckRequest(service=service), timeout=60)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        server.process.send_signal(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
    # SIGTERM was sent: the server exits by itself (a second signal could meet it after
    # its loop has closed, and kill it).
    assert server.process.wait(SHUTDOWN_WAIT) == 0


def test_sigterm_drains_calls_in_flight_then_exits_0(server: ServerProcess) -> None:
    requests: Queue[pb.StreamCheckImeisRequest | None] = Queue()

    def feed() -> Iterator[pb.StreamCheckImeisRequest]:
        while (request := requests.get()) is not None:
            yield request

    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.LegalityServiceStub(channel)
        answers = stub.StreamCheckImeis(feed(), timeout=SHUTDOWN_WAIT)
        requests.put(stream_request([R.registered]))
        assert list(next(answers).check.statuses) == [WHITELISTED]
        server.process.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as refused:
            for _ in range(100):  # until the server has begun to drain
                with grpc.insecure_channel(server.target) as fresh:
                    check(pb_grpc.LegalityServiceStub(fresh), [R.stolen])
        # New calls are turned away (CANCELLED when one races the start of the drain).
        assert refused.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        requests.put(stream_request([R.stolen]))
        assert list(next(answers).check.statuses) == [BLACKLISTED]
        requests.put(None)
        assert list(answers) == []
        assert answers.code() == grpc.StatusCode.OK
    assert server.process.wait(SHUTDOWN_WAIT) == 0
    log = server.log()
    assert "draining" in log and "stopped" in log


def test_several_workers_share_the_port(small_registry: SmallRegistry) -> None:
    server = start_server(small_registry.db, "--workers", "2")
    try:
        results = []

        def ask() -> None:
            with grpc.insecure_channel(server.target) as channel:
                stub = pb_grpc.LegalityServiceStub(channel)
                results.append(list(check(stub, [R.registered, R.stolen]).statuses))

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [[WHITELISTED, BLACKLISTED]] * 8
    finally:
        assert server.stop() == 0
    assert server.log().count("serving ") == 2


def test_a_policy_file_changes_the_statuses(tmp_path: Path, small_registry: SmallRegistry) -> None:
    policy = write(
        tmp_path / "policy.toml",
        [
            'home_mccs = ["510", "525"]',
            'default = "WHITELISTED"',
            "[[rules]]",
            'any = ["STOLEN"]',
            'status = "BLACKLISTED"',
        ],
    )
    server = start_server(small_registry.db, "--policy", str(policy))
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.LegalityServiceStub(channel)
            response = check(stub, [R.unregistered, R.golden_and_stolen], ["525011234567890", ""])
        assert list(response.statuses) == [WHITELISTED, BLACKLISTED]
        assert reason_names(response.reasons[0]) == {"NOT_REGISTERED"}  # 525 is home now
    finally:
        server.stop()


def serve_once(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        imeireg_command("serve", "--port", "0", *args),
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_bad_policy_file_stops_the_start(tmp_path: Path, small_registry: SmallRegistry) -> None:
    policy = write(
        tmp_path / "policy.toml", ["[[rules]]", 'any = ["STOLN"]', 'status = "BLACKLISTED"']
    )
    result = serve_once("--db", str(small_registry.db), "--policy", str(policy))
    assert result.returncode == ExitCode.BAD_INPUT
    assert "rule 1: any: unknown fact 'STOLN'" in result.stderr


def test_a_missing_store_stops_the_start_with_one_line(tmp_path: Path) -> None:
    result = serve_once("--db", str(tmp_path / "nowhere"))
    assert result.returncode == ExitCode.STORE
    assert result.stderr == f"imeireg: no registry store at {tmp_path / 'nowhere'} " + (
        "(create one with `imeireg import` or `imeireg demo`)\n"
    )


def test_a_corrupt_store_stops_the_start_with_one_line(tmp_path: Path) -> None:
    db = tmp_path / "db"
    db.mkdir()
    (db / "data.mdb").write_bytes(b"\x00garbage" * 1024)
    result = serve_once("--db", str(db))
    assert result.returncode == ExitCode.STORE
    assert result.stderr.startswith(f"imeireg: {db} is not a readable LMDB store")
    assert len(result.stderr.splitlines()) == 1


def test_a_store_of_another_schema_stops_the_start(small_registry: SmallRegistry) -> None:
    env = lmdb.open(str(small_registry.db), max_dbs=16)
    with env.begin(write=True) as txn:
        txn.put(b"schema_version", b"99", db=env.open_db(b"meta", txn=txn))
    env.close()
    result = serve_once("--db", str(small_registry.db))
    assert result.returncode == ExitCode.STORE
    assert result.stderr == (
        f"imeireg: {small_registry.db} has store schema 99; this imeireg reads schema 2\n"
    )


def test_reflection_lists_the_services(shared_server: ServerProcess) -> None:
    with grpc.insecure_channel(shared_server.target) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = reflection.ServerReflectionInfo(iter([request]), timeout=60)
    names = {service.name for service in answer.list_services_response.service}
    assert {"imeireg.v1.LegalityService", "grpc.health.v1.Health"} <= names


def test_a_message_over_the_size_limit_is_refused(stub: pb_grpc.LegalityServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as failure:
        check(stub, ["x" * 200] * 10_000)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_call_still_open_at_its_deadline_fails_with_deadline_exceeded(
    stub: pb_grpc.LegalityServiceStub,
) -> None:
    """A stream the client never closes cannot end before its deadline, however fast the
    server: a short deadline on a unary call was met by a fast answer on a busy machine."""
    never_closed = threading.Event()

    def requests() -> Iterator[pb.StreamCheckImeisRequest]:
        yield stream_request([R.registered])
        never_closed.wait(SHUTDOWN_WAIT)

    answers = stub.StreamCheckImeis(requests(), timeout=1.0)
    with pytest.raises(grpc.RpcError) as failure:
        for answer in answers:
            assert list(answer.check.statuses) == [WHITELISTED]
    never_closed.set()
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
