"""STOMP benchmark: stomp.py clients, each in a process of its own, 1 KiB bodies.

    .venv/bin/python scripts/bench_stomp.py            # a fresh broker for every run

The cases, as ActiveMQ's STOMP figures are usually measured:

* persistent produce: `--count` SENDs (`persistent:true`) back to back, a receipt on
  the last only (its RECEIPT comes once every one before it is stored); then consume
  them with `ack:auto`, and in a run of its own with `ack:client-individual` (an ACK
  for each MESSAGE);
* non-persistent produce and consume (`ack:auto`);
* topic fan-out: one publisher, `--subscribers` subscribers (`ack:auto`), the
  deliveries a second from the first SEND to the last arrival;
* latency at `--rate` msg/s, persistent and not: a consumer subscribed first, a
  producer sending on a fixed schedule; each body carries time.perf_counter_ns()
  (CLOCK_MONOTONIC, one clock for every process of the machine).

The broker sets TCP_NODELAY on STOMP connections. Every run counts sent / stored /
received / lost / repeats / unmarked repeats; the last line is `lost L unmarked U` and
the exit status is 1 if either is not 0.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.benchkit.stats import each_and_median
from scripts.benchkit.tally import Ledger, Tally
from scripts.benchkit.workers import Worker, exit_on_sigterm, stop_workers
from tests.support.procs import BrokerProcess, free_port

MODULE = "scripts.benchkit.stomp_clients"
Result = dict[str, Any]


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.ledger = Ledger()
        self.runs = 0

    def broker(self) -> tuple[BrokerProcess, int]:
        self.runs += 1
        port = free_port()
        broker = BrokerProcess(
            "bench", self.tmp / f"run{self.runs}" / "bench", args=("--stomp-port", str(port))
        )
        (self.tmp / f"run{self.runs}").mkdir(parents=True, exist_ok=True)
        broker.start()
        return broker, port

    def worker(self, role: str, port: int, queue: str, *more: str) -> Worker:
        a = self.args
        return Worker(
            role, "--port", str(port), "--queue", queue, "--size", str(a.size), *more,
            log_dir=self.tmp, module=MODULE,
        )  # fmt: skip

    def produce_then_consume(self, persistent: bool, ack: str) -> tuple[Result, Result]:
        a = self.args
        broker, port = self.broker()
        assert broker.proc is not None
        pid = ["--cpu-pid", str(broker.proc.pid)]
        kind = [] if persistent else ["--transient"]
        try:
            produced = self.worker(
                "produce", port, "q", "--count", str(a.count), *kind, *pid
            ).result()
            consumed = self.worker(
                "consume", port, "q", "--count", str(a.count), "--ack", ack, *pid
            ).result()
        finally:
            broker.stop()
        tally = Tally()
        tally.add_producer(produced)
        tally.add_consumer(consumed)
        what = f"{'persistent' if persistent else 'non-persistent'} produce, consume ack:{ack}"
        self.ledger.record(what, tally)
        return produced, consumed

    def rates(self) -> None:
        a = self.args
        for persistent, acks in ((True, ("auto", "client-individual")), (False, ("auto",))):
            kind = "persistent" if persistent else "non-persistent"
            produced: list[float] = []
            consumed: dict[str, list[float]] = {ack: [] for ack in acks}
            consumed_cpu: dict[str, list[float]] = {ack: [] for ack in acks}
            cpu: list[float] = []
            for _ in range(a.repeats):
                for ack in acks:
                    p, c = self.produce_then_consume(persistent, ack)
                    produced.append(p["rate"])
                    consumed[ack].append(c["rate"])
                    if c["broker_cpu_s"] is not None:
                        consumed_cpu[ack].append(c["broker_cpu_s"] * 1e6 / a.count)
                    if p["broker_cpu_s"] is not None:
                        cpu.append(p["broker_cpu_s"] * 1e6 / a.count)
            print(f"  {kind} produce ({a.count} SENDs, receipt on the last)  "
                  f"{each_and_median(produced)} msg/s", flush=True)  # fmt: skip
            for ack in acks:
                print(f"  {kind} consume ack:{ack}  {each_and_median(consumed[ack])} msg/s",
                      flush=True)  # fmt: skip
            if cpu:
                print(f"  broker CPU per message, {kind} produce: "
                      f"{each_and_median(cpu, '{:.1f}')} µs", flush=True)  # fmt: skip
            for ack in acks:
                if consumed_cpu[ack]:
                    print(f"  broker CPU per message, {kind} consume ack:{ack}: "
                          f"{each_and_median(consumed_cpu[ack], '{:.1f}')} µs",
                          flush=True)  # fmt: skip

    def fan_out(self) -> None:
        """One publisher, `--subscribers` subscribers of one topic: deliveries a second,
        from the first SEND to the last arrival at any subscriber."""
        a = self.args
        n = a.fan_count
        rates: list[float] = []
        for _ in range(a.repeats):
            broker, port = self.broker()
            try:
                consumers = [
                    self.worker("consume", port, "fan", "--topic", "--count", str(n)).ready()
                    for _ in range(a.subscribers)
                ]
                sent = self.worker(
                    "produce", port, "fan", "--topic", "--count", str(n), "--transient"
                ).result()
                got = [c.result() for c in consumers]
            finally:
                broker.stop()
            for result in got:
                tally = Tally()
                tally.add_producer(sent)
                tally.add_consumer(result)
                self.ledger.record(f"topic fan-out to {a.subscribers}, one subscriber", tally)
            # The clocks of one machine's processes agree (CLOCK_MONOTONIC).
            took = max(r["last_s"] for r in got) - sent["start_s"]
            rates.append(sum(r["deliveries"] for r in got) / took if took > 0 else 0.0)
        print(f"  topic fan-out, 1 publisher -> {a.subscribers} subscribers ({n} non-persistent "
              f"messages): {each_and_median(rates)} deliveries/s", flush=True)  # fmt: skip

    def latency(self) -> None:
        a = self.args
        count = max(1, int(a.rate * a.seconds))
        for persistent in (True, False):
            kind = "persistent" if persistent else "non-persistent"
            p50: list[float] = []
            p99: list[float] = []
            for _ in range(a.repeats):
                broker, port = self.broker()
                flag = [] if persistent else ["--transient"]
                try:
                    consumer = self.worker(
                        "consume", port, "lat", "--count", str(count), "--latency"
                    ).ready()
                    sent = self.worker(
                        "produce", port, "lat", "--count", str(count), "--rate", str(a.rate), *flag
                    ).result()
                    got = consumer.result()
                finally:
                    broker.stop()
                tally = Tally()
                tally.add_producer(sent)
                tally.add_consumer(got)
                self.ledger.record(f"latency {kind} {a.rate:,} msg/s", tally)
                p50.append(got["latency_ms"]["p50"])
                p99.append(got["latency_ms"]["p99"])
            print(f"  latency {kind} at {a.rate:,} msg/s ({count} msgs): "
                  f"p50 {each_and_median(p50, '{:.2f}')} ms  "
                  f"p99 {each_and_median(p99, '{:.2f}')} ms", flush=True)  # fmt: skip


def main() -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="messages per rate run")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rate", type=int, default=1_000, help="msg/s of the latency runs")
    parser.add_argument("--seconds", type=float, default=10.0, help="of each latency run")
    parser.add_argument("--subscribers", type=int, default=10, help="of the topic fan-out")
    parser.add_argument("--fan-count", type=int, default=5_000, help="messages published")
    args = parser.parse_args()
    print(
        f"netbroker STOMP bench: stomp.py, {args.size}-byte bodies, {args.repeats} repeats, "
        "a fresh broker per run; clients in their own processes",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="netbroker-bench-stomp-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            bench.rates()
            bench.fan_out()
            bench.latency()
        finally:
            stop_workers()
        return bench.ledger.finish()


if __name__ == "__main__":
    sys.exit(main())
