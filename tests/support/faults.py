"""Traffic run through faults, and the tally of what came out of it.

The fault suite (tests/integration/test_faults.py) and the soak (scripts/chaos.py) share this
module:

* `Tally` counts a numbered stream of messages: sent, acknowledged, failed, received,
  lost (acknowledged, never received), repeats, and unmarked repeats (a message handed to
  a consumer again without the redelivered mark). It is plain bookkeeping, no I/O.
* `LinkProxy` is a TCP relay on 127.0.0.1 in a thread of its own, put between a broker
  and something it talks to (ZooKeeper, a bridge's peer) so a test can drop that link
  (reset every connection and refuse new ones) or black-hole it (hold the connections,
  pass nothing) while both processes keep running.
* `Traffic` runs a paced, numbered producer through a failover URL and a consumer on
  another broker, feeding the tally.
* `AbcCluster` is the reference topology (topologies/ab_c.yaml) as real processes on free
  ports: a ZooKeeper, broker a (group A) and the pair b, c (group B, or b, c, d with
  `replicas=3`), linked by `masterslave:(b,c)` from a and `static:(a)` from B's members,
  with proxies in front of ZooKeeper (for B's members) and of a (for B's bridge).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import grpc

from broker.client import BrokerError, Client
from broker.pb import admin_pb2, admin_pb2_grpc
from broker.server.admin import role_of
from broker.server.status import Role
from tests.support.groups import in_sync, status
from tests.support.procs import BrokerProcess, free_port
from tests.support.scenario import wait_for as until
from tests.support.zk import Ensemble

# --------------------------------------------------------------------------- tally


@dataclass
class Tally:
    """What happened to each numbered message. Numbers are the producer's, from 0."""

    sent: int = 0
    acked: set[int] = field(default_factory=set)
    failed: dict[int, str] = field(default_factory=dict)
    # number -> how often received, and how often received without the redelivered mark
    received: collections.Counter[int] = field(default_factory=collections.Counter)
    unmarked: int = 0
    # acknowledgement times, for the longest stall
    _ack_times: list[float] = field(default_factory=list)

    def on_sent(self) -> int:
        number = self.sent
        self.sent += 1
        return number

    def on_ack(self, number: int, at: float) -> None:
        self.acked.add(number)
        self._ack_times.append(at)

    def on_failed(self, number: int, error: str) -> None:
        self.failed[number] = error

    def on_received(self, number: int, redelivered: bool) -> None:
        # A second hand-out that does not say it is one is what a consumer cannot detect.
        if self.received[number] and not redelivered:
            self.unmarked += 1
        self.received[number] += 1

    @property
    def lost(self) -> set[int]:
        return self.acked - set(self.received)

    @property
    def repeats(self) -> int:
        return sum(n - 1 for n in self.received.values())

    @property
    def stray(self) -> set[int]:
        """Received but never sent: a bug in the broker or in this harness."""
        return {n for n in self.received if n >= self.sent}

    def longest_stall(self, start: float, end: float) -> float:
        """The longest time within [start, end] in which no send was acknowledged."""
        times = sorted(t for t in self._ack_times if start <= t <= end)
        edges = [start, *times, end]
        return max(b - a for a, b in itertools.pairwise(edges))

    def acks_after(self, moment: float) -> int:
        return sum(1 for t in self._ack_times if t > moment)

    def first_ack_after(self, moment: float) -> float:
        return min((t for t in self._ack_times if t > moment), default=float("inf"))

    def summary(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "acked": len(self.acked),
            "failed": len(self.failed),
            "received": sum(self.received.values()),
            "lost": len(self.lost),
            "repeats": self.repeats,
            "unmarked": self.unmarked,
        }

    def line(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.summary().items())

    def check(self) -> None:
        """The promise: nothing acknowledged is lost, nothing repeats unmarked."""
        print(self.line())
        assert not self.stray, f"received numbers never sent: {sorted(self.stray)[:10]}"
        assert not self.lost, (
            f"{len(self.lost)} acknowledged messages lost, e.g. {sorted(self.lost)[:10]}"
        )
        assert self.unmarked == 0, f"{self.unmarked} repeats without the redelivered mark"


# --------------------------------------------------------------------------- links


class LinkProxy:
    """A TCP relay from a free port of 127.0.0.1 to `target`, run on its own thread."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._down = False
        self._blackhole = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name=f"proxy-{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("link proxy did not start")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            self._server = await asyncio.start_server(self._handle, sock=self._listener)
            self._ready.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._down:
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            _reset(writer)
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self._blackhole:
                    continue  # a partition: the bytes vanish, the connection stays
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def _call(self, fn: Callable[[], None]) -> None:
        done = threading.Event()

        def run() -> None:
            fn()
            done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(5)

    def drop(self) -> None:
        """Reset every connection through the proxy and refuse new ones until `restore`."""

        def drop() -> None:
            self._down = True
            for writer in list(self._writers):
                _reset(writer)
            self._writers.clear()

        self._call(drop)

    def blackhole(self) -> None:
        """Keep the connections but pass nothing through them until `restore`."""
        self._call(lambda: setattr(self, "_blackhole", True))

    def restore(self) -> None:
        def restore() -> None:
            self._down = False
            self._blackhole = False

        self._call(restore)

    def close(self) -> None:
        def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                _reset(writer)

        self._call(close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a reset, as a dead peer's kernel or a broken network would."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    transport.abort()


# --------------------------------------------------------------------------- traffic


class Traffic:
    """A numbered producer at `rate` msg/s through `produce_url` and a consumer on
    `consume_url`, both reconnecting by themselves (failover URLs)."""

    def __init__(
        self, produce_url: str, consume_url: str, queue: str, rate: float, tally: Tally
    ) -> None:
        self.produce_url = produce_url
        self.consume_url = consume_url
        self.queue = queue
        self.rate = rate
        self.tally = tally
        self._producing = asyncio.Event()
        # Cleared: the consumer takes nothing (a backlog builds up on the broker).
        self.consuming = asyncio.Event()
        self.consuming.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: list[Client] = []
        self.errors: list[str] = []

    async def start(self) -> None:
        consumer_client = await Client.connect(self.consume_url)
        self._clients.append(consumer_client)
        consumer = await consumer_client.subscribe(self.queue, prefetch=200)
        producer_client = await Client.connect(self.produce_url)
        self._clients.append(producer_client)
        self._producing.set()
        self._tasks = [
            asyncio.create_task(self._produce(producer_client)),
            asyncio.create_task(self._consume(consumer)),
        ]

    async def _produce(self, client: Client) -> None:
        producer = client.producer(max_in_flight=5000)
        started = time.monotonic()
        tally = self.tally

        def settle(number: int, future: asyncio.Future[str]) -> None:
            if future.cancelled():
                tally.on_failed(number, "cancelled")
            elif (error := future.exception()) is not None:
                tally.on_failed(number, str(error))
            else:
                tally.on_ack(number, time.monotonic())

        sent_at_start = tally.sent
        while self._producing.is_set():
            due = sent_at_start + int((time.monotonic() - started) * self.rate)
            while tally.sent < due and self._producing.is_set():
                number = tally.on_sent()
                try:
                    future = await producer.send(self.queue, str(number))
                except BrokerError as exc:
                    tally.on_failed(number, str(exc))
                    self.errors.append(f"send {number}: {exc}")
                    await asyncio.sleep(0.05)
                    continue
                future.add_done_callback(functools.partial(settle, number))
            await asyncio.sleep(0.01)
        # Whatever is still unacknowledged gets its answer (or the close's failure).
        await producer.close(timeout=30)

    async def _consume(self, consumer: Any) -> None:
        while True:
            await self.consuming.wait()
            try:
                delivery = await consumer.receive(timeout=1.0)
            except BrokerError as exc:
                self.errors.append(f"receive: {exc}")
                await asyncio.sleep(0.05)
                continue
            if delivery is None:
                continue
            self.tally.on_received(int(delivery.body), delivery.redelivered)
            delivery.ack()

    async def stop_producing(self) -> None:
        """Stop sending and wait until every send has its answer."""
        self._producing.clear()
        await asyncio.wait_for(asyncio.shield(self._tasks[0]), 60)

    async def drain(self, brokers: list[str], timeout: float = 60.0) -> None:
        """Wait until every acknowledged message arrived and no broker holds anything
        more that could still reach the consumer (so a late repeat would be seen)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.tally.lost and await _all_empty(brokers, self.queue):
                return
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for client in self._clients:
            with contextlib.suppress(Exception):
                await client.close()


async def _all_empty(urls: list[str], queue: str) -> bool:
    for url in urls:
        info = await _queue_info(url, queue)
        if info is None:
            return False  # not answering: it may still hold something
        if info != "absent" and (info.pending or info.in_flight):
            return False
    return True


async def _queue_info(url: str, queue: str) -> admin_pb2.QueueInfo | Literal["absent"] | None:
    async with grpc.aio.insecure_channel(url) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        try:
            answer = await stub.ListQueues(admin_pb2.ListQueuesRequest(), timeout=2)
        except grpc.aio.AioRpcError as exc:
            # A slave refuses: it serves nothing, so it holds nothing a consumer could get.
            return "absent" if exc.code() == grpc.StatusCode.UNAVAILABLE else None
    for info in answer.queues:
        if info.name == queue:
            return info
    return "absent"


# --------------------------------------------------------------------------- cluster


class AbcCluster:
    """topologies/ab_c.yaml as processes: ZooKeeper, a, and group B's members."""

    QUEUE = "orders"

    def __init__(self, root: Path, replicas: int = 2, extra: tuple[str, ...] = ()) -> None:
        self.root = root
        self.replicas = replicas
        self.extra = extra
        self.zk = Ensemble(root / "zookeeper", size=1)
        self.a: BrokerProcess | None = None
        self.group: dict[str, BrokerProcess] = {}
        self.proxies: list[LinkProxy] = []
        self.zk_link: LinkProxy | None = None
        self.a_link: LinkProxy | None = None

    def start(self) -> AbcCluster:
        self.zk.start()
        self.zk_link = self._proxy(self.zk.connect_string)
        port_a = free_port()
        self.a_link = self._proxy(f"127.0.0.1:{port_a}")
        names = ["b", "c", "d"][: self.replicas]
        ports = {name: free_port() for name in names}
        for name in names:
            args = (
                "--group", "B", "--election", "zookeeper", "--zookeeper", self.zk_link.address,
                "--replication-port", str(free_port()), "--replicas", str(self.replicas),
                "--connector", f"static:({self.a_link.address})", *self.extra,
            )  # fmt: skip
            self.group[name] = BrokerProcess(name, self.root / name, ports[name], args)
        members = ",".join(f"127.0.0.1:{ports[n]}" for n in names)
        self.a = BrokerProcess(
            "a",
            self.root / "a",
            port_a,
            ("--group", "A", "--connector", f"masterslave:({members})"),
        )
        for proc in (*self.group.values(), self.a):
            proc.start()
        return self

    def _proxy(self, target: str) -> LinkProxy:
        proxy = LinkProxy(target)
        self.proxies.append(proxy)
        return proxy

    @property
    def b_url(self) -> str:
        return "failover:(" + ",".join(p.url for p in self.group.values()) + ")"

    @property
    def a_url(self) -> str:
        assert self.a is not None
        return f"failover:({self.a.url})"

    def urls(self) -> list[str]:
        assert self.a is not None
        return [self.a.url, *(p.url for p in self.group.values() if p.alive)]

    async def roles(self) -> dict[str, Role | None]:
        out = {}
        for name, proc in self.group.items():
            answer = await status(proc) if proc.alive else None
            out[name] = None if answer is None else role_of(answer.role_kind)
        return out

    async def master(self) -> str | None:
        """The member that alone reports itself master (others: slave, electing, or not
        answering, as a paused process does)."""
        masters = [n for n, r in (await self.roles()).items() if r is Role.MASTER]
        return masters[0] if len(masters) == 1 else None

    async def in_sync(self) -> str | None:
        """The master once every live member is in its in-sync set."""
        current = await self.roles()
        master = await self.master()
        live_roles = [r for n, r in current.items() if self.group[n].alive]
        if master is None or any(r not in (Role.MASTER, Role.SLAVE) for r in live_roles):
            return None
        live = {n for n, p in self.group.items() if p.alive}
        if live <= set(await in_sync(self.group[master]) or ()):
            return master
        return None

    async def ready(self, timeout: float = 30.0) -> str:
        """B in sync, both bridges up, and a's consumer's demand seen on B's master."""
        master = await until(self.in_sync, timeout, "group B in sync")

        async def bridges_up() -> bool:
            assert self.a is not None
            for proc in (self.a, self.group[master]):
                answer = await status(proc)
                if answer is None or not any(b.state == admin_pb2.LINK_UP for b in answer.bridges):
                    return False
            return True

        await until(bridges_up, timeout, "bridges a <-> B up")
        return master

    async def demand_on_master(self, timeout: float = 20.0) -> None:
        async def seen() -> bool:
            master = await self.master()
            if master is None:
                return False
            info = await _queue_info(self.group[master].url, self.QUEUE)
            return isinstance(info, admin_pb2.QueueInfo) and info.consumers > 0

        await until(seen, timeout, f"a's demand for {self.QUEUE} on B's master")

    async def restart(self, proc: BrokerProcess) -> None:
        await asyncio.to_thread(proc.start)

    def stop(self) -> None:
        procs = [self.a, *self.group.values()]
        for proc in procs:
            if proc is not None:
                proc.stop()
        for proxy in self.proxies:
            proxy.close()
        self.zk.stop()

    def logs(self) -> str:
        procs = [p for p in (self.a, *self.group.values()) if p is not None]
        return "\n".join(f"--- {p.name}\n{p.log(40)}" for p in procs)


# --------------------------------------------------------------------------- faults

# Each injects its fault and returns the moment it ended (or began, for a crash): the
# time from which production must resume.
Fault = Callable[[AbcCluster], Awaitable[float]]


def _signal(cluster: AbcCluster, name: str, sig: signal.Signals) -> None:
    proc = cluster.group[name].proc if name in cluster.group else cluster.a.proc  # type: ignore[union-attr]
    assert proc is not None
    os.killpg(proc.pid, sig)


async def _new_master(cluster: AbcCluster, old: str) -> str:
    async def other() -> str | None:
        master = await cluster.master()
        return master if master not in (None, old) else None

    return await until(other, 20, f"a master other than {old}")


async def kill_master(cluster: AbcCluster) -> float:
    """kill -9 of B's master (the forwarding end of B's bridge to a), then its restart."""
    master = await until(cluster.master, 20, "a master")
    cluster.group[master].kill()
    killed = time.monotonic()
    await _new_master(cluster, master)
    await cluster.restart(cluster.group[master])
    return killed


async def stop_master(cluster: AbcCluster) -> float:
    """SIGSTOP of B's master past its session, then SIGCONT: it must come back a slave."""
    master = await until(cluster.master, 20, "a master")
    _signal(cluster, master, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        await _new_master(cluster, master)
    finally:
        _signal(cluster, master, signal.SIGCONT)
    return stopped


async def kill_master_behind_a_stalled_follower(cluster: AbcCluster, traffic: Traffic) -> float:
    """A backlog on B's master, its follower stopped (under the lag timeout, so it stays
    in sync and electable) while the consumer drains the backlog, then kill -9 of the
    master. What the master wrote meanwhile (dispatch marks, acks' removals) never
    reaches the follower, which then becomes master."""
    tally = traffic.tally
    traffic.consuming.clear()
    backlog = len(tally.acked)

    async def built() -> bool:
        return len(tally.acked) - backlog >= 2000

    await until(built, 20, "a backlog to build up")
    master = await until(cluster.master, 20, "a master")
    follower = next(n for n in cluster.group if n != master)
    received = sum(tally.received.values())
    _signal(cluster, follower, signal.SIGSTOP)
    try:
        traffic.consuming.set()
        stalled = time.monotonic()
        # Below the lag timeout (1 s): deliveries and acks flow while nothing replicates.
        while time.monotonic() - stalled < 0.6 and sum(tally.received.values()) - received < 1500:
            await asyncio.sleep(0.01)
        cluster.group[master].kill()
    finally:
        _signal(cluster, follower, signal.SIGCONT)
    killed = time.monotonic()
    print(f"{sum(tally.received.values()) - received} received while the follower was stopped")
    await _new_master(cluster, master)
    await cluster.restart(cluster.group[master])
    return killed


def pause_zookeeper(seconds: float) -> Fault:
    async def fault(cluster: AbcCluster) -> float:
        cluster.zk.pause()
        try:
            await asyncio.sleep(seconds)  # the fault's length, not a wait for a condition
        finally:
            cluster.zk.resume()
        return time.monotonic()

    return fault


async def expire_sessions(cluster: AbcCluster) -> float:
    """B's members cut from ZooKeeper long enough for the server to expire their
    sessions while they keep running; then the link comes back."""
    assert cluster.zk_link is not None
    cluster.zk_link.drop()
    try:
        await asyncio.sleep(4.0)  # past every session timeout: the server expires them
    finally:
        cluster.zk_link.restore()
    return time.monotonic()


async def kill_receiver(cluster: AbcCluster) -> float:
    """kill -9 of a, the receiving end of B's bridge (and the consumer's broker)."""
    assert cluster.a is not None
    cluster.a.kill()
    killed = time.monotonic()
    await cluster.restart(cluster.a)
    return killed


async def drop_bridge(cluster: AbcCluster) -> float:
    """Reset B's bridge to a mid-forward (a is storing batches all the time at this
    rate), refuse reconnection briefly, then let it back."""
    assert cluster.a_link is not None
    cluster.a_link.drop()
    dropped = time.monotonic()
    await asyncio.sleep(0.3)  # the outage's length
    cluster.a_link.restore()
    return dropped


FAULTS: dict[str, Fault] = {
    "kill -9 master": kill_master,
    "SIGSTOP master": stop_master,
    "ZooKeeper paused 0.5s": pause_zookeeper(0.5),
    "ZooKeeper paused 4s": pause_zookeeper(4.0),
    "sessions expired": expire_sessions,
    "kill -9 bridge receiver": kill_receiver,
    "bridge dropped mid-batch": drop_bridge,
}
