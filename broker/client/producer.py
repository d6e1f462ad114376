"""The pipelined producer: sends batched on its own Produce stream, several batches in
flight, resent under the same ids after a failover."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any

import grpc

from broker.client.channel import _Connection, _refusal
from broker.client.errors import ConnectionLost, is_failover_code
from broker.client.futures import _reject, _resolve
from broker.client.limits import (
    CLOSE_GRACE_SECONDS,
    MAX_BATCH_BYTES,
    MAX_BATCH_MESSAGES,
    STALL_SECONDS,
)
from broker.client.outgoing import _Outgoing, _outgoing_fields
from broker.client.streams import (
    StreamOwner,
    _run_stream,
    _stop_task,
    _StreamEnded,
    _StreamFailure,
)
from broker.errors import BrokerError
from broker.pb import admin_pb2, client_pb2

log = logging.getLogger("netbroker.client")


class _Batch:
    """One ProduceRequest awaiting its ProduceResponse."""

    __slots__ = ("first_seq", "futures", "ids", "request", "written_at")

    def __init__(self, request: client_pb2.ProduceRequest, first_seq: int) -> None:
        self.request = request
        self.first_seq = first_seq
        self.written_at = 0.0  # loop time of its last write
        self.ids: list[str] = []
        self.futures: list[asyncio.Future[str]] = []


class Producer:
    """A pipelined producer on its own Produce stream (create with
    :meth:`Client.producer`).

    ``send`` queues a message and returns a future; a writer task gathers everything
    queued since its last write into one batch and keeps several batches in flight; each
    future resolves with the message id at the broker's ack, or raises BrokerError.
    Messages on one producer reach the broker in send order, also across failovers.
    """

    def __init__(self, client: StreamOwner, max_in_flight: int) -> None:
        """Use :meth:`Client.producer`."""
        self._client = client
        self._loop = client._loop
        self._max_in_flight = max_in_flight
        self._pending: deque[_Outgoing] = deque()  # queued, not yet in a batch
        self._batches: dict[int, _Batch] = {}  # written (or being written), not yet answered
        self._batch_ids = itertools.count(1)  # increasing across streams, so resends keep order
        self._unacked = 0  # messages pending or in batches, plus room granted to waiters
        self._sent = 0  # messages ever queued: the next message's sequence number
        # Senders waiting for room, first come first served: each is woken with its room
        # already counted in _unacked (no stampede of waiters re-checking).
        self._room_waiters: deque[asyncio.Future[None]] = deque()
        self._wakeup = asyncio.Event()
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        # Failed batches not yet reported by flush(): (first sequence number, error).
        self._errors: deque[tuple[int, BrokerError]] = deque(maxlen=1024)
        self._failure: BrokerError | None = None  # terminal: the client was lost or closed
        self._task: asyncio.Task[None] | None = None
        self._last_answer = 0.0  # loop time of the current stream's last answer
        self._closing = False
        self._closed = False

    async def send(
        self,
        queue: str,
        body: bytes | str,
        *,
        headers: Mapping[str, str] | None = None,
        persistent: bool = True,
        priority: int = 4,
        ttl: float | None = None,
        message_id: str | None = None,
    ) -> asyncio.Future[str]:
        """Queue a message; return a future that resolves with its id when the broker
        acknowledges it (or raises BrokerError). Waits while ``max_in_flight`` messages
        are unacknowledged. ``ttl`` is in seconds; the id is generated when not given.
        Cancelling the future does not withdraw the message."""
        return await self._queue(
            _outgoing_fields(queue, body, headers, persistent, priority, ttl, message_id)
        )

    async def publish(
        self,
        topic: str,
        body: bytes | str,
        *,
        headers: Mapping[str, str] | None = None,
        persistent: bool = True,
        priority: int = 4,
        ttl: float | None = None,
        message_id: str | None = None,
    ) -> asyncio.Future[str]:
        """Queue a message for ``topic``, as :meth:`send` does for a queue: every
        subscription to the topic then gets a copy (none: the broker drops it). A
        persistent one is acknowledged once every durable subscription's copy is durable."""
        return await self._queue(
            _outgoing_fields(topic, body, headers, persistent, priority, ttl, message_id, True)
        )

    async def _queue(self, fields: tuple[Any, ...]) -> asyncio.Future[str]:
        self._check_accepting()
        if self._unacked < self._max_in_flight and not self._room_waiters:
            self._unacked += 1
        else:
            await self._wait_for_room()
        return self._enqueue(fields)

    @property
    def in_flight(self) -> int:
        """Messages queued or sent and not yet acknowledged."""
        return self._unacked

    async def flush(self) -> None:
        """Wait until every message sent so far is acknowledged or failed; raise the first
        failure among them (each failure is raised by one flush only)."""
        target = self._sent
        if self._watermark() < target:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._flush_waiters.append((target, waiter))
            await waiter
        first: BrokerError | None = None
        while self._errors and self._errors[0][0] < target:
            error = self._errors.popleft()[1]
            first = first or error
        if first is not None:
            raise first

    async def close(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds (None: no limit) for the acks of everything
        sent, then end the stream; messages still unacknowledged fail with
        ConnectionLost. Does not raise send failures: use :meth:`flush` for those."""
        if self._closing:
            return
        self._closing = True
        drained = False
        try:
            if self._watermark() < self._sent:
                waiter: asyncio.Future[None] = self._loop.create_future()
                self._flush_waiters.append((self._sent, waiter))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter, timeout)
            drained = self._watermark() >= self._sent
        finally:
            self._closed = True
            self._wakeup.set()
            # Drained: the writer half-closes the stream and the broker ends it.
            await _stop_task(self._task, CLOSE_GRACE_SECONDS if drained else 0)
            self._fail_all(
                ConnectionLost("the producer was closed before the broker acked"), terminal=True
            )
            self._client._producers.discard(self)

    # ---------------------------------------------------------------- internals

    def _check_accepting(self) -> None:
        if self._closing:
            raise RuntimeError("the producer is closed")
        if self._failure is not None:
            raise self._failure

    async def _wait_for_room(self) -> None:
        """Wait in line until room is granted (counted in _unacked for us)."""
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._room_waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Room was granted as we were cancelled: hand it to the next in line.
                self._unacked -= 1
                self._grant_room()
            raise
        try:
            self._check_accepting()
        except BaseException:
            self._unacked -= 1
            self._grant_room()
            raise

    def _grant_room(self) -> None:
        while self._room_waiters and self._unacked < self._max_in_flight:
            waiter = self._room_waiters.popleft()
            if not waiter.done():
                self._unacked += 1
                waiter.set_result(None)

    def _enqueue(self, fields: tuple[Any, ...]) -> asyncio.Future[str]:
        """Queue a validated message whose room is already counted in _unacked."""
        future: asyncio.Future[str] = self._loop.create_future()
        self._pending.append((*fields, future))
        self._sent += 1
        self._wakeup.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="netbroker-producer")
        return future

    def _watermark(self) -> int:
        """Sequence number of the oldest unresolved message (all before it are done)."""
        if self._batches:
            return min(batch.first_seq for batch in self._batches.values())
        return self._sent - len(self._pending)

    def _resolved(self, count: int) -> None:
        self._unacked -= count
        if self._room_waiters:
            self._grant_room()
        if self._flush_waiters:
            mark = self._watermark()
            still = []
            for target, waiter in self._flush_waiters:
                if target <= mark:
                    _resolve(waiter, None)
                else:
                    still.append((target, waiter))
            self._flush_waiters = still

    def _fail_batch(self, batch: _Batch, error: BrokerError) -> None:
        for future in batch.futures:
            _reject(future, error)
        self._errors.append((batch.first_seq, error))
        self._resolved(len(batch.futures))

    def _fail_batches(self, error: BrokerError) -> None:
        """Fail every batch awaiting an answer (the stream that carried them failed)."""
        batches = sorted(self._batches.items())
        self._batches.clear()
        for _, batch in batches:
            self._fail_batch(batch, error)

    def _fail_all(self, error: BrokerError, *, terminal: bool) -> None:
        """Fail every unresolved message; when ``terminal``, refuse later sends too."""
        if terminal and self._failure is None:
            self._failure = error
        self._fail_batches(error)
        if self._pending:
            first = self._sent - len(self._pending)
            pending, self._pending = self._pending, deque()
            for item in pending:
                _reject(item[-1], error)
            self._errors.append((first, error))
            self._resolved(len(pending))
        if terminal:
            # Senders waiting for room: they see the failure (or the close) and raise.
            waiters, self._room_waiters = self._room_waiters, deque()
            for waiter in waiters:
                if not waiter.done():
                    self._unacked += 1
                    waiter.set_result(None)

    async def _run(self) -> None:
        """Open streams (again after a failover) until closed or lost for good."""
        try:
            while not self._closed:
                if not self._pending and not self._batches:
                    # Nothing to send: open no stream until there is.
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                conn = await self._client._connection()
                call = conn.broker.Produce(metadata=conn.metadata)
                try:
                    await _run_stream(call, self._read(call), self._write_watched(conn, call))
                    return
                except _StreamFailure as failure:
                    if self._closed and not self._batches and not self._pending:
                        return
                    if not failure.failover:
                        # Whether the broker stored them is unknown: fail what was in
                        # flight; what is still queued goes on a new stream.
                        log.warning("produce stream failed: %s", failure.error)
                        self._fail_batches(failure.error)
                        continue
                    await self._client._replace(conn, failure.error.message)
                    log.info(
                        "producer resending %d unacknowledged batches on %s",
                        len(self._batches),
                        self._client.address,
                    )
        except ConnectionLost as e:
            self._fail_all(e, terminal=True)
        except Exception as e:
            log.exception("producer failed")
            self._fail_all(BrokerError("INTERNAL", f"producer failed: {e!r}"), terminal=True)

    async def _write_watched(self, conn: _Connection, call: Any) -> None:
        """The writer, beside a watch on the broker that fails the stream over when the
        broker no longer serves or no longer answers."""
        writer = asyncio.create_task(self._write(call))
        watch = asyncio.create_task(self._watch(conn))
        try:
            await asyncio.wait({writer, watch}, return_when=asyncio.FIRST_COMPLETED)
            if watch.done():
                watch.result()
            await writer
        finally:
            writer.cancel()
            watch.cancel()
            await asyncio.gather(writer, watch, return_exceptions=True)

    async def _watch(self, conn: _Connection) -> None:
        loop = self._loop
        self._last_answer = loop.time()
        while True:
            await asyncio.sleep(STALL_SECONDS / 4)
            now = loop.time()
            written = (b.written_at for b in self._batches.values() if b.written_at)
            oldest = min(written, default=now)
            if now - oldest < STALL_SECONDS or now - self._last_answer < STALL_SECONDS:
                continue
            try:
                status = await conn.admin.Status(
                    admin_pb2.StatusRequest(), timeout=self._client._probe_timeout()
                )
            except grpc.aio.AioRpcError as e:
                raise _StreamFailure(
                    BrokerError("UNAVAILABLE", f"the broker stopped answering ({e.code().name})")
                ) from None
            if (refused := _refusal(status)) is not None:
                raise _StreamFailure(BrokerError("UNAVAILABLE", refused))
            # It serves and holds us back: look again a stall later.
            self._last_answer = loop.time()

    async def _write(self, call: Any) -> None:
        # Resend what the last stream left unanswered, oldest first, under the same ids.
        for batch_id in sorted(self._batches):
            batch = self._batches.get(batch_id)
            if batch is not None:
                batch.written_at = self._loop.time()
                await call.write(batch.request)
        while True:
            if not self._pending:
                if self._closed:
                    await call.done_writing()
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._take_batch()
            self._batches[batch.request.batch_id] = batch
            batch.written_at = self._loop.time()
            await call.write(batch.request)

    def _take_batch(self) -> _Batch:
        """Move queued messages into one request: up to MAX_BATCH_MESSAGES and about
        MAX_BATCH_BYTES; each protobuf Message is built once, in place."""
        pending = self._pending
        request = client_pb2.ProduceRequest(batch_id=next(self._batch_ids))
        batch = _Batch(request, self._sent - len(pending))
        add = request.messages.add
        ids = batch.ids
        futures = batch.futures
        size = 0
        while pending and len(futures) < MAX_BATCH_MESSAGES:
            size += len(pending[0][2]) + 64
            if futures and size > MAX_BATCH_BYTES:
                break
            message_id, queue, body, headers, persistent, priority, expiration_ms, topic, future = (
                pending.popleft()
            )
            if topic:
                add(
                    id=message_id,
                    destination=queue,
                    body=body,
                    headers=headers,
                    persistent=persistent,
                    priority=priority,
                    expiration_ms=expiration_ms,
                    topic=True,
                )
            elif headers:
                add(
                    id=message_id,
                    destination=queue,
                    body=body,
                    headers=headers,
                    persistent=persistent,
                    priority=priority,
                    expiration_ms=expiration_ms,
                )
            else:
                add(
                    id=message_id,
                    destination=queue,
                    body=body,
                    persistent=persistent,
                    priority=priority,
                    expiration_ms=expiration_ms,
                )
            ids.append(message_id)
            futures.append(future)
        return batch

    async def _read(self, call: Any) -> None:
        failover = self._client.url.failover
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                if self._closed and not self._batches and not self._pending:
                    return
                raise _StreamEnded("the broker ended the produce stream")
            self._last_answer = self._loop.time()
            batch = self._batches.pop(response.batch_id, None)
            if batch is None:
                log.warning("ack for unknown batch %d ignored", response.batch_id)
                continue
            if response.ok:
                ids = response.ids
                if len(ids) != len(batch.futures):
                    ids = batch.ids
                for future, message_id in zip(batch.futures, ids, strict=True):
                    if not future.done():
                        future.set_result(message_id)
                self._resolved(len(batch.futures))
                continue
            error = BrokerError(response.code or "UNKNOWN", response.error or "rejected")
            if failover and is_failover_code(error.code):
                # This broker cannot take it now: keep the batch for the next one.
                self._batches[response.batch_id] = batch
                raise _StreamFailure(error)
            self._fail_batch(batch, error)
