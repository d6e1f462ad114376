"""One established bridge between this broker and a neighbour, whichever side opened it.

The session is an adapter: the demand table decides where consumers are, the forwarding
rule decides which messages may go, and the broker's queues decide dispatch. The session
turns the neighbour's demand into network consumers on local queues, sends what they are
given as forward batches, and acks the local copies once the neighbour has stored them.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
from collections.abc import Callable, Sequence

from broker import wire
from broker.core import Broker
from broker.errors import BrokerError
from broker.pb import bridge_pb2
from broker.pb.message_pb2 import Message
from broker.queue import Consumer, Entry
from netconnector.demand import Advertiser, DemandTable
from netconnector.forwarding import may_forward
from netconnector.hello import LinkTerms
from netconnector.outbox import Frame

log = logging.getLogger("netbroker.bridge")

# Network consumers rank below every local consumer (clients' priorities are small), and
# farther ones below nearer ones.
NETWORK_PRIORITY = -1000
# A forward frame carries at most this much (a single larger message goes alone). Credit
# that comes back in one piece is sent as a few frames rather than one, so the peer
# stores the first while the next is on the wire (measured: ~1 MiB beats 4 MiB by ~5%).
MAX_FORWARD_BYTES = 1024 * 1024
# After a peer could not store a batch (it is shutting down, its disk failed), how long
# before those messages are offered to it again.
REFUSED_RETRY = 1.0


class _NetworkSink:
    """A network consumer's deliveries go out as forward batches."""

    def __init__(self, session: BridgeSession, queue: str) -> None:
        self.session = session
        self.queue = queue
        self.consumer: Consumer | None = None

    def deliver(self, deliveries: list[tuple[int, Entry]]) -> None:
        assert self.consumer is not None
        self.session.forward(self.queue, self.consumer, deliveries)


class BridgeSession:
    def __init__(
        self,
        broker: Broker,
        table: DemandTable,
        terms: LinkTerms,
        write: Callable[[Frame], None],
        on_demand_change: Callable[[], None],
        capacity: Callable[[str, int, str], int],
        route_elsewhere: Callable[[str, Sequence[str], str], bool],
    ) -> None:
        self.broker = broker
        self.table = table
        self.terms = terms
        self._write = write
        self._on_demand_change = on_demand_change
        # (queue, hops, peer) -> how many messages the consumers behind this broker take
        # ahead, for the capacity this broker advertises.
        self._capacity_of = capacity
        # (queue, broker path, peer) -> whether another bridge can take the message to
        # consumers without going back along its path.
        self._route_elsewhere = route_elsewhere
        # queue -> the capacity the peer advertised with its demand.
        self.capacity: dict[str, int] = {}
        # Queues forwarded for the peer's demand: their credit comes back as the peer's
        # consumers take the messages. Static includes get credit back once stored.
        self._dynamic: set[str] = set()
        self._advertiser = Advertiser(terms.peer, terms.advertise_ttl) if terms.advertises else None
        # queue -> network consumer; those in _draining get no new credit and leave once
        # everything sent is acknowledged.
        self.consumers: dict[str, Consumer] = {}
        self._draining: set[str] = set()
        self._unacked: dict[int, tuple[str, Consumer, list[int]]] = {}
        self._next_batch = 1
        self._stores: set[asyncio.Task[None]] = set()
        self.closed = False
        self.forwarded = 0
        self.received = 0

    @property
    def peer(self) -> str:
        return self.terms.peer

    # -- demand --------------------------------------------------------------------

    def advertise(self) -> None:
        if self._advertiser is None or self.closed:
            return
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

    def reconcile(self) -> None:
        """Make the network consumers match the peer's demand and the static includes."""
        if not self.terms.forwards or self.closed:
            return
        terms = self.terms
        desired: dict[str, int] = {}
        dynamic: set[str] = set()
        for queue, distance in self.table.wanted_queues(terms.peer, terms.network_ttl).items():
            if terms.filter.forwards_dynamically(queue):
                desired[queue] = distance
                dynamic.add(queue)
        for queue in self.broker.queues:
            if queue not in desired and terms.filter.forwards_statically(queue):
                # Forwarded with or without demand, behind any dynamic route.
                desired[queue] = terms.network_ttl + 1
        self._dynamic = dynamic
        prefetch = terms.prefetch
        for queue, distance in desired.items():
            limit = self._credit_limit(queue)
            priority = self._priority(distance)
            weight = self._weight(queue)
            consumer = self.consumers.get(queue)
            if consumer is None:
                self._subscribe(queue, priority, weight, limit)
                log.info("forwarding %s to %s (distance %d)", queue, terms.peer, distance)
                continue
            if queue in self._draining:
                self._draining.discard(queue)
                self.broker.credit(queue, consumer, consumer.max_credit)
            if consumer.prefetch != prefetch or consumer.credit_limit != limit:
                self.broker.set_prefetch(queue, consumer, prefetch, limit)
            if consumer.priority != priority or consumer.weight != weight:
                self.broker.rank(queue, consumer, priority, weight)
        for queue in list(self.consumers):
            if queue not in desired and queue not in self._draining:
                self._draining.add(queue)
                self.broker.revoke_credit(queue, self.consumers[queue])
                self._leave_if_drained(queue)

    def _credit_limit(self, queue: str) -> int:
        """Most forwarded messages of `queue` not yet taken by a consumer at the peer (in
        flight, being stored, or waiting there); 0: no more than prefetchSize.

        prefetchSize bounds the unacknowledged ones. For demand the peer advertised with a
        capacity, credit comes back only as its consumers take the messages: the capacity
        bounds what waits there, so a backlog is shared with this broker's consumers, and
        the prefetch alone does not: when the peer's consumers take more ahead than
        prefetchSize, the link keeps that many coming while acknowledgements travel."""
        return self.capacity.get(queue, 0) if queue in self._dynamic else 0

    def _priority(self, distance: int) -> int:
        """Below every local consumer; by distance unless decreaseNetworkConsumerPriority
        is off. Static-only forwarding (distance networkTTL + 1) stays behind demand."""
        if distance <= self.terms.network_ttl and not self.terms.decrease_priority:
            distance = 1
        return NETWORK_PRIORITY - distance

    def _weight(self, queue: str) -> int:
        if self.terms.conduit or queue not in self._dynamic:
            return 1
        demand = self.table.remote(self.terms.peer, queue)
        return max(1, demand[0]) if demand is not None else 1

    def _subscribe(self, queue: str, priority: int, weight: int, credit_limit: int) -> None:
        peer = self.terms.peer
        message_ttl = self.terms.message_ttl
        broker = self.broker

        route_elsewhere = self._route_elsewhere

        def accepts(message: Message) -> bool:
            path = message.broker_path
            if peer not in path:
                return may_forward(path, peer, False, message_ttl)
            # Going back is for messages whose consumers moved away: not while a local
            # consumer, or a bridge to a broker the message has not been on, can take it
            # (in a mesh, overflow from the direct route must wait for it, not bounce).
            served = broker.has_local_consumers(queue) or route_elsewhere(queue, path, peer)
            return may_forward(path, peer, served, message_ttl)

        sink = _NetworkSink(self, queue)
        sink.consumer = broker.subscribe(
            queue,
            sink,
            prefetch=self.terms.prefetch,
            priority=priority,
            name=f"bridge to {peer}",
            remote=True,
            accepts=accepts,
            credit_limit=credit_limit,
            weight=weight,
        )
        self.consumers[queue] = sink.consumer

    def _leave_if_drained(self, queue: str) -> None:
        consumer = self.consumers[queue]
        if queue in self._draining and not consumer.in_flight:
            del self.consumers[queue]
            self._draining.discard(queue)
            self.broker.unsubscribe(queue, consumer)
            log.info("stopped forwarding %s to %s: no demand", queue, self.terms.peer)

    # -- forwarding ----------------------------------------------------------------

    def forward(self, queue: str, consumer: Consumer, deliveries: list[tuple[int, Entry]]) -> None:
        """Send deliveries made to a network consumer, in batches of bounded size."""
        start = 0
        while start < len(deliveries):
            size = 0
            end = start
            while end < len(deliveries) and (end == start or size < MAX_FORWARD_BYTES):
                size += deliveries[end][1].size
                end += 1
            chunk = deliveries[start:end]
            start = end
            batch_id = self._next_batch
            self._next_batch += 1
            self._unacked[batch_id] = (queue, consumer, [tag for tag, _ in chunk])
            me = self.broker.config.name
            messages: list[bytes] = []
            for _, entry in chunk:
                path = entry.message.broker_path
                if path and path[-1] == me:
                    messages.append(entry.data)
                else:
                    # A slave that took over holds messages whose path ends at its old
                    # master: the path must name the broker they really leave from.
                    messages.append(wire.with_broker(entry.data, me))
            self._write(wire.forward_frame(batch_id, messages))

    def _acked(self, ack: bridge_pb2.ForwardAck) -> None:
        pending = self._unacked.pop(ack.batch_id, None)
        if pending is None:
            return
        queue, consumer, tags = pending
        if self.consumers.get(queue) is not consumer:
            return  # unsubscribed meanwhile: the messages went back to the queue
        broker = self.broker
        if not ack.ok:
            # Not stored there, for now: back to the queue as they were (nothing reached a
            # consumer), and their credit only after a pause, or the link would spin
            # resending to a peer that cannot take them.
            log.warning("%s refused %d messages of %s: %s", self.peer, len(tags), queue, ack.error)
            broker.nack(queue, consumer, tags, counted=False)
            if queue in self._draining:
                self._leave_if_drained(queue)
            else:
                asyncio.get_running_loop().call_later(
                    REFUSED_RETRY,
                    functools.partial(self._give_credit, queue, consumer, len(tags), dynamic=False),
                )
            return
        stored = tags
        if ack.refused:
            refused = {r.position: r.reason for r in ack.refused if r.position < len(tags)}
            stored = [tag for i, tag in enumerate(tags) if i not in refused]
            for position, reason in refused.items():
                log.warning("%s refused a message of %s for good: %s", self.peer, queue, reason)
                why = f"refused by {self.peer}: {reason}"
                broker.reject(queue, consumer, [tags[position]], why)
        broker.ack(queue, consumer, stored)
        self.forwarded += len(stored)
        if queue in self._draining:
            self._leave_if_drained(queue)
        else:
            # For demand, credit for what was stored comes back as the peer's consumers
            # take it; refused messages never will be taken, so theirs comes back now.
            held = len(stored) if queue in self._dynamic else 0
            self._give_credit(queue, consumer, len(tags) - held, dynamic=False)

    def _give_credit(
        self, queue: str, consumer: Consumer, count: int, *, dynamic: bool = True
    ) -> None:
        """Credit for `consumer` if it still forwards `queue`; with `dynamic` only while
        the queue is forwarded for the peer's demand (credit returned by the peer)."""
        if (
            count > 0
            and self.consumers.get(queue) is consumer
            and queue not in self._draining
            and (not dynamic or queue in self._dynamic)
        ):
            self.broker.credit(queue, consumer, count)

    async def _store(self, batch: bridge_pb2.ForwardBatch) -> None:
        messages = list(batch.messages)
        # Messages this broker can never store are refused one by one, so that they do not
        # hold back (or take down with them) the rest of their batch.
        refused: list[bridge_pb2.Refusal] = []
        for position, message in enumerate(messages):
            try:
                self.broker.check(message)
            except BrokerError as exc:
                refused.append(bridge_pb2.Refusal(position=position, reason=exc.message))
        if refused:
            skip = {r.position for r in refused}
            messages = [m for i, m in enumerate(messages) if i not in skip]
        try:
            sent = await self.broker.send(messages, checked=True)
        except BrokerError as exc:
            ack = bridge_pb2.ForwardAck(batch_id=batch.batch_id, ok=False, error=exc.message)
            credits = []
        else:
            ack = bridge_pb2.ForwardAck(batch_id=batch.batch_id, ok=True, refused=refused)
            self.received += len(messages) - len(sent.duplicates)
            # Resends of messages already held here will not be consumed here again:
            # their credit goes straight back, or the forwarder's window would shrink.
            resent = collections.Counter(messages[i].destination for i in sent.duplicates)
            credits = [bridge_pb2.Credit(queue=q, count=n) for q, n in resent.items()]
        if not self.closed:
            self._write(bridge_pb2.BridgeFrame(acks=[ack], credits=credits))

    def send_credits(self, credits: list[bridge_pb2.Credit]) -> None:
        if not self.closed:
            self._write(bridge_pb2.BridgeFrame(credits=credits))

    # -- frames --------------------------------------------------------------------

    def on_frame(self, frame: bridge_pb2.BridgeFrame) -> None:
        if frame.demand:
            changed = False
            for d in frame.demand:
                if d.consumers:
                    self.capacity[d.queue] = d.capacity
                else:
                    self.capacity.pop(d.queue, None)
                changed |= self.table.set_remote(self.peer, d.queue, d.consumers, d.hops)
            if changed:
                self._on_demand_change()
        for credit in frame.credits:
            consumer = self.consumers.get(credit.queue)
            if consumer is not None:
                self._give_credit(credit.queue, consumer, credit.count)
        if frame.HasField("forward"):
            task = asyncio.ensure_future(self._store(frame.forward))
            self._stores.add(task)
            task.add_done_callback(self._stores.discard)
        for ack in frame.acks:
            self._acked(ack)

    def start(self) -> None:
        self.advertise()
        self.reconcile()

    def close(self) -> None:
        """The link is gone: unsent and unacknowledged messages return to their queues."""
        if self.closed:
            return
        self.closed = True
        for queue, consumer in self.consumers.items():
            self.broker.unsubscribe(queue, consumer)
        self.consumers.clear()
        self._unacked.clear()
        for task in self._stores:
            task.cancel()
        if self.table.drop_bridge(self.peer):
            self._on_demand_change()
