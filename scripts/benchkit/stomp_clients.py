"""The STOMP benchmarks' client processes: stomp.py, as ActiveMQ users run it.

    python -m scripts.benchkit.stomp_clients produce --port P --queue Q --count N [--rate R]
    python -m scripts.benchkit.stomp_clients consume --port P --queue Q --count N [--ack MODE]

* produce: stomp.py SENDs back to back (or on a fixed schedule of `--rate` a second),
  a `receipt` on the last one only (its RECEIPT ends the timed part), then DISCONNECT
  with a receipt, after which every SEND is known to be stored;
* consume: SUBSCRIBE with `--ack` auto or client-individual (an ACK for each MESSAGE)
  and `activemq.prefetchSize`, counting repeats (marked `redelivered` or not) and, with
  `--latency`, the time from each message's send stamp to its arrival.

The lines on stdout are those of scripts/benchkit/clients.py (`{"ready": true}`, then
`{"result": {...}}` with the same keys), so the benchmarks tally both alike.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import stomp

from scripts.benchkit.cpu import CpuWindow
from scripts.benchkit.marks import Bodies, read_mark
from scripts.benchkit.stats import summary
from scripts.benchkit.tally import to_ranges


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


class Receipts(stomp.ConnectionListener):
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.receipts: set[str] = set()
        self.errors: list[str] = []

    def on_receipt(self, frame: Any) -> None:
        with self.cond:
            self.receipts.add(frame.headers["receipt-id"])
            self.cond.notify_all()

    def on_error(self, frame: Any) -> None:
        with self.cond:
            self.errors.append(frame.headers.get("message", "?"))
            self.cond.notify_all()

    def wait(self, receipt: str, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(
                lambda: receipt in self.receipts or bool(self.errors), timeout
            )


def _connect(port: int) -> Any:
    return stomp.Connection12([("127.0.0.1", port)], auto_decode=False)


def _destination(args: argparse.Namespace) -> str:
    return f"/topic/{args.queue}" if args.topic else f"/queue/{args.queue}"


def _nodelay(conn: Any) -> None:
    """TCP_NODELAY on the client's socket too (stomp.py leaves Nagle on): a small SEND
    or ACK then waits for no delayed ACK of the one before it."""
    conn.transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def produce(args: argparse.Namespace) -> dict[str, Any]:
    bodies = Bodies(args.size)
    conn = _connect(args.port)
    listener = Receipts()
    conn.set_listener("receipts", listener)
    conn.connect(wait=True)
    _nodelay(conn)
    emit({"ready": True})
    cpu = CpuWindow(args.cpu_pid)
    cpu.start()
    headers = {"persistent": "true" if args.persistent else "false"}
    last = {**headers, "receipt": "last"}
    destination = _destination(args)
    start = time.perf_counter()
    for i in range(args.count):
        if args.rate:
            delay = start + i / args.rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        body = bodies.body(args.first_seq + i, time.perf_counter_ns())
        conn.send(destination, body, headers=last if i == args.count - 1 else headers)
    got = listener.wait("last", 300)
    seconds = time.perf_counter() - start
    cpu.stop()
    conn.disconnect(receipt="bye")  # its RECEIPT comes once every SEND before it is stored
    acked = (
        range(args.first_seq, args.first_seq + args.count)
        if got and "bye" in listener.receipts and not listener.errors
        else range(0)
    )
    return {
        "sent": args.count, "acked": to_ranges(acked), "failed": args.count - len(acked),
        "errors": listener.errors, "seconds": seconds, "start_s": start,
        "rate": args.count / seconds if seconds else 0.0, "broker_cpu_s": cpu.seconds,
    }  # fmt: skip


class Counter(stomp.ConnectionListener):
    def __init__(self, args: argparse.Namespace, conn: Any) -> None:
        self.args = args
        self.conn = conn
        self.cond = threading.Condition()
        self.seen: set[int] = set()
        self.deliveries = 0
        self.unmarked = 0
        self.latencies: list[float] = []
        self.first = self.last = 0.0
        self.ack = args.ack != "auto"

    def on_message(self, frame: Any) -> None:
        now = time.perf_counter_ns()
        seq, stamp = read_mark(frame.body)
        if self.ack:
            self.conn.ack(frame.headers["ack"])
        with self.cond:
            self.deliveries += 1
            if seq in self.seen:
                self.unmarked += frame.headers.get("redelivered") != "true"
            else:
                self.seen.add(seq)
                self.last = now / 1e9
                self.first = self.first or self.last
                if self.args.latency:
                    self.latencies.append((now - stamp) / 1e6)
            self.cond.notify_all()


def consume(args: argparse.Namespace) -> dict[str, Any]:
    conn = _connect(args.port)
    counter = Counter(args, conn)
    conn.set_listener("count", counter)
    conn.connect(wait=True)
    _nodelay(conn)
    cpu = CpuWindow(args.cpu_pid)
    cpu.start()
    subscribed = time.perf_counter()
    conn.subscribe(
        _destination(args), id="bench", ack=args.ack,
        headers={"activemq.prefetchSize": str(args.prefetch)},
    )  # fmt: skip
    emit({"ready": True})
    with counter.cond:
        counter.cond.wait_for(lambda: len(counter.seen) >= args.count, args.idle)
    cpu.stop()
    time.sleep(args.linger)  # repeats would show here
    conn.disconnect()
    with counter.cond:
        seen, last, first = counter.seen, counter.last, counter.first
        return {
            "deliveries": counter.deliveries, "received": to_ranges(seen),
            "unmarked": counter.unmarked,
            "seconds": last - subscribed if last else 0.0,
            "rate": len(seen) / (last - subscribed) if last else 0.0,
            "rate_from_first": (len(seen) - 1) / (last - first) if last > first else 0.0,
            "first_s": first, "last_s": last,
            "latency_ms": summary(counter.latencies), "broker_cpu_s": cpu.seconds,
        }  # fmt: skip


ROLES = {"produce": produce, "consume": consume}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=sorted(ROLES))
    parser.add_argument("--port", type=int, required=True, help="the broker's STOMP port")
    parser.add_argument("--queue", required=True, help="the queue (with --topic: the topic)")
    parser.add_argument("--topic", action="store_true", help="publish to / subscribe to a topic")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--first-seq", type=int, default=0)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--transient", dest="persistent", action="store_false")
    parser.add_argument("--rate", type=float, default=0, help="messages a second; 0: flat out")
    parser.add_argument("--ack", choices=("auto", "client-individual"), default="auto")
    parser.add_argument("--prefetch", type=int, default=1000)
    parser.add_argument("--latency", action="store_true", help="time each message's trip")
    parser.add_argument("--idle", type=float, default=120.0, help="give up after this long")
    parser.add_argument("--linger", type=float, default=0.3, help="watch for repeats this long")
    parser.add_argument("--cpu-pid", type=int, help="report this process's CPU over the run")
    args = parser.parse_args()
    emit({"result": ROLES[args.role](args)})


if __name__ == "__main__":
    main()
