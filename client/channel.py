"""The channel options both clients use: room for full batches, and gRPC's own retries."""

from __future__ import annotations

import json

DEFAULT_TARGET = "localhost:50051"

# A 10,000-IMEI batch of 5G PEIs with IMSIs is about 0.5 MB; the 4 MiB default
# leaves too little headroom for the longest spellings and future fields.
_MAX_MESSAGE_BYTES = 8 << 20

# UNAVAILABLE means the call never reached a server that could answer (server
# restarting, connection refused), so repeating it is always safe; gRPC
# retries it with backoff, also across a restart of the service.
_SERVICE_CONFIG = {
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
    ]
}

CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.enable_retries", 1),
    ("grpc.service_config", json.dumps(_SERVICE_CONFIG)),
]
