"""The Admin service: a broker's status, its queues and topic subscriptions, purge and
browse, for operators."""

from __future__ import annotations

import grpc

from broker import __version__
from broker.config import BrokerConfig
from broker.errors import BrokerError
from broker.pb import admin_pb2, admin_pb2_grpc
from broker.security.authorization import Operation
from broker.server.codes import status_code
from broker.server.gate import ServiceGate
from broker.server.guard import CallGuard
from broker.server.status import BridgeStatus, GroupStatus, LinkState, Role

# The wire's spelling of each role and bridge state (every one has one: a unit test checks).
ROLES: dict[Role, admin_pb2.Role] = {
    Role.STANDALONE: admin_pb2.ROLE_STANDALONE,
    Role.MASTER: admin_pb2.ROLE_MASTER,
    Role.SLAVE: admin_pb2.ROLE_SLAVE,
    Role.ELECTING: admin_pb2.ROLE_ELECTING,
    Role.STOPPED: admin_pb2.ROLE_STOPPED,
}
LINK_STATES: dict[LinkState, admin_pb2.LinkState] = {
    LinkState.CONNECTING: admin_pb2.LINK_CONNECTING,
    LinkState.UP: admin_pb2.LINK_UP,
    LinkState.BACKOFF: admin_pb2.LINK_BACKOFF,
}
_ROLES_BACK = {v: k for k, v in ROLES.items()}
_LINK_STATES_BACK = {v: k for k, v in LINK_STATES.items()}


def role_of(role: admin_pb2.Role) -> Role | None:
    """The role a status reports, or None if it reports none (ROLE_UNKNOWN)."""
    return _ROLES_BACK.get(role)


def link_state_of(state: admin_pb2.LinkState) -> LinkState | None:
    """The state a bridge reports, or None if it reports none (LINK_STATE_UNKNOWN)."""
    return _LINK_STATES_BACK.get(state)


class AdminService(admin_pb2_grpc.AdminServicer):
    def __init__(
        self,
        config: BrokerConfig,
        gate: ServiceGate,
        started_ms: int,
        guard: CallGuard | None = None,
    ) -> None:
        self.config = config
        self.gate = gate
        self.started_ms = started_ms
        self.guard = guard or CallGuard()

    async def _admin(
        self, context: grpc.aio.ServicerContext, queue: str | None, what: str
    ) -> None:
        """Abort unless the caller may administer `queue` (None: the whole broker).
        Status stays open: clients probe it before they present anything, and `netbroker
        up` and `status` watch brokers with it."""
        principal = await self.guard.principal(context)
        if principal is None:
            return
        if queue is None:
            if not principal.may_administer():
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"permission denied: {what} needs admin on queue '>' "
                    f"(user {principal.name!r})",
                )
        else:
            await self.guard.require(context, principal, Operation.ADMIN, False, queue)

    async def Status(
        self, request: admin_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.StatusResponse:
        config = self.config
        reports = self.gate.reports()
        components = [report.component() for report in reports]
        groups = [group_pb(r) for r in reports if isinstance(r, GroupStatus)]
        return admin_pb2.StatusResponse(
            name=config.name,
            role=self.gate.role.value,
            client_address=self.gate.client_address,
            version=__version__,
            components=[
                admin_pb2.Component(kind=c.kind, name=c.name, state=c.state, detail=c.detail)
                for c in components
            ],
            started_ms=self.started_ms,
            refusal="" if self.gate.broker is not None else self.gate.refusal,
            role_kind=ROLES[self.gate.role],
            group=groups[0] if groups else None,
            bridges=[bridge_pb(r) for r in reports if isinstance(r, BridgeStatus)],
        )

    async def ListQueues(
        self, request: admin_pb2.ListQueuesRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListQueuesResponse:
        await self._admin(context, None, "listing queues")
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
            ],
            topics=[
                admin_pb2.TopicInfo(
                    name=t.name,
                    subscriptions=len(t.subscriptions),
                    subscribers=[
                        admin_pb2.SubscriptionInfo(
                            durable=s.durable is not None,
                            client_id=s.durable[0] if s.durable else "",
                            subscription=s.durable[1] if s.durable else "",
                            active=s.active,
                            depth=s.pending + s.in_flight,
                            pending=s.pending,
                            in_flight=s.in_flight,
                            enqueued=s.enqueued,
                            dequeued=s.dequeued,
                            label=s.label,
                        )
                        for s in t.subscriptions
                    ],
                )
                for t in broker.topic_snapshot()
            ],
            published=broker.published,
            dropped=broker.dropped,
        )

    async def Purge(
        self, request: admin_pb2.PurgeRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.PurgeResponse:
        await self._admin(context, request.queue, "purge")
        broker = await self.gate.admit(context)
        try:
            return admin_pb2.PurgeResponse(purged=broker.purge(request.queue))
        except BrokerError as exc:
            await context.abort(status_code(exc.code), exc.message)

    async def Browse(
        self, request: admin_pb2.BrowseRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.BrowseResponse:
        await self._admin(context, request.queue, "browse")
        broker = await self.gate.admit(context)
        try:
            messages = broker.browse(request.queue, request.limit or 100)
        except BrokerError as exc:
            await context.abort(status_code(exc.code), exc.message)
        return admin_pb2.BrowseResponse(messages=messages)


def group_pb(group: GroupStatus) -> admin_pb2.GroupStatus:
    return admin_pb2.GroupStatus(
        name=group.name,
        role=ROLES[group.role],
        epoch=group.epoch,
        position=group.position,
        in_sync=group.in_sync,
        master=group.master,
        master_address=group.master_address,
        waiting=group.waiting,
        replication_error=group.replication_error,
        lock=group.lock,
        lags=[
            admin_pb2.ReplicaLag(follower=lag.follower, entries=lag.entries, seconds=lag.seconds)
            for lag in group.lags
        ],
        elections=group.elections,
        became_master=group.became_master,
    )


def bridge_pb(bridge: BridgeStatus) -> admin_pb2.BridgeStatus:
    return admin_pb2.BridgeStatus(
        label=bridge.label,
        state=LINK_STATES[bridge.state],
        peer=bridge.peer,
        address=bridge.address,
        forwarded=bridge.forwarded,
        last_error=bridge.last_error,
        inbound=bridge.inbound,
        received=bridge.received,
        unacknowledged=bridge.unacknowledged,
        last_error_at=bridge.last_error_at,
    )
