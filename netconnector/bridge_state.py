"""The decisions of one bridge session, with no I/O and no asyncio: events in, actions out.

A session forwards (its network consumers' deliveries go out as batches, and the local
copies are acknowledged, returned or dead-lettered as the peer answers) and receives
(the peer's batches are stored, and answered once stored). `BridgeState` decides all of
it; `netconnector.session.BridgeSession` feeds it the link's frames, the broker's
deliveries and the outcomes of stores, and carries out the actions it returns.

The rules it keeps:

* A batch is acknowledged to the peer only once the broker's `send` returned (its
  messages are durable and enqueued, or were duplicates of durable ones). After close,
  nothing more is acknowledged: the peer resends and the broker's duplicate check drops
  what this side stored. Whether a store that was under way at close completes or is
  cancelled, nothing is lost: the broker enqueues a write from its outcome, not from the
  task awaiting it.
* The local copies of a forwarded batch are acknowledged only on the peer's `ok`; an
  unacknowledged batch returns to its queue (uncounted) when its subscription ends or
  the link closes.
* A message leaves with a broker path that ends with this broker's path name. Members of
  a master/slave group share the group's name, so a new master's resend of a message the
  old master forwarded is, at the peer, the same forward (same visit), and is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from netconnector.hello import LinkTerms

# Network consumers rank below every local consumer (clients' priorities are small), and
# farther ones below nearer ones.
NETWORK_PRIORITY = -1000
# A forward frame carries at most this much (a single larger message goes alone).
MAX_FORWARD_BYTES = 1024 * 1024
# ... and at most this share of the window (the most a network consumer has on the way).
# A whole window in one batch is stop-and-wait: the peer stores it while this broker
# waits, then this broker acknowledges its copies while the peer waits. In halves, the
# peer stores one batch while the next is on its way, and each answer refills a half.
# (Quarters overlap as well but cost the peer a store, an answer and an ack pass per
# quarter: forwarding measured 15-40% slower in quarters, alternating run by run.)
WINDOW_SHARES = 2
# After a peer could not store a batch, how long before its messages get credit again.
REFUSED_RETRY = 1.0

# --- actions --------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscribe:
    queue: str
    sub: int  # this session's handle for the network consumer
    priority: int
    weight: int
    credit_limit: int


@dataclass(frozen=True)
class Unsubscribe:
    """End a network consumer: what it holds in flight returns to the queue, uncounted."""

    queue: str
    sub: int


@dataclass(frozen=True)
class Restock:
    """A draining consumer has demand again: its full credit back."""

    queue: str
    sub: int


@dataclass(frozen=True)
class SetPrefetch:
    queue: str
    sub: int
    prefetch: int
    credit_limit: int


@dataclass(frozen=True)
class Rank:
    queue: str
    sub: int
    priority: int
    weight: int


@dataclass(frozen=True)
class Revoke:
    queue: str
    sub: int


@dataclass(frozen=True)
class SendBatch:
    """Write a forward batch; entries at `rewrite` positions get this broker's path name
    appended to their path (their path ends elsewhere)."""

    batch_id: int
    tags: tuple[int, ...]
    rewrite: tuple[int, ...]


@dataclass(frozen=True)
class AckLocal:
    queue: str
    sub: int
    tags: tuple[int, ...]


@dataclass(frozen=True)
class ReturnLocal:
    """Back to the queue as they were (not counted as a redelivery)."""

    queue: str
    sub: int
    tags: tuple[int, ...]


@dataclass(frozen=True)
class RejectLocal:
    queue: str
    sub: int
    tag: int
    reason: str


@dataclass(frozen=True)
class Credit:
    queue: str
    sub: int
    count: int


@dataclass(frozen=True)
class CreditLater:
    """After `delay` seconds, feed `retry_credit(queue, sub, count)` back in."""

    delay: float
    queue: str
    sub: int
    count: int


@dataclass(frozen=True)
class Store:
    """Store these positions of a received batch (the rest were refused)."""

    batch_id: int
    positions: tuple[int, ...]


@dataclass(frozen=True)
class AnswerBatch:
    """Write the peer a ForwardAck, with credit for resends it need not wait on."""

    batch_id: int
    ok: bool
    error: str = ""
    refused: tuple[tuple[int, str], ...] = ()
    credits: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class AbandonStores:
    """The link is gone: stores under way need not finish (cancelling them is safe)."""

    batch_ids: tuple[int, ...]


@dataclass(frozen=True)
class Log:
    level: str
    text: str


Action: TypeAlias = (
    Subscribe | Unsubscribe | Restock | SetPrefetch | Rank | Revoke | SendBatch | AckLocal
    | ReturnLocal | RejectLocal | Credit | CreditLater | Store | AnswerBatch | AbandonStores
    | Log
)  # fmt: skip


def batch_limit(prefetch: int, credit_limit: int) -> int:
    """The most messages of one forward batch: a share of the window, which is the
    prefetch, or the credit limit where that is smaller."""
    window = min(prefetch, credit_limit) if credit_limit else prefetch
    return max(1, window // WINDOW_SHARES)


def leaves_as_is(path: Sequence[str], me: str) -> bool:
    """Whether a message can go out with its stored bytes: its path already ends with
    this broker's path name. Otherwise (a store written before path names, a broker that
    joined a group) the name is appended, so the path names where it really leaves from."""
    return bool(path) and path[-1] == me


@dataclass
class _Sub:
    sub: int
    prefetch: int
    credit_limit: int
    priority: int
    weight: int
    in_flight: int = 0
    draining: bool = False


@dataclass
class _Outgoing:
    queue: str
    sub: int
    tags: tuple[int, ...]


@dataclass
class BridgeState:
    terms: LinkTerms
    # This broker's name in broker paths.
    me: str
    closed: bool = False
    # queue -> the capacity the peer advertised with its demand.
    capacity: dict[str, int] = field(default_factory=dict)
    forwarded: int = 0
    received: int = 0
    _subs: dict[str, _Sub] = field(default_factory=dict)
    _dynamic: set[str] = field(default_factory=set)
    _unacked: dict[int, _Outgoing] = field(default_factory=dict)
    _storing: set[int] = field(default_factory=set)
    _next_batch: int = 1
    _next_sub: int = 1

    # -- queries -------------------------------------------------------------------

    def subscription(self, queue: str) -> int | None:
        sub = self._subs.get(queue)
        return sub.sub if sub is not None else None

    @property
    def forwarding(self) -> frozenset[str]:
        return frozenset(self._subs)

    @property
    def unacked(self) -> int:
        return sum(len(o.tags) for o in self._unacked.values())

    @property
    def storing(self) -> frozenset[int]:
        return frozenset(self._storing)

    # -- demand --------------------------------------------------------------------

    def peer_demand(self, queue: str, consumers: int, capacity: int) -> None:
        if consumers:
            self.capacity[queue] = capacity
        else:
            self.capacity.pop(queue, None)

    def reconcile(
        self,
        wanted: Mapping[str, int],
        queues: Iterable[str],
        remote_consumers: Mapping[str, int],
        topic_queue: str | None = None,
    ) -> list[Action]:
        """Make the network consumers match the peer's demand (`wanted`: queue -> distance,
        from the demand table) and the static includes among this broker's `queues`.
        `remote_consumers`: how many consumers the peer has per queue, for weights.
        `topic_queue`: the queue of topic messages routed to the peer, always forwarded
        (the routing chose this peer already), with credit back as the peer stores them."""
        if not self.terms.forwards or self.closed:
            return []
        terms = self.terms
        desired: dict[str, int] = {}
        dynamic: set[str] = set()
        for queue, distance in wanted.items():
            if terms.filter.forwards_dynamically(queue):
                desired[queue] = distance
                dynamic.add(queue)
        for queue in queues:
            if queue not in desired and terms.filter.forwards_statically(queue):
                # Forwarded with or without demand, behind any dynamic route.
                desired[queue] = terms.network_ttl + 1
        if topic_queue is not None:
            desired[topic_queue] = 1
        self._dynamic = dynamic
        actions: list[Action] = []
        prefetch = terms.prefetch
        for queue, distance in desired.items():
            limit = self.capacity.get(queue, 0) if queue in dynamic else 0
            priority = self._priority(distance)
            weight = 1
            if not terms.conduit and queue in dynamic:
                weight = max(1, remote_consumers.get(queue, 1))
            sub = self._subs.get(queue)
            if sub is None:
                handle = self._next_sub
                self._next_sub += 1
                self._subs[queue] = _Sub(handle, prefetch, limit, priority, weight)
                actions.append(Subscribe(queue, handle, priority, weight, limit))
                what = "topics" if queue == topic_queue else queue
                actions.append(
                    Log("info", f"forwarding {what} to {terms.peer} (distance {distance})")
                )
                continue
            if sub.draining:
                sub.draining = False
                actions.append(Restock(queue, sub.sub))
            if sub.prefetch != prefetch or sub.credit_limit != limit:
                sub.prefetch, sub.credit_limit = prefetch, limit
                actions.append(SetPrefetch(queue, sub.sub, prefetch, limit))
            if sub.priority != priority or sub.weight != weight:
                sub.priority, sub.weight = priority, weight
                actions.append(Rank(queue, sub.sub, priority, weight))
        for queue, sub in list(self._subs.items()):
            if queue not in desired and not sub.draining:
                sub.draining = True
                actions.append(Revoke(queue, sub.sub))
                actions.extend(self._leave_if_drained(queue))
        return actions

    def _priority(self, distance: int) -> int:
        """Below every local consumer; by distance unless decreaseNetworkConsumerPriority
        is off. Static-only forwarding (distance networkTTL + 1) stays behind demand."""
        if distance <= self.terms.network_ttl and not self.terms.decrease_priority:
            distance = 1
        return NETWORK_PRIORITY - distance

    def _leave_if_drained(self, queue: str) -> list[Action]:
        sub = self._subs[queue]
        if sub.draining and not sub.in_flight:
            del self._subs[queue]
            return [
                Unsubscribe(queue, sub.sub),
                Log("info", f"stopped forwarding {queue} to {self.terms.peer}: no demand"),
            ]
        return []

    # -- forwarding ----------------------------------------------------------------

    def deliver(
        self, queue: str, sub: int, deliveries: Sequence[tuple[int, int, Sequence[str]]]
    ) -> list[Action]:
        """A network consumer was handed (tag, size, broker path) deliveries: send them in
        batches of bounded size and count (see `batch_limit`)."""
        current = self._subs.get(queue)
        if self.closed or current is None or current.sub != sub:
            # Its subscription ended as they were handed out: they return with it.
            return []
        actions: list[Action] = []
        start = 0
        me = self.me
        most = batch_limit(current.prefetch, current.credit_limit)
        while start < len(deliveries):
            size = 0
            end = start
            last = min(len(deliveries), start + most)
            while end < last and (end == start or size < MAX_FORWARD_BYTES):
                size += deliveries[end][1]
                end += 1
            chunk = deliveries[start:end]
            start = end
            batch_id = self._next_batch
            self._next_batch += 1
            tags = tuple([tag for tag, _, _ in chunk])
            rewrite = tuple(
                [i for i, (_, _, path) in enumerate(chunk) if not leaves_as_is(path, me)]
            )
            self._unacked[batch_id] = _Outgoing(queue, sub, tags)
            current.in_flight += len(tags)
            actions.append(SendBatch(batch_id, tags, rewrite))
        return actions

    def acked(
        self, batch_id: int, ok: bool, error: str, refused: Sequence[tuple[int, str]]
    ) -> list[Action]:
        """The peer answered a forward batch."""
        pending = self._unacked.pop(batch_id, None)
        if pending is None or self.closed:
            return []
        queue, handle, tags = pending.queue, pending.sub, pending.tags
        sub = self._subs.get(queue)
        if sub is None or sub.sub != handle:
            return []  # unsubscribed meanwhile: the messages went back to the queue
        sub.in_flight -= len(tags)
        peer = self.terms.peer
        actions: list[Action] = []
        if not ok:
            # Not stored there, for now: back to the queue as they were, and their credit
            # only after a pause, or the link would spin resending to a peer that cannot
            # take them.
            actions.append(
                Log("warning", f"{peer} refused {len(tags)} messages of {queue}: {error}")
            )
            actions.append(ReturnLocal(queue, handle, tags))
            if sub.draining:
                actions.extend(self._leave_if_drained(queue))
            else:
                actions.append(CreditLater(REFUSED_RETRY, queue, handle, len(tags)))
            return actions
        stored = list(tags)
        if refused:
            why = {position: reason for position, reason in refused if position < len(tags)}
            stored = [tag for i, tag in enumerate(tags) if i not in why]
            for position, reason in why.items():
                actions.append(
                    Log("warning", f"{peer} refused a message of {queue} for good: {reason}")
                )
                actions.append(
                    RejectLocal(queue, handle, tags[position], f"refused by {peer}: {reason}")
                )
        actions.append(AckLocal(queue, handle, tuple(stored)))
        self.forwarded += len(stored)
        if sub.draining:
            actions.extend(self._leave_if_drained(queue))
        else:
            # For demand, credit for what was stored comes back as the peer's consumers
            # take it; refused messages never will be taken, so theirs comes back now.
            held = len(stored) if queue in self._dynamic else 0
            actions.extend(self._credit(queue, handle, len(tags) - held, dynamic=False))
        return actions

    def peer_credit(self, queue: str, count: int) -> list[Action]:
        """The peer's consumers took `count` forwarded messages of `queue`."""
        sub = self._subs.get(queue)
        return [] if sub is None else self._credit(queue, sub.sub, count, dynamic=True)

    def retry_credit(self, queue: str, sub: int, count: int) -> list[Action]:
        """A `CreditLater` came due."""
        return self._credit(queue, sub, count, dynamic=False)

    def _credit(self, queue: str, handle: int, count: int, *, dynamic: bool) -> list[Action]:
        """Credit if `handle` still forwards `queue`; with `dynamic` only while the queue
        is forwarded for the peer's demand (credit returned by the peer)."""
        sub = self._subs.get(queue)
        if (
            count > 0
            and not self.closed
            and sub is not None
            and sub.sub == handle
            and not sub.draining
            and (not dynamic or queue in self._dynamic)
        ):
            return [Credit(queue, handle, count)]
        return []

    # -- receiving -----------------------------------------------------------------

    def batch_received(
        self, batch_id: int, count: int, refused: Sequence[tuple[int, str]]
    ) -> list[Action]:
        """The peer forwarded `count` messages; `refused` are ones this broker can never
        store (by position, with why): refused alone, so they hold back nothing else."""
        if self.closed:
            return []
        skip = {position for position, _ in refused}
        self._storing.add(batch_id)
        return [Store(batch_id, tuple(i for i in range(count) if i not in skip))]

    def stored(
        self,
        batch_id: int,
        stored: int,
        resent: Mapping[str, int],
        refused: Sequence[tuple[int, str]] = (),
    ) -> list[Action]:
        """The broker's send returned: `stored` messages are new here (durable and
        enqueued), `resent` counts per queue those it already held (durable)."""
        if batch_id not in self._storing:
            return []
        self._storing.discard(batch_id)
        self.received += stored
        if self.closed:
            return []
        # Resends of messages already held here will not be consumed here again: their
        # credit goes straight back, or the forwarder's window would shrink.
        return [
            AnswerBatch(
                batch_id, True, refused=tuple(refused), credits=tuple(sorted(resent.items()))
            )
        ]

    def store_failed(self, batch_id: int, error: str) -> list[Action]:
        """The broker could not store the batch (nothing of it is stored or queued)."""
        if batch_id not in self._storing:
            return []
        self._storing.discard(batch_id)
        if self.closed:
            return []
        return [AnswerBatch(batch_id, False, error=error)]

    def store_cancelled(self, batch_id: int) -> list[Action]:
        """A store was cancelled (after AbandonStores): whatever of it reached the store
        is enqueued by the broker; the peer resends and the duplicate check drops it."""
        self._storing.discard(batch_id)
        return []

    # -- the end -------------------------------------------------------------------

    def close(self) -> list[Action]:
        """The link is gone: unsent and unacknowledged messages return to their queues,
        and nothing more is answered."""
        if self.closed:
            return []
        self.closed = True
        actions: list[Action] = [Unsubscribe(q, s.sub) for q, s in self._subs.items()]
        self._subs.clear()
        self._unacked.clear()
        if self._storing:
            actions.append(AbandonStores(tuple(sorted(self._storing))))
        return actions
