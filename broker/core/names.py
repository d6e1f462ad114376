"""Queue name rules, shared by the broker and its clients."""

from __future__ import annotations

from broker.errors import InvalidArgument

MAX_NAME_BYTES = 255
DLQ_PREFIX = "DLQ."


def check_queue_name(name: str) -> str:
    """Return `name` if it may name a queue; raise InvalidArgument saying why not."""
    if not name:
        raise InvalidArgument("queue name is empty")
    encoded = name.encode("utf-8", "surrogatepass")
    if len(encoded) > MAX_NAME_BYTES:
        raise InvalidArgument(
            f"queue name is {len(encoded)} bytes, over the limit of {MAX_NAME_BYTES}: "
            f"{name[:40]!r}..."
        )
    for ch in name:
        # Control characters would corrupt store keys (NUL ends a name there) and logs.
        if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
            raise InvalidArgument(f"queue name {name!r} contains control character {ch!r}")
        if 0xD800 <= ord(ch) <= 0xDFFF:
            raise InvalidArgument(f"queue name {name!r} is not valid UTF-8")
    return name


def dead_letter_queue(queue: str) -> str:
    """The dead-letter queue for `queue`; a DLQ's own dead letters stay in it."""
    if queue.startswith(DLQ_PREFIX):
        return queue
    return DLQ_PREFIX + queue
