"""Async helpers that scenario tests share: sending, receiving, waiting on conditions."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import Any

from broker.client import Client, Consumer, Delivery
from broker.pb import admin_pb2


async def queue_info(client: Client, name: str) -> admin_pb2.QueueInfo | None:
    for info in await client.queues():
        if info.name == name:
            return info
    return None


async def known_queue(client: Client, name: str) -> admin_pb2.QueueInfo:
    """The queue's figures; the queue must exist."""
    info = await queue_info(client, name)
    assert info is not None, f"no queue {name}"
    return info


async def wait_for(
    predicate: Callable[[], Awaitable[Any]], timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll an async predicate until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def receive_all(
    client: Client, queue: str, count: int, timeout: float = 10.0, **kw: Any
) -> list[Delivery]:
    """Receive and ack until `count` arrived or `timeout` passes with nothing new."""
    consumer = await client.subscribe(queue, **kw)
    got: list[Delivery] = []
    try:
        while len(got) < count:
            delivery = await consumer.receive(timeout=timeout)
            if delivery is None:
                break
            got.append(delivery)
            delivery.ack()
    finally:
        await consumer.close()
    return got


async def send_many(client: Client, queue: str, bodies: list[bytes], **kw: Any) -> list[str]:
    producer = client.producer()
    futures = [await producer.send(queue, body, **kw) for body in bodies]
    await producer.flush()
    await producer.close()
    return [f.result() for f in futures]


def check_exactly_once(sent: list[str], got: list[Delivery], marked_ok: bool = False) -> None:
    """Nothing lost; no duplicates (or, with `marked_ok`, only ones marked redelivered)."""
    counts = collections.Counter(d.id for d in got)
    lost = set(sent) - set(counts)
    duplicates = sum(n - 1 for n in counts.values())
    first_time = collections.Counter(d.id for d in got if not d.redelivered)
    unmarked = sum(n - 1 for n in first_time.values())
    print(f"sent {len(sent)}, received {len(got)}, lost {len(lost)}, duplicates {duplicates}")
    assert not lost, f"{len(lost)} messages lost"
    assert unmarked == 0, f"{unmarked} duplicates delivered without the redelivered mark"
    if not marked_ok:
        assert duplicates == 0, f"{duplicates} duplicates"


async def demand_seen(client: Client, queue: str) -> bool:
    """A bridge has registered a network consumer on `queue` at this broker."""
    info = await queue_info(client, queue)
    return info is not None and info.consumers > 0


async def take(consumer: Consumer, count: int, timeout: float = 10.0) -> list[Delivery]:
    """Receive and ack exactly `count` deliveries; fail if one is `timeout` late."""
    got: list[Delivery] = []
    while len(got) < count:
        d = await consumer.receive(timeout=timeout)
        assert d is not None, f"stalled after {len(got)} of {count}"
        got.append(d)
        d.ack()
    return got
