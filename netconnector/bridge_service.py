"""The Bridge service: the gRPC side of links other brokers open to this one.

A link starts with hellos both ways (the peer's is checked against this broker's name and
token), then carries bridge frames until either side closes it; the session it opens on
this broker's `BridgeHost` (the network) does the bridging.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Protocol

import grpc

from broker.errors import InvalidArgument
from broker.pb import bridge_pb2, bridge_pb2_grpc
from broker.server.decode import RAW, decoded
from broker.server.gate import ServiceGate
from broker.server.tls import peer_refusal
from netconnector.hello import acceptor_terms, refusal
from netconnector.host import LinkHost
from netconnector.outbox import LINK_METHOD, Frame, Outbox, serialize_frame

log = logging.getLogger("netbroker.network")


class BridgeHost(LinkHost, Protocol):
    """A link host that also admits inbound links: their gate and the token they present."""

    @property
    def gate(self) -> ServiceGate:
        """Admits a call only while a broker serves (and says which)."""
        ...

    @property
    def token(self) -> str:
        """The securityToken inbound links must present ("" for none)."""
        ...


def install(server: grpc.aio.Server, network: BridgeHost) -> None:
    # By hand rather than through the generated helper: frames may come serialized.
    link = grpc.stream_stream_rpc_method_handler(
        BridgeService(network).Link,
        request_deserializer=RAW,
        response_serializer=serialize_frame,
    )
    service = LINK_METHOD.split("/")[1]
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service, {"Link": link}),)
    )


class BridgeService(bridge_pb2_grpc.BridgeServicer):
    def __init__(self, network: BridgeHost) -> None:
        self.network = network

    async def Link(
        self,
        request_iterator: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[Frame]:
        network = self.network
        broker = await network.gate.admit(context)
        frames = decoded(request_iterator, bridge_pb2.BridgeFrame, "Bridge/Link")
        try:
            first = await anext(frames, None)
        except InvalidArgument as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
        if first is None:
            return
        if not first.HasField("hello"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a link starts with a hello")
        hello = first.hello
        refused = refusal(hello, network.name, network.token)
        if refused is None and network.tls is not None:
            # Under TLS a bridge comes to the bridge port (mutual TLS) with its broker's
            # certificate; on the client port it has none and is sent there.
            refused = peer_refusal(
                context, hello.broker, network.config.tls_peers, "a broker of this topology"
            )
            if refused is not None and network.config.bridge_port:
                refused += f" (bridges connect to port {network.config.bridge_port})"
        if refused is not None:
            log.warning("refused a link from %s: %s", context.peer(), refused)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refused)
        try:
            terms = acceptor_terms(hello)
        except ValueError as exc:
            log.warning("refused a link from %s: %s", context.peer(), exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        yield bridge_pb2.BridgeFrame(hello=network.hello())
        outbox = Outbox()
        session = network.open_session(broker, terms, outbox)
        log.info("link from %s up", hello.broker)

        undecodable: list[InvalidArgument] = []

        async def read() -> None:
            try:
                async for frame in frames:
                    session.on_frame(frame)
            except InvalidArgument as exc:
                undecodable.append(exc)
            finally:
                outbox.close()

        reader = asyncio.create_task(read())
        try:
            async for frame in outbox:
                yield frame
            if undecodable:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, undecodable[0].message)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await reader
            network.close_session(session)
            log.info("link from %s down", hello.broker)
