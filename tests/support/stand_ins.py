"""gRPC stand-ins for a broker that client tests need to misbehave on purpose: served on
a free port of 127.0.0.1 from handlers the test writes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from broker.pb import admin_pb2

ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name

StatusHandler = Callable[[admin_pb2.StatusRequest, Any], Awaitable[admin_pb2.StatusResponse]]


def admin_status(status: StatusHandler) -> grpc.GenericRpcHandler:
    """The Admin service with only Status, answered by `status`."""
    return grpc.method_handlers_generic_handler(ADMIN_SERVICE, {
        "Status": grpc.unary_unary_rpc_method_handler(
            status,
            request_deserializer=admin_pb2.StatusRequest.FromString,
            response_serializer=admin_pb2.StatusResponse.SerializeToString,
        ),
    })  # fmt: skip


async def serve(*handlers: grpc.GenericRpcHandler) -> tuple[grpc.aio.Server, str]:
    """A started server on a free loopback port, and its address."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(handlers)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"
