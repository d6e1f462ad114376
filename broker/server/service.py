"""The Broker service: a thin adapter between client streams and the Broker core."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from broker.core import wire
from broker.core.broker import Broker
from broker.core.queue import Consumer, Entry
from broker.errors import BrokerError
from broker.pb import client_pb2, client_pb2_grpc
from broker.security.authorization import Operation
from broker.security.principal import Principal, denial
from broker.server.codes import status_code
from broker.server.decode import RAW, decode, decoded, decoded_sized
from broker.server.gate import ServiceGate
from broker.server.guard import CallGuard

log = logging.getLogger("netbroker.service")

# Batches one producer stream may have waiting for the store at once, and their bytes
# (a batch waiting for room under the memory limit holds its request); past either the
# stream stops reading and gRPC's flow control holds the producer back. One batch is
# always let in, however large.
MAX_BATCHES_IN_FLIGHT = 64
MAX_BATCH_BYTES_IN_FLIGHT = 16 * 1024 * 1024
# The largest prefetch a consumer gets: a larger one is served as this (the broker never
# sends more than the consumer asked for). Unbounded, one consumer that never acks would
# hold every message of its queue in flight.
MAX_PREFETCH = 65_535
# Bytes of messages one client consumer may hold unacknowledged (at least one message
# always goes out): with large messages, the prefetch alone bounds nothing.
MAX_CONSUMER_BYTES = 64 * 1024 * 1024
# Largest delivery batch in bytes, to keep responses well inside gRPC's message limit.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


def _retrieve(future: asyncio.Future[client_pb2.ProduceResponse]) -> None:
    if not future.cancelled():
        future.exception()


class StreamSink:
    """A consumer's deliveries waiting to be written to its stream."""

    def __init__(self) -> None:
        self.pending: list[tuple[int, Entry]] = []
        self.wake = asyncio.Event()
        self.error: BrokerError | None = None
        self.closed = False

    def deliver(self, deliveries: list[tuple[int, Entry]]) -> None:
        self.pending.extend(deliveries)
        self.wake.set()

    def fail(self, error: BrokerError) -> None:
        self.error = error
        self.wake.set()

    def finish(self) -> None:
        self.closed = True
        self.wake.set()

    def take(self) -> bytes:
        """The next ConsumeResponse, serialized, of at most MAX_RESPONSE_BYTES of messages."""
        out: list[tuple[int, bytes, bool]] = []
        size = 0
        for tag, entry in self.pending:
            if out and size + entry.size > MAX_RESPONSE_BYTES:
                break
            out.append((tag, entry.data, entry.message.redelivery_count > 0))
            size += entry.size
        del self.pending[: len(out)]
        if not self.pending:
            self.wake.clear()
        return wire.consume_response(out)


def install_client_service(
    server: grpc.aio.Server, gate: ServiceGate, guard: CallGuard | None = None
) -> None:
    """Serve the Broker service. Registered by hand rather than through the generated
    helper because requests are decoded in the handlers (an undecodable one gets
    INVALID_ARGUMENT) and Consume writes ConsumeResponses it has already serialized."""
    service = ClientService(gate, guard or CallGuard())
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Produce": grpc.stream_stream_rpc_method_handler(
            service.Produce,
            request_deserializer=RAW,
            response_serializer=client_pb2.ProduceResponse.SerializeToString,
        ),
        "Consume": grpc.stream_stream_rpc_method_handler(
            service.Consume,
            request_deserializer=RAW,
            response_serializer=RAW,
        ),
        "Unsubscribe": grpc.unary_unary_rpc_method_handler(
            service.Unsubscribe,
            request_deserializer=RAW,
            response_serializer=client_pb2.UnsubscribeResponse.SerializeToString,
        ),
    }
    name = client_pb2.DESCRIPTOR.services_by_name["Broker"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))


class ClientService(client_pb2_grpc.BrokerServicer):
    def __init__(self, gate: ServiceGate, guard: CallGuard) -> None:
        self.gate = gate
        self.guard = guard

    async def _send(
        self, broker: Broker, request: client_pb2.ProduceRequest, principal: Principal | None
    ) -> client_pb2.ProduceResponse:
        if principal is not None and principal.authorization is not None:
            for m in request.messages:
                if not principal.may(Operation.WRITE, m.topic, m.destination):
                    return client_pb2.ProduceResponse(
                        batch_id=request.batch_id, ok=False, code="PERMISSION_DENIED",
                        error=denial(Operation.WRITE, m.topic, m.destination, principal),
                    )  # fmt: skip
        started = time.monotonic()
        try:
            sent = await broker.send(list(request.messages))
            broker.send_seconds.observe(time.monotonic() - started)
        except BrokerError as exc:
            return client_pb2.ProduceResponse(
                batch_id=request.batch_id, ok=False, code=exc.code, error=exc.message
            )
        # The producer knows the ids it chose: they go back only when the broker chose some.
        ids = sent.ids if sent.assigned else None
        return client_pb2.ProduceResponse(batch_id=request.batch_id, ok=True, ids=ids)

    async def Produce(
        self,
        request_iterator: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[client_pb2.ProduceResponse]:
        principal = await self.guard.principal(context)
        broker = await self.gate.admit(context)
        requests = decoded_sized(request_iterator, client_pb2.ProduceRequest, "Broker/Produce")
        # Batches are stored concurrently (so one stream fills a group commit) and
        # answered in the order they came.
        answers: asyncio.Queue[
            tuple[asyncio.Future[client_pb2.ProduceResponse], int] | None
        ] = asyncio.Queue()
        slots = asyncio.Semaphore(MAX_BATCHES_IN_FLIGHT)
        held = 0  # bytes of the batches waiting for their answer
        room = asyncio.Event()
        failed: list[BrokerError] = []

        async def read() -> None:
            nonlocal held
            try:
                async for request, size in requests:
                    await slots.acquire()
                    while held and held + size > MAX_BATCH_BYTES_IN_FLIGHT:
                        room.clear()
                        await room.wait()
                    held += size
                    answer = asyncio.ensure_future(self._send(broker, request, principal))
                    answers.put_nowait((answer, size))
            except BrokerError as exc:
                failed.append(exc)  # answered after the batches before it
            finally:
                answers.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                pending = await answers.get()
                if pending is None:
                    break
                response = await pending[0]
                held -= pending[1]
                room.set()
                slots.release()
                yield response
            if failed:
                await context.abort(status_code(failed[0].code), failed[0].message)
        finally:
            reader.cancel()
            # Batches still being stored when the stream ends (the gate closed it, the
            # producer went) finish by themselves; nobody reads their answers now.
            while not answers.empty():
                if (item := answers.get_nowait()) is not None:
                    item[0].add_done_callback(_retrieve)

    async def Unsubscribe(
        self, data: bytes, context: grpc.aio.ServicerContext
    ) -> client_pb2.UnsubscribeResponse:
        await self.guard.principal(context)
        broker = await self.gate.admit(context)
        request = await decode(context, client_pb2.UnsubscribeRequest, data, "Broker/Unsubscribe")
        try:
            broker.unsubscribe_durable(request.client_id, request.subscription)
        except BrokerError as exc:
            await context.abort(status_code(exc.code), exc.message)
        return client_pb2.UnsubscribeResponse()

    async def Consume(
        self,
        request_iterator: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[bytes]:
        """Responses are ConsumeResponses serialized here (see `install_client_service`)."""
        principal = await self.guard.principal(context)
        broker = await self.gate.admit(context)
        requests = decoded(request_iterator, client_pb2.ConsumeRequest, "Broker/Consume")
        try:
            first = await anext(requests, None)
        except BrokerError as exc:
            await context.abort(status_code(exc.code), exc.message)
        if first is None:
            return
        if not first.HasField("subscribe"):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the first consume request must subscribe"
            )
        sub = first.subscribe
        topic = bool(sub.topic)
        await self.guard.require(
            context, principal, Operation.READ, topic, sub.topic if topic else sub.queue
        )
        sink = StreamSink()
        prefetch = min(sub.prefetch or 1000, MAX_PREFETCH)
        try:
            queue, consumer = _subscribe(broker, sub, sink, prefetch, sub.name or context.peer())
        except BrokerError as exc:
            await context.abort(status_code(exc.code), exc.message)
        # Before the first dispatch, which subscribe only scheduled.
        consumer.max_bytes = MAX_CONSUMER_BYTES

        def apply(request: client_pb2.ConsumeRequest, consumer: Consumer) -> None:
            if request.HasField("subscribe"):
                raise BrokerError("INVALID_ARGUMENT", "a consume stream subscribes only once")
            if request.ack:
                broker.ack(queue, consumer, list(request.ack))
            if request.nack:
                broker.nack(queue, consumer, list(request.nack))
            if request.credit:
                broker.credit(queue, consumer, request.credit)

        async def read() -> None:
            try:
                if first.ack or first.nack or first.credit:
                    apply(first, consumer)
                async for request in requests:
                    apply(request, consumer)
            except BrokerError as exc:
                sink.fail(exc)
                return
            sink.finish()

        reader = asyncio.create_task(read())
        try:
            if sub.topic:
                # An empty response says the subscription is in place: a subscriber that
                # waits for it knows it sees everything published from then on.
                yield b""
            while True:
                await sink.wake.wait()
                if sink.error is not None:
                    await context.abort(status_code(sink.error.code), sink.error.message)
                if sink.pending:
                    yield sink.take()
                elif sink.closed:
                    break
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            broker.unsubscribe(queue, consumer)


def _subscribe(
    broker: Broker, sub: client_pb2.Subscribe, sink: StreamSink, prefetch: int, label: str
) -> tuple[str, Consumer]:
    """A queue consumer or a topic subscriber, as the Subscribe asks: (queue, consumer)."""
    if sub.topic:
        if sub.queue:
            raise BrokerError(
                "INVALID_ARGUMENT", "subscribe to a queue or to a topic, not both at once"
            )
        durable = None
        if sub.subscription or sub.client_id:
            if not sub.subscription:
                raise BrokerError(
                    "INVALID_ARGUMENT",
                    f"client id {sub.client_id!r} given without a subscription name: a "
                    f"durable subscription needs both",
                )
            durable = (sub.client_id, sub.subscription)
        return broker.subscribe_topic(sub.topic, sink, prefetch, durable=durable, name=label)
    if sub.client_id or sub.subscription:
        raise BrokerError(
            "INVALID_ARGUMENT", "a client id and subscription name are for topic subscriptions"
        )
    return sub.queue, broker.subscribe(sub.queue, sink, prefetch, sub.priority, label)
