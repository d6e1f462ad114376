"""A message on its way to the broker: a send's arguments checked and normalised."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TypeAlias

from broker.client.limits import MAX_MESSAGE_BYTES
from broker.errors import BrokerError
from broker.ids import new_message_id

# One message waiting for a batch: (id, queue or topic, body, headers or None,
# persistent, priority, expiration_ms, to a topic, future resolved at the ack).
_Outgoing: TypeAlias = tuple[
    str, str, bytes, dict[str, str] | None, bool, int, int, bool, "asyncio.Future[str]"
]


def _outgoing_fields(
    queue: str,
    body: bytes | bytearray | memoryview | str,
    headers: Mapping[str, str] | None,
    persistent: bool,
    priority: int,
    ttl: float | None,
    message_id: str | None,
    topic: bool = False,
) -> tuple[str, str, bytes, dict[str, str] | None, bool, int, int, bool]:
    """Validate a send's arguments (here, not later in the writer) and normalise them.
    `topic`: `queue` names the topic to publish to."""
    if not isinstance(queue, str):
        what = "topic" if topic else "queue"
        raise TypeError(f"{what} must be a string, not {type(queue).__name__}")
    if type(body) is not bytes:
        if isinstance(body, str):
            body = body.encode()
        elif isinstance(body, bytes | bytearray | memoryview):
            body = bytes(body)
        else:
            raise TypeError(f"body must be bytes or str, not {type(body).__name__}")
    size = len(body) + len(queue)
    header_dict: dict[str, str] | None = None
    if headers:
        header_dict = dict(headers)
        for key, value in header_dict.items():
            if type(key) is not str or type(value) is not str:
                raise TypeError(f"header {key!r}: names and values must be strings")
            size += len(key) + len(value)
    if size > MAX_MESSAGE_BYTES:
        # gRPC would fail the whole stream on it (the broker's own limit is lower still).
        raise BrokerError(
            "RESOURCE_EXHAUSTED",
            f"a message of {size:,} bytes is over the client's limit of {MAX_MESSAGE_BYTES:,}",
        )
    if type(priority) is not int or not 0 <= priority <= 9:
        raise ValueError(f"priority must be an integer from 0 to 9, not {priority!r}")
    expiration_ms = 0
    if ttl is not None:
        if ttl <= 0:
            raise ValueError(f"ttl must be positive seconds (or None), not {ttl!r}")
        expiration_ms = int((time.time() + ttl) * 1000)
    if message_id is None:
        message_id = new_message_id()
    elif not isinstance(message_id, str) or not message_id:
        raise ValueError("message_id must be a non-empty string")
    return (
        message_id,
        queue,
        body,
        header_dict,
        bool(persistent),
        priority,
        expiration_ms,
        topic,
    )
