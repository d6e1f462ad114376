"""Requests decoded inside the handler, so that an undecodable one gets INVALID_ARGUMENT.

gRPC's generated handlers decode with the request type's `FromString`; when that raises,
grpc.aio answers `UNKNOWN: DecodeError`, which tells the client nothing and reads like a
broker fault. Register a method with `RAW` as its request deserializer instead and decode
with `decode` (unary) or `decoded` (a request stream): what is wrong comes back as an
INVALID_ARGUMENT status naming the method and the expected type. Any servicer (client,
admin, bridge, replication) can use these.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from broker.errors import InvalidArgument

M = TypeVar("M", bound=Message)


def RAW(data: bytes) -> bytes:
    """A request deserializer that leaves the bytes as they came."""
    return data


def parse(kind: type[M], data: bytes, method: str) -> M:
    """`data` decoded as a `kind`; InvalidArgument saying what is wrong if it is not one."""
    try:
        return kind.FromString(data)
    except DecodeError as exc:
        raise InvalidArgument(
            f"{method}: the request ({len(data)} bytes) is not a valid "
            f"{kind.DESCRIPTOR.full_name}: {exc}"
        ) from None


async def decoded(requests: AsyncIterator[bytes], kind: type[M], method: str) -> AsyncIterator[M]:
    """A request stream's messages decoded one by one; raises InvalidArgument at the first
    undecodable one (the handler ends the call with it)."""
    async for data in requests:
        yield parse(kind, data, method)


async def decoded_sized(
    requests: AsyncIterator[bytes], kind: type[M], method: str
) -> AsyncIterator[tuple[M, int]]:
    """As `decoded`, with each request's size as it came (what its bytes cost to hold,
    known for free here: measuring a parsed message walks it)."""
    async for data in requests:
        yield parse(kind, data, method), len(data)


async def decode(context: grpc.aio.ServicerContext, kind: type[M], data: bytes, method: str) -> M:
    """A unary request decoded, or the call aborted with INVALID_ARGUMENT."""
    try:
        return parse(kind, data, method)
    except InvalidArgument as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
        raise AssertionError("unreachable: abort raises") from None


UnaryHandler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def unary_handlers(service: Any, servicer: object, messages: Any) -> grpc.GenericRpcHandler:
    """Every unary method of `service` (a ServiceDescriptor) served by the same-named
    method of `servicer`, its request decoded by `decode`; `messages` is the generated
    `_pb2` module holding the request and response types."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        if method.client_streaming or method.server_streaming:
            raise ValueError(f"{service.full_name}/{method.name} is not unary")
        request_type = getattr(messages, method.input_type.name)
        response_type = getattr(messages, method.output_type.name)
        name = f"{service.name}/{method.name}"
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _decoding(getattr(servicer, method.name), request_type, name),
            request_deserializer=RAW,
            response_serializer=response_type.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _decoding(handler: UnaryHandler, kind: type[Message], method: str) -> UnaryHandler:
    async def handle(data: bytes, context: grpc.aio.ServicerContext) -> Any:
        return await handler(await decode(context, kind, data, method), context)

    return handle
