"""Requests cut to the service's batch limits, and the pairing of stream answers with them."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

from imeireg.client.models import Verdict, verdicts
from imeireg.v1 import legality_pb2 as pb

MAX_BATCH = 10_000
"""The most IMEIs the service takes in one request."""
MAX_TACS = 1_000
"""The most TACs the service takes in one request."""


def check_batch_size(size: int) -> int:
    """`size`, when it is a batch size the service accepts."""
    if not 1 <= size <= MAX_BATCH:
        raise ValueError(f"batch size must be 1 to {MAX_BATCH:,}, not {size:,}")
    return size


def _request(imeis: Sequence[str], imsis: Sequence[str]) -> pb.CheckImeisRequest:
    # A column of empty IMSIs says nothing, so it is not sent.
    return pb.CheckImeisRequest(imeis=imeis, imsis=imsis if any(imsis) else ())


def batches(
    imeis: Sequence[str], imsis: Sequence[str] | None, size: int
) -> Iterator[pb.CheckImeisRequest]:
    """Requests of at most `size` IMEIs, in order; one empty request for no IMEIs.

    The empty request goes to the service so that an empty batch fails there,
    with INVALID_ARGUMENT, as the API says.
    """
    if imsis is not None and len(imsis) != len(imeis):
        raise ValueError(f"imsis must align with imeis: {len(imeis):,} IMEIs, {len(imsis):,} IMSIs")
    for start in range(0, max(len(imeis), 1), size):
        end = start + size
        yield _request(imeis[start:end], imsis[start:end] if imsis else ())


def stream_batches(
    imeis: Iterable[str], imsis: Iterable[str] | None, size: int
) -> Iterator[pb.CheckImeisRequest]:
    """Requests of at most `size` IMEIs, in order, reading the input only as they are sent."""
    if imsis is None:
        unpaired = iter(imeis)
        while imei_batch := list(islice(unpaired, size)):
            yield pb.CheckImeisRequest(imeis=imei_batch)
        return
    pairs = zip(imeis, imsis, strict=True)
    while pair_batch := list(islice(pairs, size)):
        imei_column, imsi_column = zip(*pair_batch, strict=True)
        yield _request(imei_column, imsi_column)


def tac_batches(tacs: Sequence[str]) -> Iterator[pb.LookupTacsRequest]:
    """LookupTacs requests of at most MAX_TACS TACs, in order; one empty request for no TACs."""
    for start in range(0, max(len(tacs), 1), MAX_TACS):
        yield pb.LookupTacsRequest(tacs=tacs[start : start + MAX_TACS])


class StreamFeed:
    """The requests of one StreamCheckImeis call, and which answer belongs to which IMEIs.

    The stream answers its requests in order, so the oldest unanswered request
    is always the one the next answer is about.
    """

    def __init__(self, requests: Iterator[pb.CheckImeisRequest]) -> None:
        self._requests = requests
        self._unanswered: deque[pb.CheckImeisRequest] = deque()
        self._input_error: Exception | None = None

    def __iter__(self) -> Iterator[pb.StreamCheckImeisRequest]:
        try:
            for request in self._requests:
                self._unanswered.append(request)
                yield pb.StreamCheckImeisRequest(check=request)
        except Exception as error:
            # gRPC would log it and cancel the call as UNKNOWN; keeping it lets
            # the caller get the answers sent so far and then the real error.
            self._input_error = error

    def verdicts(self, response: pb.StreamCheckImeisResponse) -> list[Verdict]:
        """The verdicts of the next answer on the stream."""
        return verdicts(self._unanswered.popleft().imeis, response.check)

    def raise_input_error(self) -> None:
        """Raise what reading the input raised, if it did."""
        if self._input_error is not None:
            raise self._input_error
