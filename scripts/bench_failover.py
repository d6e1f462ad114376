"""Master/slave benchmark: failover time, bridge catch-up, replicated produce rate.

    .venv/bin/python scripts/bench_failover.py [--rounds 5] [--count 50000]

Starts a ZooKeeper, group B (b, c: replicas 2, quorum_mem) and broker a with
`masterslave:(b,c)`. Each round kills the master with kill -9 and measures the time
until the other member accepts a persistent send, and until a's bridge is up to it; the
killed member is restarted and the group waits until both are in sync again. Then it
compares the produce rate of the group (quorum_mem) with a standalone broker
(local_disk). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from broker.client import BrokerError, Client
from broker.cluster.zookeeper import Ensemble
from broker.pb import admin_pb2, admin_pb2_grpc
from scripts.bench import exit_on_sigterm, produce
from tests.support.procs import BrokerProcess, free_port


async def status(url: str) -> admin_pb2.StatusResponse | None:
    async with grpc.aio.insecure_channel(url) as channel:
        try:
            return await admin_pb2_grpc.AdminStub(channel).Status(
                admin_pb2.StatusRequest(), timeout=1
            )
        except grpc.aio.AioRpcError:
            return None


async def until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def in_sync(group: dict[str, BrokerProcess]) -> str | None:
    for name, proc in group.items():
        answer = await status(proc.url)
        if answer is None or answer.role_kind != admin_pb2.ROLE_MASTER:
            continue
        if set(group) <= set(answer.group.in_sync):
            return name
    return None


async def accepts(url: str) -> bool:
    try:
        async with await Client.connect(url) as client:
            await asyncio.wait_for(client.send("bench.failover", b"probe"), 2)
            return True
    except (BrokerError, TimeoutError):
        return False


async def bridge_to(a: BrokerProcess, name: str) -> bool:
    answer = await status(a.url)
    return answer is not None and any(
        b.state == admin_pb2.LINK_UP and not b.inbound and b.peer == name
        for b in answer.bridges
    )


async def rounds(a: BrokerProcess, group: dict[str, BrokerProcess], n: int) -> None:
    failovers, bridges = [], []
    for i in range(n):
        await until(lambda: in_sync(group), 30, "the group to be in sync")
        master = await in_sync(group)
        assert master is not None
        other = next(name for name in group if name != master)
        await until(partial(bridge_to, a, master), 15, "a's bridge to the master")
        group[master].kill()
        killed = time.monotonic()
        await until(partial(accepts, group[other].url), 30, f"{other} to accept sends")
        failovers.append(time.monotonic() - killed)
        await until(partial(bridge_to, a, other), 30, f"a's bridge to reach {other}")
        bridges.append(time.monotonic() - killed)
        print(
            f"  round {i + 1}: {master} killed; {other} accepts sends after "
            f"{failovers[-1]:.2f}s, a's bridge up to it after {bridges[-1]:.2f}s",
            flush=True,
        )
        group[master].start()
    print(
        f"  failover (kill -9 -> new master accepts a send), median of {n}: "
        f"{statistics.median(failovers):.2f}s"
    )
    print(
        f"  a's masterslave: bridge up to the new master, median of {n}: "
        f"{statistics.median(bridges):.2f}s"
    )


async def rates(group_url: str, local_url: str, count: int) -> None:
    replicated = await produce(group_url, "bench.replicated", count, 1024, True)
    local = await produce(local_url, "bench.local", count, 1024, True)
    print(f"  persistent produce, group quorum_mem: {replicated:>9,.0f} msg/s")
    print(
        f"  persistent produce, standalone local_disk: {local:>9,.0f} msg/s "
        f"(quorum_mem is {replicated / local:.0%} of it)"
    )


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=50_000)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="netbroker-bench-") as tmp,
        Ensemble(Path(tmp) / "zk", size=1) as zk,
    ):
        ports = {name: free_port() for name in ("a", "b", "c")}
        procs: list[BrokerProcess] = []
        try:
            group = {}
            for name in ("b", "c"):
                group[name] = BrokerProcess(
                    name, Path(tmp) / name, port=ports[name],
                    args=("--group", "B", "--election", "zookeeper", "--zookeeper",
                          zk.connect_string, "--replication-port", str(free_port()),
                          "--replicas", "2", "--connector", f"static:(127.0.0.1:{ports['a']})"),
                )  # fmt: skip
                procs.append(group[name].start())
            a = BrokerProcess(
                "a", Path(tmp) / "a", port=ports["a"],
                args=("--connector",
                      f"masterslave:(127.0.0.1:{ports['b']},127.0.0.1:{ports['c']})"),
            )  # fmt: skip
            procs.append(a.start())
            local = BrokerProcess("local", Path(tmp) / "local")
            procs.append(local.start())
            print("netbroker failover bench: group B (b, c; quorum_mem), a -> masterslave:(b,c)")
            asyncio.run(rounds(a, group, args.rounds))

            async def measure() -> None:
                await until(lambda: in_sync(group), 30, "the group to be in sync")
                master = await in_sync(group)
                if master is None:
                    raise RuntimeError("the group fell out of sync before the rates")
                await rates(group[master].url, local.url, args.count)

            asyncio.run(measure())
        finally:
            for proc in procs:
                proc.stop()


if __name__ == "__main__":
    main()
