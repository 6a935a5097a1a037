"""AsyncClient: the asyncio client of the imeireg service, with the methods of Client."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Sequence
from types import TracebackType

from grpc import aio

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


class AsyncClient:
    """A grpc.aio connection to the imeireg service; see Client for the meaning of each method."""

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
        self._channel = aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        self._stub = LegalityServiceStub(self._channel)

    async def close(self) -> None:
        """Close the connection."""
        await self._channel.close(None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def check(
        self, imeis: Sequence[str], imsis: Sequence[str] | None = None
    ) -> list[Verdict]:
        """The verdict on each IMEI, in order; `imsis`, when given, aligned with `imeis`."""
        answers: list[Verdict] = []
        with translated(self.target):
            for request in batches(imeis, imsis, self.max_batch):
                response = await self._stub.CheckImeis(request, timeout=self.timeout)
                answers += verdicts(request.imeis, response)
        return answers

    async def check_stream(
        self,
        imeis: Iterable[str],
        imsis: Iterable[str] | None = None,
        *,
        batch_size: int = MAX_BATCH,
        timeout: float | None = None,
    ) -> AsyncGenerator[Verdict, None]:
        """The verdict on each IMEI, in order, over one stream: for millions of IMEIs."""
        feed = StreamFeed(stream_batches(imeis, imsis, check_batch_size(batch_size)))
        with translated(self.target):
            responses = self._stub.StreamCheckImeis(iter(feed), timeout=timeout)
            try:
                async for response in responses:
                    for verdict in feed.verdicts(response):
                        yield verdict
            finally:
                responses.cancel()
        feed.raise_input_error()

    async def lookup_tacs(self, tacs: Sequence[str]) -> list[TacModel]:
        """GSMA model data for each 8-digit TAC, in order."""
        models: list[TacModel] = []
        with translated(self.target):
            for request in tac_batches(tacs):
                response = await self._stub.LookupTacs(request, timeout=self.timeout)
                models += map(tac_model, response.tacs)
        return models

    async def registry_info(self) -> RegistryInfo:
        """The registry snapshot the service answers from."""
        with translated(self.target):
            response = await self._stub.GetRegistryInfo(
                pb.GetRegistryInfoRequest(), timeout=self.timeout
            )
        return registry_info(response)
