"""Bridges under faults, with traffic running through them: real broker processes, a real
ZooKeeper for the group, `kill -9` for crashes. Each test counts sent, acknowledged,
received, lost (acknowledged, never received), repeats and unmarked repeats.

* A link that drops while the receiver is storing a batch (its forwarder killed mid-
  forward, again and again): the receiver must not keep a stored message out of its
  queue, nor drop the forwarder's resend of it.
* A group's master killed mid-forward: the new master re-forwards what the old one had
  forwarded but whose removal had not reached it; the peer must take that for the same
  forward and drop it, not deliver it again unmarked.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from broker.client import Client, Consumer, Delivery
from broker.cluster.zookeeper import Ensemble
from broker.pb import admin_pb2
from tests.support.aio import run
from tests.support.groups import start_group, wait_in_sync, wait_master
from tests.support.procs import BrokerProcess, free_port
from tests.support.scenario import check_exactly_once, demand_seen, wait_for

Start = Callable[..., BrokerProcess]

# A short form for every run, and the long one (more traffic, more faults) marked slow.
SIZES = [
    pytest.param(8_000, 4, id="short"),
    pytest.param(16_000, 4, id="long", marks=pytest.mark.slow),
]
GROUP_SIZES = [
    pytest.param(6_000, id="short"),
    pytest.param(16_000, id="long", marks=pytest.mark.slow),
]


async def bridges_up(url: str, count: int = 1) -> bool:
    try:
        async with await Client.connect(url) as client:
            status = await client.status()
    except Exception:
        return False
    return sum(1 for b in status.bridges if b.state == admin_pb2.LINK_UP) >= count


@dataclass
class Traffic:
    """A numbered producer and one consumer, counted."""

    sent: int = 0
    acked: list[str] = field(default_factory=list)
    failed: int = 0
    got: list[Delivery] = field(default_factory=list)

    def report(self, what: str) -> None:
        counts = collections.Counter(d.id for d in self.got)
        lost = set(self.acked) - set(counts)
        repeats = sum(n - 1 for n in counts.values())
        first = collections.Counter(d.id for d in self.got if not d.redelivered)
        unmarked = sum(n - 1 for n in first.values())
        print(
            f"{what}: sent {self.sent}, acked {len(self.acked)}, failed {self.failed}, "
            f"received {len(self.got)}, lost {len(lost)}, repeats {repeats}, "
            f"unmarked repeats {unmarked}"
        )


async def produce(url: str, queue: str, total: int, traffic: Traffic, rate: float) -> None:
    """`total` numbered persistent messages at about `rate` per second through `url`."""
    async with await Client.connect(url) as client:
        producer = client.producer(max_in_flight=500)
        futures = []
        started = time.monotonic()
        for i in range(total):
            futures.append(await producer.send(queue, str(i).encode()))
            traffic.sent += 1
            ahead = started + (i + 1) / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
        await producer.flush()
        for future in futures:
            try:
                traffic.acked.append(future.result())
            except Exception:
                traffic.failed += 1
        await producer.close()


async def consume_until(
    consumer: Consumer, traffic: Traffic, done: Callable[[], bool], idle: float = 15.0
) -> None:
    """Receive and ack until `done()` (checked as messages come), or nothing for `idle`."""
    while not done():
        d = await consumer.receive(timeout=idle)
        if d is None:
            return
        traffic.got.append(d)
        d.ack()


async def settle(consumer: Consumer, traffic: Traffic, production: Awaitable[None]) -> None:
    """Let production end, take every acknowledged message, then anything more (which
    would be a repeat)."""
    await asyncio.wait_for(production, 120)
    expected = set(traffic.acked)
    await consume_until(consumer, traffic, lambda: expected <= {d.id for d in traffic.got})
    while (d := await consumer.receive(timeout=1.5)) is not None:
        traffic.got.append(d)
        d.ack()


@pytest.mark.parametrize(("total", "kills"), SIZES)
def test_a_link_dropped_while_the_receiver_stores_loses_nothing(
    brokers: Start, total: int, kills: int
) -> None:
    """a forwards to b under steady traffic; a is killed mid-forward again and again, so
    b's link drops with batches being stored, and a resends them on its next link."""
    port_b = free_port()
    b = brokers("b", port=port_b)
    a = brokers("a", "--connector", f"static:(127.0.0.1:{port_b})", port=free_port())
    rate = 2_000.0
    traffic = Traffic()

    async def scenario() -> None:
        await wait_for(lambda: bridges_up(a.url), 15, "a's bridge")
        async with await Client.connect(b.url) as cb:
            consumer = await cb.subscribe("steady", prefetch=500)
            async with await Client.connect(a.url) as ca:
                await wait_for(lambda: demand_seen(ca, "steady"), 10, "a to see b's demand")
            production = asyncio.create_task(
                produce(f"failover:({a.url})", "steady", total, traffic, rate)
            )
            for k in range(1, kills + 1):
                target = total * k // (kills + 2)

                def reached(t: int = target) -> bool:
                    return len(traffic.got) >= t

                await consume_until(consumer, traffic, reached)
                assert len(traffic.got) >= target, f"stalled at {len(traffic.got)}"
                a.kill()
                a.start()
                await wait_for(lambda: bridges_up(a.url), 15, "a's bridge back")
            await settle(consumer, traffic, production)
            await consumer.close()
        traffic.report("link drops while storing")
        assert traffic.failed == 0 and len(traffic.acked) == total
        check_exactly_once(traffic.acked, traffic.got, marked_ok=True)

    run(scenario(), timeout=240)


@pytest.mark.parametrize("total", GROUP_SIZES)
def test_a_new_masters_reforward_is_not_delivered_again(
    brokers: Start, zookeeper: Ensemble, total: int
) -> None:
    """Group B (master and slave) forwards to a, where the consumer is; the master is
    killed mid-forward and the slave, master now, forwards what it holds."""
    port_a = free_port()
    a = brokers("a", port=port_a)
    group = start_group(
        brokers, zookeeper, ["b", "c"], 2, connectors=(f"static:(127.0.0.1:{port_a})",)
    )
    rate = 2_000.0
    traffic = Traffic()

    async def scenario() -> None:
        master = await wait_in_sync(group)
        survivor = next(n for n in group if n != master)
        await wait_for(lambda: bridges_up(group[master].url), 15, f"{master}'s bridge to a")
        url = f"failover:({group['b'].url},{group['c'].url})"
        async with await Client.connect(a.url) as ca:
            consumer = await ca.subscribe("through", prefetch=500)
            async with await Client.connect(group[master].url) as cm:
                await wait_for(lambda: demand_seen(cm, "through"), 10, f"{master} to see demand")
            production = asyncio.create_task(produce(url, "through", total, traffic, rate))
            await consume_until(consumer, traffic, lambda: len(traffic.got) >= total // 3)
            assert len(traffic.got) >= total // 3, f"stalled at {len(traffic.got)}"
            group[master].kill()
            killed = time.monotonic()
            assert await wait_master(group) == survivor
            await wait_for(lambda: bridges_up(group[survivor].url), 15, f"{survivor}'s bridge")
            print(f"{survivor} forwarding {time.monotonic() - killed:.2f}s after the kill")
            await settle(consumer, traffic, production)
            await consumer.close()
        traffic.report(f"{master} killed mid-forward")
        assert traffic.failed == 0 and len(traffic.acked) == total
        # Nothing at a was handed out twice (a neither crashed nor lost a consumer): any
        # repeat, marked or not, is a re-forward taken for a new message.
        check_exactly_once(traffic.acked, traffic.got)
        # Paths name the group, not the member that forwarded.
        assert {tuple(d.message.broker_path) for d in traffic.got} == {("B", "a")}

    run(scenario(), timeout=240)
