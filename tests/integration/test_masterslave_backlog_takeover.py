"""A member taking over a large backlog keeps serving once its core has started.

Starting the core over hundreds of thousands of stored messages stalls the broker's loop
for seconds, heartbeat included. The new master must then check its session and go on
serving, not stop at once because its last ZooKeeper answer is older than the grace (it
used to stop, be elected again and stop again, for good). Real ZooKeeper, real brokers.
"""

from __future__ import annotations

import time

from broker.client import Client
from tests.support.aio import run
from tests.support.groups import Start, drain, start_group, wait_in_sync, wait_master
from tests.support.procs import BrokerProcess
from tests.support.scenario import wait_for
from tests.support.zk import Ensemble

BACKLOG = 400_000


def step_downs(proc: BrokerProcess) -> int:
    text = proc.log_path.read_text(errors="replace") if proc.log_path.exists() else ""
    return text.count("no longer master")


def test_a_new_master_over_a_large_backlog_keeps_serving(
    brokers: Start, zookeeper: Ensemble
) -> None:
    procs = start_group(brokers, zookeeper, ["b", "c"], 2)

    async def scenario() -> None:
        master = await wait_in_sync(procs)
        other = "c" if master == "b" else "b"
        body = b"x" * 1024
        async with await Client.connect(procs[master].url) as client:
            producer = client.producer(max_in_flight=20_000)
            for _ in range(BACKLOG):
                await producer.send("backlog", body)
            await producer.flush()
            await producer.close()
        await wait_in_sync(procs, timeout=60)
        procs[master].kill()
        killed = time.monotonic()
        assert await wait_master(procs, timeout=30) == other
        print(f"{other} master {time.monotonic() - killed:.2f}s after the kill")

        async def sent() -> bool:
            try:
                async with await Client.connect(procs[other].url) as client:
                    await client.send("after", b"after")
                    return True
            except Exception:
                return False

        await wait_for(sent, 30, f"{other} to accept a send")
        # Serving for a while, not just a moment: well past the 0.9 s grace.
        settled = time.monotonic()
        while time.monotonic() - settled < 3:
            assert await wait_master(procs, timeout=5) == other
        assert step_downs(procs[other]) == 0, procs[other].log(20)
        got = await drain(procs[other].url, "after", 1)
        assert [d.body for d in got] == [b"after"]

    run(scenario(), timeout=240)
