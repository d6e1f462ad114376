"""Topic routes, decided alone: networks of route tables exchange advertisements until
they settle, then every broker publishes and the messages are carried hop by hop as the
tables decide. Each broker with a matching subscription gets each message exactly once,
in a chain, a ring and a full mesh, with wildcards, and after a link drops; a durable
subscription's route outlasts its link for persistent messages."""

from __future__ import annotations

import itertools

import pytest

from netconnector.topic_routes import TopicRoutes


class Net:
    """Brokers and links."""

    def __init__(self, links: list[tuple[str, str]], ttl: int = 8) -> None:
        self.ttl = ttl
        self.links: set[tuple[str, str]] = set()
        names = sorted({n for link in links for n in link})
        self.routes = {n: TopicRoutes(n) for n in names}
        for a, b in links:
            self.links |= {(a, b), (b, a)}

    def subscribe(self, broker: str, *patterns: str, durable: tuple[str, ...] = ()) -> None:
        self.routes[broker].set_local(patterns, durable)

    def drop(self, a: str, b: str) -> None:
        self.links -= {(a, b), (b, a)}
        self.routes[a].link_down(b)
        self.routes[b].link_down(a)

    def settle(self) -> int:
        """Advertise over every link until nothing changes; returns the rounds taken."""
        for rounds in range(1, 50):
            changed = False
            for a, b in sorted(self.links):
                ad = self.routes[a].advertisement(b, self.ttl)
                changed |= self.routes[b].set_remote(a, ad)
            if not changed:
                return rounds
        raise AssertionError("advertisements never settled")

    def publish(self, origin: str, topic: str, persistent: bool = True) -> dict[str, int]:
        """Carry one message from `origin`; how many copies each broker delivered (a
        copy for a neighbour whose link is down counts as delivered there: it waits,
        stored, for the link)."""
        got = dict.fromkeys(self.routes, 0)
        hops: list[tuple[str, tuple[str, ...], frozenset[str] | None]] = [(origin, (origin,), None)]
        for _ in range(1000):
            if not hops:
                return got
            broker, path, targets = hops.pop()
            route = self.routes[broker].route(topic, path, targets, persistent)
            got[broker] += route.local
            for peer, carried in route.peers.items():
                assert peer not in path
                if (broker, peer) not in self.links:
                    got[peer] += 1  # held for the link to come back
                    continue
                hops.append((peer, (*path, peer), carried))
        raise AssertionError("a message went round without end")


MESH4 = list(itertools.combinations("abcd", 2))
RING5 = [("a", "b"), ("b", "c"), ("c", "d"), ("d", "e"), ("e", "a")]
CHAIN4 = [("a", "b"), ("b", "c"), ("c", "d")]


@pytest.mark.parametrize("links", [MESH4, RING5, CHAIN4], ids=["mesh4", "ring5", "chain4"])
def test_every_subscribed_broker_gets_each_message_once(links: list[tuple[str, str]]) -> None:
    net = Net(links)
    net.subscribe("b", "orders.>")
    net.subscribe("c", "orders.eu")
    net.subscribe("d", "orders.*", "orders.eu")
    net.settle()
    for origin in net.routes:
        got = net.publish(origin, "orders.eu")
        assert got == {n: int(n in "bcd") for n in net.routes}, origin
        got = net.publish(origin, "orders.eu.paris")
        assert got == {n: int(n == "b") for n in net.routes}, origin
        assert net.publish(origin, "invoices") == dict.fromkeys(net.routes, 0)


def test_after_a_link_drops_the_others_carry_each_message_once() -> None:
    net = Net(MESH4)
    for broker in "abcd":
        net.subscribe(broker, "t")
    net.settle()
    net.drop("a", "b")
    net.drop("c", "d")
    net.settle()
    for origin in "abcd":
        assert net.publish(origin, "t") == dict.fromkeys("abcd", 1)


def test_the_ttl_bounds_how_far_subscriptions_are_heard() -> None:
    net = Net(CHAIN4, ttl=2)
    net.subscribe("d", "t")
    net.settle()
    assert net.publish("b", "t")["d"] == 1
    assert net.publish("a", "t")["d"] == 0  # three hops away: past the TTL


def test_unsubscribing_withdraws_the_routes() -> None:
    net = Net(CHAIN4)
    net.subscribe("d", "t")
    net.settle()
    assert net.publish("a", "t")["d"] == 1
    net.subscribe("d")
    net.settle()
    assert not net.routes["a"].wanted("t")
    assert net.publish("a", "t") == dict.fromkeys("abcd", 0)


def test_a_message_never_goes_back_to_a_broker_it_passed() -> None:
    """While tables disagree (b still thinks d is behind a), the message is not sent
    back to a: d is dropped for this message rather than looped."""
    routes = TopicRoutes("b")
    routes.set_remote("a", {("t", "d"): (1, False)})
    route = routes.route("t", path=("a", "b"), targets=frozenset({"d"}))
    assert not route.local and dict(route.peers) == {}


def test_advertisements_keep_split_horizon_and_never_echo_a_peer() -> None:
    routes = TopicRoutes("b")
    routes.set_local(["x"])
    routes.set_remote("a", {("t", "a"): (0, False), ("u", "z"): (1, True)})
    routes.set_remote("c", {("t", "c"): (0, False)})
    assert routes.advertisement("a", ttl=8) == {("x", "b"): (0, False), ("t", "c"): (1, False)}
    assert routes.advertisement("c", ttl=8) == {
        ("x", "b"): (0, False), ("t", "a"): (1, False), ("u", "z"): (2, True)
    }  # fmt: skip
    assert routes.advertisement("c", ttl=2) == {("x", "b"): (0, False), ("t", "a"): (1, False)}
    with pytest.raises(ValueError, match="hops must be >= 0"):
        routes.set_remote("a", {("t", "a"): (-1, False)})


def test_a_durable_subscription_is_routed_to_while_its_link_is_down() -> None:
    """Persistent messages for a durable subscription behind a dropped link go to that
    neighbour's queue, to wait for it; non-durable ones and non-persistent messages do
    not; a live route elsewhere wins; the link's return replaces the kept entries."""
    net = Net(CHAIN4)
    net.subscribe("c", "t", durable=("t",))
    net.subscribe("d", "t")
    net.settle()
    net.drop("b", "c")
    net.settle()
    assert net.publish("a", "t") == {"a": 0, "b": 0, "c": 1, "d": 0}
    assert net.publish("a", "t", persistent=False) == dict.fromkeys("abcd", 0)
    mesh = Net(MESH4)
    mesh.subscribe("d", "t", durable=("t",))
    mesh.settle()
    mesh.drop("a", "d")
    mesh.settle()
    route = mesh.routes["a"].route("t")
    assert dict(route.peers) in ({"b": {"d"}}, {"c": {"d"}})
    assert mesh.publish("a", "t") == {"a": 0, "b": 0, "c": 0, "d": 1}


def test_targets_a_client_wrote_are_ignored_where_the_message_is_published() -> None:
    routes = TopicRoutes("a")
    routes.set_local(["t"])
    routes.set_remote("b", {("t", "b"): (0, False)})
    route = routes.route("t", path=("a",), targets=["nobody"])
    assert route.local and dict(route.peers) == {"b": {"b"}}
