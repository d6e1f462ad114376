"""Why does a loaded master miss its ZooKeeper heartbeat? Measure it.

    .venv/bin/python scripts/zk_heartbeat_probe.py [--seconds 20] [--rate 2000]
        [--session-timeout 1] [--burn 0]

Starts a ZooKeeper and group B (b, c: replicas 2, quorum_mem), each member run through
this script's `inner` mode, which instruments the broker process before running it:

* kazoo's own heartbeat: when each ping was sent and answered (round trip), the deadline
  kazoo gave that answer (it drops the connection when a ping is unanswered by its next
  select timeout: between 1/6 and 2/5 of the session timeout, with its random jitter),
  and every "Connection dropped".
* a thread that sleeps 2 ms in a loop and records how late it wakes: a late wake-up
  means the GIL was held (or the process got no CPU) that long — the kazoo thread
  would have waited as long.
* an asyncio task that sleeps 10 ms and records how late the loop runs it: long steps
  on the loop (big batches) show here.

The probe itself runs a second, unloaded kazoo client in its own process (ZooKeeper's and
the machine's share of the delay), and its own 2 ms sleeper thread (CPU contention across
the machine). Then it sends numbered persistent 1 KiB messages at `--rate` to the master
for `--seconds`, with `--burn` extra busy processes competing for the CPUs, and prints
per process: ping round trips (p50/p99/max), the kazoo deadline met or missed, drops,
thread wake-up lateness and loop lag (p99/max), and the session state changes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Recorder:
    """Samples gathered in one process, dumped as JSON at exit."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Drop every sample so far and restart the clock."""
        self.ping_rtt: list[float] = []
        self.ping_late: list[float] = []  # rtt minus the deadline kazoo allowed (>0: dropped)
        self.drops: list[float] = []
        self.states: list[tuple[float, str]] = []
        self.thread_late: list[float] = []
        self.loop_lag: list[float] = []
        self.started = time.monotonic()

    def dump(self) -> dict[str, Any]:
        return {
            "ping_rtt": self.ping_rtt,
            "ping_late": self.ping_late,
            "drops": self.drops,
            "states": self.states,
            "thread_late": self.thread_late,
            "loop_lag": self.loop_lag,
        }


REC = Recorder()


def instrument_kazoo() -> None:
    """Wrap kazoo's ConnectionHandler to time its pings (no behaviour change)."""
    from kazoo.protocol import connection

    handler = connection.ConnectionHandler
    original_send_ping = handler._send_ping
    original_read_socket = handler._read_socket

    def _send_ping(self: Any, connect_timeout: float) -> None:
        self._probe_ping_sent = time.monotonic()
        original_send_ping(self, connect_timeout)

    def _read_socket(self: Any, read_timeout: float) -> Any:
        was = self.ping_outstanding.is_set()
        result = original_read_socket(self, read_timeout)
        if was and not self.ping_outstanding.is_set():
            REC.ping_rtt.append(time.monotonic() - self._probe_ping_sent)
        return result

    handler._send_ping = _send_ping
    handler._read_socket = _read_socket

    class DropCounter(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "Connection dropped" in record.getMessage():
                REC.drops.append(time.monotonic() - REC.started)

    logging.getLogger("kazoo").addHandler(DropCounter())


def start_sleeper_thread() -> None:
    def run() -> None:
        while True:
            t = time.monotonic()
            time.sleep(0.002)
            REC.thread_late.append(time.monotonic() - t - 0.002)

    threading.Thread(target=run, daemon=True, name="probe-sleeper").start()


async def loop_lag_task() -> None:
    while True:
        t = time.monotonic()
        await asyncio.sleep(0.01)
        REC.loop_lag.append(time.monotonic() - t - 0.01)


def inner(stats: str, argv: list[str]) -> int:
    """Run a broker with the probes in place; write the samples to `stats` on exit."""
    instrument_kazoo()
    start_sleeper_thread()
    from kazoo.client import KazooClient

    original_init = KazooClient.__init__

    def init(self: KazooClient, *a: Any, **kw: Any) -> None:
        original_init(self, *a, **kw)
        self.add_listener(lambda s: REC.states.append((time.monotonic() - REC.started, str(s))))

    KazooClient.__init__ = init

    original_new_loop = asyncio.new_event_loop

    def new_event_loop() -> asyncio.AbstractEventLoop:
        loop = original_new_loop()
        loop.call_soon(lambda: loop.create_task(loop_lag_task()))
        return loop

    asyncio.events.new_event_loop = new_event_loop

    def write() -> None:
        Path(stats).write_text(json.dumps(REC.dump()))

    def on_term(*_: Any) -> None:
        write()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    from broker.cli import main

    try:
        return main(argv)
    finally:
        write()


# ---- the outer probe ------------------------------------------------------------------


def burn() -> None:
    while True:
        pass


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def summary(name: str, data: dict[str, Any]) -> str:
    rtt, late, lag = data["ping_rtt"], data["thread_late"], data["loop_lag"]
    over = lambda xs, t: sum(1 for x in xs if x > t)  # noqa: E731
    parts = [
        f"{name:>6}: pings {len(rtt):4d}, rtt p50 {1000 * pct(rtt, 50):6.1f} ms "
        f"p99 {1000 * pct(rtt, 99):6.1f} max {1000 * max(rtt, default=0):6.1f}; "
        f">167 ms {over(rtt, 0.167)}",
        f"drops {len(data['drops'])}",
        f"thread wake late p99 {1000 * pct(late, 99):6.1f} ms "
        f"max {1000 * max(late, default=0):6.1f}"
        f" (>50 ms: {over(late, 0.05)})",
    ]
    if lag:
        parts.append(
            f"loop lag p99 {1000 * pct(lag, 99):6.1f} ms max {1000 * max(lag):6.1f}"
            f" (>50 ms: {over(lag, 0.05)})"
        )
    states = [s for _, s in data["states"]]
    if states:
        parts.append("states " + ",".join(states))
    return "; ".join(parts)


async def status_role(url: str) -> tuple[str, list[str]]:
    """The broker's role in words ("down" if it does not answer) and, as master, its
    in-sync set."""
    import grpc

    from broker.pb import admin_pb2, admin_pb2_grpc

    async with grpc.aio.insecure_channel(url) as channel:
        try:
            answer = await admin_pb2_grpc.AdminStub(channel).Status(
                admin_pb2.StatusRequest(), timeout=1
            )
        except grpc.aio.AioRpcError:
            return "down", []
    master = answer.role_kind == admin_pb2.ROLE_MASTER
    return answer.role, list(answer.group.in_sync) if master else []


async def load(urls: dict[str, str], rate: int, seconds: float) -> tuple[int, int, list[str]]:
    from broker.client import Client

    deadline = time.monotonic() + 60
    master = None
    while master is None:
        for name, url in urls.items():
            _, isr = await status_role(url)
            if isr == ["b", "c"]:
                master = name
        if time.monotonic() > deadline:
            raise SystemExit("no master in sync within 60 s")
        await asyncio.sleep(0.05)
    print(f"master {master}; sending {rate} msg/s for {seconds:g} s", flush=True)
    body = os.urandom(1024)
    sent = acked = 0
    failures: list[str] = []
    roles: list[str] = []
    async with await Client.connect(urls[master]) as client:
        producer = client.producer(max_in_flight=20_000)
        futures = []
        start = time.monotonic()
        tick = 0.01
        next_role = start
        while (now := time.monotonic()) - start < seconds:
            due = int((now - start) * rate)
            while sent < due:
                futures.append(await producer.send("probe", body, persistent=True))
                sent += 1
            if now >= next_role:
                letters = [(await status_role(u))[0][0] for u in urls.values()]
                roles.append("".join(letters))
                next_role = now + 0.5
            await asyncio.sleep(tick)
        done, _ = await asyncio.wait(futures, timeout=15)
        for f in done:
            if f.exception() is None:
                acked += 1
            elif len(failures) < 3:
                failures.append(str(f.exception()))
    return sent, acked, [*failures, "roles every 0.5 s (b c): " + " ".join(roles)]


def outer(args: argparse.Namespace) -> None:
    from kazoo.client import KazooClient
    from kazoo.retry import KazooRetry

    from broker.cluster.zookeeper import Ensemble
    from tests.support.procs import free_port

    instrument_kazoo()
    start_sleeper_thread()
    burners = [multiprocessing.Process(target=burn, daemon=True) for _ in range(args.burn)]
    with (
        tempfile.TemporaryDirectory(prefix="zk-probe-") as tmp,
        Ensemble(Path(tmp) / "zk", size=1) as zk,
    ):
        procs: dict[str, subprocess.Popen[bytes]] = {}
        urls: dict[str, str] = {}
        for name in ("b", "c"):
            port = free_port()
            urls[name] = f"127.0.0.1:{port}"
            cmd = [
                sys.executable, __file__, "inner", f"{tmp}/{name}.json", "--",
                "broker", "--name", name, "--port", str(port), "--data", f"{tmp}/{name}",
                "--group", "B", "--election", "zookeeper", "--zookeeper", zk.connect_string,
                "--replication-port", str(free_port()), "--replicas", "2",
                "--session-timeout", f"{args.session_timeout:g}",
            ]  # fmt: skip
            log = open(f"{tmp}/{name}.log", "wb")  # noqa: SIM115
            procs[name] = subprocess.Popen(
                cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
            )
        retry = KazooRetry(max_tries=-1, delay=0.05, max_delay=0.5)
        own = KazooClient(hosts=zk.connect_string, timeout=args.session_timeout,
                          connection_retry=retry)  # fmt: skip
        own.add_listener(lambda s: REC.states.append((time.monotonic() - REC.started, str(s))))
        own.start(timeout=10)
        REC.reset()  # count from the load on
        for b in burners:
            b.start()
        try:
            # A producer stranded by a step-down would wait forever: bound the run.
            try:
                sent, acked, notes = asyncio.run(
                    asyncio.wait_for(load(urls, args.rate, args.seconds), args.seconds + 90)
                )
            except TimeoutError:
                sent, acked, notes = -1, -1, ["the producer was stranded (no answers)"]
        finally:
            for b in burners:
                b.terminate()
            for p in procs.values():
                p.send_signal(signal.SIGTERM)
            for p in procs.values():
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
            own.stop()
            own.close()
        print(f"sent {sent}, acked {acked}; " + "; ".join(notes))
        print(f"session timeout {args.session_timeout:g} s, {args.burn} busy processes beside")
        print(summary("probe", REC.dump()))
        for name in procs:
            try:
                data = json.loads(Path(f"{tmp}/{name}.json").read_text())
            except FileNotFoundError:
                print(f"{name:>6}: no samples")
                continue
            print(summary(name, data))
            logtext = Path(f"{tmp}/{name}.log").read_text(errors="replace")
            for line in logtext.splitlines():
                if "no longer master" in line or "Connection dropped" in line:
                    print(f"        {name}: {line[:160]}")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "inner":
        stats, rest = sys.argv[2], sys.argv[3:]
        if rest and rest[0] == "--":
            rest = rest[1:]
        sys.exit(inner(stats, rest))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--session-timeout", type=float, default=1.0)
    parser.add_argument("--burn", type=int, default=0)
    outer(parser.parse_args())


if __name__ == "__main__":
    main()
