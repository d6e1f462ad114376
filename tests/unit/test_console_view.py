"""The console's view of the cluster (broker/console/view.py), snapshot by snapshot with
the time passed in: roles and "down", arrows and their forwarding rates, queue rates,
the group's master and in-sync set, the bounded log of role changes and bridge errors,
and which events a poll pushes."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from broker.console.layout import Layout
from broker.console.rates import Rate
from broker.console.snapshot import (
    BridgeSnap,
    BrokerSnapshot,
    GroupSnap,
    QueueSnap,
    TopicSnap,
    read_status,
    with_queues,
)
from broker.console.view import ClusterView, Event
from broker.pb import admin_pb2
from tests.unit.test_topology import AB_C, check

A_TO_B = "masterslave:(127.0.0.1:61617,127.0.0.1:61618)"
B_TO_A = "static:127.0.0.1:61616"


def layout() -> Layout:
    return Layout.of(check(AB_C))


def standalone_a(forwarded: int | None = 0, state: str = "up", error: str = "") -> BrokerSnapshot:
    peer = "b" if state == "up" else ""
    bridge = BridgeSnap(A_TO_B, state, peer=peer, address="127.0.0.1:61617",
                        forwarded=forwarded, last_error=error)  # fmt: skip
    return BrokerSnapshot("a", "standalone", "127.0.0.1:61616", bridges=(bridge,), queues=(),
                          topics=())  # fmt: skip


def master(name: str, epoch: int, in_sync: tuple[str, ...], position: int = 0) -> BrokerSnapshot:
    return BrokerSnapshot(
        name, "master", group=GroupSnap("B", epoch=epoch, position=position, in_sync=in_sync),
        bridges=(BridgeSnap(B_TO_A, "up", peer="a", forwarded=0),), queues=(), topics=(),
    )  # fmt: skip


def slave(name: str, of: str, position: int = 0) -> BrokerSnapshot:
    return BrokerSnapshot(name, "slave", group=GroupSnap("B", position=position, master=of),
                          refusal=f"broker {name} is a slave")  # fmt: skip


def kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events]


def started() -> ClusterView:
    """a standalone, b master, c slave: each seen once."""
    view = ClusterView(layout())
    view.observe("a", standalone_a(), 0.0)
    view.observe("b", master("b", 1, ("b", "c")), 0.0)
    view.observe("c", slave("c", "b"), 0.0)
    return view


def test_first_sight_is_no_role_change_but_shows_the_broker() -> None:
    view = ClusterView(layout())
    events = view.observe("a", standalone_a(), 0.0)
    assert kinds(events) == ["broker", "group"]
    assert events[0].data["role"] == "standalone"
    assert view.log == type(view.log)()
    assert view.state()["brokers"]["b"]["role"] == "unknown"


def test_a_failover_as_the_page_sees_it() -> None:
    view = started()
    events = view.observe("b", None, 10.0)
    b = next(e.data for e in events if e.kind == "broker")
    assert (b["role"], b["detail"], b["since"]) == ("down", "not answering", 10.0)
    assert b["bridges"] == [] and b["queues"] is None
    log = [e.data for e in events if e.kind == "log"]
    assert log == [{"time": 10.0, "kind": "role", "broker": "b", "group": "B",
                    "from": "master", "to": "down", "detail": ""}]  # fmt: skip
    group = next(e.data for e in events if e.kind == "group")
    assert (group["master"], group["masters"]) == (None, [])

    events = view.observe("c", master("c", 2, ("c",), position=4), 10.4)
    entry = next(e.data for e in events if e.kind == "log")
    assert (entry["from"], entry["to"]) == ("slave", "master")
    assert entry["detail"] == "epoch 2, position 4, in-sync c"
    group = next(e.data for e in events if e.kind == "group")
    assert (group["master"], group["epoch"], group["in_sync"]) == ("c", 2, ["c"])
    assert group["members"] == [
        {"name": "b", "role": "down", "position": None},
        {"name": "c", "role": "master", "position": 4},
    ]
    assert [e["to"] for e in view.state()["log"]] == ["down", "master"]


def test_nothing_changed_pushes_nothing() -> None:
    view = started()
    assert view.observe("c", slave("c", "b"), 1.0) == []
    assert view.observe("a", standalone_a(), 1.0) != []  # its rate appears: two readings now
    assert view.observe("a", standalone_a(), 2.0) == []


def test_a_broker_that_would_not_list_its_queues_says_why() -> None:
    view = started()
    why = "PERMISSION_DENIED: admin on queue '>' for user 'eve'"
    denied = replace(master("b", 1, ("b", "c")), queues=None, topics=None, queues_error=why)
    b = next(e.data for e in view.observe("b", denied, 1.0) if e.kind == "broker")
    assert (b["queues"], b["queues_error"]) == (None, denied.queues_error)


def test_browse_and_purge_only_of_a_broker_that_answers() -> None:
    view = ClusterView(layout())
    assert view.unreachable("a") == (503, "broker a is down (not answering yet)")
    view.observe("a", standalone_a(), 0.0)
    assert view.unreachable("a") is None
    view.observe("a", None, 1.0)
    assert view.unreachable("a") == (503, "broker a is down (not answering)")
    assert view.unreachable("zz") == (404, "no broker 'zz' in this cluster")


def test_a_port_answering_as_another_broker_is_down() -> None:
    view = started()
    events = view.observe("c", replace(slave("c", "b"), name="x"), 1.0)
    c = next(e.data for e in events if e.kind == "broker")
    assert (c["role"], c["detail"]) == ("down", "its port answers as broker 'x'")


def test_arrows_point_at_the_peer_or_the_broker_at_the_address_tried() -> None:
    view = started()
    a = view.state()["brokers"]["a"]
    assert [(br["target"], br["target_group"]) for br in a["bridges"]] == [("b", "B")]
    # Not linked: no peer yet, but the address it tries is b's.
    events = view.observe("a", standalone_a(None, "backoff", "connection refused"), 1.0)
    a = next(e.data for e in events if e.kind == "broker")
    (bridge,) = a["bridges"]
    assert (bridge["target"], bridge["state"], bridge["rate"]) == ("b", "backoff", None)
    assert bridge["error"] == "connection refused"
    # An address no broker of the file has: no arrow target.
    far = BridgeSnap("static:10.0.0.9:1", "connecting", address="10.0.0.9:1")
    events = view.observe("a", replace(standalone_a(), bridges=(far,)), 2.0)
    assert next(e.data for e in events if e.kind == "broker")["bridges"][0]["target"] is None


def test_forwarding_rate_from_the_forwarded_counts() -> None:
    view = ClusterView(layout())
    view.observe("a", standalone_a(0), 0.0)
    view.observe("a", standalone_a(100), 0.5)
    assert view.state()["brokers"]["a"]["bridges"][0]["rate"] == 200.0
    view.observe("a", standalone_a(300), 1.0)
    assert view.state()["brokers"]["a"]["bridges"][0]["rate"] == 300.0
    # A new session counts from 0 again: no negative rate, a fresh start.
    view.observe("a", standalone_a(5), 1.5)
    assert view.state()["brokers"]["a"]["bridges"][0]["rate"] is None
    view.observe("a", standalone_a(25), 2.0)
    assert view.state()["brokers"]["a"]["bridges"][0]["rate"] == 40.0


def test_rate_window_and_resets() -> None:
    r = Rate(window=2.0)
    assert r.add(0.0, 0) is None
    assert r.add(1.0, 10) == 10.0
    assert r.add(2.0, 30) == 15.0
    # Readings older than the window leave it: the rate follows the last 2 s.
    assert r.add(3.0, 70) == 30.0
    assert r.add(4.0, 110) == 40.0
    assert r.add(5.0, None) is None  # no counter (no session)
    assert r.add(6.0, 0) is None
    assert r.add(5.0, 10) is None  # time went back: start again
    for i in range(1000):
        r.add(10.0 + i * 0.001, i)
    assert len(r._readings) <= 64


def test_queue_and_topic_rates_and_counts() -> None:
    view = ClusterView(layout())

    def a(enq: int, deq: int) -> BrokerSnapshot:
        q = QueueSnap("orders", depth=enq - deq, pending=enq - deq - 1, in_flight=1,
                      consumers=2, enqueued=enq, dequeued=deq)  # fmt: skip
        t = TopicSnap("news.>", subscriptions=2, active=1, depth=3, in_flight=0, enqueued=enq)
        return replace(standalone_a(), queues=(q,), topics=(t,))

    view.observe("a", a(10, 0), 0.0)
    view.observe("a", a(60, 20), 1.0)
    (q,) = view.state()["brokers"]["a"]["queues"]
    assert (q["depth"], q["pending"], q["in_flight"], q["consumers"]) == (40, 39, 1, 2)
    assert (q["in_rate"], q["out_rate"]) == (50.0, 20.0)
    (t,) = view.state()["brokers"]["a"]["topics"]
    assert (t["subscriptions"], t["active"], t["depth"], t["in_rate"]) == (2, 1, 3, 50.0)


def test_bridge_errors_are_logged_once_each_and_again_after_recovery() -> None:
    view = started()

    def logged(events: list[Event]) -> list[str]:
        return [e.data["error"] for e in events if e.kind == "log"]

    refused = standalone_a(None, "backoff", "connection refused")
    assert logged(view.observe("a", refused, 1.0)) == ["connection refused"]
    assert logged(view.observe("a", refused, 1.5)) == []
    other = standalone_a(None, "connecting", "broker c is a slave")
    assert logged(view.observe("a", other, 2.0)) == ["broker c is a slave"]
    assert logged(view.observe("a", standalone_a(), 3.0)) == []
    assert logged(view.observe("a", refused, 4.0)) == ["connection refused"]
    entry = view.log[-1]
    assert entry == {
        "time": 4.0, "kind": "bridge", "broker": "a", "group": "A",
        "bridge": A_TO_B, "state": "backoff", "error": "connection refused",
    }  # fmt: skip


def test_the_log_is_bounded() -> None:
    view = ClusterView(layout(), history=3)
    view.observe("c", slave("c", "b"), 0.0)
    for i in range(1, 10):
        view.observe("c", None if i % 2 else slave("c", "b"), float(i))
    assert len(view.log) == 3
    assert [e["time"] for e in view.log] == [7.0, 8.0, 9.0]


def test_state_is_json_and_names_every_group_and_broker() -> None:
    view = started()
    state: dict[str, Any] = json.loads(json.dumps(view.state()))
    assert [g["name"] for g in state["layout"]["groups"]] == ["A", "B"]
    assert state["layout"]["brokers"][1] == {
        "name": "b", "group": "B", "address": "127.0.0.1:61617", "member": True,
    }  # fmt: skip
    assert {n: b["role"] for n, b in state["brokers"].items()} == {
        "a": "standalone", "b": "master", "c": "slave",
    }  # fmt: skip
    assert state["groups"]["A"]["master"] == "a"
    assert state["groups"]["B"]["in_sync"] == ["b", "c"]
    assert view.observe("zz", None, 1.0) == []  # not in the file: ignored


def test_snapshots_read_from_admin_answers() -> None:
    st = admin_pb2.StatusResponse(
        name="b", role="master", client_address="127.0.0.1:61617",
        role_kind=admin_pb2.ROLE_MASTER,
        group=admin_pb2.GroupStatus(name="B", role=admin_pb2.ROLE_MASTER, epoch=3, position=9,
                                    in_sync=["b", "c"]),
        bridges=[
            admin_pb2.BridgeStatus(label=B_TO_A, state=admin_pb2.LINK_UP, peer="a", forwarded=7),
            admin_pb2.BridgeStatus(label="from a", state=admin_pb2.LINK_UP, peer="a",
                                   inbound=True, received=4),
        ],
    )  # fmt: skip
    snap = read_status(st)
    assert (snap.role, snap.serving, snap.group) == ("master", True, GroupSnap(
        "B", epoch=3, position=9, in_sync=("b", "c")))  # fmt: skip
    assert [(b.label, b.state, b.forwarded, b.inbound, b.received) for b in snap.bridges] == [
        (B_TO_A, "up", 7, False, 0),
        ("from a", "up", None, True, 4),
    ]
    assert snap.queues is None
    lq = admin_pb2.ListQueuesResponse(
        queues=[admin_pb2.QueueInfo(name="q", depth=3, pending=2, in_flight=1, consumers=1,
                                    enqueued=5, dequeued=2)],
        topics=[admin_pb2.TopicInfo(name="t.>", subscriptions=2, subscribers=[
            admin_pb2.SubscriptionInfo(active=True, depth=2, in_flight=1, enqueued=4),
            admin_pb2.SubscriptionInfo(active=False, depth=1, enqueued=1)])],
    )  # fmt: skip
    full = with_queues(snap, lq)
    assert full.queues == (QueueSnap("q", 3, 2, 1, 1, 5, 2),)
    assert full.topics == (TopicSnap("t.>", subscriptions=2, active=1, depth=3, in_flight=1,
                                     enqueued=5),)  # fmt: skip
    slave_st = admin_pb2.StatusResponse(name="c", role="slave", role_kind=admin_pb2.ROLE_SLAVE,
                                        refusal="broker c is a slave")  # fmt: skip
    assert (read_status(slave_st).role, read_status(slave_st).serving) == ("slave", False)
    old = admin_pb2.StatusResponse(name="x", role="standalone")  # no role_kind: its words
    assert read_status(old).role == "standalone"


def test_layout_of_a_topology() -> None:
    t = check(AB_C)
    lay = Layout.of(t)
    assert [(g.name, g.brokers, g.election) for g in lay.groups] == [
        ("A", ("a",), None),
        ("B", ("b", "c"), "zookeeper"),
    ]
    assert lay.at_address("127.0.0.1:61618") == "c"
    assert lay.at_address("127.0.0.1:1") is None
