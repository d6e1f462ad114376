"""The hello exchange's decisions: refusals and each side's terms, no network."""

from __future__ import annotations

import pytest

from broker.pb import bridge_pb2
from netconnector.hello import PROTOCOL, acceptor_terms, make_hello, opener_terms, refusal
from netconnector.uri import parse_connector

DUPLEX = (
    "static:(b:1)?duplex=true&networkTTL=3&consumerTTL=2&messageTTL=2&prefetchSize=50"
    "&excludedDestinations=secret.>&decreaseNetworkConsumerPriority=false"
    "&conduitSubscriptions=false&securityToken=t0k"
)


def test_the_opener_terms_are_its_connector_settings() -> None:
    terms = opener_terms(parse_connector(DUPLEX), "b")
    assert (terms.peer, terms.forwards, terms.advertises) == ("b", True, True)
    assert (terms.network_ttl, terms.message_ttl, terms.advertise_ttl) == (3, 2, 2)
    assert (terms.prefetch, terms.decrease_priority, terms.conduit) == (50, False, False)
    assert not terms.filter.forwards_dynamically("secret.plans")


def test_a_duplex_acceptor_forwards_back_under_the_openers_settings() -> None:
    hello = make_hello("a", "A", "own", parse_connector(DUPLEX))
    assert hello.token == "t0k"  # the connector's token wins over the broker's
    terms = acceptor_terms(bridge_pb2.BridgeHello.FromString(hello.SerializeToString()))
    assert (terms.peer, terms.forwards, terms.advertises) == ("a", True, True)
    assert (terms.network_ttl, terms.message_ttl, terms.prefetch) == (3, 2, 50)
    assert (terms.decrease_priority, terms.conduit) == (False, False)
    assert not terms.filter.forwards_dynamically("secret.plans")
    assert terms.filter.forwards_dynamically("orders")


def test_a_plain_acceptor_does_not_forward_and_takes_defaults() -> None:
    hello = make_hello("a", "A", "own", parse_connector("static:(b:1)"))
    assert hello.token == "own" and not hello.excluded
    assert not hello.HasField("decrease_priority") and not hello.HasField("conduit")
    terms = acceptor_terms(hello)
    assert (terms.forwards, terms.advertises) == (False, True)
    assert (terms.prefetch, terms.decrease_priority, terms.conduit) == (1000, True, True)
    assert terms.filter.forwards_dynamically("secret.plans")


def test_a_bad_pattern_in_a_hello_is_refused() -> None:
    hello = bridge_pb2.BridgeHello(broker="a", protocol=PROTOCOL, excluded=["a..b"])
    with pytest.raises(ValueError, match="bad destination pattern from broker 'a'"):
        acceptor_terms(hello)


@pytest.mark.parametrize(
    ("hello", "token", "reason"),
    [
        (bridge_pb2.BridgeHello(broker="a", protocol=PROTOCOL + 1), "", "bridge protocol 2"),
        (bridge_pb2.BridgeHello(broker="me", protocol=PROTOCOL), "", "cannot bridge to itself"),
        (bridge_pb2.BridgeHello(broker="a", protocol=PROTOCOL, token="x"), "y", "wrong security"),
        (bridge_pb2.BridgeHello(broker="a", protocol=PROTOCOL, token="y"), "y", None),
        (bridge_pb2.BridgeHello(broker="a", protocol=PROTOCOL), "", None),
    ],
)
def test_refusals(hello: bridge_pb2.BridgeHello, token: str, reason: str | None) -> None:
    said = refusal(hello, "me", token)
    assert said is None if reason is None else reason in (said or ""), said
