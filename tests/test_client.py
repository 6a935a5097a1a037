"""imeireg.client against a real `imeireg serve` over a registry built with `imeireg import`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, date
from itertools import count, islice

import grpc
import pytest
from support import (
    BARRED_TAC,
    OTHER_TAC,
    PHONE_TAC,
    SMALL_REGISTRY_ANSWERS,
    UNALLOCATED_TAC,
    SmallRegistry,
    free_port,
)

from imeireg.client import AsyncClient, Client, ImeiregError, Verdict
from imeireg.client.channel import channel_target
from imeireg.client.models import reason_names

R = SmallRegistry
ROAMING_IMSI = "310150123456789"  # MCC 310: a US SIM, not a home MCC of the default policy
# The deadline of a call to a port nobody listens on. Its retries fail fast (connection
# refused), so it ends UNAVAILABLE long before; the bound only has to outlast them on a
# loaded machine, where an expired deadline would end it DEADLINE_EXCEEDED instead.
UNREACHABLE_TIMEOUT = 60


@pytest.fixture
def client(target: str) -> Iterator[Client]:
    with Client(target) as connected:
        yield connected


def answers(verdicts: list[Verdict]) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(v.imei, v.status, v.reasons) for v in verdicts]


# Every fact of the small registry, with the verdict of the default (whitelist) policy.
MIXED = SMALL_REGISTRY_ANSWERS
MIXED_IMEIS = [imei for imei, _, _ in MIXED]


def test_check_answers_every_imei_in_request_order(client: Client) -> None:
    verdicts = client.check(MIXED_IMEIS)
    assert answers(verdicts) == MIXED
    assert {v.generation for v in verdicts} == {7}  # seven imports, one snapshot


def test_verdict_keeps_the_imei_as_given_and_its_14_digit_body(client: Client) -> None:
    body = R.registered_other_tac[:14]
    spellings = [body, R.registered_other_tac, f"imei-{R.registered_other_tac}", body + "07", "x"]
    verdicts = client.check(spellings)
    assert [v.imei for v in verdicts] == spellings
    assert [v.body for v in verdicts] == [body, body, body, body, None]
    assert body.startswith("0")  # a leading-zero TAC survives


def test_check_splits_inputs_larger_than_max_batch_and_keeps_order(target: str) -> None:
    with Client(target, max_batch=3) as client:
        assert answers(client.check(MIXED_IMEIS)) == MIXED


def test_check_sends_imsis_aligned_with_imeis(client: Client) -> None:
    verdicts = client.check([R.paired, R.paired, R.unregistered], ["", R.paired_imsi, ROAMING_IMSI])
    assert answers(verdicts) == [
        (R.paired, "BLACKLISTED", ("NOT_REGISTERED",)),
        (R.paired, "WHITELISTED", ("NOT_REGISTERED", "PAIRED")),
        (R.unregistered, "WHITELISTED", ("NOT_REGISTERED", "INBOUND_ROAMER")),
    ]


def test_check_refuses_imsis_not_aligned_with_imeis(client: Client) -> None:
    with pytest.raises(ValueError, match="2 IMEIs, 1 IMSIs"):
        client.check([R.registered, R.paired], [R.paired_imsi])


def test_empty_batch_is_invalid_argument(client: Client) -> None:
    with pytest.raises(ImeiregError) as raised:
        client.check([])
    assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert str(raised.value).startswith(f"{client.target}: INVALID_ARGUMENT: imeis")


def test_rejected_imsi_error_names_the_field_on_one_line(client: Client) -> None:
    with pytest.raises(ImeiregError) as raised:
        client.check([R.registered], ["not digits"])
    message = str(raised.value)
    assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "imsis[0]" in message
    assert "\n" not in message


def test_unreachable_service_is_unavailable_after_retries() -> None:
    target = f"127.0.0.1:{free_port()}"
    with (
        Client(target, timeout=UNREACHABLE_TIMEOUT) as client,
        pytest.raises(ImeiregError) as raised,
    ):
        client.registry_info()
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert str(raised.value).startswith(f"{target}: UNAVAILABLE: ")
    assert "\n" not in str(raised.value)


def test_batch_size_beyond_the_service_limit_is_refused(target: str) -> None:
    with pytest.raises(ValueError, match="1 to 10,000"):
        Client(target, max_batch=10_001)


def test_check_stream_answers_like_check_across_many_batches(client: Client) -> None:
    imeis = MIXED_IMEIS * 250
    streamed = list(client.check_stream(iter(imeis), batch_size=7))
    assert streamed == client.check(imeis)


def test_check_stream_pairs_imsis_with_imeis(client: Client) -> None:
    streamed = client.check_stream(
        iter([R.paired, R.unregistered, R.registered]),
        iter([R.paired_imsi, ROAMING_IMSI, ""]),
        batch_size=2,
    )
    assert [v.status for v in streamed] == ["WHITELISTED"] * 3


def test_check_stream_reads_its_input_lazily(client: Client) -> None:
    endless = (R.registered if n % 2 else R.stolen for n in count())
    stream = client.check_stream(endless, batch_size=100)
    first = list(islice(stream, 3))
    stream.close()  # stops the stream and the reading of the endless input
    assert [v.status for v in first] == ["BLACKLISTED", "WHITELISTED", "BLACKLISTED"]


def test_check_stream_raises_the_input_error_after_the_answers_before_it(client: Client) -> None:
    def broken_input() -> Iterator[str]:
        yield R.registered
        yield R.stolen
        raise OSError("input file vanished")

    seen: list[str] = []
    with pytest.raises(OSError, match="input file vanished"):
        seen.extend(v.status for v in client.check_stream(broken_input(), batch_size=1))
    assert seen == ["WHITELISTED", "BLACKLISTED"]


def test_check_stream_of_nothing_answers_nothing(client: Client) -> None:
    assert list(client.check_stream([])) == []


def test_lookup_tacs_gives_gsma_model_data_in_order(client: Client) -> None:
    models = client.lookup_tacs([OTHER_TAC, UNALLOCATED_TAC, BARRED_TAC, PHONE_TAC])
    assert [m.tac for m in models] == [OTHER_TAC, UNALLOCATED_TAC, BARRED_TAC, PHONE_TAC]
    other, unallocated, barred, phone = models
    assert (other.manufacturer, other.model_name, other.device_type) == (
        "Zero Mobile",
        "Z0",
        "Feature phone",
    )
    assert other.allocation_date == date(2020, 1, 1)
    assert (phone.bands, phone.allocation_date) == ("GSM 900,LTE", date(2019, 3, 15))
    assert (unallocated.allocated, unallocated.manufacturer, unallocated.allocation_date) == (
        False,
        "",
        None,
    )
    assert (barred.allocated, barred.barred, phone.barred) == (True, True, False)


def test_registry_info_describes_the_snapshot(client: Client) -> None:
    info = client.registry_info()
    assert info.generation == 7
    assert info.commit_time is not None
    assert info.commit_time.tzinfo is UTC
    assert info.rows == {
        "gsma-tac": 3,
        "registration": 8,
        "stolen": 2,
        "barred": 1,
        "barred-tac": 1,
        "golden": 1,
        "pairing": 1,
    }
    assert info.tac_count == 3
    newest = info.recent_imports[0]
    assert [r.generation for r in info.recent_imports] == [7, 6, 5, 4, 3, 2, 1]
    assert (newest.list_name, newest.mode, newest.file_name, newest.rows) == (
        "pairing",
        "full",
        "pairing.csv",
        1,
    )
    assert newest.commit_time == info.commit_time
    assert len(newest.sha256) == 64


def test_async_client_answers_like_the_blocking_one(target: str, client: Client) -> None:
    async def ask() -> tuple[list[Verdict], list[Verdict], list[str], int]:
        async with AsyncClient(target, max_batch=4) as aclient:
            checked = await aclient.check(MIXED_IMEIS)
            streamed = [v async for v in aclient.check_stream(MIXED_IMEIS, batch_size=3)]
            models = await aclient.lookup_tacs([PHONE_TAC, OTHER_TAC])
            info = await aclient.registry_info()
            return checked, streamed, [m.model_name for m in models], info.generation

    checked, streamed, model_names, generation = asyncio.run(ask())
    assert checked == streamed == client.check(MIXED_IMEIS)
    assert model_names == ["A1", "Z0"]
    assert generation == 7


def test_async_client_raises_imeireg_error(target: str) -> None:
    async def empty_check() -> None:
        async with AsyncClient(target) as aclient:
            await aclient.check([])

    with pytest.raises(ImeiregError) as raised:
        asyncio.run(empty_check())
    assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT


def test_reason_bits_decode_in_enum_order() -> None:
    registered, stolen, golden = 1 << 5, 1 << 8, 1 << 10
    assert reason_names(golden | stolen | registered) == ("REGISTERED", "STOLEN", "GOLDEN")
    assert reason_names(0) == ()
    assert reason_names(1 << 30) == ("30",)  # a reason from a newer server is kept, by number


def test_several_addresses_become_one_grpc_address_list() -> None:
    assert channel_target(["10.0.0.1:50051", "10.0.0.2:50051"]) == (
        "ipv4:10.0.0.1:50051,10.0.0.2:50051"
    )
    assert channel_target(("[fd00::1]:50051", "[fd00::2]:50051")) == (
        "ipv6:[fd00::1]:50051,[fd00::2]:50051"
    )


def test_one_target_is_used_as_given() -> None:
    assert channel_target("registry.example:50051") == "registry.example:50051"
    assert channel_target("dns:///imeireg.svc:50051") == "dns:///imeireg.svc:50051"
    assert channel_target(["registry.example:50051"]) == "registry.example:50051"


@pytest.mark.parametrize(
    ("addresses", "complaint"),
    [
        ([], "no address"),
        (["registry-a.example:50051", "10.0.0.2:50051"], "give one dns:///name:port target"),
        (["10.0.0.1:50051", "[fd00::2]:50051"], "IPv4 and IPv6"),
        (["10.0.0.1", "10.0.0.2:50051"], "expected IPv4:port"),
        (["fd00::1:50051", "fd00::2:50051"], "expected IPv4:port or [IPv6]:port"),
    ],
)
def test_addresses_that_grpc_cannot_list_in_one_target_are_refused(
    addresses: list[str], complaint: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)):
        Client(addresses)


def test_client_names_its_replicas_in_errors() -> None:
    replicas = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    with (
        Client(replicas, timeout=UNREACHABLE_TIMEOUT) as client,
        pytest.raises(ImeiregError) as raised,
    ):
        client.registry_info()
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert str(raised.value).startswith(f"ipv4:{','.join(replicas)}: UNAVAILABLE: ")
