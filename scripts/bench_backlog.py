"""Backlog benchmark: broker memory with a deep queue, and restart time.

    .venv/bin/python scripts/bench_backlog.py [--count 1000000]

Produces COUNT persistent 1 KiB messages with no consumer, prints the broker's RSS,
restarts it (kill -9) and prints the time until it serves again and its RSS, then
consumes a few to show the backlog pages in. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.client import Client
from scripts.bench import consume, exit_on_sigterm, produce
from tests.support.procs import BrokerProcess


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def depth(url: str) -> int:
    async with await Client.connect(url) as client:
        return sum(q.depth for q in await client.queues() if q.name == "bench.backlog")


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="netbroker-bench-") as tmp:
        broker = BrokerProcess("backlog", Path(tmp) / "backlog").start()
        try:
            assert broker.proc is not None
            print(f"netbroker backlog bench: {args.count} persistent 1 KiB messages, no consumer")
            rate = asyncio.run(produce(broker.url, "bench.backlog", args.count, 1024, True))
            print(
                f"  produced at {rate:,.0f} msg/s; broker RSS {rss_mb(broker.proc.pid):.0f} MB "
                f"with {asyncio.run(depth(broker.url)):,} pending"
            )
            broker.kill()
            started = time.monotonic()
            broker.start(timeout=300)
            ready = time.monotonic() - started
            assert broker.proc is not None
            print(
                f"  kill -9 and restart: serving again after {ready:.1f}s; "
                f"RSS {rss_mb(broker.proc.pid):.0f} MB with "
                f"{asyncio.run(depth(broker.url)):,} pending"
            )
            taken = min(args.count, 100_000)
            rate = asyncio.run(consume(broker.url, "bench.backlog", taken, prefetch=1000))
            print(
                f"  consumed {taken:,} from the backlog at {rate:,.0f} msg/s; "
                f"RSS {rss_mb(broker.proc.pid):.0f} MB"
            )
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
