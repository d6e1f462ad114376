"""Backlog benchmark: broker memory with a deep queue, and restart time.

    .venv/bin/python scripts/bench_backlog.py [--count 1000000] [--take 100000]

A producer process sends COUNT persistent 1 KiB messages with no consumer; prints the
broker's RSS, restarts it (kill -9) and prints the time until it serves again, its RSS and
the queue's depth (every acknowledged message must still be there), then a consumer process
takes the first `--take` to show the backlog pages in.

Counts sent / acknowledged / received / lost / repeats / unmarked repeats (the messages not
taken are counted as lost only if the depth after the restart lacks them); the last line is
`lost L unmarked U` and the exit status is 1 if either is not 0.
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
from scripts.benchkit.runs import broker_pid
from scripts.benchkit.tally import Ledger, Tally
from scripts.benchkit.workers import Worker, exit_on_sigterm, stop_workers
from tests.support.procs import BrokerProcess

QUEUE = "bench.backlog"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _depth(url: str) -> int:
    async with await Client.connect(url) as client:
        return sum(q.depth for q in await client.queues() if q.name == QUEUE)


def depth(url: str) -> int:
    """The backlog's depth, read through the admin API (no message moves)."""
    return asyncio.run(_depth(url))


def run(args: argparse.Namespace, tmp: Path, ledger: Ledger) -> None:
    broker = BrokerProcess("backlog", tmp / "backlog").start()
    try:
        print(f"netbroker backlog bench: {args.count:,} persistent 1 KiB messages, no consumer")
        common = ["--url", broker.url, "--queue", QUEUE]
        produced = Worker("produce", *common, "--count", str(args.count), log_dir=tmp).result(
            timeout=3600
        )
        print(
            f"  produced at {produced['rate']:,.0f} msg/s; broker RSS "
            f"{rss_mb(broker_pid(broker)):.0f} MB with {depth(broker.url):,} pending"
        )
        broker.kill()
        started = time.monotonic()
        broker.start(timeout=300)
        ready = time.monotonic() - started
        pending = depth(broker.url)
        print(
            f"  kill -9 and restart: serving again after {ready:.1f}s; "
            f"RSS {rss_mb(broker_pid(broker)):.0f} MB with {pending:,} pending"
        )
        taken = min(args.count, args.take)
        consumed = Worker(
            "consume", *common, "--count", str(taken), "--prefetch", "1000", "--linger", "0",
            log_dir=tmp,
        ).result(timeout=3600)  # fmt: skip
        print(
            f"  consumed {taken:,} from the backlog at {consumed['rate']:,.0f} msg/s; "
            f"RSS {rss_mb(broker_pid(broker)):.0f} MB"
        )
        tally = Tally()
        tally.add_producer(produced)
        tally.add_consumer(consumed)
        # The rest stays pending: counted as there if the restart kept them all.
        rest = set(range(taken, args.count)) & tally.acked
        if pending >= len(tally.acked):
            tally.left = rest
        ledger.record("backlog across kill -9", tally)
    finally:
        broker.stop()


def main() -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--take", type=int, default=100_000, help="consumed after the restart")
    args = parser.parse_args()
    ledger = Ledger()
    with tempfile.TemporaryDirectory(prefix="netbroker-bench-") as tmp:
        try:
            run(args, Path(tmp), ledger)
        finally:
            stop_workers()
    return ledger.finish()


if __name__ == "__main__":
    sys.exit(main())
