"""The Admin service: a broker's status, its queues, purge and browse, for operators."""

from __future__ import annotations

import grpc

from broker import __version__
from broker.config import BrokerConfig
from broker.errors import BrokerError
from broker.pb import admin_pb2, admin_pb2_grpc
from broker.server.codes import status_code
from broker.server.gate import ServiceGate


class AdminService(admin_pb2_grpc.AdminServicer):
    def __init__(self, config: BrokerConfig, gate: ServiceGate, started_ms: int) -> None:
        self.config = config
        self.gate = gate
        self.started_ms = started_ms

    async def Status(
        self, request: admin_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.StatusResponse:
        config = self.config
        return admin_pb2.StatusResponse(
            name=config.name,
            role=self.gate.role,
            client_address=self.gate.client_address,
            version=__version__,
            components=[
                admin_pb2.Component(kind=c.kind, name=c.name, state=c.state, detail=c.detail)
                for c in self.gate.components()
            ],
            started_ms=self.started_ms,
            refusal="" if self.gate.broker is not None else self.gate.refusal,
        )

    async def ListQueues(
        self, request: admin_pb2.ListQueuesRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListQueuesResponse:
        broker = await self.gate.admit(context)
        return admin_pb2.ListQueuesResponse(
            queues=[
                admin_pb2.QueueInfo(
                    name=s.name,
                    depth=s.pending + s.in_flight,
                    pending=s.pending,
                    in_flight=s.in_flight,
                    enqueued=s.enqueued,
                    dequeued=s.dequeued,
                    consumers=s.consumers,
                    expired=s.expired,
                    dead_lettered=s.dead_lettered,
                )
                for s in broker.snapshot()
            ]
        )

    async def Purge(
        self, request: admin_pb2.PurgeRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.PurgeResponse:
        broker = await self.gate.admit(context)
        try:
            return admin_pb2.PurgeResponse(purged=broker.purge(request.queue))
        except BrokerError as exc:
            await context.abort(status_code(exc.code), exc.message)

    async def Browse(
        self, request: admin_pb2.BrowseRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.BrowseResponse:
        broker = await self.gate.admit(context)
        try:
            messages = broker.browse(request.queue, request.limit or 100)
        except BrokerError as exc:
            await context.abort(status_code(exc.code), exc.message)
        return admin_pb2.BrowseResponse(messages=messages)
