"""The bridge session's decisions (BridgeState), driven directly: events in, actions out.
Then the session adapter on a real Broker and store, closed at every point of a store,
and the failover re-forward of a group's message, which the peer must take for the same
forward."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from broker.config import BrokerConfig, Election
from broker.core import wire
from broker.core.broker import Broker
from broker.core.store import Store
from broker.pb import bridge_pb2
from broker.pb.message_pb2 import Message
from netconnector import bridge_state as bs
from netconnector.demand import DemandTable
from netconnector.hello import acceptor_terms, make_hello, opener_terms
from netconnector.session import BridgeSession
from netconnector.uri import parse_connector
from tests.support.aio import run
from tests.support.sinks import Collect


def _opener(uri: str = "static:(a:1)", peer: str = "a") -> bs.BridgeState:
    return bs.BridgeState(opener_terms(parse_connector(uri), peer), me="B")


def _receiver() -> bs.BridgeState:
    hello = make_hello("b", "B", "", parse_connector("static:(a:1)"), path_name="B")
    return bs.BridgeState(acceptor_terms(hello), me="a")


def _subscribed(state: bs.BridgeState, queue: str = "q") -> int:
    actions = state.reconcile({queue: 1}, [queue], {})
    assert [type(a) for a in actions] == [bs.Subscribe, bs.Log]
    sub = state.subscription(queue)
    assert sub is not None
    return sub


# -- forwarding ---------------------------------------------------------------------


def test_the_hello_carries_the_path_name_and_terms_compare_with_it() -> None:
    hello = make_hello("c", "B", "", path_name="B")
    terms = opener_terms(parse_connector("static:(c:1)"), hello.broker, hello.path_name)
    assert (terms.peer, terms.peer_in_paths) == ("c", "B")
    older = bridge_pb2.BridgeHello(broker="x", protocol=1)  # no path_name: its name
    assert acceptor_terms(older).peer_in_paths == "x"


def test_deliveries_go_in_bounded_batches_and_keep_a_path_that_ends_here() -> None:
    state = _opener()
    sub = _subscribed(state)
    big = bs.MAX_FORWARD_BYTES // 2 + 1
    actions = state.deliver(
        "q", sub, [(1, big, ["B"]), (2, big, ["B"]), (3, 10, ["b"]), (4, 10, ["x", "B"])]
    )
    assert actions == [
        bs.SendBatch(1, (1, 2), ()),
        # A path written by a member before path names: the name is appended.
        bs.SendBatch(2, (3, 4), (0,)),
    ]
    assert state.unacked == 4


def test_a_window_goes_out_in_halves_so_that_batches_overlap() -> None:
    # One batch per window would be stop-and-wait: the peer stores while this side waits,
    # then this side acknowledges while the peer waits.
    state = _opener()  # prefetchSize 1000
    sub = _subscribed(state)
    actions = state.deliver("q", sub, [(tag, 1024, ["B"]) for tag in range(1, 1001)])
    assert [len(a.tags) for a in actions if isinstance(a, bs.SendBatch)] == [500] * 2
    assert state.unacked == 1000
    # An answer frees half of the window, which goes out again as one batch.
    state.acked(1, True, "", [])
    (again,) = state.deliver("q", sub, [(tag, 1024, ["B"]) for tag in range(1001, 1501)])
    assert isinstance(again, bs.SendBatch) and len(again.tags) == 500


def test_the_window_is_the_prefetch_or_the_peers_smaller_capacity() -> None:
    assert bs.batch_limit(1000, 0) == 500  # static: the prefetch alone
    assert bs.batch_limit(1000, 2000) == 500
    assert bs.batch_limit(1000, 40) == 20  # the peer's consumers take 40 ahead
    assert bs.batch_limit(1, 0) == 1  # never empty
    state = _opener()
    state.peer_demand("q", 1, 40)
    sub = _subscribed(state)
    actions = state.deliver("q", sub, [(tag, 10, ["B"]) for tag in range(1, 41)])
    assert [len(a.tags) for a in actions if isinstance(a, bs.SendBatch)] == [20] * 2
    small = _opener("static:(a:1)?prefetchSize=2")
    sub = _subscribed(small)
    actions = small.deliver("q", sub, [(1, 10, ["B"]), (2, 10, ["B"])])
    assert actions == [bs.SendBatch(1, (1,), ()), bs.SendBatch(2, (2,), ())]


def test_the_peers_answers_decide_what_becomes_of_the_local_copies() -> None:
    state = _opener()
    sub = _subscribed(state)
    state.deliver("q", sub, [(1, 10, ["B"]), (2, 10, ["B"]), (3, 10, ["B"])])
    actions = state.acked(1, True, "", [(1, "too big")])
    assert bs.RejectLocal("q", sub, 2, "refused by a: too big") in actions
    assert bs.AckLocal("q", sub, (1, 3)) in actions
    # Dynamic demand: credit for the stored ones comes back as the peer's consumers take
    # them; the refused one's now.
    assert bs.Credit("q", sub, 1) in actions
    assert state.forwarded == 2 and state.unacked == 0
    state.deliver("q", sub, [(4, 10, ["B"])])
    actions = state.acked(2, False, "disk full", [])
    assert bs.ReturnLocal("q", sub, (4,)) in actions
    assert bs.CreditLater(bs.REFUSED_RETRY, "q", sub, 1) in actions
    assert state.retry_credit("q", sub, 1) == [bs.Credit("q", sub, 1)]
    assert state.acked(2, True, "", []) == []  # answered twice: ignored
    assert state.acked(99, True, "", []) == []


def test_a_drained_queue_leaves_once_everything_sent_is_answered() -> None:
    state = _opener()
    sub = _subscribed(state)
    state.deliver("q", sub, [(1, 10, ["B"])])
    assert state.reconcile({}, ["q"], {}) == [bs.Revoke("q", sub)]
    assert state.peer_credit("q", 5) == []  # draining: no new credit
    actions = state.acked(1, True, "", [])
    assert actions[0] == bs.AckLocal("q", sub, (1,))
    assert bs.Unsubscribe("q", sub) in actions
    assert state.subscription("q") is None
    # Demand again: a new subscription, whose handle differs from the old one's.
    new = _subscribed(state)
    assert new != sub


def test_demand_returning_while_draining_restocks_the_consumer() -> None:
    state = _opener()
    sub = _subscribed(state)
    state.deliver("q", sub, [(1, 10, ["B"])])
    state.reconcile({}, ["q"], {})
    assert state.reconcile({"q": 1}, ["q"], {}) == [bs.Restock("q", sub)]


def test_static_includes_are_forwarded_without_demand_and_get_credit_back_once_stored() -> None:
    state = _opener("static:(a:1)?staticallyIncludedDestinations=audit")
    actions = state.reconcile({}, ["audit", "other"], {})
    assert [a.queue for a in actions if isinstance(a, bs.Subscribe)] == ["audit"]
    sub = state.subscription("audit")
    assert sub is not None
    state.deliver("audit", sub, [(1, 10, ["B"])])
    assert bs.Credit("audit", sub, 1) in state.acked(1, True, "", [])


def test_close_returns_everything_and_answers_nothing_more() -> None:
    state = _opener()
    sub = _subscribed(state)
    state.deliver("q", sub, [(1, 10, ["B"])])
    assert state.close() == [bs.Unsubscribe("q", sub)]
    assert state.acked(1, True, "", []) == []
    assert state.deliver("q", sub, [(2, 10, ["B"])]) == []
    assert state.peer_credit("q", 1) == []
    assert state.retry_credit("q", sub, 1) == []
    assert state.reconcile({"q": 1}, ["q"], {}) == []
    assert state.close() == []


def test_an_answer_for_an_older_subscription_of_the_queue_is_ignored() -> None:
    state = _opener()
    sub = _subscribed(state)
    state.deliver("q", sub, [(1, 10, ["B"])])
    state.reconcile({}, ["q"], {})
    state.acked(1, True, "", [])  # drained: gone
    new = _subscribed(state)
    assert state.deliver("q", sub, [(7, 10, ["B"])]) == []  # the old handle
    assert state.retry_credit("q", sub, 1) == []
    assert state.deliver("q", new, [(1, 10, ["B"])]) == [bs.SendBatch(2, (1,), ())]


# -- receiving: every interleaving of close with a store's end -----------------------

ENDINGS = ["stored", "failed", "cancelled"]


@pytest.mark.parametrize(
    "order", [p for e in ENDINGS for p in itertools.permutations([e, "close"])]
)
def test_a_batch_is_answered_only_when_stored_before_close(order: tuple[str, str]) -> None:
    state = _receiver()
    assert state.batch_received(7, 3, [(1, "bad")]) == [bs.Store(7, (0, 2))]
    answers: list[bs.Action] = []
    for event in order:
        if event == "close":
            actions = state.close()
            storing = order.index("close") == 0
            assert actions == ([bs.AbandonStores((7,))] if storing else [])
        elif event == "stored":
            answers += state.stored(7, 1, {"q": 1}, [(1, "bad")])
        elif event == "failed":
            answers += state.store_failed(7, "disk full")
        else:
            answers += state.store_cancelled(7)
    first = order[0]
    if first == "stored":
        assert answers == [bs.AnswerBatch(7, True, refused=((1, "bad"),), credits=(("q", 1),))]
    elif first == "failed":
        assert answers == [bs.AnswerBatch(7, False, error="disk full")]
    else:
        assert answers == []  # closed first: the peer resends over its next link
    assert state.storing == frozenset()
    # A batch arriving after close is not stored at all.
    assert state.batch_received(8, 1, []) == []


def test_an_answer_for_a_batch_never_received_is_ignored() -> None:
    state = _receiver()
    assert state.stored(5, 1, {}) == [] and state.store_failed(5, "x") == []


# -- the adapter on a real broker: close at every point of a store -------------------


async def _broker(path: Path) -> Broker:
    broker = Broker(BrokerConfig(name="a", port=0, data_dir=path), Store(path))
    await broker.start()
    return broker


def _session(broker: Broker, frames: list[object]) -> BridgeSession:
    hello = make_hello("x", "", "", parse_connector("static:(a:1)"))
    return BridgeSession(
        broker, DemandTable(), acceptor_terms(hello), frames.append, lambda: None,
        lambda q, h, p: 0, lambda q, p, peer: False,
    )  # fmt: skip


def _batch(batch_id: int, ids: list[str], path: list[str]) -> bridge_pb2.BridgeFrame:
    messages = [
        Message(id=mid, destination="q", body=b"x", persistent=True, broker_path=path)
        for mid in ids
    ]
    return bridge_pb2.BridgeFrame(
        forward=bridge_pb2.ForwardBatch(batch_id=batch_id, messages=messages)
    )


def _acks(frames: list[object]) -> list[bridge_pb2.ForwardAck]:
    return [ack for f in frames if isinstance(f, bridge_pb2.BridgeFrame) for ack in f.acks]


async def _until(predicate: object, what: str, timeout: float = 5.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("turns", [0, 1, 2, 3, 5, 8, 20, 200])
def test_a_link_closed_at_any_point_of_a_store_loses_nothing(tmp_path: Path, turns: int) -> None:
    """The bug: close() cancelled the store task after the committer held its write; the
    message was stored with its id but never enqueued, and the resend was acked as a
    duplicate and dropped. `turns`: loop turns the store runs before the link closes."""
    ids = [f"m{n}" for n in range(50)]

    async def scenario() -> None:
        broker = await _broker(tmp_path / "a")
        sink = Collect()
        broker.subscribe("q", sink, prefetch=1000)
        first: list[object] = []
        session = _session(broker, first)
        session.on_frame(_batch(1, ids, ["x"]))
        for _ in range(turns):
            await asyncio.sleep(0)
        session.close()
        answered = {a.batch_id for a in _acks(first)}
        # The forwarder resends what was not answered over its next link.
        second: list[object] = []
        again = _session(broker, second)
        if 1 not in answered:
            again.on_frame(_batch(1, ids, ["x"]))
            await _until(lambda: _acks(second), "the resend to be answered")
            assert _acks(second)[0].ok
        await _until(lambda: len(sink.got) >= len(ids), "every message to be delivered")
        await asyncio.sleep(0.05)
        got = [entry.message.id for _, entry in sink.got]
        assert sorted(got) == sorted(ids), f"lost {set(ids) - set(got)}, got {len(got)}"
        again.close()
        await broker.stop()
        broker.store.close()

    run(scenario(), timeout=20)


# -- failover: the new master's re-forward is the same forward -----------------------


def test_a_new_masters_reforward_is_a_duplicate_at_the_peer(tmp_path: Path) -> None:
    """b (group B) forwarded m to a, a stored it; b died before the removal reached c.
    c, master now, forwards the same stored bytes: a must drop them, not deliver again."""

    async def scenario() -> None:
        a = await _broker(tmp_path / "a")
        sink = Collect()
        consumer = a.subscribe("q", sink, prefetch=10)
        # As B's members hold it: stored at b with B's path name, replicated to c.
        stored = Message(id="m", destination="q", body=b"x", persistent=True, broker_path=["B"])
        data = stored.SerializeToString()
        for member in ("b", "c"):
            state = bs.BridgeState(opener_terms(parse_connector("static:(a:1)"), "a"), me="B")
            sub = _subscribed(state)
            (batch,) = state.deliver("q", sub, [(1, len(data), list(stored.broker_path))])
            assert isinstance(batch, bs.SendBatch) and batch.rewrite == (), member
            frame = bridge_pb2.BridgeFrame.FromString(wire.forward_frame(1, [data]))
            sent = await a.send(list(frame.forward.messages), checked=True)
            assert sent.duplicates == ([] if member == "b" else [0]), member
        await _until(lambda: sink.got, "m at a")
        a.ack("q", consumer, [sink.got[0][0]])
        await asyncio.sleep(0.05)
        assert [e.message.id for _, e in sink.got] == ["m"]
        assert list(sink.got[0][1].message.broker_path) == ["B", "a"]
        await a.stop()
        a.store.close()

    run(scenario())


def test_members_of_a_group_share_its_path_name() -> None:
    member = BrokerConfig(
        name="c", port=0, data_dir=Path("."), group="B", election=Election.ZOOKEEPER,
        zookeeper="127.0.0.1:2181", replication_port=1,
    )  # fmt: skip
    assert member.path_name == "B"
    assert BrokerConfig(name="a", port=0, data_dir=Path("."), group="A").path_name == "a"
    assert BrokerConfig(name="a", port=0, data_dir=Path(".")).path_name == "a"
