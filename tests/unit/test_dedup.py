"""The duplicate check's memory of consumed ids: bounded, pruned oldest first, kept over a
restart. The broker core on a real RocksDB store, in process (no network involved)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from broker.config import BrokerConfig
from broker.core.broker import Broker
from broker.core.store import Store, ack_key, decode_ids, encode_ids
from broker.pb.message_pb2 import Message
from tests.support.aio import run
from tests.support.sinks import Collect

WINDOW = 100
# Pruning runs in chunks of at least 1,024 ids past the window.
CONSUMED = 3_000


def _message(mid: str) -> Message:
    return Message(id=mid, destination="q", body=b"x", persistent=True)


async def _broker(path: Path) -> Broker:
    config = BrokerConfig(name="a", port=0, data_dir=path, dedup_window=WINDOW)
    broker = Broker(config, Store(path))
    await broker.start()
    return broker


async def _consume(broker: Broker, ids: list[str], batch: int = 37) -> None:
    """Send and consume `ids`, acknowledging in batches of `batch`."""
    sink = Collect()
    consumer = broker.subscribe("q", sink, prefetch=len(ids))
    for start in range(0, len(ids), 500):
        await broker.send([_message(mid) for mid in ids[start : start + 500]])
    deadline = asyncio.get_running_loop().time() + 10
    while len(sink.got) < len(ids):
        assert asyncio.get_running_loop().time() < deadline, "dispatch stalled"
        await asyncio.sleep(0.01)
    tags = [tag for tag, _ in sink.got]
    for start in range(0, len(tags), batch):
        broker.ack("q", consumer, tags[start : start + batch])
        # As acks arrive over a stream: the removals of one batch are written before
        # the next (an empty write is answered once everything before it is written).
        await broker.committer.submit([])
    broker.unsubscribe("q", consumer)


async def _is_duplicate(broker: Broker, mid: str) -> bool:
    return (await broker.send([_message(mid)])).duplicates == [0]


def test_consumed_ids_are_remembered_for_the_window_and_pruned_beyond(tmp_path: Path) -> None:
    ids = [f"id-{n:05d}" for n in range(CONSUMED)]

    async def scenario() -> None:
        broker = await _broker(tmp_path / "a")
        await _consume(broker, ids)
        await broker.stop()
        broker.store.close()
        # Over a restart: the newest WINDOW ids are still known, the oldest are not.
        broker = await _broker(tmp_path / "a")
        held = broker.store.visits_of(ids)
        assert all(mid in held for mid in ids[-WINDOW:])
        assert ids[0] not in held
        assert len(held) < CONSUMED - 1_000, len(held)  # pruned, not kept for ever
        assert await _is_duplicate(broker, ids[-1])  # a late resend is not stored again
        # The remembered ids are the newest ones, without a gap.
        assert held.keys() == set(ids[-len(held) :])
        await broker.stop()
        broker.store.close()

    run(scenario())


def test_pruning_reads_ids_recorded_one_per_key(tmp_path: Path) -> None:
    # Stores written before ids were recorded per acknowledgement batch hold one id per
    # key: pruning must still find and forget them.
    path = tmp_path / "a"
    old = [f"old-{n:05d}" for n in range(1_500)]

    async def scenario() -> None:
        broker = await _broker(path)
        store = broker.store
        ops = [(b"i" + mid.encode(), (1).to_bytes(2, "big")) for mid in old]
        ops += [(ack_key(n), mid.encode()) for n, mid in enumerate(old, start=1)]
        ops.append((b"zack", len(old).to_bytes(8, "big")))
        store.write(ops, sync=True)
        await broker.stop()
        store.close()
        broker = await _broker(path)
        await _consume(broker, [f"new-{n:05d}" for n in range(200)])
        await broker.stop()
        broker.store.close()
        broker = await _broker(path)
        held = broker.store.visits_of(old)
        assert old[0] not in held and len(held) <= WINDOW, len(held)
        await broker.stop()
        broker.store.close()

    run(scenario())


def test_consumed_ids_encoding_round_trips() -> None:
    ids = [b"a", b"x" * 127, b"y" * 128, "ünïcode-id".encode(), b"z" * 20_000]
    assert decode_ids(encode_ids(ids)) == ids
    assert decode_ids(encode_ids([])) == []
