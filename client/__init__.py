"""The imeireg client: typed, blocking and asyncio, over the generated LegalityService stubs.

Usage::

    from imeireg.client import Client

    with Client("registry.example:50051") as client:
        for verdict in client.check(["490154203237518", "353456789012347"]):
            print(verdict.imei, verdict.status, verdict.reasons)

AsyncClient has the same methods, as coroutines and async iterators.
"""

from imeireg.client.async_client import AsyncClient
from imeireg.client.errors import ImeiregError
from imeireg.client.models import ImportRecord, RegistryInfo, TacModel, Verdict
from imeireg.client.sync_client import Client

__all__ = [
    "AsyncClient",
    "Client",
    "ImeiregError",
    "ImportRecord",
    "RegistryInfo",
    "TacModel",
    "Verdict",
]
