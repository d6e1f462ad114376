"""Backlog benchmark: broker memory with a deep queue, and restart time.

    .venv/bin/python scripts/bench_backlog.py [--count 1000000] [--take 100000]

A producer process sends COUNT persistent 1 KiB messages with no consumer; prints the
broker's RSS, restarts it (kill -9) and prints the time until it serves again, its RSS and
the queue's depth (every acknowledged message must still be there), then a consumer process
takes the first `--take` to show the backlog pages in. Before the kill and again after the
restart, one priority-9 message is sent behind the backlog and must be the next delivered
(the window holds the highest priorities, however deep the store); it is taken at once.

Counts sent / acknowledged / received / lost / repeats / unmarked repeats (the messages not
taken are counted as lost only if the depth after the restart lacks them); the last line is
`lost L unmarked U` and the exit status is 1 if either is not 0, or if an urgent message
was not the next delivered.
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


async def _urgent_next(url: str, name: str, earlier: str = "") -> bool:
    """Send one priority-9 message behind the backlog; whether it is the next delivered.
    `earlier`: an urgent message acked just before a kill -9, whose ack the crash may
    have beaten: it may come back first, if marked redelivered."""
    async with await Client.connect(url) as client:
        await client.send(QUEUE, b"urgent", priority=9, message_id=name)
        consumer = await client.subscribe(QUEUE, prefetch=1)
        try:
            delivery = await consumer.receive(timeout=60)
            if delivery is not None and earlier and delivery.id == earlier:
                if not delivery.redelivered:
                    return False
                delivery.ack()
                delivery = await consumer.receive(timeout=60)
            if delivery is None:
                return False
            if delivery.id != name:
                delivery.nack()
                return False
            delivery.ack()
            return True
        finally:
            await consumer.close()


def urgent_next(url: str, name: str, earlier: str = "") -> bool:
    return asyncio.run(_urgent_next(url, name, earlier))


def run(args: argparse.Namespace, tmp: Path, ledger: Ledger) -> bool:
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
        urgent = [urgent_next(broker.url, "urgent-before-restart")]
        broker.kill()
        started = time.monotonic()
        broker.start(timeout=300)
        ready = time.monotonic() - started
        pending = depth(broker.url)
        print(
            f"  kill -9 and restart: serving again after {ready:.1f}s; "
            f"RSS {rss_mb(broker_pid(broker)):.0f} MB with {pending:,} pending"
        )
        urgent.append(urgent_next(broker.url, "urgent-after-restart", "urgent-before-restart"))
        print(
            "  priority 9 sent behind the backlog, next delivered: "
            + ", ".join("yes" if ok else "NO" for ok in urgent)
            + " (before the kill, after the restart)"
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
        return all(urgent)
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
            urgent_first = run(args, Path(tmp), ledger)
        finally:
            stop_workers()
    status = ledger.finish()
    return status or (0 if urgent_first else 1)


if __name__ == "__main__":
    sys.exit(main())
