"""Asking brokers how they are: Admin.Status (and ListQueues) over plain gRPC stubs of
broker.pb, read into BrokerStatus and the Bridges a broker reports.

Only the generated messages and stubs: the cluster layer does not import the client or
the broker it asks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from broker.pb import admin_pb2

# A link's state as the status table words it.
_LINK_WORDS = {
    admin_pb2.LINK_CONNECTING: "connecting",
    admin_pb2.LINK_UP: "up",
    admin_pb2.LINK_BACKOFF: "backoff",
}
# Members that refuse clients: asking them for queues is pointless.
_REFUSING = frozenset({admin_pb2.ROLE_SLAVE, admin_pb2.ROLE_ELECTING})


@dataclass(frozen=True)
class GroupView:
    """A group member's report of its group: typed, with the words shown to people."""

    role: str
    # For people only: "epoch 3, position 1042, in-sync b,c", "master b at ..., position
    # 1042", or why an electing member waits.
    detail: str
    position: int | None = None


@dataclass(frozen=True)
class BridgeView:
    """One bridge as its broker reports it, typed."""

    label: str
    state: admin_pb2.LinkState
    peer: str = ""
    last_error: str = ""
    inbound: bool = False


@dataclass(frozen=True)
class BrokerStatus:
    name: str
    # As the broker words it, for display; decisions read `role_kind`.
    role: str
    address: str
    role_kind: admin_pb2.Role = admin_pb2.ROLE_UNKNOWN
    group: GroupView | None = None
    bridges: tuple[BridgeView, ...] = ()
    queues: int | None = None
    depth: int = 0
    in_flight: int = 0
    consumers: int = 0
    # Why the broker refuses clients (a slave names its master), if it does.
    refusal: str = ""

    @property
    def master(self) -> bool:
        return self.role_kind == admin_pb2.ROLE_MASTER

    @property
    def serving_role(self) -> bool:
        """Standalone or master: the roles that take clients and run bridges."""
        return self.role_kind in (admin_pb2.ROLE_STANDALONE, admin_pb2.ROLE_MASTER)

    @property
    def position(self) -> int | None:
        """The replication position the broker's group reports, if any."""
        return self.group.position if self.group is not None else None

    @property
    def detail(self) -> str:
        """The group's words on the broker's role (epoch, in-sync set, master), or ""."""
        return self.group.detail if self.group is not None else ""


def read_status(st: admin_pb2.StatusResponse) -> BrokerStatus:
    """A StatusResponse's typed fields; the text fields only where they are words for
    people (the role as shown, the group's detail)."""
    group = None
    if st.HasField("group"):
        detail = next((c.detail for c in st.components if c.kind == "group"), "")
        position = st.group.position if st.group.HasField("position") else None
        group = GroupView(st.role, detail, position)
    bridges = tuple(
        BridgeView(b.label, b.state, b.peer, b.last_error, b.inbound) for b in st.bridges
    )
    return BrokerStatus(
        name=st.name,
        role=st.role or "?",
        address=st.client_address,
        role_kind=st.role_kind,
        group=group,
        bridges=bridges,
        refusal=st.refusal,
    )


@dataclass(frozen=True)
class Bridge:
    """One expected outbound bridge, as the table and problem lines show it."""

    label: str
    # "connecting", "up", "backoff" as the broker says; "missing" if it does not list it.
    state: str
    # The broker at the other end, once linked.
    peer: str = ""
    # What went wrong, if it is not up.
    error: str = ""


def bridges_of(labels: Sequence[str], st: BrokerStatus | None) -> list[Bridge]:
    """The expected bridges `labels`, in order, with their state from the broker's status.

    Links other brokers opened to this one are not listed: each is the peer's outbound
    bridge, shown on the peer's line.
    """
    if st is None:
        return []
    reported = {b.label: b for b in st.bridges if not b.inbound}
    out = []
    for label in labels:
        b = reported.get(label)
        if b is None:
            others = ", ".join(b.label for b in st.bridges) or "none"
            out.append(
                Bridge(
                    label, "missing", error=f"the broker does not report it (it reports: {others})"
                )
            )
            continue
        state = _LINK_WORDS.get(b.state, "?")
        out.append(
            Bridge(label, state, b.peer, "" if b.state == admin_pb2.LINK_UP else b.last_error)
        )
    return out


class AdminProbe:
    """Admin.Status and ListQueues over cached synchronous channels, with short deadlines."""

    def __init__(
        self,
        timeout: float = 1.0,
        ca: bytes | None = None,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.timeout = timeout
        # The topology's CA: brokers with TLS are probed over TLS, verified with it.
        self.ca = ca
        # Credentials for brokers with users (Status needs none; ListQueues does).
        self.metadata = metadata
        self._channels: dict[str, Any] = {}
        # Brokers with users that refused ListQueues to this probe (no credentials, or
        # not admin): not asked again (each refusal is logged by the broker).
        self._no_queues: set[str] = set()

    def _stub(self, address: str) -> Any:
        import grpc

        from broker.pb import admin_pb2_grpc

        channel = self._channels.get(address)
        if channel is None:
            # Short reconnect backoff: brokers come and go; gRPC's default backoff grows to
            # two minutes and would hide a broker that has come back.
            options = [
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 1000),
                ("grpc.enable_retries", 0),
            ]
            if self.ca is None:
                channel = grpc.insecure_channel(address, options=options)
            else:
                credentials = grpc.ssl_channel_credentials(self.ca)
                channel = grpc.secure_channel(address, credentials, options=options)
            self._channels[address] = channel
        return admin_pb2_grpc.AdminStub(channel)

    def status(
        self, address: str, *, expect_up: bool = False, queues: bool = True
    ) -> BrokerStatus | None:
        """The broker's status, or None if it does not answer in time.

        `expect_up`: the broker is known to listen, so wait out a reconnect backoff left
        from earlier failed probes instead of failing fast. `queues`: also count its
        queues (a serving broker only; a slave refuses ListQueues).
        """
        import grpc

        stub = self._stub(address)
        try:
            st = stub.Status(
                admin_pb2.StatusRequest(), timeout=self.timeout, wait_for_ready=expect_up
            )
        except grpc.RpcError:
            return None
        base = read_status(st)
        if not queues or st.refusal or base.role_kind in _REFUSING or address in self._no_queues:
            return base
        try:
            qs = stub.ListQueues(
                admin_pb2.ListQueuesRequest(), timeout=self.timeout, metadata=self.metadata
            ).queues
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                self._no_queues.add(address)
            return base  # e.g. a slave refusing; the role still says what it is
        return dataclasses.replace(
            base,
            queues=len(qs),
            depth=sum(q.depth for q in qs),
            in_flight=sum(q.in_flight for q in qs),
            consumers=sum(q.consumers for q in qs),
        )

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
