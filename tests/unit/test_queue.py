"""The queue's dispatch decisions, with no broker, store or network around them."""

from __future__ import annotations

import pytest

from broker.core.queue import Consumer, Entry, Queue
from broker.errors import InvalidArgument
from broker.pb.message_pb2 import Message


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[int, Entry]] = []

    def deliver(self, deliveries: list[tuple[int, Entry]]) -> None:
        self.got.extend(deliveries)


def got(c: Consumer) -> list[tuple[int, Entry]]:
    """What the consumer's test sink was handed so far."""
    assert isinstance(c.sink, Sink)
    return c.sink.got


_seq = iter(range(1, 1_000_000))


def entry(body: str, priority: int = 4, persistent: bool = True, expiration_ms: int = 0) -> Entry:
    message = Message(
        id=body,
        destination="q",
        body=body.encode(),
        priority=priority,
        persistent=persistent,
        expiration_ms=expiration_ms,
    )
    return Entry(message, next(_seq), len(body))


def deliver(queue: Queue, now_ms: int = 0) -> list[tuple[Consumer, list[str]]]:
    result = queue.dispatch(now_ms)
    for consumer, batch in result.deliveries:
        consumer.sink.deliver(batch)
    return [(c, [e.message.id for _, e in batch]) for c, batch in result.deliveries]


def consumer(queue: Queue, prefetch: int = 10, priority: int = 0) -> Consumer:
    c = Consumer(sink=Sink(), prefetch=prefetch, priority=priority)
    queue.add_consumer(c)
    return c


def bodies(c: Consumer) -> list[str]:
    return [e.message.id for _, e in got(c)]


def test_arrival_order_within_priority_and_higher_priority_first() -> None:
    q = Queue("q", window=100, max_redeliveries=6)
    for name, prio in [("a", 4), ("b", 4), ("c", 9), ("d", 0), ("e", 9)]:
        q.enqueue(entry(name, prio))
    c = consumer(q, prefetch=10)
    deliver(q)
    assert bodies(c) == ["c", "e", "a", "b", "d"]


def test_prefetch_bounds_unacknowledged_deliveries() -> None:
    q = Queue("q", window=100, max_redeliveries=6)
    for i in range(10):
        q.enqueue(entry(f"m{i}"))
    c = consumer(q, prefetch=3)
    deliver(q)
    assert bodies(c) == ["m0", "m1", "m2"]
    # Acking without new credit frees no room: credit is what the consumer grants.
    q.ack(c, [1])
    deliver(q)
    assert len(bodies(c)) == 3
    q.add_credit(c, 1)
    deliver(q)
    assert bodies(c) == ["m0", "m1", "m2", "m3"]
    # Credit never lets more than the prefetch be in flight.
    q.add_credit(c, 100)
    deliver(q)
    assert len(c.in_flight) == 3


def test_round_robin_among_equal_consumers() -> None:
    q = Queue("q", window=100, max_redeliveries=6)
    a, b = consumer(q, prefetch=100), consumer(q, prefetch=100)
    for i in range(10):
        q.enqueue(entry(f"m{i}"))
    deliver(q)
    assert len(bodies(a)) == 5 and len(bodies(b)) == 5
    assert sorted(bodies(a) + bodies(b)) == sorted(f"m{i}" for i in range(10))


def test_higher_priority_consumer_first_and_surplus_to_lower() -> None:
    q = Queue("q", window=100, max_redeliveries=6)
    low = consumer(q, prefetch=100, priority=-1)
    high = consumer(q, prefetch=2, priority=0)
    for i in range(5):
        q.enqueue(entry(f"m{i}"))
    deliver(q)
    assert bodies(high) == ["m0", "m1"]
    assert bodies(low) == ["m2", "m3", "m4"]


def test_consumer_loss_returns_messages_marked_in_order() -> None:
    q = Queue("q", window=100, max_redeliveries=6)
    first = consumer(q, prefetch=2)
    for i in range(3):
        q.enqueue(entry(f"m{i}"))
    deliver(q)
    requeued, dead = q.remove_consumer(first)
    assert [e.message.id for e in requeued] == ["m0", "m1"] and dead == []
    second = consumer(q, prefetch=10)
    deliver(q)
    assert bodies(second) == ["m0", "m1", "m2"]
    assert [e.message.redelivery_count for _, e in got(second)] == [1, 1, 0]


def test_redelivery_limit_sends_to_dead_letters() -> None:
    q = Queue("q", window=100, max_redeliveries=2)
    q.enqueue(entry("poison"))
    c = consumer(q, prefetch=1)
    for attempt in range(3):
        deliver(q)
        tag = next(iter(c.in_flight))
        requeued, dead = q.nack(c, [tag])
        q.add_credit(c, 1)
        if attempt < 2:
            assert requeued and not dead
    assert [(e.message.id, reason) for e, reason in dead] == [
        ("poison", "redelivered more than 2 times")
    ]
    assert q.depth == 0 and q.stats.dead_lettered == 1


def test_expired_messages_are_not_delivered() -> None:
    q = Queue("q", window=100, max_redeliveries=6)
    q.enqueue(entry("old", expiration_ms=1_000))
    q.enqueue(entry("fresh", expiration_ms=10_000))
    q.enqueue(entry("forever"))
    c = consumer(q)
    result = q.dispatch(now_ms=5_000)
    assert [e.message.id for e, _ in result.dead] == ["old"]
    delivered = [e.message.id for _, batch in result.deliveries for _, e in batch]
    assert delivered == ["fresh", "forever"]
    assert c.in_flight


def test_expiry_sweep_without_consumers() -> None:
    q = Queue("q", window=100, max_redeliveries=6)
    q.enqueue(entry("old", expiration_ms=1_000))
    q.enqueue(entry("keep"))
    assert [e.message.id for e in q.expire(now_ms=2_000)] == ["old"]
    assert q.pending == 1


def test_expiry_sweeps_find_what_arrives_between_them() -> None:
    # The sweep skips a window with no expiring message, and must notice one that
    # arrives (or comes back undelivered) after a sweep that found none.
    q = Queue("q", window=100, max_redeliveries=6)
    q.enqueue(entry("forever"))
    assert q.expire(now_ms=1_000) == []
    q.enqueue(entry("later", expiration_ms=2_000))
    assert q.expire(now_ms=1_500) == []  # not yet due: still watched
    assert [e.message.id for e in q.expire(now_ms=2_500)] == ["later"]
    c = consumer(q, prefetch=1)
    q.enqueue(entry("returned", priority=9, expiration_ms=4_000))
    deliver(q)
    assert [e.message.id for _, e in got(c)] == ["returned"]
    assert q.expire(now_ms=5_000) == []  # in flight, not in the window
    q.remove_consumer(c)
    assert [e.message.id for e in q.expire(now_ms=5_000)] == ["returned"]
    assert [e.message.id for e in q.purge()] == ["forever"]


def test_bad_acks_and_credit_are_refused_without_effect() -> None:
    q = Queue("q", window=100, max_redeliveries=6)
    for i in range(3):
        q.enqueue(entry(f"m{i}"))
    c = consumer(q, prefetch=3)
    deliver(q)
    with pytest.raises(InvalidArgument, match="delivery tag 99 is not in flight"):
        q.ack(c, [1, 99])
    assert sorted(c.in_flight) == [1, 2, 3]  # tag 1 was not half-acked
    with pytest.raises(InvalidArgument, match="credit must not be negative"):
        q.add_credit(c, -1)


def test_window_pages_out_and_in_in_store_order() -> None:
    q = Queue("q", window=4, max_redeliveries=6)
    entries = [entry(f"m{i}") for i in range(10)]
    kept = [q.enqueue(e) for e in entries]
    assert kept == [True] * 4 + [False] * 6
    assert q.pending == 10 and q.paged_out == 6
    # Nothing to page in while the window is full.
    assert q.page_in_wanted() == 0
    c = consumer(q, prefetch=3)
    deliver(q)
    assert q.page_in_wanted() == 3
    assert q.cursor[4] == entries[3].seq
    # The broker reads the store after the cursor and hands the rows back.
    q.page_in(4, entries[4:7], entries[6].seq)
    assert q.paged_out == 3 and q.pending == 7
    q.ack(c, [1, 2, 3])
    q.add_credit(c, 3)
    deliver(q)
    assert bodies(c) == [f"m{i}" for i in range(6)]


def test_nonpersistent_messages_stay_in_memory_past_the_window() -> None:
    q = Queue("q", window=2, max_redeliveries=6)
    assert all(q.enqueue(entry(f"n{i}", persistent=False)) for i in range(5))
    assert q.paged_out == 0 and q.pending == 5


def test_a_consumer_that_refuses_a_message_leaves_it_for_others() -> None:
    q = Queue("q", window=100, max_redeliveries=6)
    picky = Consumer(sink=Sink(), prefetch=10, accepts=lambda m: m.id != "looping")
    q.add_consumer(picky)
    q.enqueue(entry("looping"))
    q.enqueue(entry("fine"))
    deliver(q)
    assert bodies(picky) == ["fine"]
    assert q.pending == 1
    other = consumer(q, prefetch=10, priority=-5)
    deliver(q)
    assert bodies(other) == ["looping"]


def test_a_credit_limit_above_the_prefetch_bounds_unacked_by_the_prefetch() -> None:
    # A bridge: acks come when the peer stored a batch, credit when its consumers took
    # the messages. 3 unacknowledged at most, 5 not yet taken at most.
    q = Queue("q", window=100, max_redeliveries=6)
    for n in range(10):
        q.enqueue(entry(f"m{n}"))
    c = Consumer(sink=Sink(), prefetch=3, credit_limit=5)
    q.add_consumer(c)
    assert [ids for _, ids in deliver(q)] == [["m0", "m1", "m2"]]
    q.ack(c, [tag for tag, _ in got(c)])  # stored at the peer, not yet taken there
    assert [ids for _, ids in deliver(q)] == [["m3", "m4"]]  # 5 not taken: no more
    q.ack(c, [tag for tag, _ in got(c)[3:]])
    assert deliver(q) == []
    q.add_credit(c, 4)  # the peer's consumers took 4
    assert [ids for _, ids in deliver(q)] == [["m5", "m6", "m7"]]  # prefetch again
    q.add_credit(c, 100)
    assert c.credit == 5  # capped at the limit, not at the prefetch
    q.set_prefetch(c, 3, credit_limit=0)  # the limit falls back to the prefetch
    assert c.credit == 3


def test_weighted_round_robin_among_equal_consumers() -> None:
    q = Queue("q", window=100, max_redeliveries=6)
    heavy = Consumer(sink=Sink(), prefetch=100, weight=3)
    light = Consumer(sink=Sink(), prefetch=100)
    q.add_consumer(heavy)
    q.add_consumer(light)
    for n in range(40):
        q.enqueue(entry(f"w{n}"))
    deliver(q)
    assert (len(got(heavy)), len(got(light))) == (30, 10)


def test_set_priority_reorders_consumers() -> None:
    q = Queue("q", window=100, max_redeliveries=6)
    first = consumer(q, priority=-1)
    second = consumer(q, priority=-2)
    q.enqueue(entry("p1"))
    deliver(q)
    assert bodies(first) == ["p1"] and bodies(second) == []
    q.set_priority(second, 0)
    q.enqueue(entry("p2"))
    deliver(q)
    assert bodies(second) == ["p2"]


def test_a_remote_consumers_messages_come_back_uncounted() -> None:
    # A bridge that drops handed nothing to an application: no count, no dead letter.
    q = Queue("q", window=100, max_redeliveries=1)
    for n in range(3):
        q.enqueue(entry(f"r{n}"))
    for _ in range(3):  # more link losses than max_redeliveries allows deliveries
        bridge = Consumer(sink=Sink(), prefetch=10, remote=True)
        q.add_consumer(bridge)
        deliver(q)
        assert len(got(bridge)) == 3
        assert q.remove_consumer(bridge) == ([], [])
    local = consumer(q)
    deliver(q)
    assert bodies(local) == ["r0", "r1", "r2"]
    assert all(e.message.redelivery_count == 0 for _, e in got(local))


def test_uncounted_nack_and_reject() -> None:
    q = Queue("q", window=100, max_redeliveries=6)
    for n in range(3):
        q.enqueue(entry(f"x{n}"))
    c = consumer(q)
    deliver(q)
    tags = [tag for tag, _ in got(c)]
    assert q.nack(c, tags[:1], counted=False) == ([], [])
    rejected = q.reject(c, tags[1:2])
    assert [e.message.id for e in rejected] == ["x1"]
    assert q.stats.dead_lettered == 1
    assert q.pending == 1 and q.in_flight == 1  # x0 back, x1 gone, x2 still out
    with pytest.raises(InvalidArgument):
        q.reject(c, tags[1:2])  # no longer in flight
