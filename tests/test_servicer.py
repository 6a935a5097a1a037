"""The gRPC servicer (`imeireg.server.fronts.grpc.servicer`) in process, without a network:
request bytes in, response bytes out, as gRPC would hand them over and send them on.

The end-to-end tests (test_server.py) pin the same behaviour through a real server; these
run in milliseconds and show that the servicer is glue: the wire codec, the limits, and
`check` on the state the watcher holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from support import PHONE_TAC, SmallRegistry, build_small_registry

from imeireg.server.check.policy import Policy
from imeireg.server.fronts.grpc.servicer import (
    MAX_IMEIS,
    SERVICE,
    InvalidRequest,
    LegalityServicer,
    method_handlers,
)
from imeireg.server.fronts.grpc.wire import CheckRequest, unwrap_stream_request
from imeireg.server.serving.watcher import Watcher
from imeireg.v1 import legality_pb2 as pb

R = SmallRegistry
WHITELISTED = pb.EQUIPMENT_STATUS_WHITELISTED
BLACKLISTED = pb.EQUIPMENT_STATUS_BLACKLISTED


@pytest.fixture(scope="module")
def servicer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LegalityServicer]:
    registry = build_small_registry(tmp_path_factory.mktemp("servicer"))
    watcher = Watcher(registry.db, Policy.default())
    yield LegalityServicer(watcher)
    watcher.close()


def answer(servicer: LegalityServicer, request: pb.CheckImeisRequest) -> pb.CheckImeisResponse:
    raw = servicer._check(CheckRequest.parse(request.SerializeToString()))
    return pb.CheckImeisResponse.FromString(raw)


def bad_request(invalid: InvalidRequest) -> tuple[int, str, list[str]]:
    """The status code, message and violated fields the caller would get."""
    status = invalid.status()
    details = status_pb2.Status.FromString(
        dict(status.trailing_metadata)["grpc-status-details-bin"]
    )
    request = error_details_pb2.BadRequest()
    details.details[0].Unpack(request)
    return details.code, details.message, [v.field for v in request.field_violations]


def test_every_rpc_of_the_proto_has_a_handler(servicer: LegalityServicer) -> None:
    assert set(method_handlers(servicer)) == set(SERVICE.methods_by_name)


def test_a_batch_is_answered_from_the_watchers_state_in_request_order(
    servicer: LegalityServicer,
) -> None:
    imeis = [R.stolen, R.registered, "not an imei", R.stolen] * 5  # past the small batch
    response = answer(servicer, pb.CheckImeisRequest(imeis=imeis))
    assert list(response.statuses) == [BLACKLISTED, WHITELISTED, BLACKLISTED, BLACKLISTED] * 5
    assert response.reasons[2] == 1 << pb.REASON_INVALID_FORMAT
    assert response.snapshot.generation == servicer.watcher.state.snapshot.generation


def test_a_stream_message_is_answered_like_the_unary_call(servicer: LegalityServicer) -> None:
    check = pb.CheckImeisRequest(imeis=[R.registered, R.stolen])
    raw = pb.StreamCheckImeisRequest(check=check).SerializeToString()
    from_stream = pb.CheckImeisResponse.FromString(servicer._check(unwrap_stream_request(raw)))
    assert from_stream == answer(servicer, check)


def test_limits_are_invalid_arguments_that_name_the_field(servicer: LegalityServicer) -> None:
    with pytest.raises(InvalidRequest) as empty:
        answer(servicer, pb.CheckImeisRequest())
    assert bad_request(empty.value) == (
        code_pb2.INVALID_ARGUMENT,
        f"imeis: 0 IMEIs given; 1 to {MAX_IMEIS} allowed",
        ["imeis"],
    )
    with pytest.raises(InvalidRequest) as misaligned:
        answer(servicer, pb.CheckImeisRequest(imeis=[R.registered] * 2, imsis=["510101234567890"]))
    assert bad_request(misaligned.value)[2] == ["imsis"]
    with pytest.raises(InvalidRequest) as bad_imsi:
        answer(servicer, pb.CheckImeisRequest(imeis=[R.registered], imsis=["51O10"]))
    assert bad_request(bad_imsi.value)[2] == ["imsis[0]"]


def test_tacs_and_registry_info_come_from_the_same_state(servicer: LegalityServicer) -> None:
    # A valid request never touches the context (it is there to abort an invalid one).
    tacs = asyncio.run(servicer.LookupTacs(pb.LookupTacsRequest(tacs=[PHONE_TAC]), None))
    info = asyncio.run(servicer.GetRegistryInfo(pb.GetRegistryInfoRequest(), None))
    assert tacs.tacs[0].allocated
    assert tacs.snapshot == info.snapshot
    assert info.snapshot.generation == servicer.watcher.state.snapshot.generation
    assert info.tac_count == len(servicer.watcher.state.allocated)
