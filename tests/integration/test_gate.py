"""ServiceGate.close ends every open stream with a retryable status, over real gRPC.

A real broker core and the real client service in this process, a real gRPC client over
loopback: the streams are open in every state a handler waits in (reading requests,
awaiting a store write, waiting for deliveries), then the gate closes as a demotion does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from broker.client.streams import _CORE_SEND_FAILURE
from broker.config import BrokerConfig
from broker.core.broker import Broker
from broker.core.store import Store
from broker.pb import client_pb2, client_pb2_grpc, message_pb2
from broker.server.gate import ServiceGate
from broker.server.listen import build_server
from broker.server.status import Role
from tests.support.aio import run
from tests.support.scenario import wait_for

REFUSAL = "broker b in group B is not serving: lost contact with ZooKeeper (suspended)"


async def serving(tmp_path: Path) -> tuple[grpc.aio.Server, ServiceGate, Broker, str]:
    config = BrokerConfig(name="b", port=0, data_dir=tmp_path / "b")
    store = Store(config.data_dir)
    broker = Broker(config, store)
    await broker.start()
    gate = ServiceGate()
    gate.open(broker, Role.MASTER)
    server, port = build_server(config, gate)
    await server.start()
    return server, gate, broker, f"127.0.0.1:{port}"


async def ended_by_close(
    call: grpc.aio.StreamStreamCall[Any, Any], gate: ServiceGate, writing: bool = False
) -> float:
    """Close the gate; return how long the client waited for the stream's end, which
    must be UNAVAILABLE with the refusal's words. A client `writing` meanwhile may see
    its write fail first (grpc.aio then ends the call INTERNAL locally, and the client
    library takes that for a broken stream, UNAVAILABLE)."""
    closed = time.monotonic()
    gate.close(Role.ELECTING, REFUSAL)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        while True:
            response = await asyncio.wait_for(call.read(), 3)
            assert response is not grpc.aio.EOF, "the stream ended OK, not retryably"
    status = (info.value.code(), info.value.details())
    if writing and status == (grpc.StatusCode.INTERNAL, _CORE_SEND_FAILURE):
        return time.monotonic() - closed
    assert status == (grpc.StatusCode.UNAVAILABLE, REFUSAL), info.value
    return time.monotonic() - closed


def produce(n: int, batch_id: int) -> client_pb2.ProduceRequest:
    return client_pb2.ProduceRequest(
        batch_id=batch_id,
        messages=[
            message_pb2.Message(id=f"m{batch_id}-{i}", destination="q", body=b"x", persistent=True)
            for i in range(n)
        ],
    )


def test_close_ends_idle_and_busy_produce_and_consume_streams(tmp_path: Path) -> None:
    async def scenario() -> None:
        server, gate, broker, address = await serving(tmp_path)
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                stub = client_pb2_grpc.BrokerStub(channel)
                # A producer between batches (the handler waits for its next request).
                idle = stub.Produce()
                await idle.write(produce(1, 1))
                assert (await idle.read()).ok
                # A consumer waiting on an empty queue.
                waiting = stub.Consume()
                await waiting.write(
                    client_pb2.ConsumeRequest(subscribe=client_pb2.Subscribe(queue="empty"))
                )
                # A consumer holding deliveries it never acks.
                holding = stub.Consume()
                await holding.write(
                    client_pb2.ConsumeRequest(subscribe=client_pb2.Subscribe(queue="q"))
                )
                assert len((await holding.read()).deliveries) == 1

                async def subscribed() -> bool:  # the waiting consumer reached its wait
                    return broker.has_local_consumers("empty")

                await wait_for(subscribed, 5, "the consumer of the empty queue")
                waits = [await ended_by_close(call, gate) for call in (idle, waiting)]
                waits.append(await ended_by_close(holding, gate))
                print("streams ended", ", ".join(f"{w * 1000:.1f} ms" for w in waits))
                # New calls are refused with the same words until the gate opens again.
                refused = stub.Produce()
                await refused.write(produce(1, 2))
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await refused.read()
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                assert info.value.details() == REFUSAL
        finally:
            await server.stop(0)
            await broker.stop()

    run(scenario())


def test_close_ends_a_stream_whose_sends_are_in_flight(tmp_path: Path) -> None:
    """A producer streaming batches as the gate closes: the end arrives after at most
    the answers already on their way, and no answer follows it."""

    async def scenario() -> None:
        server, gate, broker, address = await serving(tmp_path)
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                call = client_pb2_grpc.BrokerStub(channel).Produce()

                async def requests() -> AsyncIterator[None]:
                    for batch in range(1, 10_000):
                        await call.write(produce(16, batch))
                        yield None

                writer = asyncio.create_task(_drain(requests()))
                assert (await call.read()).ok
                wait = await ended_by_close(call, gate, writing=True)
                writer.cancel()
                print(f"busy stream ended {wait * 1000:.1f} ms after close")
                assert wait < 1.0
        finally:
            await server.stop(0)
            await broker.stop()

    run(scenario())


async def _drain(source: AsyncIterator[None]) -> None:
    try:
        async for _ in source:
            pass
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
        pass
