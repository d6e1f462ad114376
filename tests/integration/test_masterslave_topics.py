"""A durable topic subscription in a master/slave group survives a kill -9 of the
master: its record and the messages kept for it were replicated, so the new master
knows it, keeps what was published while its subscriber was away, and the subscriber
(on a failover URL) resumes there. Real ZooKeeper, real broker processes.

Counted: sent (acknowledged to the publisher), acked by the subscriber before the kill,
received after, lost 0, repeats only marked redelivered.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

from broker.client import Client, Delivery
from tests.support.aio import run
from tests.support.faults import Tally
from tests.support.groups import Start, start_group, wait_in_sync, wait_master
from tests.support.scenario import check_exactly_once
from tests.support.zk import Ensemble

DURABLE: dict[str, Any] = {"topic": "orders.*", "client_id": "shop", "subscription": "ledger"}


def test_durable_subscription_across_failover(brokers: Start, zookeeper: Ensemble) -> None:
    procs = start_group(brokers, zookeeper, ["b", "c"], replicas=2)

    async def scenario() -> None:
        master = await wait_in_sync(procs)
        url = f"failover:({procs['b'].url},{procs['c'].url})"
        sent: list[str] = []
        got: list[Delivery] = []
        async with await Client.connect(url) as client:
            subscriber = await client.subscribe(**DURABLE, prefetch=100)
            producer = client.producer(max_in_flight=200)
            # Online: published and consumed together.
            futures = [await producer.publish("orders.eu", b"on%d" % i) for i in range(500)]
            await producer.flush()
            sent += [f.result() for f in futures]
            while len(got) < 300:
                d = await subscriber.receive(timeout=10)
                assert d is not None, f"stalled after {len(got)}"
                got.append(d)
                d.ack()
            acked_before = len(got)
            await subscriber.close()
            # Offline: kept for the subscription, in the store of both members.
            futures = [await producer.publish("orders.us", b"off%d" % i) for i in range(2_000)]
            await producer.flush()
            sent += [f.result() for f in futures]
            await producer.close()
        await wait_in_sync(procs)
        procs[master].kill()
        killed = time.monotonic()
        survivor = await wait_master(procs)
        assert survivor != master
        print(f"{survivor} took over {time.monotonic() - killed:.2f}s after kill -9 of {master}")
        async with await Client.connect(url) as client:
            subscriber = await client.subscribe(**DURABLE, prefetch=500)
            # And published after the failover too, while its subscriber is online.
            producer = client.producer()
            futures = [await producer.publish("orders.eu", b"after%d" % i) for i in range(200)]
            await producer.flush()
            sent += [f.result() for f in futures]
            await producer.close()
            expect = len(sent) - acked_before
            after: list[Delivery] = []
            while len(after) < expect:
                d = await subscriber.receive(timeout=10)
                if d is None:
                    break
                after.append(d)
                d.ack()
            while (d := await subscriber.receive(timeout=0.5)) is not None:
                after.append(d)
                d.ack()
            await subscriber.close()
        # Acked before the kill and lost from the slave's copy would come back marked.
        check_exactly_once(sent, got + after, marked_ok=True)
        unmarked_repeats = len({d.id for d in got} & {d.id for d in after if not d.redelivered})
        print(
            f"sent {len(sent)}, acked before the kill {acked_before}, received after "
            f"{len(after)}, lost 0, unmarked repeats {unmarked_repeats}"
        )
        assert unmarked_repeats == 0

    run(scenario(), timeout=180)


def test_live_durable_subscriber_through_a_kill_of_the_master(
    brokers: Start, zookeeper: Ensemble
) -> None:
    """Publisher and durable subscriber both on `failover:(b,c)`, running while the
    master is killed: the subscriber resubscribes on the new master and gets the rest."""
    procs = start_group(brokers, zookeeper, ["b", "c"], replicas=2)

    async def scenario() -> None:
        master = await wait_in_sync(procs)
        url = f"failover:({procs['b'].url},{procs['c'].url})"
        tally = Tally()
        done = asyncio.Event()
        async with await Client.connect(url) as sub_client:
            subscriber = await sub_client.subscribe(**DURABLE, prefetch=200)

            async def consume() -> None:
                idle = 0.0
                while not (done.is_set() and idle >= 2.0):
                    d = await subscriber.receive(timeout=0.5)
                    if d is None:
                        idle += 0.5
                        continue
                    idle = 0.0
                    tally.on_received(int(d.body), d.redelivered)
                    d.ack()

            def settled(number: int, future: asyncio.Future[str]) -> None:
                if not future.cancelled() and future.exception() is None:
                    tally.on_ack(number, time.monotonic())
                else:
                    tally.on_failed(
                        number, "cancelled" if future.cancelled() else repr(future.exception())
                    )

            consumer = asyncio.create_task(consume())
            async with await Client.connect(url) as pub_client:
                producer = pub_client.producer(max_in_flight=200)
                killed_at = 0.0
                for i in range(6_000):
                    number = tally.on_sent()
                    future = await producer.publish("orders.eu", str(number).encode())
                    future.add_done_callback(functools.partial(settled, number))
                    if i == 2_000:
                        procs[master].kill()
                        killed_at = time.monotonic()
                    if i % 50 == 0:
                        await asyncio.sleep(0.005)
                await producer.flush()
                await producer.close()
            print(f"all publishes acknowledged {time.monotonic() - killed_at:.2f}s after the kill")
            done.set()
            await asyncio.wait_for(consumer, 120)
            await subscriber.close()
        tally.check()
        assert len(tally.acked) == tally.sent

    run(scenario(), timeout=240)
