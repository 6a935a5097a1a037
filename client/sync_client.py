"""Client: the blocking client of the imeireg service."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Sequence
from types import TracebackType

import grpc

from imeireg.client.batches import (
    MAX_BATCH,
    StreamFeed,
    batches,
    check_batch_size,
    stream_batches,
    tac_batches,
)
from imeireg.client.channel import CHANNEL_OPTIONS, DEFAULT_TARGET, channel_target
from imeireg.client.errors import translated
from imeireg.client.models import (
    RegistryInfo,
    TacModel,
    Verdict,
    registry_info,
    tac_model,
    verdicts,
)
from imeireg.v1 import legality_pb2 as pb
from imeireg.v1.legality_pb2_grpc import LegalityServiceStub


class Client:
    """A connection to the imeireg service; every call raises ImeiregError when it fails.

    `target` is one gRPC target (`host:port`, or `dns:///name:port` for every
    replica the name resolves to) or a sequence of replicas' `IP:port`
    addresses (see channel_target). Calls are spread over the replicas, and a
    call whose replica goes away before answering is retried on another; a
    stream that has begun answering is not, so it fails with its replica.

    `timeout` is the deadline in seconds of each call; `max_batch` the most
    IMEIs sent in one CheckImeis request (larger inputs take several requests).
    """

    def __init__(
        self,
        target: str | Sequence[str] = DEFAULT_TARGET,
        *,
        timeout: float = 10.0,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.target = channel_target(target)
        self.timeout = timeout
        self.max_batch = check_batch_size(max_batch)
        self._channel = grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        self._stub = LegalityServiceStub(self._channel)

    def close(self) -> None:
        """Close the connection."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def check(self, imeis: Sequence[str], imsis: Sequence[str] | None = None) -> list[Verdict]:
        """The verdict on each IMEI, in order; `imsis`, when given, aligned with `imeis`.

        An empty `imeis` fails with INVALID_ARGUMENT, as the service says.
        """
        answers: list[Verdict] = []
        with translated(self.target):
            for request in batches(imeis, imsis, self.max_batch):
                response = self._stub.CheckImeis(request, timeout=self.timeout)
                answers += verdicts(request.imeis, response)
        return answers

    def check_stream(
        self,
        imeis: Iterable[str],
        imsis: Iterable[str] | None = None,
        *,
        batch_size: int = MAX_BATCH,
        timeout: float | None = None,
    ) -> Generator[Verdict, None, None]:
        """The verdict on each IMEI, in order, over one stream: for millions of IMEIs.

        The input is read lazily, a few batches ahead of the answers; closing
        the generator ends the stream. `timeout` is a deadline for the whole
        stream; by default there is none, since a stream lasts as long as its
        input.
        """
        feed = StreamFeed(stream_batches(imeis, imsis, check_batch_size(batch_size)))
        with translated(self.target):
            responses = self._stub.StreamCheckImeis(iter(feed), timeout=timeout)
            try:
                for response in responses:
                    yield from feed.verdicts(response)
            finally:
                # Stops the stream, and the reading of the input, when the caller stops early.
                responses.cancel()
        feed.raise_input_error()

    def lookup_tacs(self, tacs: Sequence[str]) -> list[TacModel]:
        """GSMA model data for each 8-digit TAC, in order."""
        models: list[TacModel] = []
        with translated(self.target):
            for request in tac_batches(tacs):
                response = self._stub.LookupTacs(request, timeout=self.timeout)
                models += map(tac_model, response.tacs)
        return models

    def registry_info(self) -> RegistryInfo:
        """The registry snapshot the service answers from."""
        with translated(self.target):
            response = self._stub.GetRegistryInfo(pb.GetRegistryInfoRequest(), timeout=self.timeout)
        return registry_info(response)
