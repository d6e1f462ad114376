"""`multicast://` discovery across real network namespaces.

Each broker runs in a network namespace of its own, with one veth whose peer sits on a
Linux bridge in a further namespace; the 10.77.0.0/24 addresses exist only inside those
namespaces. The test creates and deletes them (unique names per run, removed in a
finalizer even when the test fails) and is skipped where `ip netns` is not permitted.

Nothing in the test process (the root namespace) talks to a 10.x address: the brokers'
clients run inside the namespaces too, as this very module run as a script
(`ip netns exec NS python -m tests.integration.test_multicast_netns COMMAND ...`); the test reads
their answers from stdout and from files.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.procs import ROOT, BrokerProcess
from tests.support.uptools import wait_until

PORT = 61616  # every namespace has its own ports: all brokers use the same one
SUBNET = "10.77.0"
PREFIX = "multicast://default/"


# --------------------------------------------------------------------- the lab


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


@dataclass
class Lab:
    """Namespaces `nb<tag>-<name>` on a bridge in `nb<tag>-br`, deleted by `close`."""

    tag: str
    namespaces: list[str] = field(default_factory=list)
    addresses: dict[str, str] = field(default_factory=dict)

    @property
    def bridge_ns(self) -> str:
        return f"nb{self.tag}-br"

    def ns(self, name: str) -> str:
        return f"nb{self.tag}-{name}"

    def _add_ns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self.namespaces.append(ns)  # recorded at once: close() deletes what exists
        _ip("-n", ns, "link", "set", "lo", "up")

    def create(self, names: list[str]) -> None:
        self._add_ns(self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for i, name in enumerate(names):
            ns, peer, address = self.ns(name), f"p{name}", f"{SUBNET}.{10 + i}"
            self._add_ns(ns)
            # Created inside the namespaces: nothing appears in the root namespace.
            _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", peer,
                "netns", self.bridge_ns)  # fmt: skip
            _ip("-n", self.bridge_ns, "link", "set", peer, "master", "br0")
            _ip("-n", self.bridge_ns, "link", "set", peer, "up")
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            # Multicast needs a route; there is no default route in here.
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
            self.addresses[name] = address

    def close(self) -> None:
        # Deleting a namespace deletes the veth ends in it, and with them their peers.
        for ns in reversed(self.namespaces):
            _ip("netns", "delete", ns, check=False)
        self.namespaces.clear()


def _netns_unavailable() -> str | None:
    """Why this host cannot run the test, or None."""
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    probe = f"nbprobe{os.getpid()}"
    try:
        added = _ip("netns", "add", probe, check=False)
    except FileNotFoundError:
        return "the `ip` command (iproute2) is not installed"
    if added.returncode != 0:
        return f"`ip netns add` is not permitted here: {added.stderr.strip()}"
    try:
        veth = _ip("-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
                   check=False)  # fmt: skip
        if veth.returncode != 0:
            return f"cannot create veth pairs in a namespace: {veth.stderr.strip()}"
    finally:
        _ip("netns", "delete", probe, check=False)
    return None


@pytest.fixture
def lab() -> Iterator[Lab]:
    reason = _netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    # Unique per run: parallel runs and leftovers of a killed run never collide.
    the_lab = Lab(tag=f"{os.getpid() % 10000:04d}{secrets.token_hex(1)}")
    try:
        yield the_lab
    finally:
        the_lab.close()


class NetnsBroker(BrokerProcess):
    """A broker process inside a namespace, listening on its 10.x address."""

    def __init__(self, lab: Lab, name: str, data_dir: Path, args: tuple[str, ...]) -> None:
        self.netns = lab.ns(name)
        self.ip = lab.addresses[name]
        super().__init__(name, data_dir, port=PORT, args=args)

    @property
    def address(self) -> str:
        """Where clients inside the namespaces reach it (never used from the root)."""
        return f"{self.ip}:{PORT}"

    def start(self, timeout: float = 20.0) -> NetnsBroker:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps writing to it
        cmd = [
            "ip", "netns", "exec", self.netns,
            sys.executable, "-m", "broker", "broker", "--name", self.name, "--host", self.ip,
            "--port", str(self.port), "--data", str(self.data_dir), *self.args,
        ]  # fmt: skip
        # `ip netns exec` execs the command: the pid (and session) is the broker's own.
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, start_new_session=True
        )
        log.close()
        self._read_line(timeout)
        return self


# Run inside a namespace as `python -m`: this module doubles as the helper program.
HELPER = "tests.integration.test_multicast_netns"


def in_ns(lab: Lab, name: str, *args: str, timeout: float = 60) -> dict:
    """Run a helper command of this module inside broker `name`'s namespace."""
    out = subprocess.run(
        ["ip", "netns", "exec", lab.ns(name), sys.executable, "-m", HELPER, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if out.returncode != 0:
        raise AssertionError(f"helper {args} in {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def spawn_in_ns(lab: Lab, name: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", lab.ns(name), sys.executable, "-m", HELPER, *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(proc: subprocess.Popen[str], timeout: float) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"helper timed out:\n{err[-3000:]}") from None
    if proc.returncode != 0:
        raise AssertionError(f"helper failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The helper's next stdout line (it says "ready" once it watches)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(0.1):
                return proc.stdout.readline().strip()
    raise AssertionError("helper said nothing")


# --------------------------------------------------------------------- the test


def test_brokers_in_namespaces_discover_forward_and_survive_kill_9(
    lab: Lab, tmp_path: Path
) -> None:
    names = ["a", "b", "c"]
    lab.create(names)
    token = secrets.token_hex(8)
    started: dict[str, NetnsBroker] = {}

    def start(name: str) -> NetnsBroker:
        args = (
            "--group", name.upper(), "--connector", "multicast://default",
            "--discovery-interface", lab.addresses[name], "--discovery-token", token,
        )  # fmt: skip
        proc = started.get(name) or NetnsBroker(lab, name, tmp_path / name, args)
        started[name] = proc
        return proc.start()

    def mesh(timeout: float = 30) -> dict[str, float]:
        """Wait in each namespace for its broker's bridges to the others; wall times."""
        waiters = {}
        for n in names:
            keys = [m.upper() for m in names if m != n]
            waiters[n] = spawn_in_ns(
                lab, n, "wait-up", started[n].address, *keys, "--timeout", str(timeout)
            )
        return {n: finish(w, timeout + 30)["at"] for n, w in waiters.items()}

    try:
        t0 = time.time()
        for name in names:
            start(name)
        up = mesh()
        print(f"netns: all bridges up {max(up.values()) - t0:.2f}s after the first broker started")

        # A backlog on b, drained by a slow consumer on c over the bridge b -> c.
        total = 1_500
        sent = in_ns(lab, "b", "send", started["b"].address, "work", str(total))["ids"]
        received = tmp_path / "received.txt"
        consumer = spawn_in_ns(
            lab, "c", "consume", started["c"].address, "work", str(total), str(received),
            "--prefetch", "20", "--delay", "0.002", "--idle", "40",
        )  # fmt: skip

        def count() -> int:
            return len(received.read_text().splitlines()) if received.exists() else 0

        wait_until(lambda: count() >= total // 3, 60, "a third of the backlog to reach c")

        watchers = {
            n: spawn_in_ns(lab, n, "watch-down", started[n].address, "B") for n in ("a", "c")
        }
        for n, w in watchers.items():
            assert read_line(w, 30) == "ready", f"watcher in {n}"
        started["b"].kill()
        killed = time.time()
        noticed = {n: finish(w, 30)["at"] - killed for n, w in watchers.items()}
        print(
            "netns: kill -9 of b noticed by "
            + ", ".join(f"{n} after {s:.3f}s" for n, s in noticed.items())
        )
        assert all(s < 5 for s in noticed.values()), noticed

        # The live peers keep working without b: a to c.
        live = in_ns(lab, "a", "send", started["a"].address, "live", "100")["ids"]
        got_live = in_ns(lab, "c", "receive", started["c"].address, "live", "100")["ids"]
        assert sorted(got_live) == sorted(live)

        restarted = time.time()
        start("b")
        up = mesh()
        print(f"netns: b's bridges up again {max(up.values()) - restarted:.2f}s after restart")

        summary = finish(consumer, 120)
        lines = [line.split() for line in received.read_text().splitlines()]
        counts = collections.Counter(i for i, _ in lines)
        first_time = collections.Counter(i for i, redelivered in lines if redelivered == "0")
        lost = set(sent) - set(counts)
        print(
            f"netns: sent {len(sent)}, received {len(lines)}, lost {len(lost)}, "
            f"redelivered {sum(1 for _, r in lines if r == '1')} ({summary})"
        )
        assert not lost, f"{len(lost)} messages lost"
        assert all(n == 1 for n in first_time.values()), "duplicates without the redelivered mark"
    finally:
        for proc in started.values():
            proc.stop()


# ------------------------------------------------- helpers run inside a namespace


async def _bridges(address: str) -> dict[str, str] | None:
    """The broker's discovered bridges: peer key -> state; None when the broker did not
    answer (never taken for "no bridges")."""
    import grpc

    from broker.pb import admin_pb2, admin_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        try:
            answer = await admin_pb2_grpc.AdminStub(channel).Status(
                admin_pb2.StatusRequest(), timeout=2
            )
        except grpc.aio.AioRpcError:
            return None
    return {
        c.name.removeprefix(PREFIX): c.state
        for c in answer.components
        if c.kind == "bridge" and c.name.startswith(PREFIX)
    }


async def _wait_up(args: argparse.Namespace) -> dict:
    deadline = time.monotonic() + args.timeout
    while True:
        bridges = await _bridges(args.address)
        if bridges is not None and all(bridges.get(k) == "up" for k in args.keys):
            return {"at": time.time()}
        if time.monotonic() > deadline:
            raise SystemExit(f"bridges not up in {args.timeout}s: {bridges}")
        await asyncio.sleep(0.02)


async def _watch_down(args: argparse.Namespace) -> dict:
    """Say "ready" once the bridge is up, then report when the broker answers that it is
    no longer up (a failed status call says nothing either way: polled again)."""

    async def state() -> str | None:
        bridges = await _bridges(args.address)
        return None if bridges is None else bridges.get(args.key, "missing")

    while await state() != "up":
        await asyncio.sleep(0.02)
    print("ready", flush=True)
    while (now := await state()) is None or now == "up":
        await asyncio.sleep(0.005)
    return {"at": time.time(), "state": now}


async def _send(args: argparse.Namespace) -> dict:
    from broker.client import Client
    from tests.support.scenario import send_many

    async with await Client.connect(args.address) as client:
        ids = await send_many(client, args.queue, [str(i).encode() for i in range(args.count)])
    return {"ids": ids}


async def _receive(args: argparse.Namespace) -> dict:
    from broker.client import Client
    from tests.support.scenario import receive_all

    async with await Client.connect(args.address) as client:
        got = await receive_all(client, args.queue, args.count, timeout=20)
    return {"ids": [d.id for d in got]}


async def _consume(args: argparse.Namespace) -> dict:
    """Receive and ack, slowly, writing "ID REDELIVERED" lines until `count` distinct ids
    arrived or nothing came for `idle` seconds."""
    from broker.client import Client

    seen: set[str] = set()
    n = 0
    async with await Client.connect(args.address) as client:
        consumer = await client.subscribe(args.queue, prefetch=args.prefetch)
        with open(args.out, "a") as out:
            while len(seen) < args.count:
                d = await consumer.receive(timeout=args.idle)
                if d is None:
                    break
                out.write(f"{d.id} {int(d.redelivered)}\n")
                out.flush()
                seen.add(d.id)
                n += 1
                await asyncio.sleep(args.delay)
                d.ack()
        await consumer.close()
    return {"distinct": len(seen), "deliveries": n}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.integration.test_multicast_netns")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("wait-up")
    p.add_argument("address")
    p.add_argument("keys", nargs="+")
    p.add_argument("--timeout", type=float, default=30)
    p.set_defaults(run=_wait_up)
    p = sub.add_parser("watch-down")
    p.add_argument("address")
    p.add_argument("key")
    p.set_defaults(run=_watch_down)
    for name, run in (("send", _send), ("receive", _receive)):
        p = sub.add_parser(name)
        p.add_argument("address")
        p.add_argument("queue")
        p.add_argument("count", type=int)
        p.set_defaults(run=run)
    p = sub.add_parser("consume")
    p.add_argument("address")
    p.add_argument("queue")
    p.add_argument("count", type=int)
    p.add_argument("out")
    p.add_argument("--prefetch", type=int, default=20)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--idle", type=float, default=30)
    p.set_defaults(run=_consume)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(args.run(args))), flush=True)


if __name__ == "__main__":
    main()
