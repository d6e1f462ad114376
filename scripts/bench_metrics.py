"""Metrics benchmark: the produce rate with and without a Prometheus scrape every second.

    .venv/bin/python scripts/bench_metrics.py [--count 100000] [--repeats 3]

Each run starts a fresh broker with `--metrics-port`, a producer process sends COUNT
persistent 1 KiB messages and a consumer process takes them; in the scraped runs a
thread fetches /metrics once a second meanwhile (and the time each scrape took is
printed). Scraped and unscraped runs alternate, so the machine's drift hits both; the
medians and their ratio are printed. Every run counts sent / acknowledged / received /
lost / repeats / unmarked; the last line is `lost L unmarked U` and the exit status is
1 if either is not 0.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.benchkit.runs import broker_pid, fresh_broker, produce_then_consume
from scripts.benchkit.stats import median
from scripts.benchkit.tally import Ledger
from scripts.benchkit.workers import exit_on_sigterm, stop_workers
from tests.support.procs import free_port


class Scraper:
    """GET /metrics every `interval` seconds until stopped; keeps each scrape's time."""

    def __init__(self, port: int, interval: float = 1.0) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.interval = interval
        self.took: list[float] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as answer:
                    answer.read()
                self.took.append(time.perf_counter() - started)
            except OSError:
                self.failed += 1

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def main() -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ledger = Ledger()
    rates: dict[bool, list[float]] = {False: [], True: []}
    print(f"netbroker metrics bench: {args.count:,} persistent 1 KiB messages per run")
    with tempfile.TemporaryDirectory(prefix="netbroker-bench-") as tmp:
        try:
            for run in range(args.repeats * 2):
                scraped = run % 2 == 1
                port = free_port()
                where = Path(tmp) / f"run{run}"
                scraper = Scraper(port) if scraped else None
                with (
                    fresh_broker(where, "bench", args=("--metrics-port", str(port))) as broker,
                    scraper or contextlib.nullcontext(),
                ):
                    produced, _, tally = produce_then_consume(
                        broker.url, f"bench.metrics.{run}", args.count,
                        cpu=broker_pid(broker), log_dir=where,
                    )  # fmt: skip
                rates[scraped].append(produced["rate"])
                line = f"  {'scraped every 1 s' if scraped else 'not scraped      '}: "
                line += f"produce {produced['rate']:,.0f} msg/s"
                if scraper is not None:
                    took = sorted(scraper.took) or [0.0]
                    line += (
                        f"; {len(scraper.took)} scrapes, median {median(took) * 1000:.1f} ms, "
                        f"max {took[-1] * 1000:.1f} ms, {scraper.failed} failed"
                    )
                print(line, flush=True)
                ledger.record(f"run {run}", tally)
        finally:
            stop_workers()
    plain, watched = median(rates[False]), median(rates[True])
    print(
        f"  median produce: {plain:,.0f} msg/s not scraped, {watched:,.0f} msg/s scraped "
        f"(ratio {watched / plain:.2f})"
    )
    return ledger.finish()


if __name__ == "__main__":
    sys.exit(main())
