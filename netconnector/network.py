"""This broker's place in a network of brokers: its demand table, links and connectors.

Plugged into a Broker by the assembly: it listens to the broker's local demand, serves
the Bridge service for links other brokers open, and runs this broker's own connectors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc
from google.protobuf.message import DecodeError

from broker.config import BrokerConfig
from broker.core.broker import Broker
from broker.core.queue import Entry
from broker.core.topics import network_queue
from broker.pb import bridge_pb2
from broker.pb.message_pb2 import Message
from broker.security.authorization import AuthorizationMap
from broker.security.principal import broker_principal
from broker.security.tls import TlsMaterial
from broker.server.gate import ServiceGate
from broker.server.status import BridgeStatus, LinkState, Report
from netconnector import bridge_service
from netconnector.connector import Connector
from netconnector.demand import DemandTable
from netconnector.filters import DestinationFilter
from netconnector.hello import LinkTerms, make_hello
from netconnector.multicast import MulticastConnector, MulticastDiscovery
from netconnector.outbox import Outbox
from netconnector.session import BridgeSession, topic_demand, topic_entries
from netconnector.topic_routes import TopicAdvertisement, TopicRoutes
from netconnector.uri import ConnectorSpec, parse_connector

log = logging.getLogger("netbroker.network")

# The store records of durable topic routes, one per neighbour (path name follows).
TOPIC_RECORDS = "topics:"


def _decode_routes(value: bytes) -> TopicAdvertisement:
    try:
        return topic_entries(bridge_pb2.TopicDemand.FromString(value))
    except DecodeError:  # a damaged record: the link's next advertisement replaces it
        log.warning("a stored topic route record could not be read; ignored")
        return {}


def _refusals(session: BridgeSession) -> str:
    if not session.unauthorized:
        return ""
    return f"refused {session.unauthorized} forwarded messages; last: {session.last_refusal}"


class Network:
    """Long-lived for the broker process; attached to a broker core while it serves.

    The host of its links (`LinkHost`), of the Bridge service (`BridgeHost`) and of
    multicast discovery (`DiscoveryHost`)."""

    def __init__(
        self, config: BrokerConfig, gate: ServiceGate, tls: TlsMaterial | None = None
    ) -> None:
        self.config = config
        # Links dial with it and the Bridge service checks the caller's certificate.
        self.tls = tls
        # The users file's authorization map, set by the assembly: what inbound bridges
        # forward is checked against it as a broker principal (None: all let in).
        self.authorization: AuthorizationMap | None = None
        self.gate = gate
        self.name = config.name
        self.group = config.group
        self.token = config.token
        self.broker: Broker | None = None
        self.table = DemandTable()
        self.topics = TopicRoutes(config.path_name)
        # The destination filter of the last forwarding link to each neighbour (by path
        # name), for topic messages routed to it while its link is down.
        self._filters: dict[str, DestinationFilter] = {}
        # Per neighbour, the durable topic entries as last written to the store.
        self._persisted: dict[str, TopicAdvertisement] = {}
        self.sessions: set[BridgeSession] = set()
        self.connectors: list[Connector | MulticastConnector] = []
        # Zeroconf behind multicast:// connectors; None when there are none.
        self.discovery: MulticastDiscovery | None = None
        self._changed = False
        # (previous broker, queue) -> forwarded messages taken here since last told.
        self._consumed: dict[tuple[str, str], int] = {}
        self._credits_scheduled = False
        gate.sources.append(self.status)
        for uri in config.connectors:
            spec = parse_connector(uri)
            if spec.dynamic_only:
                log.warning(
                    "%s: dynamicOnly has no effect: in ActiveMQ it governs durable topic "
                    "subscriptions, which netbroker always forwards for while they exist",
                    spec.name,
                )
            if spec.kind == "multicast":
                if self.discovery is None:
                    self.discovery = MulticastDiscovery(self)
                self.connectors.append(self.discovery.connector(spec))
            else:
                self.connectors.append(Connector(self, spec))
        if self.discovery is not None:
            # Browsing starts now and lasts until close(), so that a slave promoted
            # later already knows its peers.
            self.discovery.start()

    def attach(self, broker: Broker) -> None:
        """Serve for `broker`: follow its demand and start the connectors."""
        self.broker = broker
        self.table = DemandTable()
        self.topics = TopicRoutes(self.config.path_name)
        broker.demand_listeners.append(self._local_demand)
        broker.taken_listeners.append(self._taken)
        broker.topics.listeners.append(self._local_topics)
        broker.topic_router = self
        for queue in broker.queues.values():
            self.table.set_local(queue.name, queue.local_consumers)
        self._set_local_topics(broker)
        self._persisted = {}
        for name, value in broker.records(TOPIC_RECORDS):
            entries = _decode_routes(value)
            self.topics.restore(name[len(TOPIC_RECORDS) :], entries)
            self._persisted[name[len(TOPIC_RECORDS) :]] = entries
        for connector in self.connectors:
            connector.start()
        if self.discovery is not None:
            self.discovery.advertise(self.gate.role.value)

    async def detach(self) -> None:
        """Stop serving: links close and their messages return to the queues."""
        # Withdrawn first, so that peers stop bridging here while the links close.
        withdrawal = self.discovery.withdraw() if self.discovery is not None else None
        for connector in self.connectors:
            await connector.stop()
        for session in list(self.sessions):
            self.close_session(session)
        if self.broker is not None:
            self.broker.topic_router = None
            if self._local_topics in self.broker.topics.listeners:
                self.broker.topics.listeners.remove(self._local_topics)
        self.broker = None
        if self.discovery is not None and withdrawal is not None:
            await self.discovery.wait_withdrawn(withdrawal)

    async def close(self) -> None:
        """At process end, after `detach`: stop zeroconf (browsing, sockets, thread)."""
        if self.discovery is not None:
            await self.discovery.close()

    # -- demand propagation --------------------------------------------------------

    def _local_demand(self, queue: str, consumers: int) -> None:
        self.table.set_local(queue, consumers)
        # Also on a new queue with no consumers: static includes may now apply to it.
        self.demand_changed()

    def _persist_topic_routes(self) -> None:
        """Keep each neighbour's durable topic entries in the store (replicated in a
        group): a restarted broker or a new master routes persistent messages to a
        durable subscription behind a bridge before its link is back."""
        broker = self.broker
        if broker is None:
            return
        now = self.topics.durable_entries()
        for peer in set(now) | set(self._persisted):
            entries = now.get(peer)
            if entries == self._persisted.get(peer):
                continue
            value = topic_demand(entries).SerializeToString() if entries else None
            broker.keep_record(TOPIC_RECORDS + peer, value)
            if entries:
                self._persisted[peer] = entries
            else:
                del self._persisted[peer]

    def _local_topics(self) -> None:
        if self.broker is not None and self._set_local_topics(self.broker):
            self.demand_changed()

    def _set_local_topics(self, broker: Broker) -> bool:
        patterns = broker.topics.patterns()
        durable = [p for p, subs in patterns.items() if any(s.durable for s in subs)]
        return self.topics.set_local(patterns, durable)

    def route(self, message: Message) -> tuple[bool, list[tuple[str, list[str]]]]:
        """The broker's `TopicRouter`: whether this broker's subscriptions take a topic
        message, and which bridges' topic queues carry it on, for which brokers."""
        topic = message.destination
        route = self.topics.route(
            topic, message.broker_path, message.topic_targets, message.persistent
        )
        out: list[tuple[str, list[str]]] = []
        for peer, carried in route.peers.items():
            # excludedDestinations and friends apply to topics too (the link's, or the
            # last one's while it is down).
            patterns = self._filters.get(peer)
            if patterns is not None and not patterns.forwards_dynamically(topic):
                continue
            out.append((network_queue(peer), sorted(carried)))
        return route.local, out

    def demand_changed(self) -> None:
        """Coalesce changes of one loop turn into one round of advertisements."""
        if not self._changed:
            self._changed = True
            asyncio.get_running_loop().call_soon(self._propagate)

    def _propagate(self) -> None:
        self._changed = False
        self._persist_topic_routes()
        for session in list(self.sessions):
            session.advertise()
            session.reconcile()

    def capacity(self, queue: str, hops: int, peer: str) -> int:
        """What to advertise to `peer` as the take-ahead of `queue`'s nearest consumers."""
        if hops == 0:
            return self.broker.local_capacity(queue) if self.broker is not None else 0
        learned = [s.capacity.get(queue, 0) for s in self.sessions if s.peer != peer]
        return max(learned, default=0)

    def route_elsewhere(self, queue: str, path: Sequence[str], peer: str) -> bool:
        """Whether a bridge other than the one to `peer` forwards `queue` to a broker
        not on `path`."""
        return any(
            s.peer != peer and s.terms.peer_in_paths not in path and queue in s.consumers
            for s in self.sessions
        )

    def _taken(self, entries: list[Entry]) -> None:
        """Forwarded messages our consumers took: the forwarder may send that many more.

        Credit returns when a message is handed to a consumer, not when it is acked, so
        the consumer's prefetch keeps the link busy while the backlog held here stays
        within the capacity we advertised."""
        if not self.sessions:
            return  # no link: no forwarder to credit
        me = self.config.path_name
        consumed = self._consumed
        for entry in entries:
            if entry.message.topic:
                continue  # a topic's forwarder gets credit back once the batch is stored
            path = entry.message.broker_path
            if len(path) >= 2 and path[-1] == me:
                key = (path[-2], entry.message.destination)
                consumed[key] = consumed.get(key, 0) + 1
        if consumed and not self._credits_scheduled:
            # Many acks in one loop turn share one credit frame per peer.
            self._credits_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_credits)

    def _send_credits(self) -> None:
        self._credits_scheduled = False
        consumed, self._consumed = self._consumed, {}
        # Keyed by path names: credit for what a group forwarded goes to the link to
        # whichever member serves it now.
        by_peer: dict[str, list[bridge_pb2.Credit]] = {}
        for (peer, queue), count in consumed.items():
            by_peer.setdefault(peer, []).append(bridge_pb2.Credit(queue=queue, count=count))
        for session in self.sessions:
            credits = by_peer.get(session.terms.peer_in_paths)
            if credits:
                session.send_credits(credits)

    def open_session(self, broker: Broker, terms: LinkTerms, outbox: Outbox) -> BridgeSession:
        session = BridgeSession(
            broker, self.table, terms, outbox.put, self.demand_changed, self.capacity,
            self.route_elsewhere, self.topics,
        )  # fmt: skip
        if self.authorization is not None:
            session.principal = broker_principal(terms.peer, self.authorization)
        self.sessions.add(session)
        if terms.forwards:
            self._filters[terms.peer_in_paths] = terms.filter
        session.start()
        return session

    def close_session(self, session: BridgeSession) -> None:
        session.close()
        self.sessions.discard(session)
        peer = session.terms.peer_in_paths
        linked = any(
            s.terms.forwards and s.terms.peer_in_paths == peer and not s.closed
            for s in self.sessions
        )
        if session.terms.forwards and not linked and self.topics.link_down(peer):
            self.demand_changed()

    # -- hellos ----------------------------------------------------------------------

    def hello(self, spec: ConnectorSpec | None = None) -> bridge_pb2.BridgeHello:
        return make_hello(self.name, self.group, self.token, spec, self.config.path_name)

    def status(self) -> list[Report]:
        out: list[Report] = [status for c in self.connectors for status in c.statuses()]
        outbound = {id(s) for c in self.connectors for s in c.sessions}
        out.extend(
            BridgeStatus(
                f"from {s.peer}",
                LinkState.UP,
                peer=s.peer,
                inbound=True,
                received=s.received,
                unacknowledged=s.unacknowledged if s.terms.forwards else None,
                last_error=_refusals(s),
            )
            for s in self.sessions
            if id(s) not in outbound
        )
        return out

    # -- the Bridge service, for links other brokers open -------------------------

    def install(self, server: grpc.aio.Server) -> None:
        bridge_service.install(server, self)
