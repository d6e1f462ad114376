"""Client URL parsing and the reconnect policy: pure functions, no broker needed."""

from __future__ import annotations

import dataclasses
import itertools
import os
import random

import pytest

from broker.client import ClientUrl, is_failover_code, new_message_id, parse_url
from broker.reconnect import AddressRotation, Backoff

# --------------------------------------------------------------------------- plain addresses


def test_plain_address() -> None:
    url = parse_url("127.0.0.1:61616")
    assert url == ClientUrl(addresses=("127.0.0.1:61616",))
    assert url.failover is False
    assert url.timeout is None


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("localhost:61616", "localhost:61616"),
        ("broker-1.example.com:1", "broker-1.example.com:1"),
        ("  127.0.0.1:61616  ", "127.0.0.1:61616"),
        ("tcp://127.0.0.1:61616", "127.0.0.1:61616"),
        ("TCP://host:61616", "host:61616"),
        ("[::1]:61616", "[::1]:61616"),
        ("[fe80::1%eth0]:5", "[fe80::1%eth0]:5"),
        ("host:065535", "host:65535"),
    ],
)
def test_plain_address_forms(text: str, address: str) -> None:
    assert parse_url(text).addresses == (address,)


# --------------------------------------------------------------------------- failover


def test_failover_defaults() -> None:
    url = parse_url("failover:(127.0.0.1:61616,127.0.0.1:61617)")
    assert url.addresses == ("127.0.0.1:61616", "127.0.0.1:61617")
    assert url.failover is True
    assert url.initial_reconnect_delay == pytest.approx(0.010)
    assert url.max_reconnect_delay == pytest.approx(1.0)
    assert url.timeout is None
    assert url.randomize is False


def test_failover_options() -> None:
    url = parse_url(
        "failover:(a:1,b:2)?maxReconnectDelay=500&initialReconnectDelay=20"
        "&timeout=3000&randomize=true"
    )
    assert url == ClientUrl(
        addresses=("a:1", "b:2"),
        failover=True,
        initial_reconnect_delay=0.020,
        max_reconnect_delay=0.5,
        timeout=3.0,
        randomize=True,
    )


def test_activemq_spelling_and_reconnect_attempts() -> None:
    url = parse_url("failover://(tcp://a:1,tcp://b:2)?maxReconnectAttempts=3")
    assert url == ClientUrl(addresses=("a:1", "b:2"), failover=True, max_reconnect_attempts=3)
    assert parse_url("failover:(a:1)?maxReconnectAttempts=-1").max_reconnect_attempts is None
    assert parse_url("failover:(a:1)?maxReconnectAttempts=0").max_reconnect_attempts == 0
    with pytest.raises(ValueError, match="maxReconnectAttempts must be -1 \\(forever\\) or more"):
        parse_url("failover:(a:1)?maxReconnectAttempts=-2")
    with pytest.raises(ValueError, match="maxReconnectAttempts must be a whole number, not 'x'"):
        parse_url("failover:(a:1)?maxReconnectAttempts=x")


def test_failover_single_address_and_no_parentheses() -> None:
    assert parse_url("failover:(a:1)").addresses == ("a:1",)
    url = parse_url("failover:a:1,tcp://b:2?timeout=100")
    assert url.addresses == ("a:1", "b:2")
    assert url.timeout == pytest.approx(0.1)


def test_failover_keeps_address_order_and_spacing_is_ignored() -> None:
    url = parse_url("failover:( c:3 , a:1,b:2 )")
    assert url.addresses == ("c:3", "a:1", "b:2")


@pytest.mark.parametrize("timeout", ["0", "-1", "-5000"])
def test_timeout_zero_or_negative_means_forever(timeout: str) -> None:
    assert parse_url(f"failover:(a:1)?timeout={timeout}").timeout is None


def test_option_names_are_case_insensitive_and_randomize_false() -> None:
    url = parse_url("FAILOVER:(a:1)?MAXRECONNECTDELAY=250&Randomize=False")
    assert url.max_reconnect_delay == pytest.approx(0.25)
    assert url.randomize is False


def test_empty_query_is_allowed() -> None:
    assert parse_url("failover:(a:1)?") == parse_url("failover:(a:1)")


def test_client_url_is_frozen() -> None:
    url = parse_url("a:1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        url.failover = True  # type: ignore[misc]


# --------------------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("localhost", "no port"),
        ("localhost:", "bad port"),
        ("localhost:0", "bad port"),
        ("localhost:65536", "bad port"),
        ("localhost:http", "bad port"),
        ("localhost:61616/", "bad port"),
        (":61616", "bad host"),
        ("bad host:1", "bad host"),
        ("::1:61616", "brackets"),
        ("[::1]", "no port"),
        ("[::1:61616", "IPv6"),
        ("[nothex]:1", "IPv6"),
        ("nio://a:1", "unsupported scheme"),
        ("a:1?timeout=5", "failover"),
        ("failover:", "no addresses"),
        ("failover:()", "no addresses"),
        ("failover:(a:1", "missing ')'"),
        ("failover:(a:1)x", "after ')'"),
        ("failover:(a:1,)", "empty address"),
        ("failover:(a:1,,b:2)", "empty address"),
        ("failover:(a:1,b)", "no port"),
        ("failover:(a:1)?timeout", "name=value"),
        ("failover:(a:1)?=5", "name=value"),
        ("failover:(a:1)?backup=true", "unknown option"),
        ("failover:(a:1)?timeout=1&timeout=2", "given twice"),
        ("failover:(a:1)?timeout=1.5", "whole milliseconds"),
        ("failover:(a:1)?maxReconnectDelay=", "whole milliseconds"),
        ("failover:(a:1)?maxReconnectDelay=0", "positive"),
        ("failover:(a:1)?initialReconnectDelay=-10", "positive"),
        ("failover:(a:1)?randomize=yes", "true or false"),
    ],
)
def test_malformed_urls_say_which_and_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_url(text)
    message = str(caught.value)
    assert repr(text) in message
    assert reason in message


def test_non_string_url() -> None:
    with pytest.raises(ValueError, match="not a string"):
        parse_url(61616)  # type: ignore[arg-type]


def test_unknown_option_lists_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match="initialReconnectDelay, maxReconnectAttempts, maxReconnectDelay"
    ):
        parse_url("failover:(a:1)?backup=true")


# --------------------------------------------------------------------------- backoff


def test_backoff_doubles_from_initial_up_to_the_cap() -> None:
    backoff = Backoff(0.010, 1.0)
    delays = [backoff.next() for _ in range(10)]
    assert delays == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0, 1.0])


def test_backoff_reset_starts_again() -> None:
    backoff = Backoff(0.010, 1.0)
    for _ in range(5):
        backoff.next()
    backoff.reset()
    assert backoff.next() == pytest.approx(0.010)


def test_backoff_initial_above_cap_is_capped() -> None:
    backoff = Backoff(5.0, 1.0)
    assert [backoff.next(), backoff.next()] == [1.0, 1.0]


def test_backoff_from_url_defaults_never_waits_more_than_a_second() -> None:
    url = parse_url("failover:(a:1,b:2)")
    backoff = Backoff(url.initial_reconnect_delay, url.max_reconnect_delay)
    assert max(backoff.next() for _ in range(100)) == pytest.approx(1.0)


@pytest.mark.parametrize(("initial", "maximum"), [(0, 1.0), (0.01, 0), (-1, 1.0)])
def test_backoff_rejects_non_positive_delays(initial: float, maximum: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial, maximum)


# --------------------------------------------------------------------------- rotation


def test_rotation_round_robin_from_the_first() -> None:
    rotation = AddressRotation(("a:1", "b:2", "c:3"))
    assert [rotation.next() for _ in range(7)] == [
        "a:1",
        "b:2",
        "c:3",
        "a:1",
        "b:2",
        "c:3",
        "a:1",
    ]


def test_rotation_single_address_repeats() -> None:
    rotation = AddressRotation(("a:1",), randomize=True)
    assert {rotation.next() for _ in range(5)} == {"a:1"}


def test_rotation_randomized_passes_cover_all_and_never_repeat_back_to_back() -> None:
    addresses = ("a:1", "b:2", "c:3", "d:4")
    rotation = AddressRotation(addresses, randomize=True, rng=random.Random(7))
    tried = [rotation.next() for _ in range(4 * 50)]
    for start in range(0, len(tried), 4):
        assert sorted(tried[start : start + 4]) == sorted(addresses)
    assert all(x != y for x, y in itertools.pairwise(tried))
    assert len({tuple(tried[i : i + 4]) for i in range(0, len(tried), 4)}) > 1


def test_rotation_needs_an_address() -> None:
    with pytest.raises(ValueError):
        AddressRotation(())


# --------------------------------------------------------------------------- small pure helpers


def test_message_ids_are_unique_hex() -> None:
    ids = [new_message_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for message_id in ids[:50]:
        assert len(message_id) == 32
        int(message_id, 16)


def test_a_forked_child_makes_other_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report some ids and leave at once
        os.write(write, " ".join(new_message_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    mine = {new_message_id() for _ in range(100)}
    assert len(child) == 100
    assert not child & mine


@pytest.mark.parametrize(
    ("code", "failover"),
    [
        ("UNAVAILABLE", True),
        ("FAILED_PRECONDITION", True),
        ("CANCELLED", True),
        ("INVALID_ARGUMENT", False),
        ("RESOURCE_EXHAUSTED", False),
        ("INTERNAL", False),
        ("", False),
    ],
)
def test_failover_codes(code: str, failover: bool) -> None:
    assert is_failover_code(code) is failover
