"""Hand-framed protobuf (broker.core.wire, the replication log's entries) is byte for byte
what the generated code would serialize."""

from __future__ import annotations

import pytest

from broker.core import wire
from broker.pb import bridge_pb2, client_pb2, replication_pb2
from broker.pb.message_pb2 import Message
from masterslave.replication import (
    encode_log_entry,
    encode_log_frame,
    from_pb_ops,
    serialize_log_frame,
    to_pb_ops,
)


def _message(n: int, body_size: int) -> Message:
    return Message(
        id=f"id-{n}",
        destination="orders.eu",
        body=bytes(range(256)) * (body_size // 256) + b"x" * (body_size % 256),
        headers={"k": "v", "n": str(n)} if n % 2 else {},
        persistent=bool(n % 3),
        priority=n % 10,
        expiration_ms=1_700_000_000_000 + n if n % 4 else 0,
        redelivery_count=n % 3,
        broker_path=["a", "b"][: n % 3],
        timestamp_ms=1_690_000_000_000 + n,
    )


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16_383, 16_384, 2**32, 2**63 - 1])
def test_varint_matches_protobuf(n: int) -> None:
    # A ForwardAck's batch_id is field 1, a varint: after the key 0x08 come its bytes.
    encoded = bridge_pb2.ForwardAck(batch_id=n).SerializeToString()
    assert (b"\x08" + wire.varint(n) if n else b"") == encoded


@pytest.mark.parametrize("body_size", [0, 1, 100, 1024, 70_000])
def test_consume_response_is_what_protobuf_serializes(body_size: int) -> None:
    messages = [_message(n, body_size) for n in range(7)]
    tags = [1, 2, 127, 128, 5_000, 2**40, 3]
    deliveries = [
        (tag, m.SerializeToString(), m.redelivery_count > 0)
        for tag, m in zip(tags, messages, strict=True)
    ]
    expected = client_pb2.ConsumeResponse(
        deliveries=[
            client_pb2.Delivery(tag=tag, message=m, redelivered=m.redelivery_count > 0)
            for tag, m in zip(tags, messages, strict=True)
        ]
    )
    raw = wire.consume_response(deliveries)
    assert raw == expected.SerializeToString()
    assert client_pb2.ConsumeResponse.FromString(raw) == expected


def test_empty_consume_response() -> None:
    assert wire.consume_response([]) == b""


@pytest.mark.parametrize("count", [0, 1, 50])
def test_forward_frame_is_what_protobuf_serializes(count: int) -> None:
    messages = [_message(n, 1024) for n in range(count)]
    raw = wire.forward_frame(2**33 + 5, [m.SerializeToString() for m in messages])
    expected = bridge_pb2.BridgeFrame(
        forward=bridge_pb2.ForwardBatch(batch_id=2**33 + 5, messages=messages)
    )
    assert raw == expected.SerializeToString()
    frame = bridge_pb2.BridgeFrame.FromString(raw)
    assert frame.HasField("forward")
    assert list(frame.forward.messages) == messages


def test_with_broker_appends_to_the_path() -> None:
    for n in range(3):
        message = _message(n, 10)
        data = wire.with_broker(message.SerializeToString(), "brøker-c")
        parsed = Message.FromString(data)
        assert list(parsed.broker_path) == [*message.broker_path, "brøker-c"]
        parsed.broker_path.pop()
        assert parsed == message


OPS_CASES: list[list[tuple[bytes, bytes | None]]] = [
    [],
    [(b"m\x00q", b"v" * 300), (b"i" + b"x" * 40, b"\x00\x01")],
    [(b"m1", None), (b"a" + bytes(8), b"id"), (b"m2", None), (b"z", b"")],
    [(bytes([n]) * (n + 1), None if n % 3 == 0 else bytes(n * 50)) for n in range(200)],
]


@pytest.mark.parametrize("ops", OPS_CASES)
@pytest.mark.parametrize(("position", "epoch"), [(1, 1), (300, 0), (2**40, 7)])
def test_log_entry_is_what_protobuf_serializes(
    ops: list[tuple[bytes, bytes | None]], position: int, epoch: int
) -> None:
    expected = replication_pb2.LogEntry(position=position, epoch=epoch, ops=to_pb_ops(ops))
    raw = encode_log_entry(position, epoch, ops)
    assert raw == expected.SerializeToString()
    assert from_pb_ops(replication_pb2.LogEntry.FromString(raw).ops) == ops


def test_log_frame_mixes_encoded_and_parsed_entries() -> None:
    entries = [
        replication_pb2.LogEntry(position=n, epoch=3, ops=to_pb_ops(ops))
        for n, ops in enumerate(OPS_CASES, start=1)
    ]
    mixed = [e.SerializeToString() if n % 2 else e for n, e in enumerate(entries)]
    raw = encode_log_frame(3, mixed)
    assert raw == replication_pb2.LogFrame(epoch=3, entries=entries).SerializeToString()
    assert serialize_log_frame(raw) is raw
