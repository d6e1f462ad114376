"""Producers through `failover:(b,c)` run *through* faults of a real master/slave group.

Real ZooKeeper, real broker processes. A numbered producer sends at a steady rate while
ZooKeeper or the master is frozen (SIGSTOP) and resumed; afterwards every acknowledged
message must be received, repeats only when marked redelivered, and production must
have resumed by itself. Each test prints what it counted and measured.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from broker.client import Client
from broker.pb import admin_pb2, client_pb2, client_pb2_grpc
from broker.server.status import Role
from tests.support.aio import run
from tests.support.groups import Start, drain, role, start_group, wait_in_sync, wait_master
from tests.support.procs import BrokerProcess
from tests.support.scenario import wait_for
from tests.support.zk import Ensemble

# Messages per second the producer offers: enough that every fault cuts through traffic,
# little enough to leave the two shared cores to the brokers.
RATE = 500


@dataclass
class Run:
    """What a producer run counted: every send, every ack with its time."""

    sent: int = 0
    acked: list[str] = field(default_factory=list)
    ack_times: list[float] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def first_ack_after(self, moment: float) -> float | None:
        later = [t for t in self.ack_times if t >= moment]
        return min(later) if later else None

    def longest_stall(self) -> float:
        times = sorted(self.ack_times)
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


async def produce_through(
    url: str, queue: str, fault: Callable[[], Coroutine[Any, Any, None]], after: float = 2.0
) -> Run:
    """Send numbered persistent messages at RATE until `fault` is over and `after`
    seconds more have passed, then wait for every ack."""
    counted = Run()
    async with await Client.connect(url) as client:
        producer = client.producer(max_in_flight=2_000)
        fault_task = asyncio.create_task(fault())
        stop_at: float | None = None
        futures: list[asyncio.Future[str]] = []
        started = time.monotonic()

        def done(future: asyncio.Future[str]) -> None:
            if future.cancelled() or future.exception() is not None:
                counted.failed.append(repr(future.exception()))
                return
            counted.acked.append(future.result())
            counted.ack_times.append(time.monotonic())

        while stop_at is None or time.monotonic() < stop_at:
            if stop_at is None and fault_task.done():
                fault_task.result()
                stop_at = time.monotonic() + after
            future = await producer.send(queue, f"{counted.sent}".encode())
            future.add_done_callback(done)
            futures.append(future)
            counted.sent += 1
            # Pace to RATE on average, whatever the sends cost.
            ahead = started + counted.sent / RATE - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
        await asyncio.wait_for(producer.flush(), 30)
        await producer.close()
    return counted


def report(name: str, counted: Run, received: collections.Counter[str], marked: set[str]) -> None:
    lost = set(counted.acked) - set(received)
    repeats = sum(n - 1 for n in received.values())
    unmarked = sum(1 for mid, n in received.items() if n > 1 and mid not in marked)
    print(
        f"{name}: sent {counted.sent}, acked {len(counted.acked)}, failed {len(counted.failed)}, "
        f"received {sum(received.values())}, lost {len(lost)}, repeats {repeats} "
        f"(unmarked {unmarked}), longest ack stall {counted.longest_stall():.2f}s"
    )
    assert not counted.failed, counted.failed[:3]
    assert len(counted.acked) == counted.sent, "a send through failover was never acked"
    assert not lost, f"{len(lost)} acknowledged messages lost"
    assert unmarked == 0, f"{unmarked} repeats without the redelivered mark"


async def received_on(procs: dict[str, BrokerProcess], queue: str, expect: int) -> tuple[
    collections.Counter[str], set[str]
]:
    master = await wait_master(procs)
    got = await drain(procs[master].url, queue, expect, timeout=15)
    counts = collections.Counter(d.id for d in got)
    # A repeat is marked when some copy of it came redelivered.
    marked = {d.id for d in got if d.redelivered}
    return counts, marked


def batch(batch_id: int, body: str) -> client_pb2.ProduceRequest:
    request = client_pb2.ProduceRequest(batch_id=batch_id)
    request.messages.add(destination="old-stream", body=body.encode(), persistent=True)
    return request


def signal_broker(proc: BrokerProcess, sig: signal.Signals) -> None:
    assert proc.proc is not None
    os.killpg(proc.proc.pid, sig)


@pytest.mark.parametrize(
    "pauses",
    [pytest.param([3.0], id="once-3s"), pytest.param([0.8] * 5, id="five-0.8s")],
)
def test_zookeeper_frozen_strands_no_producer(
    brokers: Start, zookeeper: Ensemble, pauses: list[float]
) -> None:
    """ZooKeeper frozen 3 s (past the 1 s session), or five times 0.8 s: the master
    steps down (its session is suspended) and must end its streams at once; the
    producer resumes on whoever is master next."""
    procs = start_group(brokers, zookeeper, ["b", "c"], replicas=2)
    url = f"failover:({procs['b'].url},{procs['c'].url})"
    moments: dict[str, float] = {}

    async def freeze_zookeeper() -> None:
        for pause in pauses:
            await asyncio.sleep(1.0)
            zookeeper.pause()
            moments["paused"] = time.monotonic()
            try:
                await asyncio.sleep(pause)
            finally:
                zookeeper.resume()
            moments["resumed"] = time.monotonic()
        await wait_master(procs, timeout=20)
        moments["master"] = time.monotonic()

    async def scenario() -> None:
        await wait_in_sync(procs)
        try:
            counted = await produce_through(url, "zkfreeze", freeze_zookeeper)
        finally:
            zookeeper.resume()
        received, marked = await received_on(procs, "zkfreeze", len(counted.acked))
        first = counted.first_ack_after(moments["resumed"])
        assert first is not None, "production never resumed"
        # wait_master polls roles, so "master" is when a master was seen, a little late.
        resumed_after = first - moments["master"]
        print(
            f"ZooKeeper back at +{moments['resumed'] - moments['paused']:.2f}s, a master seen "
            f"{moments['master'] - moments['resumed']:.2f}s later, first ack after that "
            f"{resumed_after:+.2f}s"
        )
        report(f"zookeeper frozen {pauses} s", counted, received, marked)
        assert resumed_after < 1.0, f"production resumed {resumed_after:.2f}s after a master"

    run(scenario(), timeout=150)


def test_frozen_master_is_left_within_the_bound_and_returns_a_slave(
    brokers: Start, zookeeper: Ensemble
) -> None:
    """The master frozen (SIGSTOP) 8 s: the producer must move to the newly elected
    master within 1.5 s of its election; the old master resumes as a slave and ends
    whatever streams it still had instead of leaving them without answers."""
    procs = start_group(brokers, zookeeper, ["b", "c"], replicas=2)
    url = f"failover:({procs['b'].url},{procs['c'].url})"
    moments: dict[str, float] = {}
    names: dict[str, str] = {}

    async def freeze_master() -> None:
        await asyncio.sleep(1.0)
        old = names["old"]
        other = next(n for n in procs if n != old)
        signal_broker(procs[old], signal.SIGSTOP)
        moments["stopped"] = time.monotonic()
        try:

            async def elected() -> bool:
                return await role(procs[other]) == Role.MASTER

            await wait_for(elected, 15, f"{other} to be elected")
            moments["elected"] = time.monotonic()
            await asyncio.sleep(max(0.0, moments["stopped"] + 8.0 - time.monotonic()))
        finally:
            signal_broker(procs[old], signal.SIGCONT)

        async def slave_again() -> bool:
            return await role(procs[old]) == Role.SLAVE

        await wait_for(slave_again, 20, f"{old} to return as a slave")

    async def scenario() -> None:
        names["old"] = await wait_in_sync(procs)
        # A stream to the old master with no keepalive of its own, so it stays open
        # through the freeze: once its broker is back (a slave), it must be ended.
        channel = grpc.aio.insecure_channel(procs[names["old"]].url)
        old_stream = client_pb2_grpc.BrokerStub(channel).Produce()
        await old_stream.write(batch(1, "before"))
        assert (await old_stream.read()).ok
        try:
            counted = await produce_through(url, "frozen", freeze_master)
            # Already ended (the write is refused) or ending: either way with a status.
            with contextlib.suppress(asyncio.InvalidStateError, grpc.aio.AioRpcError):
                await old_stream.write(batch(2, "after"))
            code = await asyncio.wait_for(old_stream.code(), 5)
            print(f"the old stream ended {code.name}: {await old_stream.details()}")
            assert code == grpc.StatusCode.UNAVAILABLE
        finally:
            with contextlib.suppress(ProcessLookupError):
                signal_broker(procs[names["old"]], signal.SIGCONT)
            await channel.close()
        received, marked = await received_on(procs, "frozen", len(counted.acked))
        first = counted.first_ack_after(moments["elected"])
        assert first is not None, "production never resumed"
        moved = first - moments["elected"]
        print(
            f"new master seen {moments['elected'] - moments['stopped']:.2f}s after SIGSTOP; "
            f"first ack through failover {moved:.2f}s after that"
        )
        report("master frozen 8 s", counted, received, marked)
        assert moved < 1.5, f"the producer reached the new master {moved:.2f}s after election"

    run(scenario(), timeout=150)


def test_bridge_leaves_a_frozen_master_within_the_bound(
    brokers: Start, zookeeper: Ensemble
) -> None:
    """a's masterslave:(b,c) link must reach the new master of B within 1.5 s of its
    election when the old master freezes."""
    procs = start_group(brokers, zookeeper, ["b", "c"], replicas=2)
    a = brokers(
        "a", "--group", "A", "--connector",
        f"masterslave:({procs['b'].url},{procs['c'].url})",
    )  # fmt: skip

    async def bridge_to(name: str) -> bool:
        async with await Client.connect(a.url) as client:
            return any(
                b.state == admin_pb2.LINK_UP and not b.inbound and b.peer == name
                for b in (await client.status()).bridges
            )

    async def scenario() -> None:
        old = await wait_in_sync(procs)
        other = next(n for n in procs if n != old)
        await wait_for(lambda: bridge_to(old), 20, f"a's bridge to reach {old}")
        signal_broker(procs[old], signal.SIGSTOP)
        stopped = time.monotonic()
        try:

            async def elected() -> bool:
                return await role(procs[other]) == Role.MASTER

            await wait_for(elected, 15, f"{other} to be elected")
            elected_at = time.monotonic()
            await wait_for(lambda: bridge_to(other), 10, f"a's bridge to reach {other}")
            moved = time.monotonic() - elected_at
        finally:
            signal_broker(procs[old], signal.SIGCONT)
        print(
            f"{other} master {elected_at - stopped:.2f}s after SIGSTOP of {old}; a's bridge "
            f"up to it {moved:.2f}s after that"
        )
        assert moved < 1.5, f"the bridge reached the new master {moved:.2f}s after election"

    run(scenario(), timeout=120)
