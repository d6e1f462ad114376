"""The master's in-sync writes whose outcome is unknown, against a real ZooKeeper.

The write adapter applies the change and then raises ConnectionLoss, as when ZooKeeper
applied a request whose reply was lost; the Leader must not take that as "not written".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, ConnectionLoss

from broker.cluster.zookeeper import Ensemble
from broker.core.commit import GroupCommitter
from broker.core.store import Store
from masterslave.election import IsrState
from masterslave.replication import Leader
from masterslave.replog import ReplicationLog
from tests.support.aio import run

PATH = "/doubt/isr"


def leader_on(
    store: Store, zk: KazooClient, *, applied: bool, fenced: list[str]
) -> tuple[Leader, list[int]]:
    """A Leader for {a} whose first in-sync write raises ConnectionLoss, after applying
    the change in ZooKeeper if `applied`; later writes and reads are plain."""
    recorded = IsrState(1, "a", frozenset({"a"}), ((1, 0),))
    zk.create(PATH, recorded.to_bytes(), makepath=True)
    calls: list[int] = []

    async def write_isr(state: IsrState, version: int) -> int | None:
        calls.append(version)
        try:
            stat = zk.set(PATH, state.to_bytes(), version=version) if applied or calls[1:] else None
        except BadVersionError:
            return None
        if len(calls) == 1:
            raise ConnectionLoss("the reply was lost")
        assert stat is not None
        return int(stat.version)

    async def read_isr() -> tuple[IsrState | None, int]:
        data, stat = zk.get(PATH)
        return IsrState.parse(data), int(stat.version)

    leader = Leader(
        member="a", store=store, committer=GroupCommitter(store, sync=False, epoch=1),
        isr=recorded, isr_version=0, write_isr=write_isr,
        replication_log=ReplicationLog(100, 1 << 20), sync_mode="quorum_mem", min_insync=1,
        lag_timeout=2.0, commit_timeout=5.0, token="", on_fenced=fenced.append, group="T",
        read_isr=read_isr,
    )  # fmt: skip
    return leader, calls


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


def recorded_members(zk: KazooClient) -> frozenset[str]:
    return IsrState.parse(zk.get(PATH)[0]).isr


def test_grow_applied_despite_connection_loss_keeps_the_joiner(
    tmp_path: Path, zookeeper: Ensemble, kazoo_client: object
) -> None:
    zk: KazooClient = kazoo_client(zookeeper.connect_string)  # type: ignore[operator]
    store = Store(tmp_path / "store")
    fenced: list[str] = []

    async def scenario() -> None:
        leader, calls = leader_on(store, zk, applied=True, fenced=fenced)
        leader.tracker.follower_ack("b", 0, 0, time.monotonic())  # b caught up: joins
        await leader.review_isr()
        assert calls == [0]
        assert recorded_members(zk) == {"a", "b"}  # ZooKeeper lists b ...
        assert leader.policy.doubtful  # ... and the master does not know
        # b goes away and a message is written: while in doubt b is neither dropped
        # nor stops holding the commit back.
        leader.tracker.follower_gone("b", time.monotonic())
        leader.committer.replicator = leader
        leader.committer.start()
        acked = leader.committer.submit([(b"k", b"v")])
        await wait_until(lambda: leader.committer.position == 1)
        assert leader.tracker.members == {"a", "b"}
        assert not acked.done()  # not acknowledged without b while ZooKeeper lists b
        await leader.review_isr()  # reads the node back
        await asyncio.sleep(0.01)  # lets a wrongly released acknowledgement show
        assert not acked.done(), "acknowledged without b while ZooKeeper lists b"
        assert not leader.policy.doubtful
        assert leader.isr.isr == {"a", "b"} and leader.isr_version == 1
        # From now on b leaves the set only through a recorded write, and only then is
        # the message acknowledged without it.
        await leader.review_isr()
        assert recorded_members(zk) == {"a"}
        assert leader.isr.isr == {"a"} and leader.isr_version == 2
        assert calls == [0, 1]
        await wait_until(acked.done)
        assert acked.exception() is None
        assert fenced == []
        leader.committer.abort(RuntimeError("test over"))

    try:
        run(scenario(), timeout=30)
    finally:
        store.close()


def test_grow_lost_with_the_connection_is_proposed_again(
    tmp_path: Path, zookeeper: Ensemble, kazoo_client: object
) -> None:
    zk: KazooClient = kazoo_client(zookeeper.connect_string)  # type: ignore[operator]
    store = Store(tmp_path / "store")
    fenced: list[str] = []

    async def scenario() -> None:
        leader, calls = leader_on(store, zk, applied=False, fenced=fenced)
        leader.tracker.follower_ack("b", 0, 0, time.monotonic())
        await leader.review_isr()
        assert leader.policy.doubtful and recorded_members(zk) == {"a"}
        await leader.review_isr()  # read back: untouched
        assert not leader.policy.doubtful
        assert leader.isr.isr == {"a"} and leader.isr_version == 0
        await leader.review_isr()  # b still caught up: proposed again, written
        assert calls == [0, 0]
        assert recorded_members(zk) == {"a", "b"} and leader.isr.isr == {"a", "b"}
        assert fenced == []

    try:
        run(scenario(), timeout=30)
    finally:
        store.close()


def test_node_changed_by_another_member_while_in_doubt_fences(
    tmp_path: Path, zookeeper: Ensemble, kazoo_client: object
) -> None:
    zk: KazooClient = kazoo_client(zookeeper.connect_string)  # type: ignore[operator]
    store = Store(tmp_path / "store")
    fenced: list[str] = []

    async def scenario() -> None:
        leader, _ = leader_on(store, zk, applied=False, fenced=fenced)
        leader.tracker.follower_ack("b", 0, 0, time.monotonic())
        await leader.review_isr()
        assert leader.policy.doubtful
        newer = IsrState(2, "c", frozenset({"c"}), ((1, 0), (2, 0)))
        zk.set(PATH, newer.to_bytes())  # another member was elected meanwhile
        await leader.review_isr()
        assert fenced and "changed by another member" in fenced[0]

    try:
        run(scenario(), timeout=30)
    finally:
        store.close()
