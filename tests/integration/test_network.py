"""Networks of real broker processes: demand routing, store and forward, loops, crashes.

Every scenario counts what was sent against what was received: nothing lost, and no
message delivered twice unless it is marked redelivered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from broker.client import Client, Consumer, Delivery
from broker.pb import admin_pb2
from tests.support.aio import run
from tests.support.procs import BrokerProcess, free_port
from tests.support.scenario import (
    check_exactly_once,
    demand_seen,
    known_queue,
    queue_info,
    receive_all,
    send_many,
    take,
    wait_for,
)

Start = Callable[..., BrokerProcess]


def cluster(
    brokers: Start, links: dict[str, list[str]], **options: str
) -> dict[str, BrokerProcess]:
    """Start brokers named in `links`, each with a static connector to the ones it lists."""
    ports = {name: free_port() for name in links}
    query = "&".join(f"{k}={v}" for k, v in options.items())
    started = {}
    for name, targets in links.items():
        args: list[str] = []
        for target in targets:
            uri = f"static:(127.0.0.1:{ports[target]})" + (f"?{query}" if query else "")
            args += ["--connector", uri]
        started[name] = brokers(name, *args, port=ports[name])
    return started


async def bridges_up(url: str, count: int) -> bool:
    async with await Client.connect(url) as client:
        status = await client.status()
        return sum(1 for b in status.bridges if b.state == admin_pb2.LINK_UP) >= count


async def wait_bridges(procs: dict[str, BrokerProcess], links: dict[str, list[str]]) -> None:
    for name, targets in links.items():
        url, count = procs[name].url, len(targets)
        await wait_for(lambda: bridges_up(url, count), 15, f"{name}'s bridges")  # noqa: B023


@contextlib.asynccontextmanager
async def consumer_behind_bridge(
    a: BrokerProcess, b: BrokerProcess, queue: str, prefetch: int
) -> AsyncIterator[tuple[Client, Client, Consumer]]:
    """Clients of a and b, and a consumer of `queue` on b whose demand a has seen."""
    await wait_for(lambda: bridges_up(a.url, 1), 15, "a's bridge")
    async with await Client.connect(a.url) as ca, await Client.connect(b.url) as cb:
        consumer = await cb.subscribe(queue, prefetch=prefetch)
        await wait_for(lambda: demand_seen(ca, queue), 10, "a to see b's demand")
        yield ca, cb, consumer


async def _held_beyond(client: Client, queue: str, acked: int) -> bool:
    info = await known_queue(client, queue)
    return info.dequeued >= acked and info.depth > 0


def test_producer_on_a_consumer_on_b(brokers: Start) -> None:
    links = {"a": ["b"], "b": []}
    procs = cluster(brokers, links)

    async def scenario() -> None:
        await wait_bridges(procs, links)
        async with (
            await Client.connect(procs["b"].url) as cb,
            await Client.connect(procs["a"].url) as ca,
        ):
            consumer = await cb.subscribe("orders", prefetch=200)
            await wait_for(lambda: demand_seen(ca, "orders"), 10, "a to see b's demand")
            sent = await send_many(ca, "orders", [str(i).encode() for i in range(3_000)])
            got = await take(consumer, len(sent))
            await consumer.close()
            check_exactly_once(sent, got)
            assert all(list(d.message.broker_path) == ["a", "b"] for d in got)
            info = await queue_info(ca, "orders")
            assert info is not None and info.depth == 0

    run(scenario())


def test_slow_consumers_on_a_and_b_share_the_work(brokers: Start) -> None:
    links = {"a": ["b"], "b": []}
    procs = cluster(brokers, links)
    total, rate = 600, 100.0  # two consumers at 100 msg/s each: about 3 s together

    async def slow(
        url: str, queue: str, counts: collections.Counter[str], done: asyncio.Event
    ) -> list[Delivery]:
        got: list[Delivery] = []
        async with await Client.connect(url) as client:
            consumer = await client.subscribe(queue, prefetch=5)
            while not done.is_set():
                d = await consumer.receive(timeout=0.2)
                if d is None:
                    continue
                got.append(d)
                counts[d.id] += 1
                await asyncio.sleep(1 / rate)
                d.ack()
                if sum(counts.values()) >= total:
                    done.set()
            await consumer.close()
        return got

    async def scenario() -> None:
        await wait_bridges(procs, links)
        async with await Client.connect(procs["a"].url) as ca:
            counts: collections.Counter[str] = collections.Counter()
            done = asyncio.Event()
            sent = await send_many(ca, "work", [str(i).encode() for i in range(total)])
            start = time.monotonic()
            on_a, on_b = await asyncio.gather(
                slow(procs["a"].url, "work", counts, done),
                slow(procs["b"].url, "work", counts, done),
            )
            elapsed = time.monotonic() - start
            check_exactly_once(sent, on_a + on_b)
            print(
                f"a took {len(on_a)}, b took {len(on_b)} in {elapsed:.1f}s "
                f"(two local consumers: {total / (2 * rate):.1f}s)"
            )
            # Both worked: b's share came over the bridge while a's consumer was busy.
            assert len(on_a) > total / 4 and len(on_b) > total / 4

    run(scenario(), timeout=120)


def test_consumer_moving_from_b_to_a_strands_nothing(brokers: Start) -> None:
    links = {"a": ["b"], "b": ["a"]}
    procs = cluster(brokers, links)
    total = 2_000

    async def scenario() -> None:
        await wait_bridges(procs, links)
        async with (
            await Client.connect(procs["a"].url) as ca,
            await Client.connect(procs["b"].url) as cb,
        ):
            on_b = await cb.subscribe("moving", prefetch=50)
            await wait_for(lambda: demand_seen(ca, "moving"), 10, "a to see b's demand")
            sent = await send_many(ca, "moving", [str(i).encode() for i in range(total)])
            got: list[Delivery] = []
            # b's consumer leaves after a quarter, with messages still pending on b.
            while len(got) < total // 4:
                d = await on_b.receive(timeout=10)
                assert d is not None
                got.append(d)
                d.ack()
            # Held on b beyond what was received (pending there, or prefetched by the
            # consumer), once b has taken every ack: under load the forwarder may only now
            # be catching up, and what the consumer holds returns to b when it leaves.
            acked = len(got)
            await wait_for(
                lambda: _held_beyond(cb, "moving", acked), 10, "messages on b beyond those acked"
            )
            await on_b.close()
            stranded = (await known_queue(cb, "moving")).pending
            # Else the run moved nothing back, and would pass with the move broken.
            assert stranded > 0, "nothing was pending on b when its consumer left"
            on_a = await ca.subscribe("moving", prefetch=50)
            while len(got) < total:
                d = await on_a.receive(timeout=10)
                assert d is not None, f"stalled at {len(got)}: {await queue_info(ca, 'moving')}"
                got.append(d)
                d.ack()
            await on_a.close()
            print(f"pending on b when its consumer left: {stranded}")
            check_exactly_once(sent, got)
            assert (await known_queue(cb, "moving")).depth == 0
            assert (await known_queue(ca, "moving")).depth == 0

    run(scenario(), timeout=120)


def chain_delivers(brokers: Start, ttl: int) -> tuple[int, int]:
    """A-B-C with networkTTL `ttl`, producer on a, consumer on c: (received on c, left on a)."""
    links = {"a": ["b"], "b": ["c"], "c": []}
    procs = cluster(brokers, links, networkTTL=str(ttl))
    n = 500

    async def scenario() -> tuple[int, int]:
        await wait_bridges(procs, links)
        async with (
            await Client.connect(procs["a"].url) as ca,
            await Client.connect(procs["b"].url) as cb,
            await Client.connect(procs["c"].url) as cc,
        ):
            consumer = await cc.subscribe("far", prefetch=100)
            # Demand reaches b either way; a sees it only when the TTL allows two hops.
            await wait_for(lambda: demand_seen(cb, "far"), 10, "b to see c's demand")
            if ttl >= 2:
                await wait_for(lambda: demand_seen(ca, "far"), 10, "a to see c's demand")
            else:
                # Control: demand that b advertises later reaches a, so whatever b had to
                # say about c's consumer has reached a too.
                control = await cb.subscribe("near", prefetch=10)
                await wait_for(lambda: demand_seen(ca, "near"), 10, "a to see b's demand")
                await control.close()
            sent = await send_many(ca, "far", [str(i).encode() for i in range(n)])
            got: list[Delivery] = []
            if ttl >= 2:
                got = await take(consumer, n)
                check_exactly_once(sent, got)
                assert all(list(d.message.broker_path) == ["a", "b", "c"] for d in got)
            info = await queue_info(ca, "far")
            assert info is not None
            if ttl < 2:
                assert info.consumers == 0  # no bridge consumes far on a: nothing can leave
            await consumer.close()
            return len(got), info.depth

    return run(scenario(), timeout=120)


def test_chain_with_network_ttl_2_reaches_the_far_consumer(brokers: Start) -> None:
    assert chain_delivers(brokers, 2) == (500, 0)


def test_chain_with_network_ttl_1_stops_after_one_hop(brokers: Start) -> None:
    assert chain_delivers(brokers, 1) == (0, 500)


def test_full_mesh_delivers_once_without_loops(brokers: Start) -> None:
    links = {"a": ["b", "c"], "b": ["a", "c"], "c": ["a", "b"]}
    procs = cluster(brokers, links, networkTTL="2")
    n = 2_000

    async def scenario() -> None:
        await wait_bridges(procs, links)
        clients = {name: await Client.connect(p.url) for name, p in procs.items()}
        try:
            consumer = await clients["c"].subscribe("mesh", prefetch=100)
            await wait_for(lambda: demand_seen(clients["a"], "mesh"), 10, "a to see c's demand")
            sent = await send_many(clients["a"], "mesh", [str(i).encode() for i in range(n)])
            got: list[Delivery] = []
            while len(got) < n:
                d = await consumer.receive(timeout=10)
                assert d is not None, f"stalled at {len(got)}"
                got.append(d)
                d.ack()
            # Nothing more arrives: no copy is circling the mesh.
            assert await consumer.receive(timeout=1) is None
            await consumer.close()
            check_exactly_once(sent, got)
            for d in got:
                path = list(d.message.broker_path)
                assert path[0] == "a" and path[-1] == "c" and len(set(path)) == len(path), path
            for name in ("a", "b"):
                info = await queue_info(clients[name], "mesh")
                assert info is None or info.depth == 0, (name, info)
        finally:
            for client in clients.values():
                await client.close()

    run(scenario(), timeout=120)


def test_excluded_and_statically_included_destinations(brokers: Start) -> None:
    ports = {"a": free_port(), "b": free_port()}
    uri = (
        f"static:(127.0.0.1:{ports['b']})?excludedDestinations=secret.>"
        "&staticallyIncludedDestinations=audit"
    )
    a = brokers("a", "--connector", uri, port=ports["a"])
    b = brokers("b", port=ports["b"])

    async def scenario() -> None:
        await wait_for(lambda: bridges_up(a.url, 1), 15, "a's bridge")
        async with await Client.connect(a.url) as ca, await Client.connect(b.url) as cb:
            secret = await cb.subscribe("secret.plans", prefetch=10)
            # Control: demand b advertises after secret.plans' reaches a, so that has too
            # (and must not matter: the queue is excluded).
            public = await cb.subscribe("public", prefetch=10)
            await wait_for(lambda: demand_seen(ca, "public"), 10, "a to see b's demand")
            await ca.send("secret.plans", b"stay")
            # audit has no consumer anywhere, yet goes to b: statically included.
            await ca.send("audit", b"copy")

            async def audit_on_b() -> bool:
                info = await queue_info(cb, "audit")
                return info is not None and info.pending == 1

            await wait_for(audit_on_b, 10, "audit to be forwarded to b")
            # Nothing of the excluded queue reached b, and nothing on a would send it.
            on_b = await queue_info(cb, "secret.plans")
            assert on_b is not None and on_b.depth == 0
            assert await secret.receive(timeout=0) is None
            await secret.close()
            await public.close()
            info = await queue_info(ca, "secret.plans")
            assert info is not None and info.pending == 1 and info.consumers == 0
            assert [d.body for d in await receive_all(cb, "audit", 1)] == [b"copy"]

    run(scenario())


def test_duplex_link_forwards_back_under_the_openers_settings(brokers: Start) -> None:
    # Only a has a connector; b forwards to a over the same link, honouring its excludes.
    b = brokers("b")
    a = brokers("a", "--connector", f"static:({b.url})?duplex=true&excludedDestinations=secret.>")
    n = 300

    async def scenario() -> None:
        await wait_for(lambda: bridges_up(a.url, 1), 15, "a's bridge")
        async with await Client.connect(a.url) as ca, await Client.connect(b.url) as cb:
            work = await ca.subscribe("work", prefetch=100)
            secret = await ca.subscribe("secret.plans", prefetch=10)
            await wait_for(lambda: demand_seen(cb, "work"), 10, "b to see a's demand")
            await cb.send("secret.plans", b"stay")
            sent = await send_many(cb, "work", [str(i).encode() for i in range(n)])
            got = await take(work, n)
            check_exactly_once(sent, got)
            assert {tuple(d.message.broker_path) for d in got} == {("b", "a")}
            # b keeps it: no network consumer was made for the excluded queue.
            info = await queue_info(cb, "secret.plans")
            assert info is not None and info.pending == 1 and info.consumers == 0, info
            await work.close()
            await secret.close()

    run(scenario())


def test_a_bridge_holds_at_most_prefetch_size_unacknowledged(brokers: Start) -> None:
    # b's consumer takes 1,000 ahead, so credit would allow 1,000 on the way; with b frozen
    # (no acknowledgements) a must stop at prefetchSize.
    b = brokers("b")
    a = brokers("a", "--connector", f"static:({b.url})?prefetchSize=50")
    n = 500

    async def scenario() -> None:
        async with consumer_behind_bridge(a, b, "held", 1000) as (ca, _, consumer):
            assert b.proc is not None
            os.kill(b.proc.pid, signal.SIGSTOP)
            try:
                sent = await send_many(ca, "held", [str(i).encode() for i in range(n)])

                async def all_stored() -> admin_pb2.QueueInfo | None:
                    info = await queue_info(ca, "held")
                    if info is None or info.pending + info.in_flight != n:
                        return None
                    return info if info.in_flight > 0 else None

                info = await wait_for(all_stored, 10, "a to forward")
                assert (info.in_flight, info.pending) == (50, n - 50), info
            finally:
                os.kill(b.proc.pid, signal.SIGCONT)
            got = await take(consumer, n)
            check_exactly_once(sent, got)
            await consumer.close()

    run(scenario())


def test_a_message_the_peer_cannot_store_is_dead_lettered_alone(brokers: Start) -> None:
    # b takes bodies up to 2,000 bytes, a up to its default: one big message among small
    # ones goes to a's DLQ with b's reason; its batch-mates are forwarded, once each.
    b = brokers("b", "--max-message-bytes", "2000")
    a = brokers("a", "--connector", f"static:({b.url})")
    n = 200

    async def scenario() -> None:
        async with consumer_behind_bridge(a, b, "mixed", 500) as (ca, _, consumer):
            bodies = [str(i).encode() for i in range(n)]
            bodies.insert(n // 2, b"x" * 5_000)
            sent = await send_many(ca, "mixed", bodies)
            big = sent.pop(n // 2)
            got = await take(consumer, n)
            check_exactly_once(sent, got)
            assert all(not d.redelivered for d in got)

            async def dead_letter() -> list[Any] | None:
                # The dead-letter queue appears once the move is written.
                if await queue_info(ca, "DLQ.mixed") is None:
                    return None
                return await ca.browse("DLQ.mixed")

            [dead] = await wait_for(dead_letter, 10, "the big message in a's DLQ")
            assert dead.id == big and len(dead.body) == 5_000
            assert dead.headers["dlq_reason"].startswith("refused by b: message body is 5000")
            info = await queue_info(ca, "mixed")
            assert info is not None and info.depth == 0, info
            await consumer.close()

    run(scenario())


def test_masterslave_connector_moves_to_the_next_address(brokers: Start) -> None:
    ports = {"x": free_port(), "y": free_port()}
    uri = f"masterslave:(127.0.0.1:{ports['x']},127.0.0.1:{ports['y']})"
    x = brokers("x", port=ports["x"])
    y = brokers("y", port=ports["y"])
    a = brokers("a", "--connector", uri)

    async def bridge_peer() -> str:
        async with await Client.connect(a.url) as client:
            for b in (await client.status()).bridges:
                if b.state == admin_pb2.LINK_UP and not b.inbound:
                    return b.peer
        return ""

    async def scenario() -> None:
        await wait_for(lambda: bridge_peer(), 15, "a's bridge")
        assert await bridge_peer() == "x"
        x.kill()
        started = time.monotonic()
        await wait_for(lambda: _is(bridge_peer, "y"), 10, "the bridge to move to y")
        print(f"bridge moved to y {time.monotonic() - started:.2f}s after x was killed")
        async with await Client.connect(a.url) as ca, await Client.connect(y.url) as cy:
            consumer = await cy.subscribe("ms", prefetch=100)
            await wait_for(lambda: demand_seen(ca, "ms"), 10, "a to see y's demand")
            sent = await send_many(ca, "ms", [str(i).encode() for i in range(300)])
            got = await take(consumer, len(sent))
            await consumer.close()
            check_exactly_once(sent, got)

    run(scenario())


async def _is(probe: Callable[[], object], value: object) -> bool:
    return await probe() == value  # type: ignore[misc]


def test_kill_9_of_a_then_b_during_forwarding_loses_nothing(brokers: Start) -> None:
    links = {"a": ["b"], "b": []}
    procs = cluster(brokers, links)
    a, b = procs["a"], procs["b"]
    total = 6_000

    async def scenario() -> None:
        await wait_bridges(procs, links)
        got: list[Delivery] = []
        async with (
            await Client.connect(f"failover:({a.url})") as ca,
            await Client.connect(f"failover:({b.url})") as cb,
        ):
            consumer = await cb.subscribe("crashy", prefetch=100)
            await wait_for(lambda: demand_seen(ca, "crashy"), 10, "a to see b's demand")
            producer = ca.producer(max_in_flight=500)
            futures = []

            async def produce() -> None:
                for i in range(total):
                    futures.append(await producer.send("crashy", str(i).encode()))
                await producer.flush()

            sending = asyncio.create_task(produce())

            async def receive_until(count: int) -> None:
                while len(got) < count:
                    d = await consumer.receive(timeout=30)
                    assert d is not None, (
                        f"stalled at {len(got)}: a {await queue_info(ca, 'crashy')} "
                        f"{await ca.status()} b {await queue_info(cb, 'crashy')}"
                    )
                    got.append(d)
                    d.ack()

            await receive_until(total // 4)
            a.kill()
            a.start()
            await receive_until(total // 2)
            b.kill()
            b.start()
            await asyncio.wait_for(sending, 60)
            sent = [f.result() for f in futures]
            await receive_until(len(set(sent)))
            # Anything still arriving now would be a duplicate.
            while (d := await consumer.receive(timeout=1)) is not None:
                got.append(d)
                d.ack()
            await consumer.close()
            await producer.close()
            redelivered = sum(1 for d in got if d.redelivered)
            print(f"redelivered (marked) {redelivered}")
            check_exactly_once(sent, got, marked_ok=True)

    run(scenario(), timeout=180)


async def _consumers_on(client: Client, queue: str, count: int) -> bool:
    info = await queue_info(client, queue)
    return info is not None and info.consumers >= count


async def _collect(
    consumers: list[Consumer], count: int, timeout: float = 20.0
) -> list[list[Delivery]]:
    """Receive and ack on every consumer at once until `count` arrived in all."""
    got: list[list[Delivery]] = [[] for _ in consumers]
    enough = asyncio.Event()

    async def pull(index: int) -> None:
        while not enough.is_set():
            d = await consumers[index].receive(timeout=0.2)
            if d is None:
                continue
            d.ack()
            got[index].append(d)
            if sum(map(len, got)) >= count:
                enough.set()

    tasks = [asyncio.create_task(pull(i)) for i in range(len(consumers))]
    try:
        await asyncio.wait_for(enough.wait(), timeout)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return got


@pytest.mark.parametrize(("conduit", "share_b"), [("true", 0.5), ("false", 0.75)])
def test_conduit_subscriptions_off_weights_bridges_by_remote_consumers(
    brokers: Start, conduit: str, share_b: float
) -> None:
    # a bridges to b (3 consumers) and c (1 consumer), both one hop away.
    b = brokers("b")
    c = brokers("c")
    n = 800

    async def scenario() -> None:
        cb, cc = await Client.connect(b.url), await Client.connect(c.url)
        try:
            on_b = [await cb.subscribe("fan", prefetch=500) for _ in range(3)]
            on_c = [await cc.subscribe("fan", prefetch=500)]
            await wait_for(lambda: _consumers_on(cb, "fan", 3), 10, "b's consumers")
            uri = f"static:({b.url},{c.url})?conduitSubscriptions={conduit}"
            a = await asyncio.to_thread(brokers, "a", "--connector", uri)
            async with await Client.connect(a.url) as ca:
                await wait_for(lambda: _consumers_on(ca, "fan", 2), 15, "a's two bridges")
                sent = await send_many(ca, "fan", [str(i).encode() for i in range(n)])
                got = await _collect(on_b + on_c, n)
            check_exactly_once(sent, [d for per in got for d in per])
            at_b = sum(len(per) for per in got[:3])
            print(f"conduitSubscriptions={conduit}: b got {at_b}, c got {n - at_b}")
            assert abs(at_b / n - share_b) < 0.06, at_b
        finally:
            await cb.close()
            await cc.close()

    run(scenario(), timeout=90)


@pytest.mark.parametrize(("decrease", "via_c"), [("true", False), ("false", True)])
def test_decrease_network_consumer_priority(brokers: Start, decrease: str, via_c: bool) -> None:
    # The consumer is on b; a reaches it directly (1 hop) or through c (2 hops).
    b = brokers("b")
    c = brokers("c", "--connector", f"static:({b.url})?networkTTL=2")
    n = 400

    async def scenario() -> None:
        async with await Client.connect(b.url) as cb, await Client.connect(c.url) as cc:
            consumer = await cb.subscribe("near", prefetch=1000)
            await wait_for(lambda: demand_seen(cc, "near"), 10, "c to see b's demand")
            uri = (
                f"static:({b.url},{c.url})?networkTTL=2"
                f"&decreaseNetworkConsumerPriority={decrease}"
            )
            a = await asyncio.to_thread(brokers, "a", "--connector", uri)
            async with await Client.connect(a.url) as ca:
                await wait_for(lambda: _consumers_on(ca, "near", 2), 15, "a's two routes")
                sent = await send_many(ca, "near", [str(i).encode() for i in range(n)])
                got = await take(consumer, n)
            check_exactly_once(sent, got)
            through_c = sum(1 for d in got if list(d.message.broker_path) == ["a", "c", "b"])
            print(f"decreaseNetworkConsumerPriority={decrease}: {through_c} of {n} through c")
            if via_c:
                # Both routes rank alike: round robin sends about half the long way.
                assert n * 0.35 < through_c < n * 0.65, through_c
            else:
                assert through_c == 0
            await consumer.close()

    run(scenario(), timeout=90)
