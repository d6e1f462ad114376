"""The benchmarks' client processes: one role each, run as users run clients.

    python -m scripts.benchkit.clients produce   --url URL --queue Q --count N [--rate R]
    python -m scripts.benchkit.clients sync-send --url URL --queue Q --count N [--rate R]
    python -m scripts.benchkit.clients consume   --url URL --queue Q --count N [--latency]

* produce: a pipelined producer (`client.producer(max_in_flight=...)`), as fast as it may
  or on a fixed schedule of `--rate` messages a second;
* sync-send: one acknowledged send at a time (`await client.send()` each, JMS's default),
  back to back or on a fixed schedule; the round-trip time of each;
* consume: `client.subscribe(queue, prefetch=...)` and `delivery.ack()` each, counting
  repeats (marked `redelivered` or not) and, with `--latency`, the time from each message's
  send stamp to its delivery.

Each prints JSON lines on stdout: `{"ready": true}` once connected (a consumer: once
subscribed), events (`{"address": ..., "ns": ...}` when a sender's acks start coming from
another broker), and last `{"result": {...}}`. With `--count 0` a sender sends until a
`{"stop": true}` line arrives on stdin, and a consumer receives until it has every number of
an `{"expect": RANGES}` line. The end of stdin (the benchmark is gone) ends the process.
With `--cpu-pid` the result holds the CPU that process (the broker) used during the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from broker.client import BrokerError, Client, ConnectionLost
from scripts.benchkit.cpu import CpuWindow
from scripts.benchkit.marks import Bodies, read_mark
from scripts.benchkit.stats import summary
from scripts.benchkit.tally import from_ranges, to_ranges


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


class Control:
    """Lines from the benchmark on stdin: stop, expect; their end ends this process."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.expect: set[int] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        self._task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            message = json.loads(line)
            if message.get("stop"):
                self.stop.set()
            if "expect" in message:
                self.expect = from_ranges(message["expect"])
        # The benchmark that started us is gone: nobody will read a result.
        os._exit(3)


class Schedule:
    """A fixed send schedule: a slow send does not lower the rate, the next ones catch up."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.perf_counter()

    async def wait(self, i: int) -> None:
        if self.rate > 0:
            delay = self.start + i / self.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)


def more(i: int, count: int, control: Control) -> bool:
    return i < count if count else not control.stop.is_set()


async def produce(args: argparse.Namespace, control: Control) -> dict[str, Any]:
    bodies = Bodies(args.size)
    acked: list[int] = []
    failed = 0

    def settled(seq: int, future: asyncio.Future[str]) -> None:
        nonlocal failed
        if future.cancelled() or future.exception() is not None:
            failed += 1
        else:
            acked.append(seq)

    async with await Client.connect(args.url) as client:
        producer = client.producer(max_in_flight=args.max_in_flight)
        emit({"ready": True})
        cpu = CpuWindow(args.cpu_pid)
        cpu.start()
        schedule = Schedule(args.rate)
        i = 0
        while more(i, args.count, control):
            await schedule.wait(i)
            seq = args.first_seq + i
            future = await producer.send(
                args.queue, bodies.body(seq, time.perf_counter_ns()), persistent=args.persistent
            )
            future.add_done_callback(functools.partial(settled, seq))
            i += 1
        with contextlib.suppress(BrokerError):
            await producer.flush()  # failures are counted one by one above
        seconds = time.perf_counter() - schedule.start
        cpu.stop()
        await producer.close()
    return {
        "sent": i, "acked": to_ranges(acked), "failed": failed,
        "seconds": seconds, "rate": i / seconds if seconds else 0.0, "broker_cpu_s": cpu.seconds,
    }  # fmt: skip


async def sync_send(args: argparse.Namespace, control: Control) -> dict[str, Any]:
    bodies = Bodies(args.size)
    acked: list[int] = []
    rtts: list[float] = []
    failed = 0
    async with await Client.connect(args.url) as client:
        emit({"ready": True, "address": client.address})
        address = client.address
        cpu = CpuWindow(args.cpu_pid)
        cpu.start()
        schedule = Schedule(args.rate)
        i = 0
        while more(i, args.count, control):
            await schedule.wait(i)
            seq = args.first_seq + i
            i += 1
            started = time.perf_counter_ns()
            try:
                await client.send(args.queue, bodies.body(seq, started), persistent=args.persistent)
            except (BrokerError, ConnectionLost):
                failed += 1
                continue
            done = time.perf_counter_ns()
            acked.append(seq)
            rtts.append((done - started) / 1e6)
            if client.address != address:
                address = client.address
                emit({"address": address, "ns": done})
        seconds = time.perf_counter() - schedule.start
        cpu.stop()
    return {
        "sent": i, "acked": to_ranges(acked), "failed": failed, "seconds": seconds,
        "rate": len(acked) / seconds if seconds else 0.0, "rtt_ms": summary(rtts),
        "broker_cpu_s": cpu.seconds,
    }  # fmt: skip


async def wait_for_demand(url: str, queue: str, timeout: float = 30.0) -> None:
    """Until a consumer (a bridge's) is registered for `queue` on the broker at `url`."""
    deadline = time.monotonic() + timeout
    async with await Client.connect(url) as client:
        while time.monotonic() < deadline:
            if any(q.name == queue and q.consumers for q in await client.queues()):
                return
            await asyncio.sleep(0.02)
    raise SystemExit(f"no demand for {queue} reached {url}")


async def consume(args: argparse.Namespace, control: Control) -> dict[str, Any]:
    if args.count:
        control.expect = set(range(args.first_seq, args.first_seq + args.count))
    seen: set[int] = set()
    deliveries = unmarked = 0
    latencies: list[float] = []
    first = last = 0.0
    first_stamp = last_ns = 0
    async with await Client.connect(args.url) as client:
        cpu = CpuWindow(args.cpu_pid)
        cpu.start()
        consumer = await client.subscribe(args.queue, prefetch=args.prefetch)
        if args.demand_on:
            await wait_for_demand(args.demand_on, args.queue)
        subscribed = time.perf_counter()
        emit({"ready": True})
        missing: set[int] | None = None
        linger_until: float | None = None
        quiet_since = time.monotonic()
        while True:
            if missing is None and control.expect is not None:
                missing = control.expect - seen
            if missing is not None and not missing and linger_until is None:
                cpu.stop()  # the run is over; what follows only watches for repeats
                linger_until = time.monotonic() + args.linger
            now = time.monotonic()
            if linger_until is not None and now >= linger_until:
                break
            if missing is not None and now - quiet_since > args.idle:
                break  # given up: what is missing is counted as lost
            wait = 0.1 if linger_until is None else max(0.0, linger_until - now)
            delivery = await consumer.receive(timeout=wait)
            if delivery is None:
                continue
            quiet_since = time.monotonic()
            deliveries += 1
            seq, stamp = read_mark(delivery.body)
            if seq in seen:
                unmarked += not delivery.redelivered
            else:
                seen.add(seq)
                last_ns = time.perf_counter_ns()
                last = last_ns / 1e9
                first = first or last
                first_stamp = min(first_stamp or stamp, stamp)
                if args.latency:
                    latencies.append((time.perf_counter_ns() - stamp) / 1e6)
                if missing is not None:
                    missing.discard(seq)
            delivery.ack()
        await consumer.close()
    return {
        "deliveries": deliveries, "received": to_ranges(seen), "unmarked": unmarked,
        "seconds": last - subscribed if last else 0.0,
        "seconds_from_first": last - first if last else 0.0,
        "rate": len(seen) / (last - subscribed) if last else 0.0,
        "rate_from_first": (len(seen) - 1) / (last - first) if last > first else 0.0,
        # From the earliest send stamp (the sender's clock is this one) to the last arrival.
        "rate_from_send": len(seen) * 1e9 / (last_ns - first_stamp) if last_ns else 0.0,
        "latency_ms": summary(latencies), "broker_cpu_s": cpu.seconds,
    }  # fmt: skip


ROLES = {"produce": produce, "sync-send": sync_send, "consume": consume}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=sorted(ROLES))
    parser.add_argument("--url", required=True, help="host:port or failover:(...)")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--count", type=int, default=0, help="0: until told (stdin)")
    parser.add_argument("--first-seq", type=int, default=0)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--transient", dest="persistent", action="store_false")
    parser.add_argument("--rate", type=float, default=0, help="messages a second; 0: flat out")
    parser.add_argument("--max-in-flight", type=int, default=20_000)
    parser.add_argument("--prefetch", type=int, default=2_000)
    parser.add_argument("--latency", action="store_true", help="time each message's trip")
    parser.add_argument("--demand-on", help="ready once a bridge asked this broker for the queue")
    parser.add_argument("--idle", type=float, default=30.0, help="give up after this silence")
    parser.add_argument("--linger", type=float, default=0.3, help="watch for repeats this long")
    parser.add_argument("--cpu-pid", type=int, help="report this process's CPU over the run")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    control = Control()
    await control.start()
    emit({"result": await ROLES[args.role](args, control)})


def main() -> None:
    asyncio.run(run(parse(sys.argv[1:])))


if __name__ == "__main__":
    main()
