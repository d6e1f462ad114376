"""One established bridge between this broker and a neighbour, whichever side opened it.

The session is an adapter: the demand table decides where consumers are, the forwarding
rule decides which messages may go, the broker's queues decide dispatch, and
`BridgeState` decides the rest (which network consumers exist, how deliveries are
batched, what the neighbour's answers do to the local copies, when a received batch is
answered, what close does). The session feeds it frames, deliveries and the outcomes of
stores, and carries its actions out against the broker and the link.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
from collections.abc import Callable, Sequence

from broker.core import wire
from broker.core.broker import Broker
from broker.core.queue import Consumer, Entry
from broker.core.topics import is_network_queue, is_subscription_queue, network_queue
from broker.errors import BrokerError
from broker.pb import bridge_pb2
from broker.pb.message_pb2 import Message
from broker.security.authorization import Operation
from broker.security.principal import Principal, denial
from netconnector import bridge_state as bs
from netconnector.bridge_state import MAX_FORWARD_BYTES, NETWORK_PRIORITY, REFUSED_RETRY
from netconnector.demand import Advertiser, DemandTable
from netconnector.forwarding import may_forward
from netconnector.hello import LinkTerms
from netconnector.outbox import Frame
from netconnector.topic_routes import TopicAdvertisement, TopicRoutes

__all__ = ["MAX_FORWARD_BYTES", "NETWORK_PRIORITY", "REFUSED_RETRY", "BridgeSession"]

log = logging.getLogger("netbroker.bridge")


def topic_demand(entries: TopicAdvertisement) -> bridge_pb2.TopicDemand:
    """Topic demand on the wire (and in the store's records)."""
    return bridge_pb2.TopicDemand(
        routes=[
            bridge_pb2.TopicRoute(pattern=pattern, broker=broker, hops=hops, durable=durable)
            for (pattern, broker), (hops, durable) in sorted(entries.items())
        ]
    )


def topic_entries(demand: bridge_pb2.TopicDemand) -> TopicAdvertisement:
    return {(r.pattern, r.broker): (r.hops, r.durable) for r in demand.routes}


class _NetworkSink:
    """A network consumer's deliveries go out as forward batches."""

    def __init__(self, session: BridgeSession, queue: str, sub: int) -> None:
        self.session = session
        self.queue = queue
        self.sub = sub

    def deliver(self, deliveries: list[tuple[int, Entry]]) -> None:
        self.session.forward(self.queue, self.sub, deliveries)


class BridgeSession:
    """Carries a `BridgeState`'s actions out against the broker and the link."""

    def __init__(
        self,
        broker: Broker,
        table: DemandTable,
        terms: LinkTerms,
        write: Callable[[Frame], None],
        on_demand_change: Callable[[], None],
        capacity: Callable[[str, int, str], int],
        route_elsewhere: Callable[[str, Sequence[str], str], bool],
        topics: TopicRoutes | None = None,
    ) -> None:
        self.broker = broker
        self.table = table
        # Topic demand: where the network's topic subscriptions are, by neighbour.
        self.topics = topics if topics is not None else TopicRoutes(broker.config.path_name)
        self._topics_sent: TopicAdvertisement | None = None
        self.terms = terms
        self.state = bs.BridgeState(terms, broker.config.path_name)
        # Under an authorization map, what the peer forwards is checked as its broker
        # principal (set by the network; None: everything is let in).
        self.principal: Principal | None = None
        self.unauthorized = 0
        self.last_refusal = ""
        self._write = write
        self._on_demand_change = on_demand_change
        # (queue, hops, peer) -> how many messages the consumers behind this broker take
        # ahead, for the capacity this broker advertises.
        self._capacity_of = capacity
        # (queue, broker path, peer) -> whether another bridge can take the message to
        # consumers without going back along its path.
        self._route_elsewhere = route_elsewhere
        self._advertiser = Advertiser(terms.peer, terms.advertise_ttl) if terms.advertises else None
        # queue -> network consumer, and the same by the state's handle.
        self.consumers: dict[str, Consumer] = {}
        self._subs: dict[int, Consumer] = {}
        # Deliveries sent and not yet answered, by batch: their entries, for the bytes.
        self._outgoing: dict[int, list[Entry]] = {}
        self._stores: dict[int, asyncio.Task[None]] = {}

    @property
    def peer(self) -> str:
        return self.terms.peer

    @property
    def closed(self) -> bool:
        return self.state.closed

    @property
    def capacity(self) -> dict[str, int]:
        return self.state.capacity

    @property
    def forwarded(self) -> int:
        return self.state.forwarded

    @property
    def received(self) -> int:
        return self.state.received

    @property
    def unacknowledged(self) -> int:
        """Messages sent to the peer that it has not answered yet."""
        return self.state.unacked

    # -- demand --------------------------------------------------------------------

    def advertise(self) -> None:
        if self._advertiser is None or self.closed:
            return
        self._advertise_topics()
        delta = self._advertiser.next_delta(self.table)
        if not delta:
            return
        peer = self.terms.peer
        demand = [
            bridge_pb2.Demand(
                queue=queue,
                consumers=count,
                hops=hops,
                capacity=self._capacity_of(queue, hops, peer),
            )
            for queue, (count, hops) in delta.upserts.items()
        ]
        demand.extend(bridge_pb2.Demand(queue=queue, consumers=0) for queue in delta.removals)
        self._write(bridge_pb2.BridgeFrame(demand=demand))

    def _advertise_topics(self) -> None:
        """Tell the peer where topic subscriptions are, whole, when that changed."""
        ad = self.topics.advertisement(self.terms.peer_in_paths, self.terms.advertise_ttl)
        if ad == self._topics_sent:
            return
        self._topics_sent = ad
        self._write(bridge_pb2.BridgeFrame(topics=topic_demand(ad)))

    def reconcile(self) -> None:
        """Make the network consumers match the peer's demand and the static includes."""
        if not self.terms.forwards or self.closed:
            return
        peer = self.terms.peer
        wanted = self.table.wanted_queues(peer, self.terms.network_ttl)
        remote = {q: d[0] for q in wanted if (d := self.table.remote(peer, q)) is not None}
        # Internal queues (topic subscriptions, other bridges' topic messages) are never
        # forwarded as queues; this bridge's own topic queue always is, while it is up.
        queues = [q for q in self.broker.queues if not is_subscription_queue(q)]
        topic_queue = network_queue(self.terms.peer_in_paths)
        self._carry(self.state.reconcile(wanted, queues, remote, topic_queue))

    # -- carrying actions out ------------------------------------------------------

    def _carry(self, actions: list[bs.Action]) -> None:
        broker = self.broker
        for action in actions:
            match action:
                case bs.SendBatch(batch_id, _, rewrite):
                    entries = self._outgoing[batch_id]
                    me = self.state.me
                    messages = [entry.data for entry in entries]
                    for i in rewrite:
                        messages[i] = wire.with_broker(messages[i], me)
                    self._write(wire.forward_frame(batch_id, messages))
                case bs.AckLocal(queue, sub, tags):
                    broker.ack(queue, self._subs[sub], list(tags))
                case bs.ReturnLocal(queue, sub, tags):
                    broker.nack(queue, self._subs[sub], list(tags), counted=False)
                case bs.RejectLocal(queue, sub, tag, reason):
                    broker.reject(queue, self._subs[sub], [tag], reason)
                case bs.Credit(queue, sub, count):
                    broker.credit(queue, self._subs[sub], count)
                case bs.CreditLater(delay, queue, sub, count):
                    asyncio.get_running_loop().call_later(
                        delay, functools.partial(self._retry_credit, queue, sub, count)
                    )
                case bs.Subscribe(queue, sub, priority, weight, limit):
                    self._subscribe(queue, sub, priority, weight, limit)
                case bs.Unsubscribe(queue, sub):
                    consumer = self._subs.pop(sub)
                    if self.consumers.get(queue) is consumer:
                        del self.consumers[queue]
                    broker.unsubscribe(queue, consumer)
                case bs.Restock(queue, sub):
                    consumer = self._subs[sub]
                    broker.credit(queue, consumer, consumer.max_credit)
                case bs.SetPrefetch(queue, sub, prefetch, limit):
                    broker.set_prefetch(queue, self._subs[sub], prefetch, limit)
                case bs.Rank(queue, sub, priority, weight):
                    broker.rank(queue, self._subs[sub], priority, weight)
                case bs.Revoke(queue, sub):
                    broker.revoke_credit(queue, self._subs[sub])
                case bs.AnswerBatch(batch_id, ok, error, refused, credits):
                    ack = bridge_pb2.ForwardAck(
                        batch_id=batch_id, ok=ok, error=error,
                        refused=[bridge_pb2.Refusal(position=p, reason=r) for p, r in refused],
                    )  # fmt: skip
                    self._write(
                        bridge_pb2.BridgeFrame(
                            acks=[ack],
                            credits=[bridge_pb2.Credit(queue=q, count=n) for q, n in credits],
                        )
                    )
                case bs.AbandonStores(batch_ids):
                    # Safe at any point: the broker enqueues whatever reached its store.
                    for batch_id in batch_ids:
                        task = self._stores.get(batch_id)
                        if task is not None:
                            task.cancel()
                case bs.Log(level, text):
                    getattr(log, level)("%s", text)
                case bs.Store():
                    raise AssertionError("stores start in on_frame")

    def _retry_credit(self, queue: str, sub: int, count: int) -> None:
        self._carry(self.state.retry_credit(queue, sub, count))

    def _subscribe(self, queue: str, sub: int, priority: int, weight: int, limit: int) -> None:
        peer = self.terms.peer_in_paths
        name = self.terms.peer
        message_ttl = self.terms.message_ttl
        broker = self.broker
        route_elsewhere = self._route_elsewhere

        if is_network_queue(queue):
            # Topic messages come here already routed: to this peer, for brokers beyond
            # it that they have not passed.
            self.consumers[queue] = consumer = broker.subscribe(
                queue, _NetworkSink(self, queue, sub), prefetch=self.terms.prefetch,
                priority=priority, name=f"topics to {name}", remote=True,
            )  # fmt: skip
            self._subs[sub] = consumer
            return

        def accepts(message: Message) -> bool:
            path = message.broker_path
            # Asked of every message dispatched to the bridge. Most are still on their
            # origin: their length says so, a membership test on the path costs more.
            if len(path) == 1 or peer not in path:
                return may_forward(path, peer, False, message_ttl)
            # Going back is for messages whose consumers moved away: not while a local
            # consumer, or a bridge to a broker the message has not been on, can take it
            # (in a mesh, overflow from the direct route must wait for it, not bounce).
            served = broker.has_local_consumers(queue) or route_elsewhere(queue, path, name)
            return may_forward(path, peer, served, message_ttl)

        consumer = broker.subscribe(
            queue,
            _NetworkSink(self, queue, sub),
            prefetch=self.terms.prefetch,
            priority=priority,
            name=f"bridge to {name}",
            remote=True,
            accepts=accepts,
            credit_limit=limit,
            weight=weight,
        )
        self.consumers[queue] = consumer
        self._subs[sub] = consumer

    # -- forwarding ----------------------------------------------------------------

    def forward(self, queue: str, sub: int, deliveries: list[tuple[int, Entry]]) -> None:
        """Send deliveries made to a network consumer, in batches of bounded size."""
        actions = self.state.deliver(
            queue, sub, [(tag, entry.size, entry.message.broker_path) for tag, entry in deliveries]
        )
        entries = dict(deliveries)
        for action in actions:
            if isinstance(action, bs.SendBatch):
                self._outgoing[action.batch_id] = [entries[tag] for tag in action.tags]
        self._carry(actions)

    def _acked(self, ack: bridge_pb2.ForwardAck) -> None:
        self._outgoing.pop(ack.batch_id, None)
        refused = [(r.position, r.reason) for r in ack.refused]
        self._carry(self.state.acked(ack.batch_id, ack.ok, ack.error, refused))

    # -- receiving -----------------------------------------------------------------

    def _received(self, batch: bridge_pb2.ForwardBatch) -> None:
        messages = list(batch.messages)
        # Messages this broker can never store are refused one by one, so that they do not
        # hold back (or take down with them) the rest of their batch.
        refused: list[tuple[int, str]] = []
        principal = self.principal
        for position, message in enumerate(messages):
            if principal is not None and not principal.may(
                Operation.WRITE, message.topic, message.destination
            ):
                why = denial(Operation.WRITE, message.topic, message.destination, principal)
                refused.append((position, why))
                self.unauthorized += 1
                if why != self.last_refusal:  # one line per new refusal, not per message
                    log.warning("refused a forward from %s: %s", self.peer, why)
                self.last_refusal = why
                continue
            try:
                self.broker.check(message)
            except BrokerError as exc:
                refused.append((position, exc.message))
        for action in self.state.batch_received(batch.batch_id, len(messages), refused):
            if isinstance(action, bs.Store):
                chosen = [messages[i] for i in action.positions]
                task = asyncio.ensure_future(self._store(action.batch_id, chosen, refused))
                self._stores[action.batch_id] = task
                task.add_done_callback(functools.partial(self._store_done, action.batch_id))
            else:
                self._carry([action])

    async def _store(
        self, batch_id: int, messages: list[Message], refused: list[tuple[int, str]]
    ) -> None:
        try:
            sent = await self.broker.send(messages, checked=True)
        except BrokerError as exc:
            self._carry(self.state.store_failed(batch_id, exc.message))
            return
        resent = collections.Counter(messages[i].destination for i in sent.duplicates)
        stored = len(messages) - len(sent.duplicates)
        self._carry(self.state.stored(batch_id, stored, resent, refused))

    def _store_done(self, batch_id: int, task: asyncio.Task[None]) -> None:
        self._stores.pop(batch_id, None)
        if task.cancelled():
            self._carry(self.state.store_cancelled(batch_id))
        elif (error := task.exception()) is not None:
            log.error("storing a batch from %s failed: %r", self.peer, error)
            self._carry(self.state.store_failed(batch_id, f"{type(error).__name__}: {error}"))

    def send_credits(self, credits: list[bridge_pb2.Credit]) -> None:
        if not self.closed:
            self._write(bridge_pb2.BridgeFrame(credits=credits))

    # -- frames --------------------------------------------------------------------

    def on_frame(self, frame: bridge_pb2.BridgeFrame) -> None:
        if frame.HasField("topics"):
            entries = topic_entries(frame.topics)
            if self.terms.forwards and self.topics.set_remote(self.terms.peer_in_paths, entries):
                self._on_demand_change()
        if frame.demand:
            changed = False
            for d in frame.demand:
                self.state.peer_demand(d.queue, d.consumers, d.capacity)
                changed |= self.table.set_remote(self.peer, d.queue, d.consumers, d.hops)
            if changed:
                self._on_demand_change()
        for credit in frame.credits:
            self._carry(self.state.peer_credit(credit.queue, credit.count))
        if frame.HasField("forward"):
            self._received(frame.forward)
        for ack in frame.acks:
            self._acked(ack)

    def start(self) -> None:
        self.advertise()
        self.reconcile()

    def close(self) -> None:
        """The link is gone: unsent and unacknowledged messages return to their queues."""
        self._carry(self.state.close())
        self._outgoing.clear()
        if self.table.drop_bridge(self.peer):
            self._on_demand_change()
