"""The pure parts of topics: topic names and patterns, and the subscription table
(add, remove, match, durable resume and replace, one subscriber at a time)."""

from __future__ import annotations

import pytest

from broker.core.names import check_queue_name
from broker.core.patterns import has_wildcard, matches
from broker.core.topics import (
    DURABLE_PREFIX,
    NONDURABLE_PREFIX,
    SubscriptionBusy,
    SubscriptionTable,
    Take,
    check_topic_name,
    check_topic_pattern,
    is_subscription_queue,
)
from broker.errors import BrokerError, InvalidArgument


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("orders", "orders", True),
        ("orders", "orders.eu", False),
        ("orders.*", "orders.eu", True),
        ("orders.*", "orders.eu.paris", False),
        ("orders.*", "orders", False),
        ("orders.>", "orders.eu", True),
        ("orders.>", "orders.eu.paris", True),
        ("orders.>", "orders", False),
        ("*.eu.>", "orders.eu.paris.left", True),
        ("*.eu.>", "orders.us.paris", False),
        (">", "anything.at.all", True),
    ],
)
def test_wildcards_as_activemq(pattern: str, topic: str, expected: bool) -> None:
    assert matches(pattern, topic) is expected
    table = SubscriptionTable()
    sub = table.add_nondurable(pattern)
    assert (table.match(topic) == (sub,)) is expected


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("", "empty"),
        ("orders.*", "wildcard"),
        ("orders.>", "wildcard"),
        ("orders..eu", "empty segment"),
        ("orders*", "whole segment"),
        ("a\x01b", "control character"),
        ("x" * 300, "over the limit"),
    ],
)
def test_bad_topic_names_for_publishing(name: str, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        check_topic_name(name)


@pytest.mark.parametrize(
    ("pattern", "words"),
    [("", "empty"), ("a.>.b", "last segment"), ("a*", "whole segment"), (" a", "spaces")],
)
def test_bad_patterns(pattern: str, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        check_topic_pattern(pattern)


def test_internal_queue_names_cannot_be_user_queue_names() -> None:
    table = SubscriptionTable()
    one = table.add_nondurable("a")
    two = table.take_durable("client", "sub", "a", "g1").subscription
    for sub in (one, two):
        assert is_subscription_queue(sub.queue)
        with pytest.raises(InvalidArgument, match="control character"):
            check_queue_name(sub.queue)
    assert one.queue.startswith(NONDURABLE_PREFIX)
    assert two.queue.startswith(DURABLE_PREFIX)
    assert not is_subscription_queue("orders")
    assert not has_wildcard("orders.eu") and has_wildcard("orders.*")


def test_fan_out_match_each_subscription_once() -> None:
    table = SubscriptionTable()
    exact = [table.add_nondurable("orders.eu") for _ in range(3)]
    star = table.add_nondurable("orders.*")
    tail = table.add_nondurable("orders.>")
    other = table.add_nondurable("stock.*")
    got = table.match("orders.eu")
    assert set(got) == {*exact, star, tail}
    assert len(got) == 5
    assert other not in got
    assert table.match("nobody.listens") == ()


def test_remove_updates_matches_and_cache() -> None:
    table = SubscriptionTable()
    a = table.add_nondurable("orders.*")
    b = table.add_nondurable("orders.*")
    assert set(table.match("orders.eu")) == {a, b}  # cached now
    assert table.release(a.queue) is a  # a non-durable subscription goes with its subscriber
    assert table.match("orders.eu") == (b,)
    table.remove(b.queue)
    assert table.match("orders.eu") == ()
    assert len(table) == 0


def test_durable_new_resume_replace() -> None:
    table = SubscriptionTable()
    first = table.take_durable("c1", "s", "orders.*", "g1")
    assert first.kind is Take.NEW
    queue = first.subscription.queue
    # Its subscriber leaves: the subscription stays, inactive, and keeps matching.
    assert table.release(queue) is None
    assert not first.subscription.active
    assert table.match("orders.eu") == (first.subscription,)
    # Same key, same pattern: resumed, same queue.
    again = table.take_durable("c1", "s", "orders.*", "g2")
    assert again.kind is Take.RESUME and again.subscription.queue == queue
    table.release(queue)
    # Same key, another pattern: replaced, a new queue; the old one no longer matches.
    other = table.take_durable("c1", "s", "stock.>", "g3")
    assert other.kind is Take.REPLACE
    assert other.replaced is first.subscription
    assert other.subscription.queue != queue
    assert table.match("orders.eu") == ()
    assert table.match("stock.x") == (other.subscription,)
    assert queue not in table.by_queue


def test_durable_one_subscriber_at_a_time_and_keys_per_client() -> None:
    table = SubscriptionTable()
    table.take_durable("c1", "s", "a", "g1")
    with pytest.raises(SubscriptionBusy, match="already has an active subscriber") as info:
        table.take_durable("c1", "s", "a", "g2")
    assert info.value.code == "ALREADY_EXISTS"
    # The same name under another client id is another subscription.
    assert table.take_durable("c2", "s", "a", "g3").kind is Take.NEW
    assert len(table.match("a")) == 2


def test_durable_needs_client_id_and_name() -> None:
    table = SubscriptionTable()
    with pytest.raises(InvalidArgument, match="needs a client id"):
        table.take_durable("", "s", "a", "g")
    with pytest.raises(InvalidArgument, match="subscription name is empty"):
        table.take_durable("c", "", "a", "g")
    with pytest.raises(InvalidArgument, match="topic pattern"):
        table.take_durable("c", "s", "a..b", "g")
    assert len(table) == 0


def test_remove_durable() -> None:
    table = SubscriptionTable()
    sub = table.take_durable("c", "s", "a", "g").subscription
    with pytest.raises(BrokerError, match="active subscriber") as info:
        table.remove_durable("c", "s")
    assert info.value.code == "ALREADY_EXISTS"
    table.release(sub.queue)
    assert table.remove_durable("c", "s") is sub
    assert table.match("a") == ()
    with pytest.raises(BrokerError, match="no durable subscription") as info:
        table.remove_durable("c", "s")
    assert info.value.code == "NOT_FOUND"


def test_restore_durable_is_inactive() -> None:
    table = SubscriptionTable()
    sub = table.restore_durable("c", "s", "a.>", "\x1ed\x1ec\x1es\x1eg")
    assert not sub.active
    assert table.match("a.b") == (sub,)
    assert table.take_durable("c", "s", "a.>", "new").kind is Take.RESUME


def test_network_filters_never_forward_a_subscription_queue() -> None:
    from netconnector.filters import DestinationFilter

    table = SubscriptionTable()
    queue = table.add_nondurable("orders").queue
    everything = DestinationFilter(statically_included=[">"])
    assert everything.forwards_statically("orders")
    assert not everything.forwards_statically(queue)
    assert not everything.forwards_dynamically(queue)


def test_a_topic_copy_is_an_entry_with_every_field() -> None:
    from broker.core.copies import TopicCopy
    from broker.core.queue import Entry
    from broker.pb.message_pb2 import Message

    message = Message(id="m", destination="t", priority=7, persistent=True, topic=True)
    plain = Entry(message, 3, 10, b"k", b"d")
    copy = TopicCopy(message, 3, 10, b"k", b"d", stored=False)
    # Every field Entry has, set (a field Entry gains must be set by TopicCopy too).
    for name in Entry.__slots__:
        assert hasattr(copy, name), name
        if name != "persistent":
            assert getattr(copy, name) == getattr(plain, name), name
    assert not copy.persistent
    # A redelivery changes this copy's message only.
    assert copy.count_redelivery() == 1
    assert message.redelivery_count == 0 and copy.message.redelivery_count == 1
    assert copy.count_redelivery() == 2


def test_durable_subscriptions_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from broker.core import topics

    monkeypatch.setattr(topics, "MAX_DURABLE_SUBSCRIPTIONS", 3)
    table = SubscriptionTable()
    for i in range(3):
        table.release(table.take_durable("c", f"s{i}", "a", f"g{i}").subscription.queue)
    with pytest.raises(BrokerError, match="3 durable subscriptions, its limit") as info:
        table.take_durable("c", "s3", "a", "g3")
    assert info.value.code == "RESOURCE_EXHAUSTED"
    # Resuming or replacing a known one is no new subscription.
    assert table.take_durable("c", "s0", "b", "g4").kind is Take.REPLACE
    table.remove_durable("c", "s1")
    assert table.take_durable("c", "s3", "a", "g5").kind is Take.NEW
