"""One broker as one poll found it: its Admin Status and ListQueues answers read into
plain typed data (pure: protobuf messages in, dataclasses out)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from broker.pb import admin_pb2

ROLE_WORDS = {
    admin_pb2.ROLE_STANDALONE: "standalone",
    admin_pb2.ROLE_MASTER: "master",
    admin_pb2.ROLE_SLAVE: "slave",
    admin_pb2.ROLE_ELECTING: "electing",
    admin_pb2.ROLE_STOPPED: "stopping",
}
LINK_WORDS = {
    admin_pb2.LINK_CONNECTING: "connecting",
    admin_pb2.LINK_UP: "up",
    admin_pb2.LINK_BACKOFF: "backoff",
}
# Roles that take clients; only these are asked for their queues (the others refuse).
SERVING = frozenset({"standalone", "master"})


@dataclass(frozen=True)
class QueueSnap:
    name: str
    depth: int
    pending: int
    in_flight: int
    consumers: int
    enqueued: int
    dequeued: int


@dataclass(frozen=True)
class TopicSnap:
    name: str
    subscriptions: int
    active: int
    depth: int
    in_flight: int
    enqueued: int


@dataclass(frozen=True)
class BridgeSnap:
    label: str
    state: str
    peer: str = ""
    address: str = ""
    # Messages forwarded over the current session (None: no session).
    forwarded: int | None = None
    last_error: str = ""
    inbound: bool = False
    received: int = 0


@dataclass(frozen=True)
class GroupSnap:
    name: str
    epoch: int | None = None
    position: int | None = None
    in_sync: tuple[str, ...] = ()
    master: str = ""
    waiting: str = ""
    replication_error: str = ""


@dataclass(frozen=True)
class BrokerSnapshot:
    name: str
    role: str
    address: str = ""
    group: GroupSnap | None = None
    bridges: tuple[BridgeSnap, ...] = ()
    # None: not asked (a slave) or the call failed; the role still says what it is.
    queues: tuple[QueueSnap, ...] | None = None
    topics: tuple[TopicSnap, ...] | None = None
    refusal: str = ""
    # Why a serving broker did not list its queues (e.g. the console's user may not).
    queues_error: str = ""

    @property
    def serving(self) -> bool:
        return self.role in SERVING


def read_status(st: admin_pb2.StatusResponse) -> BrokerSnapshot:
    group = None
    if st.HasField("group"):
        g = st.group
        group = GroupSnap(
            name=g.name,
            epoch=g.epoch if g.HasField("epoch") else None,
            position=g.position if g.HasField("position") else None,
            in_sync=tuple(g.in_sync),
            master=g.master,
            waiting=g.waiting,
            replication_error=g.replication_error,
        )
    bridges = tuple(
        BridgeSnap(
            label=b.label,
            state=LINK_WORDS.get(b.state, "?"),
            peer=b.peer,
            address=b.address,
            forwarded=b.forwarded if b.HasField("forwarded") else None,
            last_error=b.last_error,
            inbound=b.inbound,
            received=b.received,
        )
        for b in st.bridges
    )
    return BrokerSnapshot(
        name=st.name,
        role=ROLE_WORDS.get(st.role_kind, st.role or "?"),
        address=st.client_address,
        group=group,
        bridges=bridges,
        refusal=st.refusal,
    )


def with_queues(snap: BrokerSnapshot, lq: admin_pb2.ListQueuesResponse) -> BrokerSnapshot:
    """`snap` with the queues and topics of its ListQueues answer."""
    queues = tuple(
        QueueSnap(q.name, q.depth, q.pending, q.in_flight, q.consumers, q.enqueued, q.dequeued)
        for q in lq.queues
    )
    topics = tuple(
        TopicSnap(
            name=t.name,
            subscriptions=t.subscriptions,
            active=sum(1 for s in t.subscribers if s.active),
            depth=sum(s.depth for s in t.subscribers),
            in_flight=sum(s.in_flight for s in t.subscribers),
            enqueued=sum(s.enqueued for s in t.subscribers),
        )
        for t in lq.topics
    )
    return replace(snap, queues=queues, topics=topics)
