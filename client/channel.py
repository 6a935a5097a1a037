"""The channel both clients use: one target or several replicas, balanced per call, retried."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence

DEFAULT_TARGET = "localhost:50051"

# A 10,000-IMEI batch of 5G PEIs with IMSIs is about 0.5 MB; the 4 MiB default
# leaves too little headroom for the longest spellings and future fields.
_MAX_MESSAGE_BYTES = 8 << 20

# round_robin keeps a connection to every address the target resolves to (each
# replica, or each address of a DNS name) and sends each call to the next ready
# one; gRPC's default, pick_first, would send every call to one replica.
#
# UNAVAILABLE means the call never reached a server that could answer (server
# restarting, connection refused or reset), so repeating it is always safe;
# gRPC retries it with backoff on the next ready replica, also across a
# restart of the service. A call already sent to a replica that dies fails
# UNAVAILABLE and is retried like the others: 5 attempts, gRPC's maximum, are
# enough while one replica is up. Calls do not wait for a ready replica
# (waitForReady): with every replica down they fail fast with UNAVAILABLE
# rather than hold the caller until the deadline.
_SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": "imeireg.v1.LegalityService"}],
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.1s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}

CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.enable_retries", 1),
    # gRPC keeps a sent request for a retry only up to 256 KiB by default, and a
    # full batch with IMSIs is larger: without room for it, such a batch in flight
    # on a replica that dies would fail instead of being retried.
    ("grpc.per_rpc_retry_buffer_size", _MAX_MESSAGE_BYTES),
    ("grpc.service_config", json.dumps(_SERVICE_CONFIG)),
]


def channel_target(target: str | Sequence[str]) -> str:
    """The gRPC target of one channel to `target`: a target as given, or several addresses.

    A str is one gRPC target: `host:port`, `dns:///name:port` (every address
    the name resolves to is a replica), or gRPC's own lists `ipv4:a:port,b:port`
    and `ipv6:[a]:port,[b]:port`. A sequence of `IP:port` addresses (IPv6 as
    `[IP]:port`, all of one family) becomes such a list. Host names cannot be
    listed: gRPC resolves one name per channel, so replicas known by name are
    reached through one DNS name that resolves to all of them.
    """
    if isinstance(target, str):
        return target
    if not target:
        raise ValueError("no address to connect to")
    if len(target) == 1:
        return target[0]
    families = {_ip_family(address) for address in target}
    if len(families) > 1:
        raise ValueError(f"{', '.join(target)}: IPv4 and IPv6 addresses cannot share a channel")
    return f"{families.pop()}:{','.join(target)}"


def _ip_family(address: str) -> str:
    """'ipv4' or 'ipv6', the gRPC scheme of an `IP:port` or `[IP]:port` address."""
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"{address!r}: expected IPv4:port or [IPv6]:port")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        raise ValueError(
            f"{address!r}: several addresses must each be IP:port; to balance over "
            "replicas known by name, give one dns:///name:port target that resolves to all"
        ) from None
    if bracketed != (ip.version == 6):
        raise ValueError(f"{address!r}: expected IPv4:port or [IPv6]:port")
    return f"ipv{ip.version}"
