"""Topics across networks of real broker processes: a subscriber anywhere receives what
is published anywhere, each message exactly once, in a chain and in a full mesh; a
durable subscription keeps receiving (stored where it lives) while its subscriber is
away; a bridge killed mid-forward loses nothing and repeats nothing unmarked.

Every scenario counts what was published (acknowledged) against what each subscriber
got: lost, repeats, unmarked repeats.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.client import Client, Consumer, Delivery
from tests.integration.test_network import cluster, wait_bridges
from tests.support.aio import run
from tests.support.faults import AbcCluster
from tests.support.procs import BrokerProcess
from tests.support.scenario import check_exactly_once

Start = Callable[..., BrokerProcess]


async def publish_many(client: Client, topic: str, ids: list[str]) -> list[str]:
    producer = client.producer(max_in_flight=500)
    futures = [await producer.publish(topic, mid.encode(), message_id=mid) for mid in ids]
    await producer.flush()
    await producer.close()
    return [f.result() for f in futures]


async def durable(client: Client, topic: str, name: str) -> Consumer:
    return await client.subscribe(topic=topic, client_id="app", subscription=name, prefetch=200)


async def drain(consumer: Consumer, quiet: float = 0.5, limit: int = 100_000) -> list[Delivery]:
    """Everything that arrives until `quiet` seconds pass with nothing (probes left out)."""
    got: list[Delivery] = []
    for _ in range(limit):
        d = await consumer.receive(timeout=quiet)
        if d is None:
            break
        d.ack()
        if not d.id.startswith("probe-"):
            got.append(d)
    return got


async def routes_ready(
    publishers: dict[str, Client], subscribers: list[Consumer], topic: str, timeout: float = 20
) -> None:
    """Publish probes from every publisher until each subscriber has one from each:
    topic demand has travelled the whole network (probes are left out of the counts)."""
    for origin, client in publishers.items():
        seen = [False] * len(subscribers)
        deadline = time.monotonic() + timeout
        n = 0
        while not all(seen):
            if time.monotonic() > deadline:
                raise AssertionError(f"probes from {origin} did not reach every subscriber")
            n += 1
            await client.publish(
                topic, b"probe", message_id=f"probe-{origin}-{n}", persistent=False
            )
            for i, consumer in enumerate(subscribers):
                while (d := await consumer.receive(timeout=0.05)) is not None:
                    d.ack()
                    seen[i] = seen[i] or d.id.startswith(f"probe-{origin}-")


def test_a_topic_in_a_chain_reaches_every_subscriber_once(brokers: Start) -> None:
    links = {"a": ["b"], "b": ["c"], "c": []}
    procs = cluster(brokers, links, duplex="true", networkTTL="2")

    async def scenario() -> None:
        await wait_bridges(procs, links)
        clients = {n: await Client.connect(p.url) for n, p in procs.items()}
        try:
            subs = {n: await clients[n].subscribe(topic="orders.>", prefetch=500) for n in "ac"}
            await routes_ready(
                {"a": clients["a"], "c": clients["c"]}, list(subs.values()), "orders.x"
            )
            sent = await publish_many(clients["a"], "orders.eu", [f"a{i}" for i in range(300)])
            sent += await publish_many(clients["c"], "orders.us", [f"c{i}" for i in range(300)])
            for name, consumer in subs.items():
                got = await drain(consumer)
                print(name, end=": ")
                check_exactly_once(sent, got)
                assert len(got) == len(sent)
        finally:
            for client in clients.values():
                await client.close()

    run(scenario())


def test_a_topic_in_a_full_mesh_reaches_every_subscriber_once(brokers: Start) -> None:
    links = {"a": ["b", "c"], "b": ["c"], "c": []}
    procs = cluster(brokers, links, duplex="true", networkTTL="3")

    async def scenario() -> None:
        await wait_bridges(procs, links)
        clients = {n: await Client.connect(p.url) for n, p in procs.items()}
        try:
            subs = [await clients[n].subscribe(topic="t", prefetch=500) for n in "abc"]
            # A second subscription on b: both get every message (conduit: one copy
            # crosses the bridge, b fans it out).
            subs.append(await clients["b"].subscribe(topic="t", prefetch=500))
            await routes_ready(clients, subs, "t")
            sent: list[str] = []
            for origin, client in clients.items():
                sent += await publish_many(client, "t", [f"{origin}{i}" for i in range(200)])
            for consumer in subs:
                got = await drain(consumer)
                check_exactly_once(sent, got)
                assert len(got) == len(sent)
        finally:
            for client in clients.values():
                await client.close()

    run(scenario())


def test_a_durable_subscription_across_the_network_keeps_receiving_while_away(
    brokers: Start,
) -> None:
    links = {"a": ["b"], "b": []}
    procs = cluster(brokers, links, duplex="true")

    async def scenario() -> None:
        await wait_bridges(procs, links)
        async with (
            await Client.connect(procs["a"].url) as ca,
            await Client.connect(procs["b"].url) as cb,
        ):
            consumer = await durable(cb, "alerts", "s1")
            await routes_ready({"a": ca}, [consumer], "alerts")
            first = await publish_many(ca, "alerts", [f"x{i}" for i in range(100)])
            got = await drain(consumer)
            await consumer.close()
            # Away: what is published on a now is stored on b for the subscription.
            second = await publish_many(ca, "alerts", [f"y{i}" for i in range(200)])
            procs["b"].kill()
            procs["b"].start()
        async with await Client.connect(procs["b"].url) as cb:
            consumer = await durable(cb, "alerts", "s1")
            got += await drain(consumer, quiet=2.0)
            check_exactly_once(first + second, got, marked_ok=True)
            await consumer.close()

    run(scenario())


def test_a_bridge_killed_mid_forward_loses_no_topic_message(brokers: Start) -> None:
    """kill -9 of the forwarding broker while persistent topic messages cross: what its
    producer had acknowledged reaches the durable subscriber behind the bridge after the
    restart, and nothing arrives twice unmarked."""
    links = {"a": ["b"], "b": []}
    procs = cluster(brokers, links, duplex="true")

    async def scenario() -> None:
        await wait_bridges(procs, links)
        async with await Client.connect(procs["b"].url) as cb:
            consumer = await durable(cb, "feed", "s")
            async with await Client.connect(procs["a"].url) as ca:
                await routes_ready({"a": ca}, [consumer], "feed")
                acked: list[str] = []
                producer = ca.producer(max_in_flight=200)
                futures = [
                    await producer.publish("feed", b"x", message_id=f"m{i}") for i in range(3000)
                ]
                # Kill a while its bridge is forwarding (some acked, some not).
                for _ in range(500):
                    if sum(f.done() for f in futures) > 500:
                        break
                    await asyncio.sleep(0.01)
                procs["a"].kill()
                acked = [f.result() for f in futures if f.done() and not f.exception()]
                for f in futures:
                    if not f.done():
                        f.cancel()
            procs["a"].start()
            got = await drain(consumer, quiet=3.0)
            await consumer.close()
        print(f"acked before the kill: {len(acked)}")
        assert len(acked) > 500
        received = {d.id for d in got}
        lost = [mid for mid in acked if mid not in received]
        assert not lost, f"{len(lost)} acknowledged topic messages lost"
        check_exactly_once(acked, [d for d in got if d.id in set(acked)], marked_ok=True)

    run(scenario())


@pytest.fixture
def abc(tmp_path: Path) -> Iterator[AbcCluster]:
    started = AbcCluster(tmp_path)
    try:
        yield started.start()
    finally:
        started.stop()


@pytest.mark.parametrize("publisher_on", ["a", "B"])
def test_a_durable_topic_subscription_across_a_failover_of_b(
    abc: AbcCluster, publisher_on: str
) -> None:
    """ab_c: a durable subscriber on one side, a publisher through `failover:(…)` on
    the other; B's master is killed -9 mid-stream. Every acknowledged message reaches the
    subscriber, repeats only marked: B's copies (its subscription's, or its bridge's
    topic queue) were replicated to the slave that takes over, and the receiver's
    duplicate check knows a resend from the new master as the group's same forward."""

    async def scenario() -> None:
        await abc.ready()
        pub_url, sub_url = (abc.a_url, abc.b_url) if publisher_on == "a" else (abc.b_url, abc.a_url)
        async with await Client.connect(pub_url) as pc, await Client.connect(sub_url) as sc:
            consumer = await durable(sc, "ticks", "s")
            await routes_ready({publisher_on: pc}, [consumer], "ticks")
            producer = pc.producer(max_in_flight=100)
            got: list[Delivery] = []
            futures = []
            killed = False
            for i in range(2000):
                futures.append(await producer.publish("ticks", b"x", message_id=f"m{i}"))
                if i % 50 == 0:
                    while (d := await consumer.receive(timeout=0)) is not None:
                        d.ack()
                        if not d.id.startswith("probe-"):
                            got.append(d)
                if i == 800 and not killed:
                    killed = True
                    master = await abc.master()
                    assert master is not None
                    abc.group[master].kill()
            await producer.flush()
            acked = [f.result() for f in futures]
            got += await drain(consumer, quiet=3.0)
            await consumer.close()
        check_exactly_once(acked, got, marked_ok=True)

    run(scenario(), timeout=120)


def test_excluded_destinations_apply_to_topics(brokers: Start) -> None:
    links = {"a": ["b"], "b": []}
    procs = cluster(brokers, links, duplex="true", excludedDestinations="secret.>")

    async def scenario() -> None:
        await wait_bridges(procs, links)
        async with (
            await Client.connect(procs["a"].url) as ca,
            await Client.connect(procs["b"].url) as cb,
        ):
            remote = await cb.subscribe(topic=">", prefetch=500)
            local = await ca.subscribe(topic=">", prefetch=500)
            await routes_ready({"a": ca}, [remote, local], "public.x")
            public = await publish_many(ca, "public.x", [f"p{i}" for i in range(50)])
            secret = await publish_many(ca, "secret.x", [f"s{i}" for i in range(50)])
            got_remote = await drain(remote)
            got_local = await drain(local)
        check_exactly_once(public, got_remote)
        assert {d.id for d in got_remote} == set(public)  # nothing of secret.> crossed
        check_exactly_once(public + secret, got_local)

    run(scenario())
