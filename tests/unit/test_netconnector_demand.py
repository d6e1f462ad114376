"""Unit tests for the demand table (netconnector.demand)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest

from netconnector.demand import (
    Advertisement,
    AdvertisementDelta,
    Advertiser,
    DemandTable,
    diff_advertisements,
)

Q = "orders"


class Net:
    """Demand tables of several brokers joined by bridges, exchanging advertisements.

    On broker X, the bridge towards broker Y has the id "Y". Rounds are synchronous: every
    broker computes what to send from the state at the start of the round, then all
    deltas are delivered, which is the worst case for stale demand circulating.
    """

    def __init__(self, links: Iterable[tuple[str, str]], ttl: int) -> None:
        self.ttl = ttl
        self.tables: dict[str, DemandTable] = {}
        self.advertisers: dict[tuple[str, str], Advertiser] = {}
        for x, y in links:
            self.link(x, y)

    def link(self, x: str, y: str) -> None:
        for a, b in ((x, y), (y, x)):
            self.tables.setdefault(a, DemandTable())
            self.advertisers[(a, b)] = Advertiser(b, self.ttl)

    def unlink(self, x: str, y: str) -> None:
        for a, b in ((x, y), (y, x)):
            del self.advertisers[(a, b)]
            self.tables[a].drop_bridge(b)

    def round(self) -> bool:
        """One exchange; True if anything was sent."""
        outbox = [
            (x, y, adv.next_delta(self.tables[x])) for (x, y), adv in self.advertisers.items()
        ]
        for x, y, delta in outbox:
            self.tables[y].apply(x, delta)
        return any(delta for _, _, delta in outbox)

    def settle(self, limit: int = 100) -> int:
        """Exchange until quiet; return how many rounds sent something."""
        for rounds in range(limit):
            if not self.round():
                return rounds
        raise AssertionError(f"demand did not settle within {limit} rounds")

    def remote_demand(self, broker: str) -> dict[tuple[str, str], tuple[int, int]]:
        table = self.tables[broker]
        return {
            (bridge, queue): entry
            for bridge in table.bridges()
            for queue in table.queues()
            if (entry := table.remote(bridge, queue)) is not None
        }


# ---- local demand -------------------------------------------------------------------------


def test_local_demand_advertised_at_hops_zero() -> None:
    table = DemandTable()
    table.set_local(Q, 3)
    table.set_local("audit", 1)
    assert table.has_local(Q)
    assert table.local_consumers(Q) == 3
    assert table.advertisement("B", ttl=1) == {Q: (3, 0), "audit": (1, 0)}
    assert table.nearest(Q) == (3, 0)


def test_set_local_zero_removes() -> None:
    table = DemandTable()
    assert table.set_local(Q, 2) is True
    assert table.set_local(Q, 2) is False  # no change
    assert table.set_local(Q, 0) is True
    assert not table.has_local(Q)
    assert table.local_consumers(Q) == 0
    assert table.set_local(Q, 0) is False
    assert table.advertisement("B", ttl=5) == {}
    assert table.queues() == frozenset()


def test_version_moves_only_on_change() -> None:
    table = DemandTable()
    v0 = table.version
    table.set_local(Q, 1)
    v1 = table.version
    assert v1 > v0
    table.set_local(Q, 1)
    table.set_remote("B", Q, 0, 0)  # withdrawing nothing
    table.drop_bridge("nobody")
    assert table.version == v1
    table.set_remote("B", Q, 1, 0)
    assert table.version > v1


def test_invalid_inputs() -> None:
    table = DemandTable()
    with pytest.raises(ValueError, match="consumer count"):
        table.set_local(Q, -1)
    with pytest.raises(ValueError, match="consumer count"):
        table.set_remote("B", Q, -1, 0)
    with pytest.raises(ValueError, match="hops"):
        table.set_remote("B", Q, 1, -1)
    with pytest.raises(ValueError, match="TTL"):
        table.advertisement("B", ttl=0)
    with pytest.raises(ValueError, match="TTL"):
        table.wanted("B", Q, network_ttl=0)
    with pytest.raises(ValueError, match="TTL"):
        Advertiser("B", 0)


# ---- remote demand, nearest, wanted ----------------------------------------------------------


def test_remote_demand_and_wanted() -> None:
    table = DemandTable()
    assert table.set_remote("B", Q, 2, 0) is True
    assert table.set_remote("B", Q, 2, 0) is False
    assert table.remote("B", Q) == (2, 0)
    assert table.remote("C", Q) is None
    assert not table.has_local(Q)  # remote demand is not local
    assert table.wanted("B", Q, network_ttl=1) == 1
    assert table.wanted("C", Q, network_ttl=1) is None  # nothing advertised over C
    assert table.wanted("B", "other", network_ttl=1) is None
    table.set_remote("B", Q, 0, 0)  # withdrawn
    assert table.wanted("B", Q, network_ttl=5) is None
    assert table.bridges() == frozenset()


def test_nearest_prefers_local_then_minimum_distance_and_sums_ties() -> None:
    table = DemandTable()
    table.set_remote("B", Q, 2, 1)  # distance 2
    table.set_remote("C", Q, 5, 3)  # distance 4
    assert table.nearest(Q) == (2, 2)
    table.set_remote("D", Q, 3, 1)  # distance 2 as well: counts add up
    assert table.nearest(Q) == (5, 2)
    assert table.nearest(Q, exclude="B") == (3, 2)
    assert table.nearest(Q, exclude="D") == (2, 2)
    table.set_local(Q, 1)
    assert table.nearest(Q) == (1, 0)  # local wins; farther consumers are not added
    assert table.nearest("none") is None


def test_advertisement_ttl_bound() -> None:
    table = DemandTable()
    table.set_remote("B", Q, 1, 0)  # we are 1 hop from them; the neighbour would be 2
    table.set_remote("B", "far", 1, 2)  # we are 3 hops away
    assert table.advertisement("C", ttl=1) == {}
    assert table.advertisement("C", ttl=2) == {Q: (1, 1)}
    assert table.advertisement("C", ttl=4) == {Q: (1, 1), "far": (1, 3)}


def test_split_horizon_single_table() -> None:
    table = DemandTable()
    table.set_remote("B", Q, 4, 0)
    assert table.advertisement("B", ttl=10) == {}  # never back where it came from
    assert table.advertisement("C", ttl=10) == {Q: (4, 1)}
    # Learned from B and C: each hears only the other's.
    table.set_remote("C", Q, 1, 2)
    assert table.advertisement("B", ttl=10) == {Q: (1, 3)}
    assert table.advertisement("C", ttl=10) == {Q: (4, 1)}
    # Local demand goes everywhere.
    table.set_local(Q, 1)
    assert table.advertisement("B", ttl=10) == {Q: (1, 0)}


def test_wanted_queues() -> None:
    table = DemandTable()
    table.set_remote("B", "a", 1, 0)
    table.set_remote("B", "b", 1, 1)
    table.set_remote("C", "c", 1, 0)
    assert table.wanted_queues("B", network_ttl=1) == {"a": 1}
    assert table.wanted_queues("B", network_ttl=2) == {"a": 1, "b": 2}
    assert table.wanted_queues("D", network_ttl=2) == {}


# ---- chain A - B - C, wired by hand ----------------------------------------------------------


def test_chain_networkttl_decides_whether_a_forwards() -> None:
    a, b, c = DemandTable(), DemandTable(), DemandTable()
    c.set_local(Q, 1)

    # C tells B (bridge "C" on B) about its consumer at hops 0.
    for queue, (n, hops) in c.advertisement("B", ttl=2).items():
        b.set_remote("C", queue, n, hops)
    assert b.remote("C", Q) == (1, 0)
    assert b.wanted("C", Q, network_ttl=1) == 1  # B is one hop from the consumer

    # B tells A: B itself is 1 hop from the consumer, and A (2 hops) may use it at TTL 2.
    advert = b.advertisement("A", ttl=2)
    assert advert == {Q: (1, 1)}
    for queue, (n, hops) in advert.items():
        a.set_remote("B", queue, n, hops)

    assert a.wanted("B", Q, network_ttl=2) == 2  # A forwards towards B
    assert a.wanted("B", Q, network_ttl=1) is None  # too far for networkTTL 1
    # With TTL 1 B would not even tell A: A could not act on it.
    assert b.advertisement("A", ttl=1) == {}
    # And nothing flows back towards C from A's or B's point of view.
    assert b.advertisement("C", ttl=2) == {}
    assert a.advertisement("B", ttl=3) == {}


def test_chain_settles_and_clears() -> None:
    net = Net([("A", "B"), ("B", "C")], ttl=2)
    net.tables["C"].set_local(Q, 1)
    net.settle()
    assert net.tables["B"].wanted("C", Q, 2) == 1
    assert net.tables["A"].wanted("B", Q, 2) == 2
    assert net.remote_demand("C") == {}  # nothing echoed back to the origin

    net.tables["C"].set_local(Q, 0)
    net.settle()
    for name in "ABC":
        assert net.remote_demand(name) == {}, name


def test_chain_consumer_moves() -> None:
    net = Net([("A", "B"), ("B", "C")], ttl=2)
    net.tables["C"].set_local(Q, 1)
    net.settle()
    net.tables["C"].set_local(Q, 0)
    net.tables["A"].set_local(Q, 2)
    net.settle()
    assert net.tables["C"].wanted("B", Q, 2) == 2
    assert net.tables["B"].wanted("A", Q, 2) == 1
    assert net.tables["A"].wanted("B", Q, 2) is None
    assert net.remote_demand("A") == {}


# ---- full mesh of three ------------------------------------------------------------------


MESH = [("A", "B"), ("B", "C"), ("A", "C")]


@pytest.mark.parametrize("ttl", [1, 2])
def test_mesh_split_horizon_no_echo_to_origin(ttl: int) -> None:
    net = Net(MESH, ttl=ttl)
    net.tables["C"].set_local(Q, 1)
    net.settle()
    # The origin never hears its own demand back, directly or around the triangle.
    assert net.remote_demand("C") == {}
    a, b = net.tables["A"], net.tables["B"]
    assert a.wanted("C", Q, ttl) == 1 and b.wanted("C", Q, ttl) == 1
    # What A and B hold about each other is at most the detour through the other one.
    for table, other in ((a, "B"), (b, "A")):
        detour = table.remote(other, Q)
        assert detour is None if ttl == 1 else detour == (1, 1)
        # The direct route is nearer, so the detour never counts for "nearest".
        assert table.nearest(Q) == (1, 1)


@pytest.mark.parametrize("ttl", [1, 2, 3, 5, 8])
def test_mesh_consumer_leaves_demand_disappears_everywhere(ttl: int) -> None:
    net = Net(MESH, ttl=ttl)
    net.tables["C"].set_local(Q, 1)
    net.settle()

    net.tables["C"].set_local(Q, 0)
    rounds = net.settle()
    for name in "ABC":
        assert net.remote_demand(name) == {}, name
        assert net.tables[name].queues() == frozenset(), name
    # Stale demand gains a hop per round and is dropped past the TTL: it never counts
    # to infinity, and with small TTLs (the realistic ones) it is gone in a few rounds.
    assert rounds <= ttl + 1


def test_mesh_stale_demand_never_wanted_beyond_ttl() -> None:
    ttl = 4
    net = Net(MESH, ttl=ttl)
    net.tables["C"].set_local(Q, 1)
    net.settle()
    net.tables["C"].set_local(Q, 0)
    while net.round():
        for name, other in itertools.permutations("ABC", 2):
            distance = net.tables[name].wanted(other, Q, ttl)
            assert distance is None or distance <= ttl


def test_mesh_echo_needs_ttl_to_reach_around_the_cycle() -> None:
    # Documented limit of hop-count advertisements: with a TTL at least the length of a
    # cycle (3 here), demand can come back to its origin around the cycle, at a distance
    # greater than the cycle's length minus one. Small TTLs (the default is 1) rule it out.
    net = Net(MESH, ttl=3)
    net.tables["C"].set_local(Q, 1)
    net.settle()
    echoed = net.remote_demand("C")
    assert echoed
    assert all(hops >= 2 for _, hops in echoed.values())


def test_mesh_two_consumers_nearest_counts() -> None:
    net = Net(MESH, ttl=2)
    net.tables["B"].set_local(Q, 2)
    net.tables["C"].set_local(Q, 3)
    net.settle()
    a = net.tables["A"]
    assert a.remote("B", Q) == (2, 0)
    assert a.remote("C", Q) == (3, 0)
    assert a.nearest(Q) == (5, 1)  # both at distance 1: counts add up
    # B tells C only about its own consumers (local beats anything learned).
    assert net.tables["C"].remote("B", Q) == (2, 0)


# ---- bridges going down --------------------------------------------------------------------


def test_drop_bridge_forgets_what_it_advertised() -> None:
    table = DemandTable()
    table.set_remote("B", "a", 1, 0)
    table.set_remote("B", "b", 2, 1)
    table.set_remote("C", "a", 1, 1)
    table.set_local("b", 1)
    assert table.drop_bridge("B") == frozenset({"a", "b"})
    assert table.remote("B", "a") is None
    assert table.wanted("B", "a", 5) is None
    assert table.remote("C", "a") == (1, 1)  # other bridges untouched
    assert table.has_local("b")  # local demand untouched
    assert table.bridges() == frozenset({"C"})
    assert table.drop_bridge("B") == frozenset()
    assert table.queues() == frozenset({"a", "b"})


def test_drop_bridge_propagates_after_rounds() -> None:
    net = Net([("A", "B"), ("B", "C")], ttl=2)
    net.tables["C"].set_local(Q, 1)
    net.settle()
    assert net.tables["A"].wanted("B", Q, 2) == 2
    net.unlink("B", "C")
    assert net.tables["B"].remote("C", Q) is None
    net.settle()
    assert net.tables["A"].wanted("B", Q, 2) is None
    assert net.remote_demand("A") == {}


def test_mesh_link_loss_reroutes() -> None:
    net = Net(MESH, ttl=2)
    net.tables["C"].set_local(Q, 1)
    net.settle()
    net.unlink("A", "C")
    net.settle()
    # A now reaches C's consumer through B, two hops away.
    assert net.tables["A"].wanted("B", Q, 2) == 2
    assert net.tables["A"].wanted("C", Q, 2) is None
    assert net.tables["A"].wanted("B", Q, 1) is None


# ---- deltas and the Advertiser -------------------------------------------------------------


def test_diff_advertisements() -> None:
    previous: Advertisement = {"a": (1, 0), "b": (2, 1), "c": (1, 0)}
    current: Advertisement = {"a": (1, 0), "b": (3, 1), "d": (1, 2)}
    delta = diff_advertisements(previous, current)
    assert dict(delta.upserts) == {"b": (3, 1), "d": (1, 2)}
    assert delta.removals == frozenset({"c"})
    assert delta.apply(previous) == current
    assert bool(delta)
    assert not diff_advertisements(current, current)
    assert not AdvertisementDelta()


def test_table_delta_and_apply() -> None:
    sender, receiver = DemandTable(), DemandTable()
    sender.set_local("a", 1)
    sender.set_local("b", 1)
    sent: Advertisement = {}
    delta = sender.delta("R", 1, sent)
    assert receiver.apply("S", delta) is True
    sent = delta.apply(sent)
    sender.set_local("a", 0)
    sender.set_local("b", 4)
    delta = sender.delta("R", 1, sent)
    assert dict(delta.upserts) == {"b": (4, 0)}
    assert delta.removals == frozenset({"a"})
    receiver.apply("S", delta)
    assert receiver.remote("S", "a") is None
    assert receiver.remote("S", "b") == (4, 0)
    assert receiver.apply("S", delta) is False  # idempotent


def test_advertiser_sends_full_then_deltas_then_nothing() -> None:
    table = DemandTable()
    table.set_local("a", 1)
    adv = Advertiser("B", ttl=1)
    first = adv.next_delta(table)
    assert dict(first.upserts) == {"a": (1, 0)}
    assert first.removals == frozenset()
    assert not adv.next_delta(table)  # nothing changed
    table.set_local("b", 2)
    assert dict(adv.next_delta(table).upserts) == {"b": (2, 0)}
    table.set_local("a", 0)
    assert adv.next_delta(table).removals == frozenset({"a"})
    assert adv.sent == {"b": (2, 0)}
    # A change that does not alter this bridge's advertisement yields an empty delta.
    table.set_remote("B", "c", 1, 0)  # learned from B itself: split horizon
    assert not adv.next_delta(table)
    # A new session starts over with the full advertisement.
    assert dict(Advertiser("B", ttl=1).next_delta(table).upserts) == {"b": (2, 0)}


def test_replace_remote_for_new_session() -> None:
    table = DemandTable()
    table.set_remote("B", "a", 1, 0)
    table.set_remote("B", "b", 1, 0)
    assert table.replace_remote("B", {"b": (2, 0), "c": (1, 1)}) is True
    assert table.remote("B", "a") is None
    assert table.remote("B", "b") == (2, 0)
    assert table.remote("B", "c") == (1, 1)
    assert table.replace_remote("B", {"b": (2, 0), "c": (1, 1)}) is False
    assert table.replace_remote("B", {}) is True
    assert table.bridges() == frozenset()
