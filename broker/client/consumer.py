"""The consumer: a subscription on its own Consume stream, deliveries settled in batches,
resubscribed after a failover."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import grpc

from broker.client.errors import ConnectionLost
from broker.client.futures import _reject, _resolve
from broker.client.limits import (
    ACK_FLUSH_INTERVAL,
    CLOSE_GRACE_SECONDS,
    RESUBSCRIBE_PATIENCE,
    RESUBSCRIBE_RETRY,
)
from broker.client.streams import (
    StreamOwner,
    _run_stream,
    _stop_task,
    _StreamEnded,
    _StreamFailure,
)
from broker.errors import BrokerError
from broker.pb import client_pb2, message_pb2

log = logging.getLogger("netbroker.client")


class Delivery:
    """A message handed to a consumer. Settle it with :meth:`ack` or :meth:`nack`."""

    __slots__ = ("_consumer", "_generation", "_pb", "_settled")

    def __init__(self, consumer: Consumer, generation: int, pb: client_pb2.Delivery) -> None:
        self._consumer = consumer
        self._generation = generation
        self._pb = pb
        self._settled = False

    @property
    def message(self) -> message_pb2.Message:
        """The whole message as the broker sent it."""
        return self._pb.message

    @property
    def body(self) -> bytes:
        return self._pb.message.body

    @property
    def id(self) -> str:
        return self._pb.message.id

    @property
    def queue(self) -> str:
        """The message's destination: its queue, or the topic it was published to."""
        return self._pb.message.destination

    @property
    def topic(self) -> str | None:
        """The topic the message was published to; None for a queue's message."""
        message = self._pb.message
        return message.destination if message.topic else None

    @property
    def headers(self) -> dict[str, str]:
        """A copy of the message's headers."""
        return dict(self._pb.message.headers)

    @property
    def redelivered(self) -> bool:
        """True when the message was handed out before and came back unacknowledged."""
        return self._pb.redelivered

    @property
    def redelivery_count(self) -> int:
        return self._pb.message.redelivery_count

    @property
    def tag(self) -> int:
        """The delivery tag: unique within the consumer's current stream."""
        return self._pb.tag

    def ack(self) -> None:
        """Done with the message: the broker removes it. Non-blocking (acks are written
        in batches); idempotent. After a reconnect the old stream's deliveries cannot be
        acked (the broker redelivers them), so this does nothing for them."""
        if not self._settled:
            self._settled = True
            self._consumer._settle(self, True)

    def nack(self) -> None:
        """Give the message back: the broker redelivers it, marked and counted.
        Non-blocking; does nothing on a delivery already acked or nacked."""
        if not self._settled:
            self._settled = True
            self._consumer._settle(self, False)

    def __repr__(self) -> str:
        return (
            f"<Delivery tag={self.tag} id={self.id!r} queue={self.queue!r} "
            f"bytes={len(self.body)} redelivered={self.redelivered}>"
        )


class Consumer:
    """A subscription to one queue, or to a topic, on its own Consume stream (create
    with :meth:`Client.subscribe`). Receive with :meth:`receive` or ``async for``."""

    def __init__(
        self,
        client: StreamOwner,
        destination: str,
        prefetch: int,
        auto_ack: bool,
        subscribe: client_pb2.Subscribe,
    ) -> None:
        """Use :meth:`Client.subscribe`."""
        self._client = client
        self._loop = client._loop
        self._thread = threading.get_ident()
        # The queue, or the topic (pattern) subscribed to.
        self.queue = destination
        self.topic = subscribe.topic or None
        self.prefetch = prefetch
        self.auto_ack = auto_ack
        self._subscribe = subscribe
        self._generation = 0  # which stream's deliveries can be acked
        self._buffer: deque[Delivery] = deque()
        self._available = asyncio.Event()
        self._acks: list[int] = []
        self._nacks: list[int] = []
        # Acks go out in one write once a quarter of the prefetch is acked, or
        # ACK_FLUSH_INTERVAL after the first: the broker always keeps three quarters of
        # its credit, so a receiver waiting for more need not flush them (at a low rate
        # a write per ack would double the cost of every message on both sides).
        self._ack_threshold = max(1, prefetch // 4)
        self._flush = asyncio.Event()
        self._flush_timer: asyncio.TimerHandle | None = None
        self._last: Delivery | None = None  # with auto_ack: acked on the next receive
        self._error: BrokerError | None = None
        self._started: asyncio.Future[None] = self._loop.create_future()
        self._task: asyncio.Task[None] | None = None
        self._streaming = False  # a stream is open and subscribed
        # Since when resubscribing has found the durable subscription still held.
        self._busy_since: float | None = None
        self._closing = False
        self._closed = False

    async def receive(self, timeout: float | None = None) -> Delivery | None:
        """The next delivery; None after ``timeout`` seconds without one, or once the
        consumer is closed. Raises BrokerError when the broker ended the subscription
        (a bad queue name...) and ConnectionLost when no broker can be reached."""
        if self._last is not None:
            last, self._last = self._last, None
            last.ack()
        if self._closing:
            return None
        if not self._buffer:
            if self._error is not None:
                raise self._error
            try:
                async with asyncio.timeout(timeout):
                    while not self._buffer:
                        if self._closing:
                            return None
                        if self._error is not None:
                            raise self._error
                        self._available.clear()
                        await self._available.wait()
            except TimeoutError:
                return None
        delivery = self._buffer.popleft()
        if self.auto_ack:
            self._last = delivery
        return delivery

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        delivery = await self.receive()
        if delivery is None:
            raise StopAsyncIteration
        return delivery

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._closing

    async def close(self) -> None:
        """Write pending acks (with auto_ack, the last delivery's too), then end the
        stream: unacknowledged and undelivered messages go back to the broker."""
        if self._closing:
            return
        if self._last is not None:
            last, self._last = self._last, None
            last.ack()
        self._closing = True
        self._flush.set()
        self._available.set()
        try:
            # With a stream open, the writer flushes the acks and half-closes it, and the
            # broker ends it. Without one (reconnecting), there is nothing to wait for.
            await _stop_task(self._task, CLOSE_GRACE_SECONDS if self._streaming else 0)
        finally:
            self._closed = True
            self._buffer.clear()
            self._cancel_flush_timer()
            if not self._started.done():
                _reject(self._started, ConnectionLost("the consumer was closed"))
            self._client._consumers.discard(self)

    # ---------------------------------------------------------------- internals

    async def _start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"netbroker-consumer-{self.queue}")
        await asyncio.shield(self._started)

    async def _receive_many(self, timeout: float | None) -> list[Delivery]:
        """Everything buffered, waiting up to ``timeout`` for at least one (for the
        blocking facade, which hands them out one by one)."""
        first = await self.receive(timeout)
        if first is None:
            return []
        batch = [first, *self._buffer]
        self._buffer.clear()
        return batch

    def _settle(self, delivery: Delivery, ack: bool) -> None:
        if threading.get_ident() != self._thread:
            if not self._closed:
                # The blocking facade's thread: settle on the loop's thread.
                with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to ack
                    self._loop.call_soon_threadsafe(self._settle, delivery, ack)
            return
        if delivery._generation != self._generation or self._closed:
            return  # a delivery of a stream that is gone: the broker redelivers it
        (self._acks if ack else self._nacks).append(delivery._pb.tag)
        if len(self._acks) + len(self._nacks) >= self._ack_threshold:
            self._flush.set()
        elif self._flush_timer is None:
            self._flush_timer = self._loop.call_later(ACK_FLUSH_INTERVAL, self._on_flush_timer)

    def _on_flush_timer(self) -> None:
        self._flush_timer = None
        self._flush.set()

    def _cancel_flush_timer(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None

    def _fail(self, error: BrokerError) -> None:
        """The subscription is over for good: receivers raise ``error``."""
        self._error = error
        self._buffer.clear()
        self._available.set()
        if not self._started.done():
            _reject(self._started, error)

    async def _run(self) -> None:
        """Subscribe (again after a failover) until closed, refused or lost for good."""
        try:
            while True:
                conn = await self._client._connection()
                # A new stream: the old one's tags mean nothing any more, and what it
                # buffered or held unacked the broker redelivers.
                self._generation += 1
                self._buffer.clear()
                self._acks = []
                self._nacks = []
                self._cancel_flush_timer()
                call = conn.broker.Consume(metadata=conn.metadata)
                try:
                    await _run_stream(call, self._read(call), self._write(call))
                    return
                except _StreamFailure as failure:
                    self._streaming = False
                    if self._closing:
                        return
                    if self._held_by_our_old_stream(failure.error):
                        await asyncio.sleep(RESUBSCRIBE_RETRY)
                        continue
                    if not failure.failover:
                        self._fail(failure.error)
                        return
                    await self._client._replace(conn, failure.error.message)
                    log.info("resubscribing to %s on %s", self.queue, self._client.address)
        except ConnectionLost as e:
            self._fail(e)
        except Exception as e:
            log.exception("consumer of %s failed", self.queue)
            self._fail(BrokerError("INTERNAL", f"consumer failed: {e!r}"))

    def _held_by_our_old_stream(self, error: BrokerError) -> bool:
        """Whether a refusal to resubscribe is a durable subscription still held by this
        consumer's previous stream, which the broker will soon see gone."""
        if error.code != "ALREADY_EXISTS" or not self._subscribe.subscription:
            self._busy_since = None
            return False
        if not self._started.done():
            return False  # the first subscribe: another subscriber holds it
        now = self._loop.time()
        if self._busy_since is None:
            self._busy_since = now
        return now - self._busy_since < RESUBSCRIBE_PATIENCE

    async def _write(self, call: Any) -> None:
        await call.write(client_pb2.ConsumeRequest(subscribe=self._subscribe))
        self._streaming = True
        if self.topic is None:
            _resolve(self._started, None)
        while True:
            if not self._closing:
                # Write when told to (enough acks, the timer, a receiver about to wait):
                # not after every ack, each write costs about as much as 100 acks.
                await self._flush.wait()
            self._flush.clear()
            if self._acks or self._nacks:
                acks, nacks = self._acks, self._nacks
                self._acks, self._nacks = [], []
                self._cancel_flush_timer()
                await call.write(
                    client_pb2.ConsumeRequest(credit=len(acks) + len(nacks), ack=acks, nack=nacks)
                )
            elif self._closing:
                # Every ack made before close() is written (also those made while the
                # last write was in progress); now end our side of the stream.
                await call.done_writing()
                return

    async def _read(self, call: Any) -> None:
        generation = self._generation
        buffer = self._buffer
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                if self._closing:
                    return
                raise _StreamEnded("the broker ended the consume stream")
            if self.topic is not None:
                # A topic subscription is in place once the broker says so (its first,
                # empty, response): only then does subscribe() return.
                _resolve(self._started, None)
                self._busy_since = None
            if self._closing:
                continue  # given back when the stream ends
            buffer.extend([Delivery(self, generation, d) for d in response.deliveries])
            self._available.set()
