"""Priority holds under a backlog: the window the queue keeps in memory always holds the
highest-priority pending messages, so a higher-priority message goes out before every
lower one already pending, however many of those the store holds.

First the queue's paging decisions alone, then a real Broker on a real RocksDB store in
process, where page-ins read what evictions left in the store."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from broker.config import BrokerConfig, Sync
from broker.core.broker import Broker
from broker.core.queue import Consumer, Entry, Queue
from broker.core.store import Store
from broker.pb.message_pb2 import Message
from tests.support.aio import run
from tests.support.sinks import Collect

_seq = iter(range(1, 1_000_000))


def _entry(mid: str, priority: int, persistent: bool = True) -> Entry:
    message = Message(id=mid, destination="q", body=b"x", priority=priority, persistent=persistent)
    return Entry(message, next(_seq), 1)


def _take_one(q: Queue, c: Consumer) -> Entry:
    result = q.dispatch(0)
    assert len(result.deliveries) == 1 and len(result.deliveries[0][1]) == 1
    tag, entry = result.deliveries[0][1][0]
    q.advance_marks(result.deliveries[0][1])
    q.ack(c, [tag])
    q.add_credit(c, 1)
    return entry


def test_an_urgent_message_displaces_the_newest_low_priority_ones() -> None:
    q = Queue("q", window=16, max_redeliveries=6)
    low = [_entry(f"l{i}", 4) for i in range(40)]
    assert [q.enqueue(e) for e in low] == [True] * 16 + [False] * 24
    urgent = _entry("u", 9)
    assert q.enqueue(urgent)
    # A batch of the newest low ones (an eighth of the window) went back to the store,
    # and the cursor stands before them, so a page-in reads them, and only them, again.
    assert q.paged_out_by[4] == 24 + 2 and q.paged_out_by[9] == 0
    assert q.cursor[4] == low[14].seq - 1
    c = Consumer(sink=Collect(), prefetch=1)
    q.add_consumer(c)
    assert _take_one(q, c) is urgent
    assert [_take_one(q, c).message.id for _ in range(3)] == ["l0", "l1", "l2"]


def test_a_later_urgent_message_pages_out_behind_stored_urgent_ones() -> None:
    q = Queue("q", window=8, max_redeliveries=6)
    for i in range(8):
        assert q.enqueue(_entry(f"u{i}", 9))
    # The window holds nothing it ranks above: it waits in the store, in order.
    assert not q.enqueue(_entry("u8", 9))
    assert not q.enqueue(_entry("u9", 9))
    assert q.paged_out_by[9] == 2
    # And a lower one comes in behind the stored higher ones, never ahead of them.
    assert not q.enqueue(_entry("l", 4))
    assert q.paged_out_by[4] == 1


def test_a_single_priority_backlog_keeps_the_window_at_its_size() -> None:
    q = Queue("q", window=10, max_redeliveries=6)
    kept = [q.enqueue(_entry(f"m{i}", 4)) for i in range(35)]
    assert kept == [True] * 10 + [False] * 25


def test_redeliveries_are_never_evicted_and_the_window_grows_at_most_twice() -> None:
    """A message that left the window (handed out, come back) may be below its
    priority's cursor's reach: evicting it could make a page-in read an in-flight one."""
    q = Queue("q", window=4, max_redeliveries=6)
    for i in range(4):
        q.enqueue(_entry(f"l{i}", 2))
    c = Consumer(sink=Collect(), prefetch=4)
    q.add_consumer(c)
    result = q.dispatch(0)
    q.advance_marks(result.deliveries[0][1])
    q.nack(c, [tag for tag, _ in result.deliveries[0][1]])
    q.revoke_credit(c)
    assert q.pending == 4 and q.paged_out == 0
    kept = [q.enqueue(_entry(f"u{i}", 9)) for i in range(6)]
    # Over the window (nothing could go) up to twice its size, then the store.
    assert kept == [True] * 4 + [False] * 2
    assert q.paged_out_by == [0, 0, 0, 0, 0, 0, 0, 0, 0, 2]


def _broker(path: Path, window: int) -> Broker:
    config = BrokerConfig(
        name="a", port=0, data_dir=path, sync=Sync.LOCAL_MEM, memory_window=window
    )
    return Broker(config, Store(path))


async def _receive(sink: Collect, count: int) -> None:
    for _ in range(200):
        if len(sink.got) >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{len(sink.got)} of {count} deliveries arrived")


def test_an_urgent_message_behind_a_deep_backlog_is_next_and_survives_restart(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        broker = _broker(tmp_path / "a", window=64)
        await broker.start()
        await broker.send(
            [
                Message(id=f"l{i}", destination="q", body=b"x", priority=4, persistent=True)
                for i in range(2000)
            ]
        )
        await broker.send(
            [Message(id="u", destination="q", body=b"x", priority=9, persistent=True)]
        )
        sink = Collect()
        consumer = broker.subscribe("q", sink, prefetch=1)
        await _receive(sink, 1)
        assert sink.ids == ["u"]
        # The rest in the order sent, each once: the evicted ones paged in again.
        for n in range(2, 2002):
            broker.ack("q", consumer, [sink.got[-1][0]])
            broker.credit("q", consumer, 1)
            await _receive(sink, n)
        assert sink.ids[1:] == [f"l{i}" for i in range(2000)]
        assert not any(entry.message.redelivery_count for _, entry in sink.got)
        await broker.stop()
        broker.store.close()

        # After a restart the window is filled from the store, highest priority first.
        broker = _broker(tmp_path / "b", window=64)
        await broker.start()
        await broker.send(
            [
                Message(id=f"l{i}", destination="q", body=b"x", priority=4, persistent=True)
                for i in range(500)
            ]
        )
        await broker.send(
            [Message(id="u", destination="q", body=b"x", priority=9, persistent=True)]
        )
        await broker.stop()
        broker.store.close()
        broker = _broker(tmp_path / "b", window=64)
        await broker.start()
        sink = Collect()
        broker.subscribe("q", sink, prefetch=1)
        await _receive(sink, 1)
        assert sink.ids == ["u"]
        await broker.stop()
        broker.store.close()

    run(scenario())


def test_every_delivery_is_the_highest_priority_pending_one(tmp_path: Path) -> None:
    """Random sends of random priorities into a small window, consumed one at a time:
    each delivery is the oldest message of the highest priority pending, and every
    message is delivered exactly once, unmarked."""

    async def scenario() -> None:
        rng = random.Random(12)
        broker = _broker(tmp_path / "a", window=16)
        await broker.start()
        sink = Collect()
        consumer = broker.subscribe("q", sink, prefetch=1)
        # Credit only when the test asks for the next one, so that each delivery is
        # decided with the pending messages the test knows of.
        broker.revoke_credit("q", consumer)
        pending: list[tuple[int, int, str]] = []
        held: int | None = None
        sent = 0
        for _ in range(800):
            if rng.random() < 0.5 or not pending:
                batch = []
                for _ in range(rng.randint(1, 30)):
                    priority = rng.choice((0, 3, 4, 4, 4, 7, 9))
                    mid = f"m{sent}"
                    batch.append(
                        Message(
                            id=mid, destination="q", body=b"x", priority=priority, persistent=True
                        )
                    )
                    pending.append((-priority, sent, mid))
                    sent += 1
                await broker.send(batch)
                continue
            if held is not None:
                broker.ack("q", consumer, [held])
            broker.credit("q", consumer, 1)
            await _receive(sink, len(sink.got) + 1)
            held, entry = sink.got[-1]
            expected = min(pending)
            assert entry.message.id == expected[2], (entry.message.id, expected)
            assert not entry.message.redelivery_count
            pending.remove(expected)
        assert sent > 3000 and len(sink.got) > 300
        await broker.stop()
        broker.store.close()

    run(scenario())
