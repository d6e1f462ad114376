"""Topics on real broker processes through the gRPC client: fan-out to N subscribers,
wildcards, drops, clear refusals, and a durable subscription kept across kill -9.

Every scenario counts what was sent (acknowledged) against what each subscriber got.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest

from broker.client import BrokerError, Client, Consumer, Delivery
from broker.pb import admin_pb2, admin_pb2_grpc, client_pb2, client_pb2_grpc
from tests.integration.test_limits import MiB, rss
from tests.support.aio import run
from tests.support.faults import LinkProxy
from tests.support.procs import BrokerProcess
from tests.support.scenario import check_exactly_once, wait_for


async def publish_many(client: Client, topic: str, bodies: list[bytes], **kw: Any) -> list[str]:
    producer = client.producer()
    futures = [await producer.publish(topic, body, **kw) for body in bodies]
    await producer.flush()
    await producer.close()
    return [f.result() for f in futures]


async def take_all(consumer: Consumer, count: int, timeout: float = 10.0) -> list[Delivery]:
    """Receive and ack until `count` arrived, then whatever else comes within 0.3 s
    (a duplicate would be counted by the caller)."""
    got: list[Delivery] = []
    while len(got) < count:
        d = await consumer.receive(timeout=timeout)
        if d is None:
            break
        got.append(d)
        d.ack()
    while (d := await consumer.receive(timeout=0.3)) is not None:
        got.append(d)
        d.ack()
    return got


async def topics_of(client: Client) -> dict[str, admin_pb2.TopicInfo]:
    async with grpc.aio.insecure_channel(client.address or "") as channel:
        answer = await admin_pb2_grpc.AdminStub(channel).ListQueues(admin_pb2.ListQueuesRequest())
    return {t.name: t for t in answer.topics}


def test_fan_out_to_n_subscribers_with_wildcards(broker: BrokerProcess) -> None:
    async def scenario() -> None:
        async with await Client.connect(broker.url) as client:
            patterns = ["prices.eu", "prices.eu", "prices.eu", "prices.*", "prices.>"]
            subscribers = [await client.subscribe(topic=p, prefetch=200) for p in patterns]
            other = await client.subscribe(topic="news.*", prefetch=10)
            # subscribe() returns once the broker has the subscription in place.
            assert await _subscriptions(client, 3)
            n = 2_000
            sent = await publish_many(client, "prices.eu", [f"{i}".encode() for i in range(n)])
            deep = await publish_many(client, "prices.eu.paris", [b"deep"] * 10, persistent=False)
            results = await asyncio.gather(*(take_all(s, n) for s in subscribers[:4]))
            for got in results:
                check_exactly_once(sent, got)
                assert [d.body for d in got] == [f"{i}".encode() for i in range(n)]
                assert all(d.topic == "prices.eu" and d.queue == "prices.eu" for d in got)
            tail = await take_all(subscribers[4], n + 10)
            check_exactly_once(sent + deep, tail)
            assert await other.receive(timeout=0.2) is None
            info = await topics_of(client)
            assert info["prices.eu"].subscriptions == 3
            assert all(s.active and not s.durable for s in info["prices.eu"].subscribers)
            for s in subscribers:
                await s.close()
            # Their subscriptions went with them: a publish now is dropped, yet acked.
            await wait_for(lambda: _no_topics(client), 10, "the subscriptions to go")
            await client.publish("prices.eu", b"nobody")

    run(scenario(), timeout=120)


async def _subscriptions(client: Client, n: int) -> bool:
    info = await topics_of(client)
    return "prices.eu" in info and info["prices.eu"].subscriptions == n and "prices.>" in info


async def _no_topics(client: Client) -> bool:
    return set(await topics_of(client)) == {"news.*"}


def test_refusals_are_invalid_argument(broker: BrokerProcess) -> None:
    async def scenario() -> None:
        async with await Client.connect(broker.url) as client:
            with pytest.raises(BrokerError, match="wildcard") as info:
                await client.publish("prices.*", b"x")
            assert info.value.code == "INVALID_ARGUMENT"
            with pytest.raises(BrokerError, match="last segment") as info:
                await client.subscribe(topic="prices.>.eu")
            assert info.value.code == "INVALID_ARGUMENT"
            with pytest.raises(ValueError, match="client_id"):
                await client.subscribe(topic="prices", subscription="s")
            # The same on the wire, without the client's own checks.
            async with grpc.aio.insecure_channel(broker.url) as channel:
                stub = client_pb2_grpc.BrokerStub(channel)
                for subscribe, words in [
                    (client_pb2.Subscribe(topic="a", subscription="s"), "client id"),
                    (client_pb2.Subscribe(topic="a", client_id="c"), "subscription name"),
                    (client_pb2.Subscribe(topic="a", queue="q"), "not both"),
                    (client_pb2.Subscribe(topic="a..b"), "empty segment"),
                ]:
                    call = stub.Consume(iter([client_pb2.ConsumeRequest(subscribe=subscribe)]))
                    with pytest.raises(grpc.aio.AioRpcError) as rpc:
                        await call.read()
                    assert rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                    assert words in (rpc.value.details() or "")
                with pytest.raises(grpc.aio.AioRpcError) as rpc:
                    await stub.Unsubscribe(client_pb2.UnsubscribeRequest(client_id="c"))
                assert rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            # The broker is unharmed.
            ok = await client.subscribe(topic="prices")
            await client.publish("prices", b"fine")
            got = await ok.receive(timeout=5)
            assert got is not None and got.body == b"fine"

    run(scenario())


def test_durable_subscription_offline_online_across_kill_9(brokers: Any, tmp_path: Any) -> None:
    proc: BrokerProcess = brokers("a")

    async def scenario() -> None:
        durable: dict[str, Any] = {
            "topic": "orders.>",
            "client_id": "shop",
            "subscription": "audit",
        }
        async with await Client.connect(proc.url) as client:
            first = await client.subscribe(**durable, prefetch=50)
            # A second subscriber to the same durable subscription is refused, clearly.
            with pytest.raises(BrokerError, match="already has an active subscriber") as info:
                await client.subscribe(**durable)
            assert info.value.code == "ALREADY_EXISTS"
            before = await publish_many(client, "orders.eu", [b"b%d" % i for i in range(100)])
            got = []
            for _ in range(60):
                d = await first.receive(timeout=5)
                assert d is not None
                got.append(d)
                d.ack()
            # Leave holding 40 unacked (delivered, never acked): they come back marked.
            held = [d for _ in range(40) if (d := await first.receive(timeout=5)) is not None]
            assert len(held) == 40
            acked = [d.id for d in got]
            await first.close()
            # Offline: these are kept for the subscription.
            away = await publish_many(client, "orders.us", [b"a%d" % i for i in range(1_000)])
            info2 = await topics_of(client)
            sub = info2["orders.>"].subscribers[0]
            assert sub.durable and not sub.active and sub.client_id == "shop"
            assert sub.depth == len(before) + len(away) - len(got)
        proc.kill()  # kill -9 right after the acks of `away`
        proc.start()
        async with await Client.connect(proc.url) as client:
            again = await client.subscribe(**durable, prefetch=200)
            rest = await take_all(again, len(before) + len(away) - len(acked))
            everything = before + away
            remaining = [m for m in everything if m not in set(acked)]
            check_exactly_once(remaining, rest, marked_ok=True)
            redelivered = {d.id for d in rest if d.redelivered}
            assert {d.id for d in held} <= redelivered
            assert not set(acked) & {d.id for d in rest}
            print(
                f"sent {len(everything)}, acked before the kill {len(acked)}, received after "
                f"{len(rest)}, lost 0, marked {len(redelivered)}"
            )
            await again.close()
            # Unsubscribe by name: the subscription and its messages go.
            await client.unsubscribe("shop", "audit")
            with pytest.raises(BrokerError, match="no durable subscription") as info:
                await client.unsubscribe("shop", "audit")
            assert info.value.code == "NOT_FOUND"
            assert await topics_of(client) == {}
        proc.kill()
        proc.start()
        async with await Client.connect(proc.url) as client:
            assert await topics_of(client) == {}

    run(scenario(), timeout=120)


def test_slow_nondurable_subscribers_keep_the_broker_bounded(broker: BrokerProcess) -> None:
    """Five subscribers that never read, under a flood of persistent publishes: each
    copy for a non-durable subscription is held in memory, so without a bound five
    times the flood would be. The memory gate holds the publisher back instead."""
    body = b"t" * 1024
    flood = 200_000  # x 5 subscriptions: 1 GB of copies, far past the 256 MiB limit

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(broker.url) as channel:
            stub = client_pb2_grpc.BrokerStub(channel)
            idle = []
            for _ in range(5):
                call = stub.Consume()
                await call.write(
                    client_pb2.ConsumeRequest(
                        subscribe=client_pb2.Subscribe(topic="flood", prefetch=2**32 - 1)
                    )
                )
                await call.read()  # the subscription is in place
                idle.append(call)
            start = peak = rss(broker)
            async with await Client.connect(broker.url) as client:
                producer = client.producer(max_in_flight=4_000)
                acked = 0
                last_ack = time.monotonic()

                def done(future: asyncio.Future[str]) -> None:
                    nonlocal acked, last_ack
                    if not future.cancelled() and future.exception() is None:
                        acked += 1
                        last_ack = time.monotonic()

                async def publish() -> None:
                    for _ in range(flood):
                        (await producer.publish("flood", body)).add_done_callback(done)

                sender = asyncio.create_task(publish())
                while not sender.done():
                    await asyncio.sleep(0.2)
                    peak = max(peak, rss(broker))
                    if time.monotonic() - last_ack > 3.0:
                        break
                for _ in range(10):
                    await asyncio.sleep(0.2)
                    peak = max(peak, rss(broker))
                sub = (await topics_of(client))["flood"].subscribers
                print(
                    f"acked {acked:,} of {flood:,} persistent 1 KiB publishes to 5 idle "
                    f"subscribers; depth {[s.depth for s in sub]}; broker RSS "
                    f"{start / MiB:.0f} MiB at start, peak {peak / MiB:.0f} MiB"
                )
                assert acked < flood, "the whole flood fitted: the test proves nothing"
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
            for call in idle:
                call.cancel()
        assert peak < 420 * MiB, f"broker RSS peaked at {peak / MiB:.0f} MiB"
        # Their subscriptions went with them, and the memory they held with them.
        async with await Client.connect(broker.url) as client:
            await wait_for(lambda: _gone(client), 20, "the idle subscriptions to go")
            await asyncio.wait_for(client.publish("flood", b"after"), 10)

    run(scenario(), timeout=240)


async def _gone(client: Client) -> bool:
    return await topics_of(client) == {}


def test_durable_resubscribe_waits_for_the_broker_to_let_go_of_the_old_stream(
    broker: BrokerProcess,
) -> None:
    """A failover subscriber whose connection broke resubscribes while the broker still
    holds its durable subscription for the old stream (the broker has not seen that
    stream die yet): it asks again instead of failing for good. The old stream is
    played by a raw Consume call that holds the subscription for 1.5 s."""
    durable = client_pb2.Subscribe(topic="jobs", client_id="w", subscription="worker")

    async def scenario() -> None:
        proxy = LinkProxy(broker.url)
        try:
            async with await Client.connect(f"failover:({proxy.address})") as client:
                subscriber = await client.subscribe(
                    topic="jobs", client_id="w", subscription="worker", prefetch=10
                )
                proxy.drop()  # the connection breaks; reconnecting is refused for now
                async with grpc.aio.insecure_channel(broker.url) as channel:
                    stub = client_pb2_grpc.BrokerStub(channel)

                    async def hold() -> grpc.aio.StreamStreamCall[Any, Any]:
                        call = stub.Consume()
                        await call.write(client_pb2.ConsumeRequest(subscribe=durable))
                        await call.read()  # in place: the broker let go of the old one
                        return call

                    stale = await wait_for(lambda: _try(hold), 10, "the old stream to go")
                    proxy.restore()  # the subscriber reconnects and is refused meanwhile
                    await asyncio.sleep(1.5)
                    stale.cancel()
                async with await Client.connect(broker.url) as publisher:
                    sent = await publish_many(publisher, "jobs", [b"j%d" % i for i in range(20)])
                got = await take_all(subscriber, len(sent), timeout=15)
                check_exactly_once(sent, got)
                await subscriber.close()
        finally:
            proxy.close()

    run(scenario(), timeout=60)


async def _try(make: Any) -> Any:
    try:
        return await make()
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.ALREADY_EXISTS, exc
        return None
