"""The core send path under cancellation and failed writes: a write that reaches the store
reaches the queue whatever task is cancelled; an id counts as held only once enqueued; a
resend is acknowledged only once the original is durable, and stored anew if it failed.

A real Broker on a real RocksDB store, in process. Where a commit must be held open or
made to fail, the committer is given a replicator whose answers the test decides (the
part under test is the broker core, not replication)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from broker.config import BrokerConfig, Sync
from broker.core.broker import Broker
from broker.core.commit import GroupCommitter
from broker.core.store import META_EPOCH, META_POS, Op, Store
from broker.errors import Unavailable
from broker.pb.message_pb2 import Message
from tests.support.aio import run
from tests.support.sinks import Collect


class HeldReplicator:
    """Commits only when the test says so (or fails them). Dispatch marks alone commit
    at once: deliveries wait for them, and what is held here is the send path."""

    def __init__(self) -> None:
        self.pending: list[asyncio.Future[None]] = []

    def on_write(self, position: int, epoch: int, ops: Sequence[Op]) -> asyncio.Future[None] | None:
        if all(key.startswith(b"h") or key in (META_POS, META_EPOCH) for key, _ in ops):
            return None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        return future

    def on_synced(self, position: int) -> None:
        pass

    def commit_all(self) -> None:
        for future in self.pending:
            if not future.done():
                future.set_result(None)

    def fail_all(self) -> None:
        for future in self.pending:
            if not future.done():
                future.set_exception(Unavailable("not acknowledged by the in-sync set"))


def _message(mid: str, persistent: bool = True, path: Sequence[str] = ()) -> Message:
    return Message(
        id=mid, destination="q", body=b"x", persistent=persistent, broker_path=list(path)
    )


async def _broker(
    path: Path, held: HeldReplicator | None = None, memory: int = 256 * 1024 * 1024
) -> Broker:
    config = BrokerConfig(
        name="a", port=0, data_dir=path, sync=Sync.LOCAL_MEM if held else Sync.LOCAL_DISK,
        nonpersistent_memory_limit=memory,
    )  # fmt: skip
    store = Store(path)
    committer = None
    if held is not None:
        committer = GroupCommitter(store, sync=False)
        committer.replicator = held
    broker = Broker(config, store, committer)
    await broker.start()
    return broker


async def _until(predicate: object, what: str, timeout: float = 5.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def _handed_to_committer(broker: Broker, task: asyncio.Task[object]) -> None:
    """Run `task` until its batch is in the committer's hands (the write is queued or
    written, the task waits for the outcome)."""
    for _ in range(10):
        await asyncio.sleep(0)
        if broker.committer._waiters or broker.committer.position:
            return
    raise AssertionError("the send never reached the committer")


async def _stop(broker: Broker) -> None:
    await broker.stop()
    broker.store.close()


def _stored_ids(path: Path) -> list[str]:
    store = Store(path)
    try:
        return sorted(Message.FromString(data).id for _, data in store.queue_items("q"))
    finally:
        store.close()


@pytest.mark.parametrize("resend_after", [False, True])
def test_a_send_cancelled_once_its_write_is_queued_is_still_enqueued(
    tmp_path: Path, resend_after: bool
) -> None:
    """The bug: the bridge cancelled its store task at `await committer.submit`, the write
    went ahead, the queue never got the message, and the resend was taken as a duplicate."""

    async def scenario() -> None:
        broker = await _broker(tmp_path / "a")
        sink = Collect()
        broker.subscribe("q", sink, prefetch=10)
        task = asyncio.ensure_future(broker.send([_message("m1")]))
        await _handed_to_committer(broker, task)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _until(lambda: sink.ids == ["m1"], "the cancelled send's message to be delivered")
        if resend_after:
            sent = await broker.send([_message("m1")])
            assert sent.duplicates == [0]
            await asyncio.sleep(0.05)
            assert sink.ids == ["m1"]
        assert not broker._claims
        await _stop(broker)
        assert _stored_ids(tmp_path / "a") == ["m1"]

    run(scenario(), timeout=20)


def test_a_resend_during_the_original_write_waits_until_it_is_durable(tmp_path: Path) -> None:
    held = HeldReplicator()

    async def scenario() -> None:
        broker = await _broker(tmp_path / "a", held)
        sink = Collect()
        broker.subscribe("q", sink, prefetch=10)
        original = asyncio.ensure_future(broker.send([_message("m1")]))
        await _handed_to_committer(broker, original)
        resend = asyncio.ensure_future(broker.send([_message("m1")]))
        await _until(lambda: held.pending, "the original to be written")
        for _ in range(20):
            await asyncio.sleep(0)
        # Answering the resend now would acknowledge a message that is not yet durable.
        assert not resend.done() and not original.done()
        held.commit_all()
        first, second = await original, await resend
        assert first.duplicates == [] and second.duplicates == [0]
        await _until(lambda: sink.ids == ["m1"], "m1 to be delivered")
        await asyncio.sleep(0.05)
        assert sink.ids == ["m1"]
        await _stop(broker)
        assert _stored_ids(tmp_path / "a") == ["m1"]

    run(scenario(), timeout=20)


@pytest.mark.parametrize("cancel_original", [False, True])
def test_a_resend_is_stored_when_the_original_write_fails(
    tmp_path: Path, cancel_original: bool
) -> None:
    held = HeldReplicator()

    async def scenario() -> None:
        broker = await _broker(tmp_path / "a", held)
        sink = Collect()
        broker.subscribe("q", sink, prefetch=10)
        original = asyncio.ensure_future(broker.send([_message("m1"), _message("m2")]))
        await _handed_to_committer(broker, original)
        await _until(lambda: held.pending, "the original to be written")
        if cancel_original:
            original.cancel()  # the link closed meanwhile: changes nothing below
        resend = asyncio.ensure_future(broker.send([_message("m1")]))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not resend.done()
        held.fail_all()
        await _until(lambda: len(held.pending) >= 2, "the undo to be written")
        assert not resend.done()
        held.commit_all()  # the undo
        if cancel_original:
            with pytest.raises(asyncio.CancelledError):
                await original
        else:
            with pytest.raises(Unavailable):
                await original
        await _until(lambda: len(held.pending) >= 3, "the resend to be written")
        held.commit_all()
        sent = await resend
        assert sent.duplicates == [], "the resend of a failed write was dropped"
        await _until(lambda: sink.ids == ["m1"], "the resend to be delivered")
        await asyncio.sleep(0.05)
        assert sink.ids == ["m1"]  # m2 failed and was never resent: in no queue, nor store
        assert not broker._claims
        await _stop(broker)
        assert _stored_ids(tmp_path / "a") == ["m1"]

    run(scenario(), timeout=20)


def test_a_failed_write_leaves_no_held_id_behind(tmp_path: Path) -> None:
    held = HeldReplicator()

    async def scenario() -> None:
        broker = await _broker(tmp_path / "a", held)
        sink = Collect()
        broker.subscribe("q", sink, prefetch=10)
        original = asyncio.ensure_future(broker.send([_message("m1")]))
        await _until(lambda: held.pending, "the write")
        held.fail_all()
        # The undo is still being committed: a resend meanwhile must wait for it.
        resend = asyncio.ensure_future(broker.send([_message("m1")]))
        await _until(lambda: len(held.pending) >= 2, "the undo to be written")
        for _ in range(20):
            await asyncio.sleep(0)
        assert not resend.done() and not original.done()
        held.commit_all()
        with pytest.raises(Unavailable):
            await original
        await _until(lambda: len(held.pending) >= 3, "the resend to be written")
        held.commit_all()
        assert (await resend).duplicates == []
        await _until(lambda: sink.ids == ["m1"], "the resend to be delivered")
        await _stop(broker)

    run(scenario(), timeout=20)


def test_cancelling_a_resend_that_waits_for_the_original_changes_nothing(tmp_path: Path) -> None:
    held = HeldReplicator()

    async def scenario() -> None:
        broker = await _broker(tmp_path / "a", held)
        sink = Collect()
        broker.subscribe("q", sink, prefetch=10)
        original = asyncio.ensure_future(broker.send([_message("m1")]))
        await _until(lambda: held.pending, "the write")
        resend = asyncio.ensure_future(broker.send([_message("m1")]))
        for _ in range(5):
            await asyncio.sleep(0)
        resend.cancel()
        with pytest.raises(asyncio.CancelledError):
            await resend
        held.commit_all()
        assert (await original).duplicates == []
        await _until(lambda: sink.ids == ["m1"], "m1")
        assert (await broker.send([_message("m1")])).duplicates == [0]
        assert not broker._claims
        await _stop(broker)

    run(scenario(), timeout=20)


def test_a_send_cancelled_while_waiting_for_memory_stores_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker = await _broker(tmp_path / "a", memory=10)
        sink = Collect()
        blocker = asyncio.ensure_future(broker.send([_message("big", persistent=False)]))
        await blocker  # holds the whole limit until consumed
        waiting = asyncio.ensure_future(
            broker.send([_message("np", persistent=False), _message("p1")])
        )
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert not broker._claims
        consumer = broker.subscribe("q", sink, prefetch=10)
        await _until(lambda: sink.ids == ["big"], "big")
        broker.ack("q", consumer, [tag for tag, _ in sink.got])
        # Nothing of the cancelled batch was stored: its resend is new.
        sent = await broker.send([_message("np", persistent=False), _message("p1")])
        assert sent.duplicates == []
        await _until(lambda: sink.ids == ["big", "np", "p1"], "the resent batch")
        await _stop(broker)

    run(scenario(), timeout=20)


def test_a_later_visit_is_not_a_duplicate_of_an_earlier_one(tmp_path: Path) -> None:
    """A message that left over a bridge and came back is new here (longer path)."""

    async def scenario() -> None:
        broker = await _broker(tmp_path / "a")
        sink = Collect()
        consumer = broker.subscribe("q", sink, prefetch=10)
        await broker.send([_message("m1")])
        await _until(lambda: len(sink.got) == 1, "first visit")
        broker.ack("q", consumer, [sink.got[0][0]])
        assert (await broker.send([_message("m1")])).duplicates == [0]
        assert (await broker.send([_message("m1", path=["a", "b"])])).duplicates == []
        await _until(lambda: len(sink.got) == 2, "second visit")
        assert (await broker.send([_message("m1", path=["a", "b"])])).duplicates == [0]
        await _stop(broker)

    run(scenario(), timeout=20)
