"""Single-broker benchmark: rates, broker CPU, synchronous sends and latency, 1 KiB bodies.

    .venv/bin/python scripts/bench.py                  # a fresh broker for every run
    .venv/bin/python scripts/bench.py --url HOST:PORT [--pid PID]   # against a running one

Every client is a process of its own (scripts/benchkit/clients.py), as users run them, and
every run (`--repeats` of each case; each figure is printed per repeat, then the median)
gets a broker of its own:

* persistent and non-persistent produce, then consume: the rates, and the broker's CPU per
  message over each phase (utime+stime from /proc/<pid>/stat);
* one acknowledged persistent send at a time (`await client.send()` each, JMS's default):
  the rate and the round-trip times;
* end-to-end latency at each `--rates` (a consumer process subscribed, a producer process
  sending on a fixed schedule without waiting for each ack, so the rate holds; with
  `--sync-latency` one acknowledged send at a time, JMS's default; each body carries
  time.perf_counter_ns(), CLOCK_MONOTONIC, the same clock in every process on Linux),
  persistent and not, and the broker's CPU per message at that steady rate.

gRPC sets TCP_NODELAY on its sockets, so latency is not inflated by Nagle's algorithm.
Every run counts sent / acknowledged / received / lost / repeats / unmarked repeats; the
last line is `lost L unmarked U` and the exit status is 1 if either is not 0.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.benchkit.runs import (
    Result,
    broker_pid,
    fresh_broker,
    produce_then_consume,
    send_while_receiving,
)
from scripts.benchkit.stats import each_and_median, median
from scripts.benchkit.tally import Ledger
from scripts.benchkit.workers import exit_on_sigterm, stop_workers


class Bench:
    """The cases of one benchmark run, against fresh brokers or the one at `--url`."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.ledger = Ledger()
        self.runs = 0

    @contextmanager
    def broker(self) -> Iterator[tuple[str, int | None]]:
        """(url, pid) of the broker for one run: a fresh one unless `--url` was given."""
        self.runs += 1
        if self.args.url:
            yield self.args.url, self.args.pid
            return
        with fresh_broker(self.tmp / f"run{self.runs}", "bench") as broker:
            yield broker.url, broker_pid(broker)

    def queue(self, what: str) -> str:
        return f"bench.{what}.{self.runs}"  # against one broker, runs do not share queues

    def rates(self) -> None:
        a = self.args
        for persistent in (True, False):
            kind = "persistent" if persistent else "non-persistent"
            produced: list[Result] = []
            consumed: list[Result] = []
            for _ in range(a.repeats):
                with self.broker() as (url, pid):
                    p, c, tally = produce_then_consume(
                        url, self.queue(kind), a.count, persistent=persistent, size=a.size,
                        cpu=pid, log_dir=self.tmp,
                    )  # fmt: skip
                produced.append(p)
                consumed.append(c)
                self.ledger.record(f"{kind} produce/consume", tally)
            print(f"  {kind} produce  {each_and_median([p['rate'] for p in produced])} msg/s")
            print(f"  {kind} consume  {each_and_median([c['rate'] for c in consumed])} msg/s")
            self.cpu_line(f"{kind} produce", produced, a.count)
            self.cpu_line(f"{kind} consume", consumed, a.count)

    def cpu_line(self, what: str, results: list[Result], count: int) -> None:
        per = [r["broker_cpu_s"] * 1e6 / count for r in results if r["broker_cpu_s"] is not None]
        if per:
            print(f"  broker CPU per message, {what}: {each_and_median(per, '{:.1f}')} µs")

    def sync_sends(self) -> None:
        a = self.args
        results: list[Result] = []
        for _ in range(a.repeats):
            with self.broker() as (url, pid):
                sent, _, tally = produce_then_consume(
                    url, self.queue("sync"), a.sync_count, sync=True, size=a.size, cpu=pid,
                    log_dir=self.tmp,
                )  # fmt: skip
            results.append(sent)
            self.ledger.record("one acked send at a time", tally)
        p50 = [r["rtt_ms"]["p50"] for r in results]
        p99 = [r["rtt_ms"]["p99"] for r in results]
        print(
            f"  one acked persistent send at a time ({a.sync_count} sends): "
            f"{each_and_median([r['rate'] for r in results])} msg/s"
        )
        print(
            f"    RTT p50 {each_and_median(p50, '{:.2f}')} ms, "
            f"p99 {each_and_median(p99, '{:.2f}')} ms"
        )
        self.cpu_line("one acked send at a time", results, a.sync_count)

    def latency(self) -> None:
        a = self.args
        for persistent in (True, False):
            kind = "persistent" if persistent else "non-persistent"
            for rate in a.rates:
                count = max(1, int(rate * a.seconds))
                results: list[Result] = []
                senders: list[Result] = []
                for _ in range(a.repeats):
                    with self.broker() as (url, pid):
                        sent, got, tally = send_while_receiving(
                            url, self.queue(f"latency.{kind}"), count, rate=rate,
                            persistent=persistent, size=a.size, cpu=pid, log_dir=self.tmp,
                            sync=a.sync_latency,
                        )  # fmt: skip
                    senders.append(sent)
                    results.append(got)
                    self.ledger.record(f"latency {kind} {rate}/s", tally)
                figure = {
                    key: each_and_median([r["latency_ms"][key] for r in results], "{:.2f}")
                    for key in ("p50", "p99", "max")
                }
                achieved = median([s["rate"] for s in senders])
                print(
                    f"  latency {kind} at {rate:,} msg/s ({count} msgs, sent at "
                    f"{achieved:,.0f} msg/s): p50 {figure['p50']} ms"
                    f"  p99 {figure['p99']} ms  max {figure['max']} ms"
                )
                self.cpu_line(
                    f"steady {rate:,} msg/s {kind} (one producer, one consumer)", senders, count
                )


def main() -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running broker; default: a fresh one for each run")
    parser.add_argument("--pid", type=int, help="with --url: its pid, for the CPU figures")
    parser.add_argument("--count", type=int, default=50_000, help="messages per rate run")
    parser.add_argument("--sync-count", type=int, default=5_000, help="acked sends, one at a time")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--rates", type=lambda s: [int(r) for r in s.split(",")], default=[500, 1_000],
        help="latency runs at these msg/s (comma-separated)",
    )  # fmt: skip
    parser.add_argument("--seconds", type=float, default=10.0, help="of each latency run")
    parser.add_argument(
        "--sync-latency", action="store_true",
        help="latency runs send one acked message at a time (then the rate holds only while "
        "the round trip is shorter than the gap); default: a producer on the schedule",
    )  # fmt: skip
    args = parser.parse_args()
    where = args.url or "a fresh broker per run"
    print(
        f"netbroker bench: {args.size}-byte bodies, {args.repeats} repeats, {where}; "
        "clients in their own processes",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="netbroker-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            bench.rates()
            bench.sync_sends()
            bench.latency()
        finally:
            stop_workers()
        return bench.ledger.finish()


if __name__ == "__main__":
    sys.exit(main())
