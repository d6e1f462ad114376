"""Network benchmark: forwarding across one bridge against one broker's consume rate.

    .venv/bin/python scripts/bench_network.py [--count 50000] [--repeats 3]

Every client is a process of its own and every run gets fresh brokers (a has
`static:(b)`); each figure is printed per repeat, then the median:

* one broker's consume rate: a producer process sends `count` persistent 1 KiB messages,
  then a consumer process takes them;
* forwarding a -> b: a consumer process on b, then a producer process on a sending
  `count`: the rate at which they arrive at b's consumer (from the first send to the last
  arrival; the bodies carry their send time, CLOCK_MONOTONIC), as a share of
  the same run's one-broker consume rate (the target is 75% or more);
* backlog: `count` already pending on a drain to a consumer process that appears on b;
* latency a -> b at `--rate` msg/s (a producer on a fixed schedule, the consumer on b).

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

from scripts.benchkit.runs import fresh_broker, produce_then_consume, send_while_receiving
from scripts.benchkit.stats import each_and_median, median
from scripts.benchkit.tally import Ledger
from scripts.benchkit.workers import exit_on_sigterm, stop_workers
from tests.support.procs import BrokerProcess, free_port


@contextmanager
def bridged(tmp: Path) -> Iterator[tuple[BrokerProcess, BrokerProcess]]:
    """Fresh brokers a and b, a with a static bridge to b."""
    port_b = free_port()
    with (
        fresh_broker(tmp, "b", port=port_b) as b,
        fresh_broker(tmp, "a", args=("--connector", f"static:(127.0.0.1:{port_b})")) as a,
    ):
        yield a, b


def run(args: argparse.Namespace, tmp: Path, ledger: Ledger) -> None:
    local: list[float] = []
    forwarded: list[float] = []
    backlog: list[float] = []
    latency: dict[str, list[float]] = {"p50": [], "p99": [], "max": []}
    for r in range(args.repeats):
        where = tmp / f"repeat{r}"
        with fresh_broker(where / "local", "local") as broker:
            _, consumed, tally = produce_then_consume(
                broker.url, "bench.local", args.count, log_dir=tmp
            )
        local.append(consumed["rate"])
        ledger.record("one broker", tally)
        with bridged(where / "forward") as (a, b):
            _, consumed, tally = send_while_receiving(
                a.url, "bench.forward", args.count, sync=False, consume_url=b.url,
                latency=False, log_dir=tmp,
            )  # fmt: skip
        forwarded.append(consumed["rate_from_send"])
        ledger.record("forwarding a -> b", tally)
        with bridged(where / "backlog") as (a, b):
            _, consumed, tally = produce_then_consume(
                a.url, "bench.backlog", args.count, consume_url=b.url, log_dir=tmp
            )
        backlog.append(consumed["rate"])
        ledger.record("backlog a -> b", tally)
        with bridged(where / "latency") as (a, b):
            count = max(1, int(args.rate * args.seconds))
            _, consumed, tally = send_while_receiving(
                a.url, "bench.latency", count, rate=args.rate, sync=False, consume_url=b.url,
                log_dir=tmp,
            )  # fmt: skip
        for key in latency:
            latency[key].append(consumed["latency_ms"][key])
        ledger.record("latency a -> b", tally)
        print(
            f"  repeat {r + 1}: one broker consumes {local[-1]:,.0f} msg/s; forwarded "
            f"{forwarded[-1]:,.0f} msg/s ({forwarded[-1] / local[-1]:.0%}); backlog "
            f"{backlog[-1]:,.0f} msg/s ({backlog[-1] / local[-1]:.0%})",
            flush=True,
        )
    ratios = [f / c for f, c in zip(forwarded, local, strict=True)]
    print(f"  one broker's consume rate      {each_and_median(local)} msg/s")
    print(f"  forwarded a -> b (at b)        {each_and_median(forwarded)} msg/s")
    print(
        f"  forwarding / one broker        {each_and_median(ratios, '{:.0%}')} "
        f"(of the medians: {median(forwarded) / median(local):.0%}; target >= 75%)"
    )
    print(
        f"  backlog on a drained to b      {each_and_median(backlog)} msg/s "
        f"({median(backlog) / median(local):.0%} of one broker's)"
    )
    print(
        f"  latency a -> b at {args.rate:,} msg/s: "
        + "  ".join(f"{k} {each_and_median(v, '{:.2f}')} ms" for k, v in latency.items())
    )


def main() -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="of the latency run")
    args = parser.parse_args()
    print(
        f"netbroker network bench: {args.count} persistent 1 KiB messages, a -> b, "
        f"{args.repeats} repeats; clients in their own processes",
        flush=True,
    )
    ledger = Ledger()
    with tempfile.TemporaryDirectory(prefix="netbroker-bench-") as tmp:
        try:
            run(args, Path(tmp), ledger)
        finally:
            stop_workers()
    return ledger.finish()


if __name__ == "__main__":
    sys.exit(main())
