"""The failover producer leaves a broker that stops answering without ending its stream.

Keepalive notices a frozen process; this is the other case: a peer whose transport is
alive (pings answered) but that no longer answers produce batches and says, when asked,
that it does not serve. The peer is a small gRPC server speaking the broker's protocol
that does exactly that; the broker it should move to is a real broker process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc

from broker.client import Client
from broker.client.limits import STALL_SECONDS
from broker.pb import admin_pb2, client_pb2
from tests.support.aio import run
from tests.support.procs import BrokerProcess
from tests.support.scenario import receive_all
from tests.support.stand_ins import admin_status, serve

BROKER_SERVICE = client_pb2.DESCRIPTOR.services_by_name["Broker"].full_name


class SilentBroker:
    """Accepts a client, then swallows its batches and, asked, says it stopped serving."""

    def __init__(self) -> None:
        self.streams = 0

    async def produce(
        self, requests: AsyncIterator[client_pb2.ProduceRequest], context: object
    ) -> AsyncIterator[client_pb2.ProduceResponse]:
        self.streams += 1
        async for _ in requests:
            pass
        await asyncio.sleep(3600)
        yield client_pb2.ProduceResponse()  # never reached

    async def status(
        self, request: admin_pb2.StatusRequest, context: object
    ) -> admin_pb2.StatusResponse:
        if not self.streams:
            return admin_pb2.StatusResponse(
                name="silent", role="master", role_kind=admin_pb2.ROLE_MASTER
            )
        return admin_pb2.StatusResponse(
            name="silent",
            role="electing",
            role_kind=admin_pb2.ROLE_ELECTING,
            refusal="broker silent is not serving",
        )

    async def serve(self) -> tuple[grpc.aio.Server, str]:
        produce = grpc.method_handlers_generic_handler(BROKER_SERVICE, {
            "Produce": grpc.stream_stream_rpc_method_handler(
                self.produce,
                request_deserializer=client_pb2.ProduceRequest.FromString,
                response_serializer=client_pb2.ProduceResponse.SerializeToString,
            ),
        })  # fmt: skip
        return await serve(produce, admin_status(self.status))


def test_producer_leaves_a_broker_that_stops_serving_silently(broker: BrokerProcess) -> None:
    async def scenario() -> None:
        silent = SilentBroker()
        server, address = await silent.serve()
        try:
            async with await Client.connect(f"failover:({address},{broker.url})") as client:
                assert client.address == address
                started = time.monotonic()
                message_id = await asyncio.wait_for(client.send("stall", b"moved"), 10)
                took = time.monotonic() - started
                print(f"acknowledged by the next broker {took:.2f}s after the send")
                assert client.address == broker.url
                assert took < STALL_SECONDS + 2.0
                got = await receive_all(client, "stall", 1, timeout=2)
                assert [d.id for d in got] == [message_id]
        finally:
            await server.stop(0)

    run(scenario())


def test_a_frozen_address_does_not_hold_up_the_next(brokers: object) -> None:
    """A frozen broker takes connections and answers nothing: the client must reach the
    next address without waiting out the frozen one's probe."""
    import os
    import signal

    frozen = brokers("frozen")  # type: ignore[operator]
    live = brokers("live")  # type: ignore[operator]
    os.killpg(frozen.proc.pid, signal.SIGSTOP)
    try:

        async def scenario() -> None:
            started = time.monotonic()
            async with await Client.connect(f"failover:({frozen.url},{live.url})") as client:
                took = time.monotonic() - started
                print(f"connected past a frozen address in {took:.2f}s")
                assert client.address == live.url
                assert took < 0.8, f"{took:.2f}s: the frozen address held the client up"
                await client.send("q", b"x")

        run(scenario())
    finally:
        os.killpg(frozen.proc.pid, signal.SIGCONT)
