"""Network benchmark: forwarding throughput and latency across one bridge, 1 KiB bodies.

    .venv/bin/python scripts/bench_network.py

Starts brokers a and b (a has `static:(b)`), a consumer on b and a producer on a:
the rate at which 50,000 persistent messages produced on a arrive at b's consumer
(producer, both brokers and the consumer sharing the machine's two cores), the rate at
which 50,000 already pending on a drain to a consumer that appears on b, their ratio
to one broker's consume rate, and latency a -> b at a fixed 1,000 msg/s.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.client import Client
from scripts.bench import consume, exit_on_sigterm, latency, pct, produce, take, wait_for_demand
from tests.support.procs import BrokerProcess, free_port


async def forward(a: str, b: str, count: int, size: int) -> float:
    body = os.urandom(size)
    async with await Client.connect(a) as ca, await Client.connect(b) as cb:
        consumer = await cb.subscribe("bench.forward", prefetch=2_000)
        await wait_for_demand(ca, "bench.forward")
        producer = ca.producer(max_in_flight=20_000)

        async def send() -> None:
            for _ in range(count):
                await producer.send("bench.forward", body)
            await producer.flush()

        sending = asyncio.create_task(send())
        rate = await take(consumer, count, "forwarding")
        await sending
        await producer.close()
        await consumer.close()
    return rate


async def drain_backlog(a: str, b: str, count: int, size: int) -> float:
    """Messages already pending on a; a consumer appears on b: the bridge's own rate."""
    await produce(a, "bench.backlog", count, size, True)
    return await consume(b, "bench.backlog", count)


async def run(a: str, b: str, count: int, size: int, rate: int, seconds: float) -> None:
    print(f"netbroker network bench: {count} persistent messages of {size} bytes, a -> b")
    await produce(b, "bench.local", count, size, True)
    local = await consume(b, "bench.local", count)
    print(f"  one broker's consume rate        {local:>9,.0f} msg/s")
    rate_ab = await forward(a, b, count, size)
    print(
        f"  forwarded a -> b (produce on a, consume on b) {rate_ab:>9,.0f} msg/s "
        f"({rate_ab / local:.0%} of one broker's consume rate)"
    )
    backlog = await drain_backlog(a, b, count, size)
    print(
        f"  backlog on a drained to b's consumer {backlog:>9,.0f} msg/s "
        f"({backlog / local:.0%} of one broker's consume rate)"
    )
    samples = await latency(a, rate, seconds, size, consume_url=b)
    print(
        f"  latency a -> b at {rate} msg/s ({len(samples)} msgs): "
        f"p50 {statistics.median(samples):.2f} ms  p99 {pct(samples, 0.99):.2f} ms"
    )


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="netbroker-bench-") as tmp:
        port_b = free_port()
        b = BrokerProcess("b", Path(tmp) / "b", port=port_b).start()
        a = BrokerProcess(
            "a", Path(tmp) / "a", args=("--connector", f"static:(127.0.0.1:{port_b})")
        )
        try:
            a.start()
            asyncio.run(run(a.url, b.url, args.count, args.size, args.rate, args.seconds))
        finally:
            a.stop()
            b.stop()


if __name__ == "__main__":
    main()
