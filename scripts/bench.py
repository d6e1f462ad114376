"""Single-broker benchmark: produce/consume rates and end-to-end latency, 1 KiB bodies.

    .venv/bin/python scripts/bench.py                 # starts its own broker on a free port
    .venv/bin/python scripts/bench.py --url HOST:PORT # against a running broker

Prints figures; asserts nothing. gRPC sets TCP_NODELAY on its sockets, so latency is
not inflated by Nagle's algorithm.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.client import Client, Consumer
from tests.support.procs import BrokerProcess


async def produce(url: str, queue: str, count: int, size: int, persistent: bool) -> float:
    body = os.urandom(size)
    async with await Client.connect(url) as client:
        producer = client.producer(max_in_flight=20_000)
        start = time.perf_counter()
        for _ in range(count):
            await producer.send(queue, body, persistent=persistent)
        await producer.flush()
        elapsed = time.perf_counter() - start
        await producer.close()
    return count / elapsed


async def take(consumer: Consumer, count: int, what: str) -> float:
    """Receive and ack `count` deliveries; their rate, timed from this call."""
    start = time.perf_counter()
    for _ in range(count):
        delivery = await consumer.receive(timeout=60)
        if delivery is None:
            raise SystemExit(f"{what} stalled")
        delivery.ack()
    return count / (time.perf_counter() - start)


async def consume(url: str, queue: str, count: int, prefetch: int = 2_000) -> float:
    async with await Client.connect(url) as client:
        consumer = await client.subscribe(queue, prefetch=prefetch)
        rate = await take(consumer, count, f"consuming {queue}")
        await consumer.close()
    return rate


async def latency(
    url: str, rate: int, seconds: float, size: int, consume_url: str | None = None
) -> list[float]:
    """Send at a fixed rate, one acknowledged send at a time; time send -> delivery.

    With `consume_url` the consumer is on that broker (across a bridge)."""
    padding = b"x" * max(0, size - 20)
    count = int(rate * seconds)
    samples: list[float] = []
    async with (
        await Client.connect(url) as client,
        await Client.connect(consume_url or url) as consuming,
    ):
        consumer = await consuming.subscribe("bench.latency", prefetch=100, auto_ack=True)
        if consume_url:
            await wait_for_demand(client, "bench.latency")

        async def receive() -> None:
            for _ in range(count):
                delivery = await consumer.receive(timeout=30)
                if delivery is None:
                    raise SystemExit("latency run lost messages")
                sent = int(delivery.body[:20])
                samples.append((time.perf_counter_ns() - sent) / 1e6)

        receiver = asyncio.create_task(receive())
        start = time.perf_counter()
        for i in range(count):
            # Fixed schedule, not fixed gaps: a slow send does not lower the rate.
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            stamp = str(time.perf_counter_ns()).rjust(20, "0").encode()
            await client.send("bench.latency", stamp + padding)
        await receiver
        await consumer.close()
    return samples


async def wait_for_demand(client: Client, queue: str, timeout: float = 15.0) -> None:
    """Until a bridge has registered a consumer for `queue` on the client's broker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for info in await client.queues():
            if info.name == queue and info.consumers:
                return
        await asyncio.sleep(0.05)
    raise SystemExit(f"no demand for {queue} arrived over the bridge")


def exit_on_sigterm() -> None:
    """Turn SIGTERM (a timeout, a CI stop) into SystemExit, so `finally` stops the brokers
    this benchmark started instead of leaving them running."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def run(url: str, count: int, size: int, rate: int, seconds: float) -> None:
    print(f"netbroker bench: {count} messages of {size} bytes, broker {url}")
    rows = []
    for persistent in (True, False):
        kind = "persistent" if persistent else "non-persistent"
        queue = f"bench.{kind}"
        p = await produce(url, queue, count, size, persistent)
        c = await consume(url, queue, count)
        rows.append((kind, p, c))
        print(f"  {kind:15} produce {p:>9,.0f} msg/s   consume {c:>9,.0f} msg/s", flush=True)
    samples = await latency(url, rate, seconds, size)
    print(
        f"  latency at {rate} msg/s (persistent, {len(samples)} msgs): "
        f"p50 {statistics.median(samples):.2f} ms  p99 {pct(samples, 0.99):.2f} ms  "
        f"max {max(samples):.2f} ms"
    )


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running broker; default: start one")
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if args.url:
        asyncio.run(run(args.url, args.count, args.size, args.rate, args.seconds))
        return
    with tempfile.TemporaryDirectory(prefix="netbroker-bench-") as tmp:
        broker = BrokerProcess("bench", Path(tmp) / "bench").start()
        try:
            asyncio.run(run(broker.url, args.count, args.size, args.rate, args.seconds))
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
