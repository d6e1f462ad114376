"""The blocking facade: the async client on a private event loop in a daemon thread,
with blocking producers and consumers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections import deque
from collections.abc import Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from broker.client.connection import Client
from broker.client.consumer import Consumer, Delivery
from broker.client.outgoing import _outgoing_fields
from broker.client.producer import Producer
from broker.client.url import ClientUrl
from broker.pb import admin_pb2, message_pb2

_T = TypeVar("_T")


class BlockingClient:
    """A synchronous facade over :class:`Client`: the async client runs on a private
    event loop in a daemon thread. Same methods, blocking. Any thread may call it; a
    BlockingConsumer is for one thread at a time."""

    def __init__(
        self, client: Client, loop: asyncio.AbstractEventLoop, thread: threading.Thread
    ) -> None:
        """Use :meth:`BlockingClient.connect`."""
        self._client = client
        self._loop = loop
        self._thread = thread

    @classmethod
    def connect(
        cls,
        url: str | ClientUrl,
        *,
        user: str | None = None,
        password: str | None = None,
        ca: str | Path | None = None,
    ) -> BlockingClient:
        """Connect as :meth:`Client.connect` does, blocking until connected."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="netbroker-client", daemon=True)
        thread.start()
        try:
            client = asyncio.run_coroutine_threadsafe(
                Client.connect(url, user=user, password=password, ca=ca), loop
            ).result()
        except BaseException:
            _stop_loop(loop, thread)
            raise
        return cls(client, loop, thread)

    def _run(self, coroutine: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("BlockingClient used from its own event loop thread")
        if self._loop.is_closed():
            coroutine.close()
            raise RuntimeError("the client is closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def client(self) -> Client:
        """The async client underneath (use it only on its loop)."""
        return self._client

    def send(self, queue: str, body: bytes | str, **options: Any) -> str:
        """Send one message and wait for its ack; see :meth:`Client.send`."""
        return self._run(self._client.send(queue, body, **options))

    def publish(self, topic: str, body: bytes | str, **options: Any) -> str:
        """Publish one message to a topic and wait for its ack; see :meth:`Client.publish`."""
        return self._run(self._client.publish(topic, body, **options))

    def unsubscribe(self, client_id: str, subscription: str) -> None:
        """Remove a durable subscription; see :meth:`Client.unsubscribe`."""
        self._run(self._client.unsubscribe(client_id, subscription))

    def producer(self, max_in_flight: int = 5000) -> BlockingProducer:
        """A pipelined producer; see :meth:`Client.producer`."""
        producer = self._run(self._make_producer(max_in_flight))
        return BlockingProducer(self, producer, max_in_flight)

    async def _make_producer(self, max_in_flight: int) -> Producer:
        return self._client.producer(max_in_flight)

    def subscribe(self, queue: str | None = None, **options: Any) -> BlockingConsumer:
        """Open a consumer of a queue, or (``topic=``) a topic subscriber; see
        :meth:`Client.subscribe` (same keyword arguments)."""
        auto_ack = options.pop("auto_ack", False)
        consumer = self._run(self._client.subscribe(queue, auto_ack=False, **options))
        return BlockingConsumer(self, consumer, auto_ack)

    def status(self) -> admin_pb2.StatusResponse:
        return self._run(self._client.status())

    def queues(self) -> list[admin_pb2.QueueInfo]:
        return self._run(self._client.queues())

    def topics(self) -> admin_pb2.ListQueuesResponse:
        return self._run(self._client.topics())

    def purge(self, queue: str) -> int:
        return self._run(self._client.purge(queue))

    def browse(self, queue: str, limit: int = 100) -> list[message_pb2.Message]:
        return self._run(self._client.browse(queue, limit))

    def close(self, *, drain_timeout: float | None = 10.0) -> None:
        """Close the client (see :meth:`Client.close`) and stop its thread. Idempotent."""
        if self._loop.is_closed():
            return
        try:
            self._run(self._client.close(drain_timeout=drain_timeout))
        finally:
            _stop_loop(self._loop, self._thread)


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


class BlockingProducer:
    """The blocking face of a :class:`Producer`. ``send`` hands the message to the loop
    thread without waiting for it (blocking only while ``max_in_flight`` messages are
    unacknowledged), so a thread can pipeline as the async producer does."""

    def __init__(self, owner: BlockingClient, producer: Producer, max_in_flight: int) -> None:
        self._owner = owner
        self._producer = producer
        self._room = threading.BoundedSemaphore(max_in_flight)
        # Messages handed to the loop thread, drained by one callback per wakeup.
        self._handoff: deque[tuple[tuple[Any, ...], concurrent.futures.Future[str]]] = deque()
        self._drain_scheduled = False

    def send(
        self,
        queue: str,
        body: bytes | str,
        *,
        headers: Mapping[str, str] | None = None,
        persistent: bool = True,
        priority: int = 4,
        ttl: float | None = None,
        message_id: str | None = None,
    ) -> concurrent.futures.Future[str]:
        """Queue a message; the returned future resolves with its id at the broker's
        ack, or raises BrokerError. See :meth:`Producer.send`."""
        fields = _outgoing_fields(queue, body, headers, persistent, priority, ttl, message_id)
        return self._hand_off(fields)

    def publish(
        self,
        topic: str,
        body: bytes | str,
        *,
        headers: Mapping[str, str] | None = None,
        persistent: bool = True,
        priority: int = 4,
        ttl: float | None = None,
        message_id: str | None = None,
    ) -> concurrent.futures.Future[str]:
        """Queue a message for a topic; see :meth:`Producer.publish`."""
        fields = _outgoing_fields(topic, body, headers, persistent, priority, ttl, message_id, True)
        return self._hand_off(fields)

    def _hand_off(self, fields: tuple[Any, ...]) -> concurrent.futures.Future[str]:
        if threading.current_thread() is self._owner._thread:
            raise RuntimeError("BlockingProducer used from its own event loop thread")
        self._room.acquire()
        result: concurrent.futures.Future[str] = concurrent.futures.Future()
        result.add_done_callback(lambda _: self._room.release())
        self._handoff.append((fields, result))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._owner._loop.call_soon_threadsafe(self._drain)
        return result

    def _drain(self) -> None:
        # On the loop thread. Room is bounded by self._room, not by the producer's waiters.
        self._drain_scheduled = False
        producer = self._producer
        handoff = self._handoff
        while handoff:
            fields, result = handoff.popleft()
            try:
                producer._check_accepting()
            except BaseException as e:
                result.set_exception(e)
                continue
            producer._unacked += 1
            future = producer._enqueue(fields)
            future.add_done_callback(functools.partial(_copy_outcome, target=result))

    def flush(self) -> None:
        """Wait until everything sent so far is acked; raise the first failure."""
        self._owner._run(self._flush())

    async def _flush(self) -> None:
        self._drain()  # what this thread sent before flush() counts
        await self._producer.flush()

    def close(self, timeout: float | None = None) -> None:
        """See :meth:`Producer.close`."""
        self._owner._run(self._close(timeout))

    async def _close(self, timeout: float | None) -> None:
        self._drain()
        await self._producer.close(timeout)

    def __enter__(self) -> BlockingProducer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _copy_outcome(source: asyncio.Future[_T], *, target: concurrent.futures.Future[_T]) -> None:
    if source.cancelled():
        target.cancel()
    elif (error := source.exception()) is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())


class BlockingConsumer:
    """The blocking face of a :class:`Consumer`: ``receive(timeout)`` and iteration.

    Fetches whatever the consumer has buffered in one hop to the loop thread and hands it
    out locally; ``auto_ack`` acks a delivery when the next one is asked for.
    """

    def __init__(self, owner: BlockingClient, consumer: Consumer, auto_ack: bool) -> None:
        self._owner = owner
        self._consumer = consumer
        self._auto_ack = auto_ack
        self._local: deque[Delivery] = deque()
        self._last: Delivery | None = None

    def receive(self, timeout: float | None = None) -> Delivery | None:
        """The next delivery, or None after ``timeout`` seconds or once closed."""
        if self._last is not None:
            last, self._last = self._last, None
            last.ack()
        consumer = self._consumer
        while True:
            while self._local:
                delivery = self._local.popleft()
                if delivery._generation == consumer._generation:  # else: from a lost stream
                    if self._auto_ack:
                        self._last = delivery
                    return delivery
            batch = self._owner._run(consumer._receive_many(timeout))
            if not batch:
                return None
            self._local.extend(batch)

    def __iter__(self) -> Iterator[Delivery]:
        while (delivery := self.receive()) is not None:
            yield delivery

    def close(self) -> None:
        """See :meth:`Consumer.close`."""
        if self._last is not None:
            last, self._last = self._last, None
            last.ack()
        self._local.clear()
        self._owner._run(self._consumer.close())

    def __enter__(self) -> BlockingConsumer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
