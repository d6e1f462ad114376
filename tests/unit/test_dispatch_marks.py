"""In a group a delivery leaves only once its dispatch mark is committed to the in-sync
members (a failover keeps the mark, so whatever reached a consumer comes back marked);
standalone it leaves at once. And a send waits for any unsettled write of its ids, a
lower visit's too, whose undo could otherwise clobber the later visit's id key.

A real Broker on a real RocksDB store, in process; the committer's replicator is one
whose answers the test decides (the part under test is the broker core)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from broker.config import BrokerConfig, Sync
from broker.core.broker import Broker
from broker.core.commit import GroupCommitter
from broker.core.store import META_EPOCH, META_POS, Op, Store
from broker.errors import Unavailable
from broker.pb.message_pb2 import Message
from tests.support.aio import run
from tests.support.sinks import Collect


def _marks_only(ops: Sequence[Op]) -> bool:
    return all(key.startswith(b"h") or key in (META_POS, META_EPOCH) for key, _ in ops)


class Replicator:
    """Holds the writes the test picks (dispatch marks, or sends) until it answers them;
    commits the rest at once."""

    def __init__(self, hold_marks: bool) -> None:
        self.hold_marks = hold_marks
        self.pending: list[tuple[Sequence[Op], asyncio.Future[None]]] = []

    def on_write(self, position: int, epoch: int, ops: Sequence[Op]) -> asyncio.Future[None] | None:
        if _marks_only(ops) != self.hold_marks:
            return None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((ops, future))
        return future

    def on_synced(self, position: int) -> None:
        pass

    def answer(self, index: int, error: Exception | None = None) -> None:
        future = self.pending[index][1]
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    def commit_all(self) -> None:
        for _, future in self.pending:
            if not future.done():
                future.set_result(None)


def _message(mid: str, path: Sequence[str] = ()) -> Message:
    return Message(id=mid, destination="q", body=b"x", persistent=True, broker_path=list(path))


async def _broker(path: Path, replicator: Replicator | None) -> Broker:
    config = BrokerConfig(name="a", port=0, data_dir=path, sync=Sync.LOCAL_MEM)
    store = Store(path)
    committer = GroupCommitter(store, sync=False)
    committer.replicator = replicator
    broker = Broker(config, store, committer)
    await broker.start()
    return broker


async def _turns(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def _stop(broker: Broker) -> None:
    await broker.stop()
    broker.store.close()


def test_a_delivery_waits_for_its_dispatch_mark(tmp_path: Path) -> None:
    async def scenario() -> None:
        replicator = Replicator(hold_marks=True)
        broker = await _broker(tmp_path / "a", replicator)
        sink = Collect()
        broker.subscribe("q", sink, prefetch=10)
        await broker.send([_message("m1")])
        await _turns()
        assert len(replicator.pending) == 1 and sink.ids == []
        await broker.send([_message("m2")])
        await _turns()
        # The second mark committed first: still in dispatch order, after the first.
        replicator.answer(1)
        await _turns()
        assert sink.ids == []
        replicator.answer(0)
        await _turns()
        assert sink.ids == ["m1", "m2"]
        await _stop(broker)

    run(scenario())


def test_standalone_delivers_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker = await _broker(tmp_path / "a", None)
        sink = Collect()
        broker.subscribe("q", sink, prefetch=10)
        await broker.send([_message("m1")])
        await _turns(3)
        assert sink.ids == ["m1"]
        await _stop(broker)

    run(scenario())


def test_non_persistent_messages_in_a_group_go_at_once(tmp_path: Path) -> None:
    """No mark covers them and none is written for them: they do not outlive a failover."""

    async def scenario() -> None:
        replicator = Replicator(hold_marks=True)
        broker = await _broker(tmp_path / "a", replicator)
        sink = Collect()
        broker.subscribe("q", sink, prefetch=10)
        message = _message("n1")
        message.persistent = False
        await broker.send([message])
        await _turns()
        assert sink.ids == ["n1"] and replicator.pending == []
        await _stop(broker)

    run(scenario())


def test_a_consumer_gone_before_its_mark_commits_gets_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        replicator = Replicator(hold_marks=True)
        broker = await _broker(tmp_path / "a", replicator)
        gone, other = Collect(), Collect()
        consumer = broker.subscribe("q", gone, prefetch=10)
        await broker.send([_message("m1")])
        await _turns()
        broker.unsubscribe("q", consumer)
        broker.subscribe("q", other, prefetch=10)
        await _turns()
        replicator.commit_all()
        await _turns()
        replicator.commit_all()  # the redelivery's own wait, if it wrote a mark
        await _turns()
        assert gone.ids == []
        assert other.ids == ["m1"]
        assert other.got[0][1].message.redelivery_count == 1
        await _stop(broker)

    run(scenario())


def test_a_mark_not_committed_returns_its_deliveries_to_the_queue(tmp_path: Path) -> None:
    async def scenario() -> None:
        replicator = Replicator(hold_marks=True)
        broker = await _broker(tmp_path / "a", replicator)
        sink = Collect()
        broker.subscribe("q", sink, prefetch=10)
        await broker.send([_message("m1")])
        await _turns()
        replicator.answer(0, Unavailable("not acknowledged by the in-sync set"))
        await _turns()
        assert sink.ids == []
        replicator.commit_all()
        await _turns()
        assert sink.ids == ["m1"]
        await _stop(broker)

    run(scenario())


def test_an_aborted_core_hands_out_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        replicator = Replicator(hold_marks=True)
        broker = await _broker(tmp_path / "a", replicator)
        sink = Collect()
        broker.subscribe("q", sink, prefetch=10)
        await broker.send([_message("m1")])
        await _turns()
        broker.abort("demoted")
        replicator.answer(0, Unavailable("demoted"))
        await _turns()
        assert sink.ids == []
        assert broker.queues["q"].in_flight == 1  # not handed on: this core serves no one
        broker.store.close()

    run(scenario())


def test_a_later_visit_waits_for_a_lower_visits_write(tmp_path: Path) -> None:
    """The lower visit's write fails after the later visit was stored: its undo must not
    take the later visit's id key, or a resend of that visit is stored again."""

    async def scenario() -> None:
        replicator = Replicator(hold_marks=False)
        broker = await _broker(tmp_path / "a", replicator)
        lower = asyncio.ensure_future(broker.send([_message("m1")]))
        await _turns()
        assert len(replicator.pending) == 1
        later = asyncio.ensure_future(broker.send([_message("m1", ("x", "y"))]))
        await _turns()
        # With the fix the later visit waits; without, its write is pending already.
        waited = len(replicator.pending) == 1
        replicator.answer(0, Unavailable("not acknowledged by the in-sync set"))
        for _ in range(5):  # the undo, then the later visit's write
            await _turns()
            replicator.commit_all()
        await _turns()
        assert lower.exception() is not None
        assert later.result().duplicates == []
        resend = asyncio.ensure_future(broker.send([_message("m1", ("x", "y"))]))
        for _ in range(5):  # stored again (the bug), its write is held: commit it
            await _turns()
            replicator.commit_all()
        assert resend.result().duplicates == [0], "the later visit's resend was stored again"
        assert waited
        await _stop(broker)

    run(scenario())
