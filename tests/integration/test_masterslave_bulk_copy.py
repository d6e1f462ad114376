"""A bulk copy never leaves an electable member holding part of a store.

The follower's store is cleared on the copy's first chunk, so before that chunk goes out
the master takes the member out of the in-sync set in ZooKeeper, and the follower marks
its store for resync (a restart mid-copy is not electable either).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from kazoo.client import KazooClient

from broker.client import Client
from broker.cluster.zookeeper import Ensemble
from broker.core.store import META_EPOCH, META_POS, RESET_POSITION, Store
from broker.pb import replication_pb2, replication_pb2_grpc
from masterslave.election import IsrState
from masterslave.replication import Follower, to_pb_ops
from masterslave.replog import ReplicationLog
from tests.integration.test_masterslave_faults import replication_address
from tests.support.aio import run
from tests.support.groups import Start, start_group, wait_in_sync
from tests.support.scenario import send_many, wait_for

# ---- the follower's side, on a real store -------------------------------------------


def test_first_chunk_marks_the_store_for_resync_before_clearing(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    try:
        store.write(
            [
                (b"m-old", b"x"),
                (META_POS, (500).to_bytes(8, "big")),
                (META_EPOCH, (3).to_bytes(8, "big")),
            ],
            sync=True,
        )
        follower = Follower("c", store, ReplicationLog(100, 1 << 20, last=500), "quorum_mem", "")
        resets: list[bool] = []
        follower.on_reset = lambda: resets.append(store.resync_pending)
        assert (follower.position, follower.epoch) == (500, 3)
        assert not store.resync_pending

        first = replication_pb2.SnapshotChunk(
            first=True, last=False, ops=to_pb_ops([(b"m-a", b"1")]), position=900, epoch=4
        )
        follower._apply_snapshot(first)
        # Part of a store: durably not electable, and it no longer claims position 500.
        assert store.resync_pending
        assert resets == [True]
        assert (follower.position, follower.epoch) == (RESET_POSITION, 0)
        assert store.meta(META_POS) == RESET_POSITION

        last = replication_pb2.SnapshotChunk(
            first=False, last=True, ops=to_pb_ops([(b"m-b", b"2")]), position=900, epoch=4
        )
        follower._apply_snapshot(last)
        assert not store.resync_pending
        assert (follower.position, follower.epoch) == (900, 4)
        assert store.meta(META_POS) == 900
    finally:
        store.close()


# ---- the master's side, real ZooKeeper and brokers ----------------------------------


def isr_members(zk: KazooClient) -> frozenset[str]:
    data, _ = zk.get("/netbroker/groups/B/isr")
    return IsrState.parse(data).isr


def test_in_sync_member_leaves_the_set_before_its_first_chunk(
    brokers: Start, zookeeper: Ensemble, kazoo_client: object
) -> None:
    # A long session: the killed slave stays registered, so its reconnect is accepted.
    # A long lag timeout: the member cannot leave the set for lag during the test, only
    # because it is about to take a bulk copy.
    procs = start_group(
        brokers, zookeeper, ["b", "c"], 2, "--session-timeout", "30", "--lag-timeout", "60"
    )
    zk: KazooClient = kazoo_client(zookeeper.connect_string)  # type: ignore[operator]

    async def scenario() -> None:
        master = await wait_in_sync(procs)
        slave = "c" if master == "b" else "b"
        async with await Client.connect(procs[master].url) as client:
            await send_many(client, "copied", [str(i).encode() for i in range(300)])
        procs[slave].kill()

        async def left() -> bool:
            return f"{slave} stopped following" in procs[master].log(200)

        await wait_for(left, 10, f"the master to see {slave}'s stream end")
        # Gone but not behind the head (nothing is being sent): still in sync.
        assert slave in isr_members(zk)

        async with grpc.aio.insecure_channel(replication_address(procs[master])) as channel:
            call = replication_pb2_grpc.ReplicationStub(channel).Follow()
            # As the restarted slave would ask after its store was reset.
            await call.write(
                replication_pb2.FollowRequest(member=slave, epoch=0, position=RESET_POSITION)
            )
            frame = await asyncio.wait_for(call.read(), 10)
            assert frame is not grpc.aio.EOF and frame.snapshot.first, frame
            # The member's store is being cleared now: ZooKeeper must not list it.
            assert slave not in isr_members(zk), "a member taking a bulk copy is in sync"
            while not frame.snapshot.last:
                frame = await asyncio.wait_for(call.read(), 10)
                assert frame is not grpc.aio.EOF
            head = frame.snapshot.position
            await call.write(replication_pb2.FollowRequest(received=head, synced=head))

            async def rejoined() -> bool:
                return slave in isr_members(zk)

            # Caught up, it rejoins as any lagging member does.
            await wait_for(rejoined, 10, f"{slave} to rejoin the in-sync set")
            call.cancel()

    run(scenario(), timeout=120)
