"""Soak: topologies/ab_c.yaml's shape (or B as a group of three) under load, with random faults.

    .venv/bin/python scripts/chaos.py [--minutes 10] [--rate 2000] [--replicas 2|3] [--seed N]

Starts a ZooKeeper, broker a (group A) and group B (b, c; with --replicas 3 also d) as
real processes on free ports of 127.0.0.1, linked as ab_c.yaml links them. A producer
sends numbered persistent messages to B through `failover:(b,c)` at --rate msg/s; a
consumer on a takes them over B's bridge. Every few seconds one fault from the fault
suite's list is injected at random (kill -9 of the master or of a, SIGSTOP of the master,
ZooKeeper paused under and past the session timeout, sessions expired, B's bridge reset
mid-batch), and the run waits for production to resume by itself before the next.

At the end it stops the producer, drains, and prints a table: each fault and how often,
sent, acknowledged, lost (acknowledged, never received), repeats (marked / unmarked),
the longest producer stall, and each broker's RSS at the start and end. Exits 1 if
anything acknowledged was lost, a repeat was unmarked, production did not resume, or
group B was not back in sync before the next fault.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.faults import FAULTS, AbcCluster, Tally, Traffic, until
from tests.support.procs import BrokerProcess

RESUME_DEADLINE = 30.0


def rss_mb(proc: BrokerProcess) -> str:
    if not proc.alive or proc.proc is None:
        return "-"
    try:
        for line in Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return f"{int(line.split()[1]) / 1024:.0f}"
    except OSError:
        pass
    return "-"


def brokers(cluster: AbcCluster) -> list[BrokerProcess]:
    assert cluster.a is not None
    return [cluster.a, *cluster.group.values()]


async def soak(cluster: AbcCluster, args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    tally = Tally()
    await cluster.ready()
    rss_start = {p.name: rss_mb(p) for p in brokers(cluster)}
    traffic = Traffic(cluster.b_url, cluster.a_url, cluster.QUEUE, args.rate, tally)
    await traffic.start()
    injected: collections.Counter[str] = collections.Counter()
    stuck: list[str] = []
    unsynced: list[str] = []  # faults after which group B was not whole again
    resume_times: dict[str, list[float]] = collections.defaultdict(list)
    began = time.monotonic()
    stop_at = began + args.minutes * 60
    try:
        await cluster.demand_on_master()
        while time.monotonic() < stop_at:
            await asyncio.sleep(rng.uniform(2.0, 5.0))  # quiet time between faults
            name = rng.choice(sorted(FAULTS))
            print(f"[{time.monotonic() - began:7.1f}s] {name} ({tally.line()})", flush=True)
            injected[name] += 1
            ended = await FAULTS[name](cluster)

            async def resumed(moment: float = ended) -> bool:
                return tally.acks_after(moment) >= 100

            try:
                await until(resumed, RESUME_DEADLINE, "production to resume")
            except AssertionError:
                stuck.append(name)
                print(f"  production did not resume within {RESUME_DEADLINE:.0f}s", flush=True)
                continue
            resume_times[name].append(tally.first_ack_after(ended) - ended)
            # The next fault starts from a whole group: restarted members back in sync.
            try:
                await until(cluster.in_sync, 30, "group B in sync")
            except AssertionError:
                unsynced.append(name)
                print("  group B not back in sync within 30s", flush=True)
        stall = tally.longest_stall(began, time.monotonic())
        await traffic.stop_producing()
        await traffic.drain(cluster.urls(), timeout=120)
    finally:
        await traffic.close()
    rss_end = {p.name: rss_mb(p) for p in brokers(cluster)}

    print()
    print(f"{'fault':<28}{'injected':>9}{'resume p50 s':>14}{'resume max s':>14}")
    for name in sorted(FAULTS):
        times = sorted(resume_times[name])
        p50 = f"{times[len(times) // 2]:.2f}" if times else "-"
        worst = f"{times[-1]:.2f}" if times else "-"
        print(f"{name:<28}{injected[name]:>9}{p50:>14}{worst:>14}")
    summary = tally.summary()
    marked = summary["repeats"] - summary["unmarked"]
    print()
    print(f"minutes {args.minutes:g}, rate {args.rate:g} msg/s, group of {args.replicas}")
    print(
        f"faults {sum(injected.values())}, sent {summary['sent']}, acked {summary['acked']}, "
        f"failed {summary['failed']}, received {summary['received']}, lost {summary['lost']}, "
        f"repeats {summary['repeats']} (marked {marked}, unmarked {summary['unmarked']}), "
        f"longest producer stall {stall:.2f}s, stuck {len(stuck)}, "
        f"not back in sync {len(unsynced)}"
    )
    print("RSS MB  " + "  ".join(f"{n} {rss_start[n]} -> {rss_end[n]}" for n in rss_start))
    if traffic.errors:
        print("client errors (first 5):", *traffic.errors[:5], sep="\n  ")
    bad = summary["lost"] or summary["unmarked"] or stuck or unsynced or tally.stray
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="msg/s [%(default)s]")
    parser.add_argument("--replicas", type=int, choices=(2, 3), default=2)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    print(f"seed {args.seed}", flush=True)
    with tempfile.TemporaryDirectory(prefix="netbroker-chaos-") as tmp:
        cluster = AbcCluster(Path(tmp), replicas=args.replicas)
        try:
            cluster.start()
            return asyncio.run(soak(cluster, args))
        finally:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
