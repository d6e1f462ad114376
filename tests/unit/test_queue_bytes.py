"""A consumer's in-flight bytes bound, decided by the queue alone (no broker, no I/O)."""

from __future__ import annotations

from broker.core.queue import Consumer, Entry, Queue
from broker.pb.message_pb2 import Message
from tests.unit.test_queue import Sink

_seq = iter(range(1, 1_000_000))


def sized(size: int, persistent: bool = False) -> Entry:
    message = Message(id=f"m{size}-{next(_seq)}", destination="q", persistent=persistent)
    return Entry(message, next(_seq), size)


def ids(queue: Queue) -> list[int]:
    result = queue.dispatch(0)
    return [e.size for _, batch in result.deliveries for _, e in batch]


def test_deliveries_stop_at_the_byte_bound_and_resume_on_ack() -> None:
    queue = Queue("q", window=100, max_redeliveries=5)
    consumer = Consumer(sink=Sink(), prefetch=1_000, max_bytes=250)
    queue.add_consumer(consumer)
    for _ in range(10):
        queue.enqueue(sized(100))
    # 100 + 100 is under 250, the third reaches past it: out it goes, then no more.
    assert ids(queue) == [100, 100, 100]
    assert consumer.in_flight_bytes == 300 and consumer.room == 0
    assert ids(queue) == []
    queue.ack(consumer, [1, 2])
    assert consumer.in_flight_bytes == 100
    assert ids(queue) == [100, 100]


def test_one_message_larger_than_the_bound_still_goes_out_alone() -> None:
    queue = Queue("q", window=100, max_redeliveries=5)
    consumer = Consumer(sink=Sink(), prefetch=1_000, max_bytes=250)
    queue.add_consumer(consumer)
    queue.enqueue(sized(1_000))
    queue.enqueue(sized(10))
    assert ids(queue) == [1_000]
    assert ids(queue) == []
    queue.ack(consumer, [1])
    assert ids(queue) == [10]


def test_returned_messages_free_their_bytes() -> None:
    queue = Queue("q", window=100, max_redeliveries=5)
    consumer = Consumer(sink=Sink(), prefetch=1_000, max_bytes=250)
    queue.add_consumer(consumer)
    for _ in range(3):
        queue.enqueue(sized(100))
    assert len(ids(queue)) == 3
    queue.nack(consumer, [1])
    assert consumer.in_flight_bytes == 200
    queue.remove_consumer(consumer)
    assert consumer.in_flight_bytes == 0 and queue.pending == 3


def test_no_bound_by_default() -> None:
    queue = Queue("q", window=100, max_redeliveries=5)
    consumer = Consumer(sink=Sink(), prefetch=5)
    queue.add_consumer(consumer)
    for _ in range(10):
        queue.enqueue(sized(10**9))
    assert len(ids(queue)) == 5


def test_non_persistent_bytes_are_not_cached_beside_the_message() -> None:
    entry = sized(10)
    assert entry.data == entry.message.SerializeToString()
    assert entry._data is None
    kept = sized(10, persistent=True)
    assert kept.data is kept.data
