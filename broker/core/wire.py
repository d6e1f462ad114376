"""Protobuf wire encoding of outgoing batches from messages already serialized.

A broker holds each persistent message as the bytes it stored. A delivery batch or a
forward batch embeds those messages, and an embedded message is, on the wire, just a
length-delimited field: framing the stored bytes gives exactly what protobuf would
produce, without building a copy of every message and serializing it again (measured:
less than half the CPU for 1 KiB messages). Receivers parse the result with the
ordinary generated classes.
"""

from __future__ import annotations

from collections.abc import Sequence

# Field keys, (field number << 3) | wire type (0 varint, 2 length-delimited).
_CONSUME_DELIVERIES = b"\x0a"  # ConsumeResponse.deliveries = 1
_DELIVERY_TAG = b"\x08"  # Delivery.tag = 1
_DELIVERY_MESSAGE = b"\x12"  # Delivery.message = 2
_DELIVERY_REDELIVERED = b"\x18\x01"  # Delivery.redelivered = 3, true
_FRAME_FORWARD = b"\x1a"  # BridgeFrame.forward = 3
_FORWARD_BATCH_ID = b"\x08"  # ForwardBatch.batch_id = 1
_FORWARD_MESSAGES = b"\x12"  # ForwardBatch.messages = 2
_MESSAGE_BROKER_PATH = b"\x4a"  # Message.broker_path = 9

# Every length and tag below 2**14 (one or two bytes), looked up rather than computed:
# each delivery needs two.
_SHORT = [bytes((n,)) for n in range(0x80)] + [
    bytes(((n & 0x7F) | 0x80, n >> 7)) for n in range(0x80, 0x4000)
]


def varint(n: int) -> bytes:
    """The base-128 varint encoding of a non-negative integer."""
    if n < 0x4000:
        return _SHORT[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def consume_response(deliveries: Sequence[tuple[int, bytes, bool]]) -> bytes:
    """A serialized ConsumeResponse of (tag, serialized Message, redelivered)."""
    parts: list[bytes] = []
    append = parts.append
    for tag, data, redelivered in deliveries:
        inner = _DELIVERY_TAG + varint(tag) + _DELIVERY_MESSAGE + varint(len(data))
        length = len(inner) + len(data) + (2 if redelivered else 0)
        append(_CONSUME_DELIVERIES + varint(length) + inner)
        append(data)
        if redelivered:
            append(_DELIVERY_REDELIVERED)
    return b"".join(parts)


def forward_frame(batch_id: int, messages: Sequence[bytes]) -> bytes:
    """A serialized BridgeFrame carrying a ForwardBatch of serialized Messages."""
    parts: list[bytes] = [b"", _FORWARD_BATCH_ID + varint(batch_id)]
    append = parts.append
    for data in messages:
        append(_FORWARD_MESSAGES + varint(len(data)))
        append(data)
    parts[0] = _FRAME_FORWARD + varint(sum(map(len, parts)))
    return b"".join(parts)


def with_broker(data: bytes, broker: str) -> bytes:
    """A serialized Message with `broker` appended to its broker path.

    Repeated fields accumulate across a message's bytes, so appending one more element
    at the end is the same as adding it before serializing."""
    name = broker.encode()
    return data + _MESSAGE_BROKER_PATH + varint(len(name)) + name
