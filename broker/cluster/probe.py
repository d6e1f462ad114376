"""Asking brokers how they are: Admin.Status (and ListQueues) over plain gRPC stubs of
broker.pb, read into BrokerStatus and the Bridges a broker reports.

Only the generated messages and stubs: the cluster layer does not import the client or
the broker it asks.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

POSITION_RE = re.compile(r"\bposition (\d+)")


@dataclass(frozen=True)
class BrokerStatus:
    name: str
    role: str
    address: str
    components: list[tuple[str, str, str, str]]
    queues: int | None = None
    depth: int = 0
    in_flight: int = 0
    consumers: int = 0
    # Why the broker refuses clients (a slave names its master), if it does.
    refusal: str = ""

    @property
    def group(self) -> tuple[str, str] | None:
        """(state, detail) of the broker's group component, if it is a group member.

        A master says "epoch 3, position 1042, in-sync b,c"; a slave "master b at
        127.0.0.1:61617, position 1042"; an electing member why it waits.
        """
        for kind, _, state, detail in self.components:
            if kind == "group":
                return state, detail
        return None

    @property
    def position(self) -> int | None:
        """The replication position the group component reports, if any."""
        group = self.group
        m = POSITION_RE.search(group[1]) if group is not None else None
        return int(m[1]) if m else None


@dataclass(frozen=True)
class Bridge:
    """One outbound bridge as its broker reports it."""

    label: str
    # "connecting", "up", "backoff" as the broker says; "missing" if it does not list it.
    state: str
    # The broker at the other end, once linked.
    peer: str = ""
    # The broker's own words: "b@127.0.0.1:61617, forwarded 12", or the last error.
    detail: str = ""

    @property
    def error(self) -> str:
        """The detail without the address it starts with: what went wrong, if anything."""
        if self.state == "up":
            return ""
        # A link's detail starts with where it is, then the error:
        # "127.0.0.1:61617, UNAVAILABLE: failed to connect ..." (or "-" before any try).
        first, _, rest = self.detail.partition(", ")
        if first == "-" or (first and " " not in first and ":" in first):
            return rest
        return self.detail


def bridges_of(labels: Sequence[str], st: BrokerStatus | None) -> list[Bridge]:
    """The expected bridges `labels`, in order, with their state from the broker's status.

    Other bridge components (links other brokers opened to this one) are not listed: each
    is the peer's outbound bridge, shown on the peer's line.
    """
    if st is None:
        return []
    reported = {
        name: (state, detail) for kind, name, state, detail in st.components if kind == "bridge"
    }
    out = []
    for label in labels:
        if label not in reported:
            others = ", ".join(reported) or "none"
            out.append(
                Bridge(
                    label, "missing", detail=f"the broker does not report it (it reports: {others})"
                )
            )
            continue
        state, detail = reported[label]
        where = detail.partition(", ")[0]
        peer = where.partition("@")[0] if "@" in where else ""
        out.append(Bridge(label, state, peer, detail))
    return out


class AdminProbe:
    """Admin.Status and ListQueues over cached synchronous channels, with short deadlines."""

    def __init__(self, timeout: float = 1.0) -> None:
        self.timeout = timeout
        self._channels: dict[str, Any] = {}

    def _stub(self, address: str) -> Any:
        import grpc

        from broker.pb import admin_pb2_grpc

        channel = self._channels.get(address)
        if channel is None:
            # Short reconnect backoff: brokers come and go; gRPC's default backoff grows to
            # two minutes and would hide a broker that has come back.
            channel = grpc.insecure_channel(
                address,
                options=[
                    ("grpc.initial_reconnect_backoff_ms", 200),
                    ("grpc.min_reconnect_backoff_ms", 200),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                    ("grpc.enable_retries", 0),
                ],
            )
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

        from broker.pb import admin_pb2

        stub = self._stub(address)
        try:
            st = stub.Status(
                admin_pb2.StatusRequest(), timeout=self.timeout, wait_for_ready=expect_up
            )
        except grpc.RpcError:
            return None
        components = [(c.kind, c.name, c.state, c.detail) for c in st.components]
        base = BrokerStatus(
            name=st.name,
            role=st.role or "?",
            address=st.client_address,
            components=components,
            refusal=st.refusal,
        )
        if not queues or st.refusal or base.role in ("slave", "electing"):
            return base
        try:
            qs = stub.ListQueues(admin_pb2.ListQueuesRequest(), timeout=self.timeout).queues
        except grpc.RpcError:
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
