"""Topics on the broker core, over a real RocksDB store, in process: fan-out to every
subscription present, wildcards, drops when none is, durable subscriptions kept while
away and across a restart, replace and unsubscribe, redelivery marks, the memory gate."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from broker.config import BrokerConfig, Sync
from broker.core.broker import Broker
from broker.core.store import Store, decode_ids
from broker.core.topics import is_subscription_queue
from broker.errors import BrokerError, InvalidArgument
from broker.pb.message_pb2 import Message
from tests.support.aio import run
from tests.support.sinks import Collect


def _config(path: Path, **more: object) -> BrokerConfig:
    return BrokerConfig(name="a", port=0, data_dir=path, sync=Sync.LOCAL_MEM, **more)  # type: ignore[arg-type]


async def _broker(path: Path, **more: object) -> Broker:
    store = Store(path)
    broker = Broker(_config(path, **more), store)
    await broker.start()
    return broker


async def _stop(broker: Broker) -> None:
    await broker.stop()
    broker.store.close()


def _pub(topic: str, mid: str, persistent: bool = True) -> Message:
    return Message(id=mid, destination=topic, body=mid.encode(), persistent=persistent, topic=True)


async def _until(check: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def _stored_keys(store: Store) -> list[bytes]:
    return [k for k, _ in store.scan_all(b"", 1_000_000) if k.startswith(b"m")]


def test_fan_out_to_every_subscription_and_wildcards(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker = await _broker(tmp_path)
        sinks = [Collect() for _ in range(5)]
        patterns = ["orders.eu", "orders.eu", "orders.*", "orders.>", "stock.*"]
        subs = [
            broker.subscribe_topic(p, sink, 100) for p, sink in zip(patterns, sinks, strict=True)
        ]
        assert all(is_subscription_queue(queue) for queue, _ in subs)
        await broker.send([_pub("orders.eu", "m1"), _pub("orders.eu.paris", "m2")])
        await _until(lambda: len(sinks[3].got) == 2)
        assert [s.ids for s in sinks] == [["m1"], ["m1"], ["m1"], ["m1", "m2"], []]
        # Each copy is acked on its own; the consumer sees the topic it was published to.
        for (queue, consumer), sink in zip(subs, sinks, strict=True):
            assert all(e.message.destination.startswith("orders") for _, e in sink.got)
            assert all(e.message.topic for _, e in sink.got)
            broker.ack(queue, consumer, [tag for tag, _ in sink.got])
        # Non-durable copies are never written to the store.
        assert _stored_keys(broker.store) == []
        assert broker.published == 2 and broker.dropped == 0
        # Topic subscriptions are not user queues.
        assert [q.name for q in broker.snapshot()] == []
        topics = {t.name: t for t in broker.topic_snapshot()}
        assert len(topics["orders.eu"].subscriptions) == 2
        await _stop(broker)

    run(scenario())


def test_no_subscription_drops_and_leaving_removes(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker = await _broker(tmp_path)
        sent = await broker.send([_pub("news", "gone")])
        assert sent.ids == ["gone"]  # acknowledged, counted as dropped
        assert broker.dropped == 1
        sink = Collect()
        queue, consumer = broker.subscribe_topic("news", sink, 1)
        await broker.send([_pub("news", "n1"), _pub("news", "n2", persistent=False)])
        await _until(lambda: len(sink.got) == 1)  # prefetch 1: the other waits
        assert broker.memory.used > 0
        # The subscriber leaves: its subscription goes, and what it held is freed.
        broker.unsubscribe(queue, consumer)
        assert queue not in broker.queues
        assert broker.memory.used == 0
        await broker.send([_pub("news", "n3")])
        assert broker.dropped == 2
        await _stop(broker)

    run(scenario())


def test_invalid_input(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker = await _broker(tmp_path)
        with pytest.raises(InvalidArgument, match="wildcard"):
            await broker.send([_pub("orders.*", "x")])
        with pytest.raises(InvalidArgument, match="topic pattern"):
            broker.subscribe_topic("orders.>.eu", Collect(), 1)
        with pytest.raises(InvalidArgument, match="client id"):
            broker.subscribe_topic("orders", Collect(), 1, durable=("", "s"))
        with pytest.raises(InvalidArgument, match="subscription name is empty"):
            broker.subscribe_topic("orders", Collect(), 1, durable=("c", ""))
        # An internal name cannot be sent to or consumed as a queue.
        queue, _ = broker.subscribe_topic("orders", Collect(), 1)
        with pytest.raises(InvalidArgument, match="control character"):
            await broker.send([Message(destination=queue, body=b"x")])
        with pytest.raises(InvalidArgument, match="control character"):
            broker.subscribe(queue, Collect(), 1)
        await _stop(broker)

    run(scenario())


def test_durable_kept_while_away_across_restart_and_redelivered_marked(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker = await _broker(tmp_path)
        sink = Collect()
        queue, consumer = broker.subscribe_topic("t.>", sink, 10, durable=("app", "s1"))
        await broker.send([_pub("t.a", "before")])
        await _until(lambda: len(sink.got) == 1)
        # Delivered, not acked, then the subscriber goes away: kept, redelivered marked.
        broker.unsubscribe(queue, consumer)
        assert queue in broker.queues
        await broker.send([_pub("t.b", f"away{i}") for i in range(3)])
        await broker.send([_pub("t.b", "np", persistent=False)])
        snap = broker.topic_snapshot()[0].subscriptions[0]
        assert snap.durable == ("app", "s1") and not snap.active and snap.pending == 5
        await _stop(broker)

        broker = await _broker(tmp_path)  # the same store: the subscription is known
        sink = Collect()
        again, consumer = broker.subscribe_topic("t.>", sink, 10, durable=("app", "s1"))
        assert again == queue
        await _until(lambda: len(sink.got) == 4)
        # The non-persistent one was in memory only; the one handed out before is marked.
        assert sink.ids == ["before", "away0", "away1", "away2"]
        # (Counted at the return, and again as possibly delivered before the restart.)
        redelivered = {e.message.id: e.message.redelivery_count > 0 for _, e in sink.got}
        assert redelivered == {"before": True, "away0": False, "away1": False, "away2": False}
        broker.ack(again, consumer, [tag for tag, _ in sink.got])
        await _until(lambda: _stored_keys(broker.store) == [])
        await _stop(broker)

    run(scenario())


def test_durable_nack_redelivers_marked_and_dead_letters(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker = await _broker(tmp_path, max_redeliveries=1)
        other = Collect()
        broker.subscribe_topic("t", other, 10)
        sink = Collect()
        queue, consumer = broker.subscribe_topic("t", sink, 10, durable=("app", "s"))
        await broker.send([_pub("t", "m")])
        await _until(lambda: len(sink.got) == 1 and len(other.got) == 1)
        broker.nack(queue, consumer, [sink.got[0][0]])
        await _until(lambda: len(sink.got) == 2)
        assert sink.got[1][1].message.redelivery_count == 1
        # The other subscription's copy is not touched by this one's redelivery.
        assert other.got[0][1].message.redelivery_count == 0
        broker.nack(queue, consumer, [sink.got[1][0]])
        await _until(lambda: "DLQ.t" in broker.queues and broker.queues["DLQ.t"].pending == 1)
        dead = broker.browse("DLQ.t", 10)[0]
        assert dead.id == "m" and not dead.topic
        assert dead.headers["dlq_original_queue"] == "t"
        await _stop(broker)

    run(scenario())


def test_one_subscriber_per_durable_and_replace_and_unsubscribe(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker = await _broker(tmp_path)
        queue, consumer = broker.subscribe_topic("a", Collect(), 10, durable=("c", "s"))
        with pytest.raises(BrokerError, match="already has an active subscriber"):
            broker.subscribe_topic("a", Collect(), 10, durable=("c", "s"))
        with pytest.raises(BrokerError, match="active subscriber"):
            broker.unsubscribe_durable("c", "s")
        broker.unsubscribe(queue, consumer)
        await broker.send([_pub("a", f"m{i}") for i in range(5)])
        assert len(_stored_keys(broker.store)) == 5
        # Another pattern under the same name replaces it: its messages go.
        sink = Collect()
        replaced, consumer = broker.subscribe_topic("b", sink, 10, durable=("c", "s"))
        assert replaced != queue and queue not in broker.queues
        await _until(lambda: _stored_keys(broker.store) == [])
        await broker.send([_pub("a", "lost"), _pub("b", "kept")])
        await _until(lambda: len(sink.got) == 1)
        assert sink.ids == ["kept"]
        broker.unsubscribe(replaced, consumer)  # back to the queue, marked
        assert len(_stored_keys(broker.store)) == 1
        broker.unsubscribe_durable("c", "s")
        await _until(lambda: _stored_keys(broker.store) == [])
        with pytest.raises(BrokerError, match="no durable subscription"):
            broker.unsubscribe_durable("c", "s")
        await broker.send([_pub("b", "after")])
        assert broker.dropped == 2  # "lost" and "after"
        await _stop(broker)

        broker = await _broker(tmp_path)  # the removal was stored: nothing comes back
        assert len(broker.topics) == 0 and broker.queues == {}
        await _stop(broker)

    run(scenario())


def test_nondurable_copies_are_bounded_by_the_memory_gate(tmp_path: Path) -> None:
    async def scenario() -> None:
        # A limit of about 40 copies of 1 KiB (the gate counts twice the bytes).
        broker = await _broker(tmp_path, nonpersistent_memory_limit=80 * 1100)
        slow = Collect()
        queue, consumer = broker.subscribe_topic("t", slow, 1)
        body = b"x" * 1024

        async def publish(n: int) -> None:
            for i in range(n):
                message = Message(id=f"m{i}", destination="t", body=body, topic=True)
                await broker.send([message])

        task = asyncio.create_task(publish(200))
        await _until(lambda: broker.memory._waiters != [])
        # The publisher waits: the slow subscriber holds the broker's limit, no more.
        held = broker.memory.used
        assert 30 * 1024 < held <= 80 * 1100
        assert not task.done()
        # The subscriber leaves: the memory is freed and the publisher goes on (drops).
        broker.unsubscribe(queue, consumer)
        await asyncio.wait_for(task, 10)
        assert broker.memory.used == 0
        assert broker.dropped > 0
        await _stop(broker)

    run(scenario())


def test_resend_of_a_durable_publish_is_not_fanned_out_twice(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker = await _broker(tmp_path)
        sink = Collect()
        broker.subscribe_topic("t", sink, 10, durable=("c", "s"))
        first = await broker.send([_pub("t", "same")])
        again = await broker.send([_pub("t", "same")])
        assert first.duplicates == [] and again.duplicates == [0]
        await _until(lambda: len(sink.got) == 1)
        await asyncio.sleep(0.05)
        assert sink.ids == ["same"]
        await _stop(broker)

    run(scenario())


def test_expired_copy_of_a_nondurable_subscription_keeps_memory_counted(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker = await _broker(tmp_path)
        broker.subscribe_topic("t", Collect(), 1)  # holds one in flight, never acks
        message = _pub("t", "soon")
        message.expiration_ms = 1  # long past
        await broker.send([_pub("t", "first"), message])
        broker.expire()
        await _until(lambda: "DLQ.t" in broker.queues and broker.queues["DLQ.t"].pending == 1)
        # In memory only, as the copy was; consumed from the DLQ, its memory is freed.
        assert _stored_keys(broker.store) == []
        held = broker.memory.used
        sink = Collect()
        consumer = broker.subscribe("DLQ.t", sink, 10)
        await _until(lambda: len(sink.got) == 1)
        broker.ack("DLQ.t", consumer, [sink.got[0][0]])
        assert broker.memory.used == held - sink.got[0][1].size
        await _stop(broker)

    run(scenario())


def test_resend_to_nondurable_subscriptions_is_a_duplicate(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker = await _broker(tmp_path)
        sink = Collect()
        broker.subscribe_topic("t", sink, 10)
        first = await broker.send([_pub("t", "once"), _pub("t", "np", persistent=False)])
        # A producer whose stream broke before the ack sends both again.
        again = await broker.send([_pub("t", "once"), _pub("t", "np", persistent=False)])
        assert first.duplicates == [] and again.duplicates == [0, 1]
        await _until(lambda: len(sink.got) == 2)
        await asyncio.sleep(0.05)
        assert sink.ids == ["once", "np"]
        assert broker.published == 2
        await _stop(broker)

    run(scenario())


def test_removed_durable_subscription_leaves_no_ids_behind(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker = await _broker(tmp_path)
        queue, consumer = broker.subscribe_topic("t", Collect(), 1, durable=("c", "s"))
        broker.unsubscribe(queue, consumer)
        sent = [f"m{i}" for i in range(3000)]
        for k in range(0, 3000, 500):
            await broker.send([_pub("t", mid) for mid in sent[k : k + 500]])

        def consumed() -> set[str]:
            rows = broker.store.scan_all(b"", 1_000_000)
            return {m.decode() for k, v in rows if k[:1] == b"c" for m in decode_ids(v)}

        assert consumed() == set()
        broker.unsubscribe_durable("c", "s")
        # Deleted as consumed messages are: their ids are kept for the duplicate check
        # and pruned with the rest (not left in the store for good).
        await _until(lambda: _stored_keys(broker.store) == [] and consumed() == set(sent))
        await _stop(broker)

    run(scenario())
