"""`Broker.send_and_ack` (a STOMP COMMIT): a transaction's sends and acknowledgements
in one write. The broker core on a real RocksDB store, in process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from broker.config import BrokerConfig
from broker.core.broker import Broker
from broker.core.store import Store
from broker.errors import BrokerError
from broker.pb.message_pb2 import Message
from tests.support.aio import run
from tests.support.sinks import Collect


async def _broker(path: Path) -> Broker:
    broker = Broker(BrokerConfig(name="a", port=0, data_dir=path), Store(path))
    await broker.start()
    return broker


async def _got(sink: Collect, n: int) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while len(sink.got) < n:
        assert asyncio.get_running_loop().time() < deadline, "dispatch stalled"
        await asyncio.sleep(0.01)


def _keys(broker: Broker, queue: str) -> int:
    return sum(1 for _ in broker.store.queue_items(queue))


def test_sends_and_acks_are_one_write(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker = await _broker(tmp_path / "a")
        await broker.send(
            [Message(destination="in", body=b"%d" % i, persistent=True) for i in range(3)]
        )
        sink = Collect()
        consumer = broker.subscribe("in", sink, prefetch=10)
        await _got(sink, 3)
        writes: list[list[tuple[bytes, bytes | None]]] = []
        submit = broker.committer.submit

        def spy(ops, **kw):
            writes.append(list(ops))
            return submit(ops, **kw)

        broker.committer.submit = spy  # type: ignore[method-assign]
        out = [Message(destination="out", body=b"o%d" % i, persistent=True) for i in range(2)]
        sent = await broker.send_and_ack(out, [("in", consumer, [sink.got[0][0], sink.got[1][0]])])
        broker.committer.submit = submit  # type: ignore[method-assign]
        # One write holds both the new messages and the deletions of the acked ones.
        assert len(writes) == 1
        puts = [k for k, v in writes[0] if v is not None and k.startswith(b"m")]
        deletes = [k for k, v in writes[0] if v is None]
        assert len(deletes) == 2 and len(puts) >= 2
        assert len(sent.ids) == 2 and all(sent.ids)
        assert list(consumer.in_flight) == [sink.got[2][0]]
        assert _keys(broker, "in") == 1 and _keys(broker, "out") == 2
        await broker.stop()
        broker.store.close()
        # Over a restart: the outcome stands.
        broker = await _broker(tmp_path / "a")
        assert {q.name: q.pending for q in broker.snapshot()} == {"in": 1, "out": 2}
        await broker.stop()
        broker.store.close()

    run(scenario())


def test_a_tag_not_in_flight_changes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker = await _broker(tmp_path / "a")
        await broker.send([Message(destination="in", body=b"x", persistent=True)])
        sink = Collect()
        consumer = broker.subscribe("in", sink, prefetch=10)
        await _got(sink, 1)
        tag = sink.got[0][0]
        with pytest.raises(BrokerError, match="not in flight"):
            await broker.send_and_ack(
                [Message(destination="out", body=b"o", persistent=True)],
                [("in", consumer, [tag, tag + 100])],
            )
        with pytest.raises(BrokerError, match="priority"):
            await broker.send_and_ack([Message(destination="out", priority=12)], [])
        await broker.committer.submit([])
        assert list(consumer.in_flight) == [tag]
        assert _keys(broker, "out") == 0 and _keys(broker, "in") == 1
        await broker.stop()
        broker.store.close()

    run(scenario())


def test_a_failed_write_leaves_the_acked_deliveries_in_flight(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker = await _broker(tmp_path / "a")
        await broker.send([Message(destination="in", body=b"x", persistent=True)])
        sink = Collect()
        consumer = broker.subscribe("in", sink, prefetch=10)
        await _got(sink, 1)
        tag = sink.got[0][0]
        submit = broker.committer.submit

        def failing(ops, **kw):
            future = submit(ops, **kw)
            failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.add_done_callback(
                lambda _: failed.set_exception(BrokerError("UNAVAILABLE", "replication lost"))
            )
            broker.committer.submit = submit  # type: ignore[method-assign]
            return failed

        broker.committer.submit = failing  # type: ignore[method-assign]
        with pytest.raises(BrokerError, match="replication lost"):
            await broker.send_and_ack(
                [Message(destination="out", body=b"o", persistent=True)], [("in", consumer, [tag])]
            )
        await broker.committer.submit([])
        assert list(consumer.in_flight) == [tag]
        # The written-then-failed write is undone: the new message gone, the acked one back.
        assert _keys(broker, "out") == 0 and _keys(broker, "in") == 1
        assert {q.name: q.pending for q in broker.snapshot()}.get("out", 0) == 0
        await broker.stop()
        broker.store.close()

    run(scenario())


def test_a_topic_message_in_a_transaction_reaches_its_subscribers(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker = await _broker(tmp_path / "a")
        sinks = [Collect(), Collect()]
        for sink in sinks:
            broker.subscribe_topic("news.*", sink, prefetch=10)
        await broker.send_and_ack(
            [Message(destination="news.eu", body=b"t", topic=True, persistent=True)], []
        )
        for sink in sinks:
            await _got(sink, 1)
            assert [e.message.body for _, e in sink.got] == [b"t"]
        await broker.stop()
        broker.store.close()

    run(scenario())
