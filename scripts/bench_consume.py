"""Consume latency and drain rate, group B (b, c; replicas 2) against a standalone broker.

    .venv/bin/python scripts/bench_consume.py [--pings 300] [--count 20000]

Latency: one persistent message at a time to a queue with a subscribed consumer, from
the send's start until the consumer has it (median and 99th percentile). Drain: `count`
messages queued before a consumer (prefetch 200, acking each) subscribes, then the time
to receive them all. In a group each delivery waits for its dispatch mark to reach the
in-sync members; this shows what that costs. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.client import Client
from broker.cluster.zookeeper import Ensemble
from scripts.bench import exit_on_sigterm, produce
from scripts.bench_failover import in_sync, until
from tests.support.procs import BrokerProcess, free_port


async def latency(url: str, pings: int) -> tuple[float, float]:
    async with await Client.connect(url) as client:
        consumer = await client.subscribe("bench.latency", prefetch=10)
        times = []
        for i in range(pings):
            started = time.perf_counter()
            await client.send("bench.latency", str(i).encode())
            delivery = await consumer.receive(timeout=5)
            assert delivery is not None
            times.append(time.perf_counter() - started)
            delivery.ack()
        times.sort()
        return statistics.median(times) * 1000, times[int(len(times) * 0.99)] * 1000


async def drain(url: str, count: int) -> float:
    await produce(url, "bench.drain", count, 1024, True)
    async with await Client.connect(url) as client:
        consumer = await client.subscribe("bench.drain", prefetch=200)
        started = time.perf_counter()
        for _ in range(count):
            delivery = await consumer.receive(timeout=10)
            assert delivery is not None
            delivery.ack()
        return count / (time.perf_counter() - started)


async def measure(name: str, url: str, pings: int, count: int) -> None:
    median, p99 = await latency(url, pings)
    rate = await drain(url, count)
    print(f"  {name}: send->receive median {median:.2f} ms, p99 {p99:.2f} ms; "
          f"drain {rate:,.0f} msg/s", flush=True)


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=300)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--sync", default="")
    args = parser.parse_args()
    extra = ("--sync", args.sync) if args.sync else ()
    with (
        tempfile.TemporaryDirectory(prefix="netbroker-bench-") as tmp,
        Ensemble(Path(tmp) / "zk", size=1) as zk,
    ):
        procs: list[BrokerProcess] = []
        try:
            group = {}
            for name in ("b", "c"):
                group[name] = BrokerProcess(
                    name, Path(tmp) / name, port=free_port(),
                    args=("--group", "B", "--election", "zookeeper", "--zookeeper",
                          zk.connect_string, "--replication-port", str(free_port()),
                          "--replicas", "2", *extra),
                )  # fmt: skip
                procs.append(group[name].start())
            local = BrokerProcess("local", Path(tmp) / "local")
            procs.append(local.start())

            async def run() -> None:
                await until(lambda: in_sync(group), 30, "the group to be in sync")
                master = await in_sync(group)
                assert master is not None
                await measure(f"group B {args.sync or 'default sync'}", group[master].url,
                              args.pings, args.count)
                await measure("standalone", local.url, args.pings, args.count)

            asyncio.run(run())
        finally:
            for proc in procs:
                proc.stop()


if __name__ == "__main__":
    main()
