"""Unit tests for the forwarding rule (netconnector.forwarding)."""

from __future__ import annotations

import itertools

import pytest

from netconnector.forwarding import brokers_reached, may_forward, returns_taken


def test_counters() -> None:
    assert brokers_reached(["A"]) == 0
    assert returns_taken(["A"]) == 0
    assert brokers_reached(["A", "B"]) == 1
    assert returns_taken(["A", "B", "A"]) == 1
    assert brokers_reached(["A", "B", "A"]) == 1
    assert brokers_reached(["A", "B", "C", "B", "A"]) == 2
    assert returns_taken(["A", "B", "C", "B", "A"]) == 2


def test_default_ttl_round_trip_once() -> None:
    ttl = 1  # messageTTL defaults to networkTTL, whose default is 1
    # Produced on A, forwarded to B where a consumer waits.
    assert may_forward(["A"], "B", holder_has_local_consumers=False, message_ttl=ttl)
    assert may_forward(["A"], "B", holder_has_local_consumers=True, message_ttl=ttl)
    # B's consumer left and A has one now: the message follows it back, once.
    assert may_forward(["A", "B"], "A", holder_has_local_consumers=False, message_ttl=ttl)
    # From [A, B, A] it cannot go back to B again with messageTTL 1...
    assert not may_forward(["A", "B", "A"], "B", holder_has_local_consumers=False,
                           message_ttl=ttl)
    # ...but can with messageTTL 2, and then no further.
    assert may_forward(["A", "B", "A"], "B", holder_has_local_consumers=False, message_ttl=2)
    assert not may_forward(["A", "B", "A", "B"], "A", holder_has_local_consumers=False,
                           message_ttl=2)


@pytest.mark.parametrize("ttl", [1, 2, 3, 10])
def test_never_back_onto_path_while_holder_has_local_consumer(ttl: int) -> None:
    for path, target in [
        (["A", "B"], "A"),
        (["A", "B", "C"], "A"),
        (["A", "B", "C"], "B"),
        (["A", "B", "A"], "B"),
    ]:
        assert not may_forward(path, target, holder_has_local_consumers=True, message_ttl=ttl)


def test_message_ttl_bounds_new_brokers_like_activemq() -> None:
    # Chain A - B - C: with messageTTL 1 a message crosses one bridge to a new broker.
    assert not may_forward(["A", "B"], "C", holder_has_local_consumers=False, message_ttl=1)
    assert may_forward(["A", "B"], "C", holder_has_local_consumers=False, message_ttl=2)
    assert not may_forward(["A", "B", "C"], "D", holder_has_local_consumers=False,
                           message_ttl=2)


def test_follows_consumer_back_along_a_chain() -> None:
    # A - B - C with messageTTL 2: a message that reached C follows the consumer back to A.
    path = ["A", "B", "C"]
    assert may_forward(path, "B", holder_has_local_consumers=False, message_ttl=2)
    path.append("B")
    assert may_forward(path, "A", holder_has_local_consumers=False, message_ttl=2)
    path.append("A")
    assert not may_forward(path, "B", holder_has_local_consumers=False, message_ttl=2)


def test_return_does_not_use_up_new_broker_budget() -> None:
    # Returned to A, the message may still move on to a broker it never visited.
    assert may_forward(["A", "B", "A"], "C", holder_has_local_consumers=False, message_ttl=2)
    assert not may_forward(["A", "B", "A"], "C", holder_has_local_consumers=False,
                           message_ttl=1)


def test_never_to_itself() -> None:
    assert not may_forward(["A"], "A", holder_has_local_consumers=False, message_ttl=5)
    assert not may_forward(["A", "B"], "B", holder_has_local_consumers=False, message_ttl=5)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="broker path"):
        may_forward([], "A", holder_has_local_consumers=False, message_ttl=1)
    with pytest.raises(ValueError, match="messageTTL"):
        may_forward(["A"], "B", holder_has_local_consumers=False, message_ttl=0)


@pytest.mark.parametrize("ttl", [1, 2, 3])
def test_every_route_ends(ttl: int) -> None:
    # Whatever the demand does, in a full mesh of four brokers with no local consumers
    # anywhere (the worst case for bouncing), every sequence of permitted hops ends, and
    # within 2 * messageTTL hops.
    brokers = "ABCD"
    longest = 0
    frontier: list[list[str]] = [["A"]]
    while frontier:
        path = frontier.pop()
        longest = max(longest, len(path) - 1)
        assert len(path) - 1 <= 2 * ttl
        for target in brokers:
            if may_forward(path, target, holder_has_local_consumers=False, message_ttl=ttl):
                frontier.append([*path, target])
    assert longest == 2 * ttl


def test_accepts_any_sequence() -> None:
    assert may_forward(("A",), "B", holder_has_local_consumers=False, message_ttl=1)
    for path in itertools.permutations("ABC"):
        assert not may_forward(path, path[-1], holder_has_local_consumers=False,
                               message_ttl=3)
