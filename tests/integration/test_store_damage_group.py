"""A group member whose store is damaged re-syncs from the master, and is never elected
while it lacks acknowledged writes (real ZooKeeper, real broker processes)."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable

from broker.client import Client
from broker.cluster.zookeeper import Ensemble
from broker.server.status import Role
from tests.support.aio import run
from tests.support.groups import drain, role, start_group, wait_in_sync, wait_master
from tests.support.procs import BrokerProcess
from tests.support.scenario import send_many

COUNT = 5_000


def test_damaged_member_resyncs_and_is_not_elected_meanwhile(
    brokers: Callable[..., BrokerProcess], zookeeper: Ensemble
) -> None:
    group = start_group(brokers, zookeeper, ["b", "c"], 2, "--weight", "1")
    b, c = group["b"], group["c"]

    async def fill() -> list[str]:
        master = await wait_in_sync(group)
        assert master == "b" or master == "c"
        async with await Client.connect(group[master].url) as client:
            return await send_many(client, "g", [os.urandom(1000) for _ in range(COUNT)])

    sent = run(fill())
    master = run(wait_in_sync(group))
    slave = c if master == "b" else b
    master_proc = group[master]
    slave.stop()
    # The master dies too: the in-sync set in ZooKeeper still lists both.
    master_proc.kill()
    ssts = sorted((slave.data_dir / "store").glob("*.sst"), key=lambda p: p.stat().st_size)
    damaged = ssts[-1]
    size = damaged.stat().st_size
    with damaged.open("r+b") as f:
        f.seek(size // 2)
        f.write(bytes(random.Random(3).randrange(256) for _ in range(64)))
    slave.start()

    async def stays_unelected() -> None:
        # The only present member is listed in-sync but holds nothing: the group must wait.
        # The dead master's session expires within about a second (session timeout 1 s);
        # watch well past that.
        deadline = asyncio.get_running_loop().time() + 5.0
        while asyncio.get_running_loop().time() < deadline:
            assert await role(slave) != Role.MASTER, "an empty store was elected"
            await asyncio.sleep(0.1)
        assert "re-syncing a store reset" in slave.log(400)

    run(stays_unelected())
    log = slave.log(200)
    asides = list(slave.data_dir.glob("store.damaged-*"))
    print([line for line in log.splitlines() if "damaged" in line])
    assert len(asides) == 1, "the damaged store was not kept for the operator"
    assert str(damaged) in log and str(asides[0]) in log

    # The master returns: the member takes a bulk copy, then holds every message.
    master_proc.start()
    run(wait_in_sync(group, timeout=30))
    assert "bulk copy complete" in slave.log(200)
    master_proc.kill()
    new_master = run(wait_master({slave.name: slave}, timeout=20))
    assert new_master == slave.name
    got = run(drain(slave.url, "g", COUNT))
    ids = {d.id for d in got}
    print(f"after resync and failover: {len(ids)} of {len(sent)} served")
    assert ids == set(sent)
