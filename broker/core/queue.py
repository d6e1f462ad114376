"""One queue's state and dispatch decisions, with no I/O.

The broker feeds it committed messages, consumer credit, acks and page-ins from the
store; it answers with what to deliver to whom, what to dead-letter and what to page in.
The caller does the store writes and network sends.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from broker.errors import InvalidArgument
from broker.pb.message_pb2 import Message

PRIORITIES = range(9, -1, -1)


class Entry:
    """A message held in memory: pending in the queue's window, or in flight."""

    __slots__ = ("_data", "dispatched", "key", "message", "persistent", "priority", "seq", "size")

    def __init__(
        self,
        message: Message,
        seq: int,
        size: int,
        key: bytes | None = None,
        data: bytes | None = None,
    ) -> None:
        self.message = message
        # Its store key when already built (a send makes it), so the ack reuses it.
        self.key = key
        self.seq = seq
        self.priority = message.priority
        self.persistent = message.persistent
        self.size = size
        # The message serialized, when known: deliveries and forwards embed these bytes
        # instead of serializing the message again.
        self._data = data
        # Handed to a consumer at least once since this broker holds it.
        self.dispatched = False

    @property
    def data(self) -> bytes:
        """The message serialized as it stands now."""
        data = self._data
        if data is None:
            data = self.message.SerializeToString()
            # A non-persistent message is kept only as parsed: caching its bytes too
            # would double what it costs in memory while in flight.
            if self.persistent:
                self._data = data
        return data

    def count_redelivery(self) -> int:
        """Raise the message's redelivery count; returns the new count."""
        message = self.message
        message.redelivery_count += 1
        self._data = None
        return message.redelivery_count

    def expired(self, now_ms: int) -> bool:
        expiration = self.message.expiration_ms
        return 0 < expiration <= now_ms


class ConsumerSink(Protocol):
    """Where a consumer's deliveries go: a client stream, or a bridge to another broker."""

    def deliver(self, deliveries: list[tuple[int, Entry]]) -> None: ...


@dataclass(eq=False)
class Consumer:
    sink: ConsumerSink
    prefetch: int
    priority: int = 0
    name: str = ""
    # When set, the consumer takes only messages it accepts (a bridge refuses messages
    # that would loop); the others wait for another consumer.
    accepts: Callable[[Message], bool] | None = None
    # A consumer on behalf of another broker (a bridge), not a client of this one: it
    # does not count as local demand.
    remote: bool = False
    # Most credit the consumer holds; 0: its prefetch. A bridge's credit comes back when
    # the other broker's consumers take the messages, after their acknowledgement (which
    # the prefetch bounds), so it may be allowed more of it than of unacknowledged ones.
    credit_limit: int = 0
    # Its share of round robin among consumers of its priority: a bridge that stands for
    # several consumers at the other broker may count as that many.
    weight: int = 1
    # Most bytes of messages it may hold in flight (0: no bound); one message always
    # goes out, however large, or it could never be consumed.
    max_bytes: int = 0
    credit: int = 0
    in_flight: dict[int, Entry] = field(default_factory=dict)
    in_flight_bytes: int = 0
    next_tag: int = 1

    @property
    def room(self) -> int:
        if self.max_bytes and self.in_flight and self.in_flight_bytes >= self.max_bytes:
            return 0
        return min(self.credit, self.prefetch - len(self.in_flight))

    @property
    def max_credit(self) -> int:
        return self.credit_limit or self.prefetch


@dataclass
class DispatchResult:
    deliveries: list[tuple[Consumer, list[tuple[int, Entry]]]] = field(default_factory=list)
    dead: list[tuple[Entry, str]] = field(default_factory=list)
    # Entries handed to a consumer for the first time.
    first: list[Entry] = field(default_factory=list)


@dataclass
class QueueStats:
    enqueued: int = 0
    dequeued: int = 0
    expired: int = 0
    dead_lettered: int = 0


class Queue:
    """Pending messages in (priority, arrival) order, consumers with credit, in-flight."""

    def __init__(self, name: str, window: int, max_redeliveries: int) -> None:
        self.name = name
        self.window = window
        self.max_redeliveries = max_redeliveries
        self._heap: list[tuple[int, int, Entry]] = []
        # Whether the window may hold a message with an expiration: the expiry pass then
        # looks at each; most queues have none, and a pass over a deep window of
        # non-persistent messages every interval would cost as much as delivering them.
        self._may_expire = False
        # How many persistent messages the window holds: the window bounds those (the
        # non-persistent ones are bounded in bytes, by the broker's memory gate).
        self._resident = 0
        self._resident_by = [0] * 10
        # No message below this priority may be evicted (a lower bound, so that a run of
        # urgent messages into a window that can give nothing up does not search it for
        # every one of them).
        self._hopeless = 0
        # Per priority, persistent pending messages that are only in the store.
        self.paged_out_by = [0] * 10
        # Per priority, the highest sequence number that has been in memory: the store
        # holds nothing pending of that priority at or below it that is not in memory.
        self.cursor = [0] * 10
        # Per priority, the highest sequence number ever handed to a consumer, and the
        # same as it stood when the broker started: a persistent message at or below
        # the latter may have reached a consumer before a crash, so it comes back marked.
        self.dispatched = [0] * 10
        self.recovered = [0] * 10
        # Per priority, the highest sequence number that left the window other than by
        # eviction (dispatched, expired, purged), or was handed out before a restart:
        # only newer messages may be evicted.
        self.left = [0] * 10
        self.consumers: list[Consumer] = []
        self._rr = itertools.count()
        self.stats = QueueStats()

    # -- what the queue holds --------------------------------------------------------

    @property
    def paged_out(self) -> int:
        """Persistent pending messages that are only in the store, not in the window."""
        return sum(self.paged_out_by)

    @property
    def pending(self) -> int:
        return len(self._heap) + self.paged_out

    @property
    def in_flight(self) -> int:
        return sum(len(c.in_flight) for c in self.consumers)

    @property
    def depth(self) -> int:
        return self.pending + self.in_flight

    @property
    def local_consumers(self) -> int:
        return sum(1 for c in self.consumers if not c.remote)

    # -- arrivals ------------------------------------------------------------------

    def recover(self, counts: list[int]) -> None:
        """The store holds `counts[p]` messages of priority p from before a restart."""
        for priority, count in enumerate(counts):
            self.paged_out_by[priority] += count

    def enqueue(self, entry: Entry) -> bool:
        """Add a committed message; False when it stays only in the store (paged out).

        The window holds the highest-priority pending messages: a persistent message is
        paged out only when the store already holds pending ones of its priority or
        higher (it comes in behind those, in store order), or when the window is full of
        messages it ranks no higher than. Below it, the newest messages that never left
        the window are paged out to make room; messages that did leave it and came back
        (redeliveries) cannot be, and the window may then hold up to twice its size."""
        self.stats.enqueued += 1
        if not entry.persistent:
            self._push(entry)
            return True
        priority = entry.priority
        paged_out_by = self.paged_out_by
        if any(paged_out_by[priority:]) or (
            self._resident >= self.window
            and not (priority > self._hopeless and self._evict_below(priority))
            and not (self._resident < 2 * self.window and any(self._resident_by[:priority]))
        ):
            paged_out_by[priority] += 1
            return False
        self._push(entry)
        self.cursor[priority] = max(self.cursor[priority], entry.seq)
        if priority < self._hopeless:
            self._hopeless = priority
        return True

    def _push(self, entry: Entry) -> None:
        heapq.heappush(self._heap, (-entry.priority, entry.seq, entry))
        if entry.message.expiration_ms:
            self._may_expire = True
        if entry.persistent:
            self._resident += 1
            self._resident_by[entry.priority] += 1

    def _pop(self) -> Entry:
        entry = heapq.heappop(self._heap)[2]
        if entry.persistent:
            self._resident -= 1
            self._resident_by[entry.priority] -= 1
        return entry

    def _evict_below(self, priority: int) -> int:
        """Page out the lowest-priority persistent messages of the window, below
        `priority`, to make room for one of `priority`; returns how many left.

        Only a priority's newest messages that never left the window go: everything of
        that priority in the store above the lowered cursor is then either paged out or
        gone (in flight, acked or dead-lettered messages are all at or below
        `self.left[p]`), so the next page-in reads each evicted one once. A batch at a
        time, so that a run of urgent messages into a full window costs one pass over
        the window per batch, not per message."""
        floor = self.left
        candidates = [
            item for item in self._heap
            if item[0] > -priority and item[2].persistent and item[1] > floor[-item[0]]
        ]  # fmt: skip
        if not candidates:
            self._hopeless = max(self._hopeless, priority)
            return 0
        # Lowest priority first, newest first within a priority: `(-p, seq)` largest.
        candidates.sort(reverse=True)
        evicted = candidates[: max(1, self.window // 8)]
        gone = {id(item[2]) for item in evicted}
        self._heap = [item for item in self._heap if id(item[2]) not in gone]
        heapq.heapify(self._heap)
        self._resident -= len(evicted)
        for neg, seq, _ in evicted:
            p = -neg
            self._resident_by[p] -= 1
            self.paged_out_by[p] += 1
            # `evicted` runs newest to oldest within a priority: the last one sets it.
            self.cursor[p] = seq - 1
        return len(evicted)

    def page_in_wanted(self) -> int:
        """How many messages to page in from the store now (0: none)."""
        if self._resident <= self.window // 2:
            paged_out = self.paged_out
            if paged_out:
                return min(paged_out, self.window - self._resident)
        return 0

    def page_in(
        self, priority: int, entries: list[Entry], scanned_to: int, exhausted: bool = False
    ) -> None:
        """Messages of `priority` read from the store, up to sequence `scanned_to`;
        `exhausted`: the store holds no more of that priority after them."""
        self.cursor[priority] = max(self.cursor[priority], scanned_to)
        left = self.paged_out_by[priority] - len(entries)
        self.paged_out_by[priority] = 0 if exhausted else max(0, left)
        recovered = self.recovered[priority]
        for entry in entries:
            if entry.seq <= recovered:
                entry.count_redelivery()
            self._push(entry)
        if entries and priority < self._hopeless:
            self._hopeless = priority

    def recover_marks(self, marks: dict[int, int]) -> None:
        """The dispatch marks the store held at startup, by priority."""
        for priority, seq in marks.items():
            self.dispatched[priority] = self.recovered[priority] = seq
            self.left[priority] = max(self.left[priority], seq)

    def advance_marks(self, batch: list[tuple[int, Entry]]) -> list[int]:
        """Record a delivery batch; returns the priorities whose mark moved (to persist)."""
        moved: list[int] = []
        dispatched = self.dispatched
        for _, entry in batch:
            if entry.persistent and entry.seq > dispatched[entry.priority]:
                if entry.priority not in moved:
                    moved.append(entry.priority)
                dispatched[entry.priority] = entry.seq
        left = self.left
        for priority in moved:
            left[priority] = max(left[priority], dispatched[priority])
        return moved

    def forget_paged_out(self) -> None:
        """The store scan found fewer messages than counted; trust the store."""
        self.paged_out_by = [0] * 10

    def _gone(self, entry: Entry) -> None:
        """A pending message left the window for good (expired, purged)."""
        if entry.persistent:
            self.left[entry.priority] = max(self.left[entry.priority], entry.seq)

    # -- consumers -----------------------------------------------------------------

    def add_consumer(self, consumer: Consumer) -> None:
        consumer.credit = consumer.max_credit
        self.consumers.append(consumer)
        self._sort()

    def _sort(self) -> None:
        # Highest priority first; a stable sort keeps arrival order within a priority.
        self.consumers.sort(key=lambda c: -c.priority)

    def set_priority(self, consumer: Consumer, priority: int) -> None:
        """Rank a consumer anew (a bridge whose nearest consumers moved nearer or away)."""
        consumer.priority = priority
        self._sort()

    def remove_consumer(self, consumer: Consumer) -> tuple[list[Entry], list[tuple[Entry, str]]]:
        """Drop a consumer; its in-flight messages return marked, or die past the limit.

        A bridge's return uncounted: a link that drops has handed nothing to an
        application, and counting would dead-letter messages over a flapping link."""
        self.consumers.remove(consumer)
        returned = list(consumer.in_flight.values())
        consumer.in_flight.clear()
        consumer.in_flight_bytes = 0
        return self._return(returned, counted=not consumer.remote)

    def revoke_credit(self, consumer: Consumer) -> None:
        """Stop deliveries to a consumer; what it holds stays in flight until acked."""
        consumer.credit = 0

    def set_prefetch(self, consumer: Consumer, prefetch: int, credit_limit: int = 0) -> None:
        """Change a consumer's window; credit moves with its limit, never above it."""
        before = consumer.max_credit
        consumer.prefetch = prefetch
        consumer.credit_limit = credit_limit
        after = consumer.max_credit
        consumer.credit = max(0, min(consumer.credit + after - before, after))

    def add_credit(self, consumer: Consumer, credit: int) -> None:
        if credit < 0:
            raise InvalidArgument(f"credit must not be negative, got {credit}")
        # Credit beyond the limit could never be used: cap it so it cannot overflow.
        consumer.credit = min(consumer.credit + credit, consumer.max_credit)

    def _take(self, consumer: Consumer, tags: list[int]) -> list[Entry]:
        taken: list[Entry] = []
        for tag in tags:
            entry = consumer.in_flight.pop(tag, None)
            if entry is None:
                # Put back what this request already took, so it has no effect at all.
                for back_tag, back in zip(tags, taken, strict=False):
                    consumer.in_flight[back_tag] = back
                raise InvalidArgument(
                    f"delivery tag {tag} is not in flight to this consumer of queue {self.name}"
                )
            taken.append(entry)
        consumer.in_flight_bytes -= sum(entry.size for entry in taken)
        return taken

    def ack(self, consumer: Consumer, tags: list[int]) -> list[Entry]:
        """Entries the consumer is done with; the caller deletes them from the store."""
        done = self._take(consumer, tags)
        self.stats.dequeued += len(done)
        return done

    def nack(
        self, consumer: Consumer, tags: list[int], counted: bool = True
    ) -> tuple[list[Entry], list[tuple[Entry, str]]]:
        """Give deliveries back: (requeued with a raised count, past the limit). Uncounted,
        they go back as they were and both lists are empty."""
        return self._return(self._take(consumer, tags), counted)

    def reject(self, consumer: Consumer, tags: list[int]) -> list[Entry]:
        """Deliveries that can never be taken where they went: out of flight, for the
        caller to dead-letter."""
        entries = self._take(consumer, tags)
        self.stats.dead_lettered += len(entries)
        return entries

    def _return(
        self, entries: list[Entry], counted: bool = True
    ) -> tuple[list[Entry], list[tuple[Entry, str]]]:
        if not counted:
            for entry in entries:
                self._push(entry)
            return [], []
        requeued: list[Entry] = []
        dead: list[tuple[Entry, str]] = []
        for entry in entries:
            if entry.count_redelivery() > self.max_redeliveries:
                dead.append((entry, f"redelivered more than {self.max_redeliveries} times"))
            else:
                self._push(entry)
                requeued.append(entry)
        self.stats.dead_lettered += len(dead)
        return requeued, dead

    # -- dispatch ------------------------------------------------------------------

    def dispatch(self, now_ms: int) -> DispatchResult:
        """Hand pending messages to consumers with room: priority first, round robin."""
        result = DispatchResult()
        batches: dict[int, list[tuple[int, Entry]]] = {}
        refused: list[Entry] = []
        heap = self._heap
        while heap:
            level = self._level()
            if not level:
                break
            if len(level) > 1:
                # Several equal consumers: one message each in turn.
                entry = self._next_live(result, now_ms)
                if entry is not None:
                    self._give(self._choose(entry.message), entry, batches, result, refused)
                continue
            # One consumer at the top level with room: fill its room in one go instead of
            # choosing again for every message (most queues have one consumer, or one
            # bridge). Messages it refuses may still go to a lower level.
            consumer = level[0]
            room = consumer.room
            while room > 0 and heap:
                entry = self._next_live(result, now_ms)
                if entry is None:
                    continue
                if consumer.accepts is None or consumer.accepts(entry.message):
                    self._give(consumer, entry, batches, result, refused)
                    room -= 1
                    if consumer.max_bytes and consumer.in_flight_bytes >= consumer.max_bytes:
                        room = 0
                else:
                    self._give(self._choose(entry.message), entry, batches, result, refused)
        for entry in refused:
            self._push(entry)
        by_id = {id(c): c for c in self.consumers}
        result.deliveries = [(by_id[key], batch) for key, batch in batches.items()]
        return result

    def _next_live(self, result: DispatchResult, now_ms: int) -> Entry | None:
        """Pop the next pending message; an expired one goes to `result.dead` instead."""
        entry = self._pop()
        if entry.expired(now_ms):
            self._gone(entry)
            result.dead.append((entry, "expired"))
            self.stats.expired += 1
            self.stats.dead_lettered += 1
            return None
        return entry

    @staticmethod
    def _give(
        consumer: Consumer | None,
        entry: Entry,
        batches: dict[int, list[tuple[int, Entry]]],
        result: DispatchResult,
        refused: list[Entry],
    ) -> None:
        if consumer is None:
            refused.append(entry)
            return
        tag = consumer.next_tag
        consumer.next_tag += 1
        consumer.credit -= 1
        consumer.in_flight[tag] = entry
        consumer.in_flight_bytes += entry.size
        if not entry.dispatched:
            entry.dispatched = True
            result.first.append(entry)
        batch = batches.get(id(consumer))
        if batch is None:
            batches[id(consumer)] = batch = []
        batch.append((tag, entry))

    def _level(self) -> list[Consumer]:
        """The consumers with room at the highest priority that has any."""
        level: list[Consumer] = []
        for consumer in self.consumers:
            if level and consumer.priority < level[0].priority:
                break
            if consumer.room > 0:
                level.append(consumer)
        return level

    def _choose(self, message: Message) -> Consumer | None:
        # Consumers are sorted by priority, highest first: the first level with a
        # consumer that has room and takes the message wins.
        candidates: list[Consumer] = []
        for consumer in self.consumers:
            if candidates and consumer.priority < candidates[0].priority:
                break
            if consumer.room > 0 and (consumer.accepts is None or consumer.accepts(message)):
                candidates.append(consumer)
        if not candidates:
            return None
        # Round robin, each consumer as many turns in a cycle as its weight.
        turn = next(self._rr) % sum(c.weight for c in candidates)
        for consumer in candidates:
            turn -= consumer.weight
            if turn < 0:
                break
        return consumer

    def expire(self, now_ms: int) -> list[Entry]:
        """Remove expired pending messages from the window; the caller dead-letters them."""
        if not self._may_expire:
            return []
        expired = [item[2] for item in self._heap if item[2].expired(now_ms)]
        if expired:
            self._heap = [item for item in self._heap if not item[2].expired(now_ms)]
            heapq.heapify(self._heap)
            for entry in expired:
                self._gone(entry)
                if entry.persistent:
                    self._resident -= 1
                    self._resident_by[entry.priority] -= 1
            self.stats.expired += len(expired)
            self.stats.dead_lettered += len(expired)
        self._may_expire = any(item[2].message.expiration_ms for item in self._heap)
        return expired

    def purge(self) -> list[Entry]:
        """Drop the pending window; the caller deletes those and the paged-out messages."""
        dropped = [item[2] for item in self._heap]
        self._heap = []
        self._may_expire = False
        self._resident = 0
        self._resident_by = [0] * 10
        self.paged_out_by = [0] * 10
        for entry in dropped:
            self._gone(entry)
        return dropped

    def purged_from_store(self, priority: int, seq: int) -> None:
        """A paged-out message that a purge deletes: no page-in may read it again, even
        before its deletion is written."""
        self.cursor[priority] = max(self.cursor[priority], seq)
        self.left[priority] = max(self.left[priority], seq)

    def browse(self, limit: int) -> list[Entry]:
        """Pending messages in the window, in dispatch order."""
        return [item[2] for item in heapq.nsmallest(limit, self._heap)]
