"""The broker: queues, store and group commit joined on one asyncio loop.

Decisions live in `Queue` (dispatch) and the store key layout; this class carries them
out: it validates sends, writes through the group committer, pages messages in and out,
moves dead letters, and hands deliveries to consumer sinks. Network connectors and group
membership plug in through `demand_listeners`, `Consumer` sinks and the committer's
hooks; this module imports none of them.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from broker.config import BrokerConfig
from broker.core.commit import GroupCommitter
from broker.core.copies import TopicCopy
from broker.core.histogram import SECONDS, Histogram
from broker.core.memory import MemoryGate
from broker.core.names import check_queue_name, dead_letter_queue
from broker.core.queue import PRIORITIES, Consumer, ConsumerSink, Entry, Queue
from broker.core.store import (
    META_ACK,
    META_SEQ,
    Op,
    Store,
    consumed_key,
    encode_ids,
    id_key,
    id_key_bytes,
    mark_key,
    message_key_prefix,
    parse_message_key,
    record_key,
    subscription_key,
    subscription_record,
)
from broker.core.topics import (
    SubscriptionTable,
    Take,
    check_topic_name,
    is_network_queue,
    is_subscription_queue,
)
from broker.errors import BrokerError, InvalidArgument, Unavailable
from broker.ids import new_message_id
from broker.pb.message_pb2 import Message

log = logging.getLogger("netbroker.broker")

# Called with (queue name, number of local consumers) when a queue appears and whenever
# its local consumers change.
DemandListener = Callable[[str, int], None]
# Called with messages that reach a consumer for the first time, or leave their queue
# without ever reaching one (expired, purged): each message once. A bridge returns credit
# to the broker that forwarded them.
TakenListener = Callable[[list[Entry]], None]


class TopicRouter(Protocol):
    """Where a topic message goes beyond this broker's own subscriptions: plugged in by
    the network of brokers."""

    def route(self, message: Message) -> tuple[bool, list[tuple[str, list[str]]]]:
        """(whether this broker's subscriptions get it, and the network queues to copy it
        into, each with the brokers that copy is carried for). `message.broker_path`
        already ends with this broker."""
        ...


# How many recently published topic message ids are remembered for the duplicate check
# of resends: a producer resends what was unacknowledged when its stream broke, which is
# at most what it had in flight (the client's default: 5,000).
PUBLISHED_IDS = 65_536


def now_ms() -> int:
    return int(time.time() * 1000)


# An id's write under way: the visit it stores, and a future resolved (with the write's
# error, or None) once the write is enqueued or undone. A tuple: one is made per message.
_Claim = tuple[int, "asyncio.Future[BaseException | None]"]
# Deliveries held until their dispatch marks are committed: the queue, the marks' future
# (None: nothing of their own to wait for), and what goes to whom.
_Held = tuple[Queue, "asyncio.Future[None] | None", list[tuple[Consumer, list[tuple[int, Entry]]]]]


@dataclass
class QueueSnapshot:
    name: str
    pending: int
    in_flight: int
    consumers: int
    enqueued: int
    dequeued: int
    expired: int
    dead_lettered: int


@dataclass
class SubscriptionSnapshot:
    queue: str
    durable: tuple[str, str] | None
    active: bool
    label: str
    pending: int
    in_flight: int
    enqueued: int
    dequeued: int


@dataclass
class TopicSnapshot:
    name: str
    subscriptions: list[SubscriptionSnapshot]


@dataclass(frozen=True)
class Sent:
    ids: list[str]
    # Positions in the batch of resends of messages already held (acknowledged, not
    # stored again).
    duplicates: list[int]
    # Whether the broker chose any of the ids (the message came without one).
    assigned: bool = False


class Broker:
    def __init__(
        self, config: BrokerConfig, store: Store, committer: GroupCommitter | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.committer = committer or GroupCommitter(store, sync=config.sync.fsyncs)
        self.queues: dict[str, Queue] = {}
        # Topic subscriptions, each backed by a queue of its own in `queues`.
        self.topics = SubscriptionTable()
        # Topic messages published, and those no subscription took (since the start).
        # From a producer batch's arrival to its answer, as the adapters measure it.
        self.send_seconds = Histogram(SECONDS)
        self.published = 0
        self.dropped = 0
        self.demand_listeners: list[DemandListener] = []
        self.topic_router: TopicRouter | None = None
        self.taken_listeners: list[TakenListener] = []
        # The message limits, read once: every message is checked against them.
        self._limits = (
            config.max_message_bytes,
            config.max_id_length,
            config.max_headers,
            config.max_header_length,
        )
        self.memory = MemoryGate(config.nonpersistent_memory_limit)
        self._seq = 0
        self._acks = 0
        self._oldest_ack = 0
        self._valid_names: set[str] = set()
        self._valid_topics: set[str] = set()
        # Ids of the topic messages published lately, oldest first: a resend (a producer
        # whose stream broke before its ack) is a duplicate, not fanned out again, also
        # when no copy of it is in the store to say so (no durable subscription took it).
        self._published_ids: dict[str, None] = {}
        self._prefixes: dict[str, list[bytes]] = {}
        # Ids whose write is under way -> the visit it stores and its outcome: held for
        # the duplicate check only once enqueued.
        self._claims: dict[str, _Claim] = {}
        self._dirty: set[str] = set()
        self._dispatch_scheduled = False
        self._expiry_task: asyncio.Task[None] | None = None
        # Deliveries waiting for their dispatch marks to be committed, in dispatch order.
        self._held: collections.deque[_Held] = collections.deque()
        self._aborted = False

    # -- life cycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Recover queues from the store and start the writer and expiry sweeps."""
        self._seq = self.store.meta(META_SEQ)
        self._acks = self.store.meta(META_ACK)
        self._oldest_ack = self.store.oldest_ack() or self._acks + 1
        for name, counts in self.store.queue_counts().items():
            self._queue(name).recover(counts)
            self._dirty.add(name)
        for name, marks in self.store.dispatch_marks().items():
            if name in self.queues:
                self.queues[name].recover_marks(marks)
        self.committer.start()
        self._recover_topics()
        self._expiry_task = asyncio.get_running_loop().create_task(self._expire_loop())
        self._schedule_dispatch()

    async def stop(self) -> None:
        if self._expiry_task is not None:
            self._expiry_task.cancel()
        await self.committer.close()

    def abort(self, reason: str) -> None:
        """Stop serving at once (demoted): nothing more is written or acknowledged."""
        self._aborted = True
        if self._expiry_task is not None:
            self._expiry_task.cancel()
        self.committer.abort(Unavailable(reason))

    def _queue(self, name: str) -> Queue:
        queue = self.queues.get(name)
        if queue is None:
            queue = Queue(name, self.config.memory_window, self.config.max_redeliveries)
            self.queues[name] = queue
            self._notify_demand(queue)
        return queue

    def _key(self, queue: str, priority: int, seq: int) -> bytes:
        """A message's store key, from prefixes built once per queue (a send or an ack
        needs one per message)."""
        prefixes = self._prefixes.get(queue)
        if prefixes is None:
            prefixes = self._prefixes[queue] = [message_key_prefix(queue, p) for p in range(10)]
        return prefixes[priority] + seq.to_bytes(8, "big")

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # -- sending -------------------------------------------------------------------

    def _check(self, message: Message) -> None:
        name = message.destination
        if message.topic:
            if name not in self._valid_topics:
                check_topic_name(name)
                # Publishing creates nothing, so names are not bounded by queues: the
                # cache is (a flood of one-off topic names only costs their checks).
                if len(self._valid_topics) >= 4096:
                    self._valid_topics.clear()
                self._valid_topics.add(name)
        elif name not in self._valid_names:
            check_queue_name(name)
            self._valid_names.add(name)
        limit, id_limit, most_headers, most = self._limits
        # The serialized size covers body, headers, id and path at once, and upb gives it
        # faster than Python could add up the fields' lengths.
        size = message.ByteSize()
        if size > limit:
            body = len(message.body)
            if body > limit:
                raise InvalidArgument(
                    f"message body is {body} bytes, over the broker's limit of "
                    f"{limit} bytes (queue {name})"
                )
            raise InvalidArgument(
                f"message is {size} bytes serialized ({body} of body, the rest "
                f"headers, id and other fields), over the broker's limit of {limit} bytes "
                f"(queue {name})"
            )
        id_length = len(message.id)
        if id_length > id_limit:
            raise InvalidArgument(
                f"message id is {id_length} characters, over the limit of {id_limit} (queue {name})"
            )
        headers = message.headers
        if headers:
            if len(headers) > most_headers:
                raise InvalidArgument(
                    f"message has {len(headers)} headers, over the limit of "
                    f"{most_headers} (queue {name})"
                )
            for key, value in headers.items():
                if len(key) > most or len(value) > most:
                    raise InvalidArgument(
                        f"header {key[:40]!r}{'...' if len(key) > 40 else ''}: name of "
                        f"{len(key)} and value of {len(value)} characters, over the limit "
                        f"of {most} for each (queue {name})"
                    )
        if message.priority > 9:
            raise InvalidArgument(f"priority {message.priority} is out of range 0-9")
        if message.expiration_ms < 0:
            raise InvalidArgument(f"expiration {message.expiration_ms} is negative")

    async def send(self, messages: list[Message], checked: bool = False) -> Sent:
        """Store and enqueue a batch; returns the ids once durable. All or nothing.
        `checked`: the caller already passed every message through `check`.

        Cancelling the caller never splits store from queue: once the write is handed to
        the committer, its outcome (not the awaiting task) enqueues the batch or undoes it.
        """
        if not checked:
            for message in messages:
                self._check(message)
        # A resend of an id whose write is still under way is answered only once that
        # write's fate is known: a duplicate once the original is durable and enqueued,
        # a new message if the original failed. Nothing of ours is written yet, so a
        # cancel while waiting here leaves nothing behind.
        while waits := self._claims_of(messages):
            await asyncio.wait(waits)
        stamp = now_ms()
        me = self.config.path_name
        # One lookup for the whole batch: ids the producer set may be resends. With no
        # claim on them, the store is the truth: an id key there belongs to a write that
        # was enqueued (a failed write is undone before its claim goes).
        held = self.store.visits_of([m.id for m in messages if m.persistent and m.id])
        ops: list[Op] = []
        accepted: list[Entry] = []
        # Topic messages' copies, by the queue of the subscription each is for.
        fanned: list[tuple[str, Entry]] = []
        # Ids written for the duplicate check with no message key of theirs (a forwarded
        # topic message that only non-durable subscriptions took).
        ids_only: list[str] = []
        claimed: list[str] = []
        nonpersistent_bytes = 0
        ids: list[str] = []
        duplicates: list[int] = []
        claims = self._claims
        settled: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        assigned = False
        for position, message in enumerate(messages):
            mid = message.id
            if not mid:
                mid = message.id = new_message_id()
                assigned = True
            ids.append(mid)
            # Which visit to this broker this is: a message that left over a bridge may
            # come back (its consumers moved) and is then new here; a resend of the
            # same visit is a duplicate.
            visit = len(message.broker_path) + 1
            claim = claims.get(mid)
            if (
                (claim is not None and claim[1] is settled)
                or (message.persistent and held.get(mid, 0) >= visit)
                or (message.topic and mid in self._published_ids)
            ):
                # Held and durable (or twice in this batch, answered with it): acknowledged,
                # not stored twice.
                duplicates.append(position)
                continue
            if not message.timestamp_ms:
                message.timestamp_ms = stamp
            message.broker_path.append(me)
            if message.topic:
                in_memory, copied = self._fan_out(message, visit, ops, fanned, ids_only)
                nonpersistent_bytes += in_memory
                if copied:
                    claims[mid] = (visit, settled)
                    claimed.append(mid)
                continue
            seq = self._next_seq()
            data: bytes | None = None
            if message.persistent:
                data = message.SerializeToString()
                size = len(data)
                key = self._key(message.destination, message.priority, seq)
                ops.append((key, data))
                ops.append((id_key(mid), visit.to_bytes(2, "big")))
            else:
                key = None
                size = message.ByteSize()
                nonpersistent_bytes += size
            claims[mid] = (visit, settled)
            claimed.append(mid)
            accepted.append(Entry(message, seq, size, key, data))
        try:
            if nonpersistent_bytes:
                await self.memory.reserve(nonpersistent_bytes)
        except BaseException as exc:
            self._settle(claimed, settled, error=exc)
            raise
        # The sender's own answer: cancelling the sender cancels only this, never the
        # write nor `settled`, on which resends of these ids wait.
        answer: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        done = functools.partial(
            self._written, accepted, fanned, claimed, (settled, answer), nonpersistent_bytes, held,
            ids_only,
        )
        if ops:
            ops.append((META_SEQ, self._seq.to_bytes(8, "big")))
            self.committer.submit(ops).add_done_callback(done)
        else:
            # Nothing to write: enqueued now, as a non-persistent send always was.
            nothing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            nothing.set_result(None)
            done(nothing)
        error = await answer
        if error is not None:
            raise error
        return Sent(ids, duplicates, assigned)

    def _fan_out(
        self,
        message: Message,
        visit: int,
        ops: list[Op],
        fanned: list[tuple[str, Entry]],
        ids_only: list[str],
    ) -> tuple[int, bool]:
        """Copy a topic message into the queue of every subscription it matches now, and
        of every bridge the network routes it over (the copies are enqueued once the
        write is done); returns the bytes of the copies held in memory only, and whether
        there was any copy. A persistent message is stored once per durable
        subscription and per bridge, in the same write as the rest of its batch: its ack
        waits for every copy."""
        self.published += 1
        router = self.topic_router
        local, routes = (True, []) if router is None else router.route(message)
        subs = self.topics.match(message.destination) if local else ()
        if not subs and not routes:
            self.dropped += 1
            return 0, False
        persistent = message.persistent
        # Serialized once for all copies: each delivery embeds these bytes (for a
        # non-persistent message held by one subscription alone, holding its bytes too
        # would double what it costs, as for a queue).
        data = message.SerializeToString() if persistent or len(subs) > 1 else None
        size = len(data) if data is not None else message.ByteSize()
        in_memory = 0
        stored = False
        priority = message.priority
        for sub in subs:
            self._seq += 1
            seq = self._seq
            if persistent and sub.durable is not None:
                key = self._key(sub.queue, priority, seq)
                ops.append((key, data))
                fanned.append((sub.queue, TopicCopy(message, seq, size, key, data, stored=True)))
                stored = True
            else:
                fanned.append((sub.queue, TopicCopy(message, seq, size, None, data, stored=False)))
                in_memory += size
        for queue, targets in routes:
            copy = Message()
            copy.CopyFrom(message)
            del copy.topic_targets[:]
            copy.topic_targets.extend(targets)
            seq = self._next_seq()
            if persistent:
                copy_data = copy.SerializeToString()
                key = self._key(queue, priority, seq)
                ops.append((key, copy_data))
                fanned.append((queue, Entry(copy, seq, len(copy_data), key, copy_data)))
                stored = True
            else:
                fanned.append((queue, Entry(copy, seq, copy.ByteSize())))
                in_memory += copy.ByteSize()
        # Held for the duplicate check whenever a copy is stored, and for every persistent
        # message that came over a bridge: a resend after a link drop is then answered
        # as held, not delivered again.
        if stored or (persistent and len(message.broker_path) > 1):
            ops.append((id_key(message.id), visit.to_bytes(2, "big")))
            if not stored:
                ids_only.append(message.id)
        return in_memory, True

    def _claims_of(self, messages: list[Message]) -> set[asyncio.Future[BaseException | None]]:
        """The unsettled writes that hold an id of `messages`, for any visit.

        A lower visit's write counts too: should it fail, its undo writes its own
        `previous` id key back over whatever a later visit stored meanwhile, and a resend
        of that later visit would then be stored again."""
        claims = self._claims
        if not claims:
            return set()
        ids = [message.id for message in messages]
        # Nearly always none is claimed: one set operation in C says so for the batch.
        if claims.keys().isdisjoint(ids):
            return set()
        return {claims[mid][1] for mid in ids if mid in claims}

    def _written(
        self,
        accepted: list[Entry],
        fanned: list[tuple[str, Entry]],
        claimed: list[str],
        outcome: tuple[asyncio.Future[BaseException | None], ...],
        nonpersistent_bytes: int,
        held: dict[str, int],
        ids_only: list[str],
        written: asyncio.Future[None],
    ) -> None:
        """A batch's write is done: enqueue it, or undo it if it failed. Runs from the
        write's future, so no cancelled task can leave it stored but not queued."""
        error = Unavailable("store write cancelled") if written.cancelled() else written.exception()
        if error is None:
            for entry in accepted:
                self._queue(entry.message.destination).enqueue(entry)
                self._dirty.add(entry.message.destination)
            if fanned:
                self._enqueue_copies(fanned)
                excess = len(self._published_ids) - PUBLISHED_IDS
                if excess > 0:
                    for mid in list(itertools.islice(self._published_ids, excess)):
                        del self._published_ids[mid]
            self._schedule_dispatch()
            self._settle(claimed, *outcome, error=None)
            return
        if nonpersistent_bytes:
            self.memory.release(nonpersistent_bytes)
        # Failed after it may have reached the store (replication or fsync failed): take
        # it out again before the ids are free, so a resend is stored anew rather than
        # taken for a duplicate of a message that is in no queue. An id held from an
        # earlier visit keeps that visit.
        undo: list[Op] = []
        undone_ids: set[str] = set()
        for entry in itertools.chain(accepted, (copy for _, copy in fanned)):
            if entry.key is not None:
                mid = entry.message.id
                undo.append((entry.key, None))
                if mid in undone_ids:
                    continue  # a topic message's other copy
                undone_ids.add(mid)
                previous = held.get(mid, 0)
                undo.append((id_key(mid), previous.to_bytes(2, "big") if previous else None))
        for mid in ids_only:
            previous = held.get(mid, 0)
            undo.append((id_key(mid), previous.to_bytes(2, "big") if previous else None))
        if not undo:
            self._settle(claimed, *outcome, error=error)
            return
        undone = self.committer.submit(undo)

        def after_undo(done: asyncio.Future[None]) -> None:
            # Not committed is still written here, unless the store refused the write
            # itself, in which case the original failed the same way and is not there.
            if not done.cancelled() and done.exception() is not None:
                log.info("undo of a failed write not committed: %s", done.exception())
            self._settle(claimed, *outcome, error=error)

        undone.add_done_callback(after_undo)

    def _enqueue_copies(self, fanned: list[tuple[str, Entry]]) -> None:
        by_queue = self.topics.by_queue
        gone: dict[str, list[Entry]] = {}
        published = self._published_ids
        for name, entry in fanned:
            published[entry.message.id] = None
            if name in by_queue or is_network_queue(name):
                self._queue(name).enqueue(entry)
                self._dirty.add(name)
            else:
                # Its subscriber left (or it was unsubscribed) while the write was under
                # way: the copy goes with the subscription.
                gone.setdefault(name, []).append(entry)
        for name, entries in gone.items():
            self._remove(entries, name)

    def _settle(
        self,
        claimed: list[str],
        settled: asyncio.Future[BaseException | None],
        answer: asyncio.Future[BaseException | None] | None = None,
        *,
        error: BaseException | None,
    ) -> None:
        claims = self._claims
        for mid in claimed:
            claim = claims.get(mid)
            if claim is not None and claim[1] is settled:
                del claims[mid]
        for future in (settled, answer):
            if future is not None and not future.done():
                future.set_result(error)

    # -- consumers -----------------------------------------------------------------

    def subscribe(
        self,
        queue: str,
        sink: ConsumerSink,
        prefetch: int,
        priority: int = 0,
        name: str = "",
        *,
        remote: bool = False,
        accepts: Callable[[Message], bool] | None = None,
        credit_limit: int = 0,
        weight: int = 1,
    ) -> Consumer:
        if not (remote and is_network_queue(queue)):
            check_queue_name(queue)
        if prefetch < 1:
            raise InvalidArgument(f"prefetch must be at least 1, got {prefetch}")
        consumer = Consumer(
            sink=sink, prefetch=prefetch, priority=priority, name=name,
            accepts=accepts, remote=remote, credit_limit=credit_limit, weight=weight,
        )  # fmt: skip
        q = self._queue(queue)
        q.add_consumer(consumer)
        self._mark(queue)
        if not remote:
            self._notify_demand(q)
        return consumer

    # -- topics --------------------------------------------------------------------

    def subscribe_topic(
        self,
        pattern: str,
        sink: ConsumerSink,
        prefetch: int,
        *,
        durable: tuple[str, str] | None = None,
        name: str = "",
    ) -> tuple[str, Consumer]:
        """Subscribe to the topics `pattern` matches (`*` one segment, `>` the rest).

        Returns the subscription's queue and its consumer: credit, ack, nack and
        unsubscribe take them as for a queue. `durable`: (client id, subscription name);
        messages published while no subscriber holds it are kept for it (persistent ones
        in the store), and the same key resumes it, or with another pattern replaces it.
        Without, the subscription lives until `unsubscribe`. Raises InvalidArgument for a
        bad pattern or key, SubscriptionBusy (ALREADY_EXISTS) for a durable
        subscription that has its subscriber already."""
        if prefetch < 1:
            raise InvalidArgument(f"prefetch must be at least 1, got {prefetch}")
        if durable is None:
            sub = self.topics.add_nondurable(pattern, name)
        else:
            take = self.topics.take_durable(
                durable[0], durable[1], pattern, uuid.uuid4().hex[:12], name
            )
            sub = take.subscription
            if take.kind is not Take.RESUME:
                # The record goes through the committer like any write, so a slave holds
                # it and a restart or a new master knows the subscription; it is logged
                # before any message stored for the subscription.
                record: list[Op] = [
                    (subscription_key(*durable), subscription_record(pattern, sub.queue))
                ]
                if take.replaced is not None:
                    log.info(
                        "durable subscription %r of %r: %r replaces %r",
                        durable[1], durable[0], pattern, take.replaced.pattern,
                    )  # fmt: skip
                    self._drop_queue(take.replaced.queue, stored=True, ops=record)
                else:
                    self._submit_logged(record)
        consumer = Consumer(sink=sink, prefetch=prefetch, name=name)
        q = self._queue(sub.queue)
        q.add_consumer(consumer)
        self._mark(sub.queue)
        return sub.queue, consumer

    def unsubscribe_durable(self, client_id: str, sub_name: str) -> None:
        """Remove a durable subscription and every message kept for it. Raises NOT_FOUND
        if there is none, ALREADY_EXISTS while a subscriber holds it."""
        sub = self.topics.remove_durable(client_id, sub_name)
        record: list[Op] = [(subscription_key(client_id, sub_name), None)]
        self._drop_queue(sub.queue, stored=True, ops=record)

    def _drop_queue(self, name: str, *, stored: bool, ops: list[Op] | None = None) -> None:
        """Delete a subscription's queue and all it holds (it has no consumer left),
        after writing `ops`. `stored`: it may hold messages in the store (a durable one):
        they are deleted as a purge deletes them (in chunks, their ids kept for the
        duplicate check), and its dispatch marks with them."""
        if ops:
            self._submit_logged(ops)
        q = self.queues.get(name)
        if q is not None:
            if stored:
                self._purge(q)
            else:
                self._remove(q.purge(), name)
        if stored:
            self._submit_logged([(mark_key(name, p), None) for p in PRIORITIES])
        self.queues.pop(name, None)
        self._prefixes.pop(name, None)

    def _submit_logged(self, ops: list[Op]) -> None:
        """Write through the committer; nobody waits, a failure is logged."""

        def logged(done: asyncio.Future[None]) -> None:
            if not done.cancelled() and done.exception() is not None:
                log.warning("topic subscription write failed: %s", done.exception())

        self.committer.submit(ops).add_done_callback(logged)

    def _recover_topics(self) -> None:
        """Durable subscriptions from the store; a subscription queue without a record
        (its removal was cut short by a crash) is deleted."""
        known: set[str] = set()
        for client_id, sub_name, pattern, queue in self.store.subscriptions():
            try:
                self.topics.restore_durable(client_id, sub_name, pattern, queue)
            except BrokerError as exc:
                log.warning("durable subscription %r of %r ignored: %s", sub_name, client_id, exc)
                continue
            self._queue(queue)
            known.add(queue)
        # (A network queue has no record: its messages go on when its bridge is back.)
        orphans = [
            n for n in self.queues
            if is_subscription_queue(n) and not is_network_queue(n) and n not in known
        ]  # fmt: skip
        for name in orphans:
            log.info("deleting the messages of a removed topic subscription")
            self._drop_queue(name, stored=True)

    # -- records of plugged-in layers -----------------------------------------------

    def keep_record(self, name: str, value: bytes | None) -> None:
        """Write (None: delete) a plugged-in layer's record through the committer, so a
        slave holds it and a restart or a new master finds it; nobody waits."""
        self._submit_logged([(record_key(name), value)])

    def records(self, prefix: str) -> list[tuple[str, bytes]]:
        return self.store.records(prefix)

    def topic_snapshot(self) -> list[TopicSnapshot]:
        """Subscriptions by the topic or pattern they subscribe to, for status."""
        out: list[TopicSnapshot] = []
        for pattern, subs in sorted(self.topics.patterns().items()):
            snaps: list[SubscriptionSnapshot] = []
            for sub in subs:
                q = self.queues.get(sub.queue)
                snaps.append(
                    SubscriptionSnapshot(
                        queue=sub.queue,
                        durable=sub.durable,
                        active=sub.active,
                        label=sub.label,
                        pending=q.pending if q else 0,
                        in_flight=q.in_flight if q else 0,
                        enqueued=q.stats.enqueued if q else 0,
                        dequeued=q.stats.dequeued if q else 0,
                    )
                )
            out.append(TopicSnapshot(pattern, snaps))
        return out

    def has_local_consumers(self, queue: str) -> bool:
        q = self.queues.get(queue)
        return q is not None and q.local_consumers > 0

    def revoke_credit(self, queue: str, consumer: Consumer) -> None:
        self.queues[queue].revoke_credit(consumer)

    def set_prefetch(
        self, queue: str, consumer: Consumer, prefetch: int, credit_limit: int = 0
    ) -> None:
        self.queues[queue].set_prefetch(consumer, prefetch, credit_limit)
        self._mark(queue)

    def rank(self, queue: str, consumer: Consumer, priority: int, weight: int) -> None:
        """Change a consumer's priority and round-robin weight."""
        q = self.queues[queue]
        consumer.weight = weight
        if consumer.priority != priority:
            q.set_priority(consumer, priority)
        self._mark(queue)

    def local_capacity(self, queue: str) -> int:
        """How many messages the local consumers of `queue` take ahead, together."""
        q = self.queues.get(queue)
        return 0 if q is None else sum(c.prefetch for c in q.consumers if not c.remote)

    def unsubscribe(self, queue: str, consumer: Consumer) -> None:
        q = self.queues.get(queue)
        if q is None or consumer not in q.consumers:
            return
        requeued, dead = q.remove_consumer(consumer)
        if is_subscription_queue(queue) and self.topics.release(queue) is not None:
            # A non-durable subscription goes with its subscriber, and what it held
            # with it: nobody else could ever receive those copies.
            self.memory.release(sum(e.size for e, _ in dead if not e.persistent))
            self._drop_queue(queue, stored=False)
            return
        self._after_return(q, requeued, dead)
        if not consumer.remote:
            self._notify_demand(q)

    def credit(self, queue: str, consumer: Consumer, credit: int) -> None:
        self.queues[queue].add_credit(consumer, credit)
        self._mark(queue)

    def ack(self, queue: str, consumer: Consumer, tags: list[int]) -> None:
        q = self.queues[queue]
        done = q.ack(consumer, tags)
        self._remove(done, queue)
        self._mark(queue)

    def nack(self, queue: str, consumer: Consumer, tags: list[int], counted: bool = True) -> None:
        q = self.queues[queue]
        requeued, dead = q.nack(consumer, tags, counted)
        self._after_return(q, requeued, dead)

    def reject(self, queue: str, consumer: Consumer, tags: list[int], reason: str) -> None:
        """Dead-letter deliveries that can never be taken where they went."""
        q = self.queues[queue]
        self._dead_letter(q, [(entry, reason) for entry in q.reject(consumer, tags)])
        self._mark(queue)

    def check(self, message: Message) -> None:
        """Raise InvalidArgument if this broker would refuse to store `message`."""
        self._check(message)

    def _after_return(self, q: Queue, requeued: list[Entry], dead: list[tuple[Entry, str]]) -> None:
        # The raised redelivery count is written back so that it survives a restart and a
        # poison message still reaches the DLQ.
        ops: list[Op] = [
            (e.key or self._key(q.name, e.priority, e.seq), e.data)
            for e in requeued
            if e.persistent
        ]
        if ops:
            self._write_behind(ops)
        self._dead_letter(q, dead)
        self._mark(q.name)

    def _notify_demand(self, q: Queue) -> None:
        if is_subscription_queue(q.name):
            return  # a topic subscription's queue is no queue demand for the network
        for listener in self.demand_listeners:
            listener(q.name, q.local_consumers)

    # -- removal, dead letters, expiry ---------------------------------------------

    def _write_behind(self, ops: list[Op]) -> None:
        """Write without making anyone wait; a failure is logged by the committer."""
        future = self.committer.submit(ops, behind=True)
        future.add_done_callback(lambda f: f.exception())

    def _taken(self, entries: list[Entry]) -> None:
        if self.taken_listeners and entries:
            for listener in self.taken_listeners:
                listener(entries)

    def _removed(self, entries: list[Entry]) -> None:
        if self.taken_listeners:
            self._taken([e for e in entries if not e.dispatched])

    def _remove(self, entries: list[Entry], queue: str | None = None) -> None:
        """Messages done with: delete them, remembering their ids for the duplicate check.
        `queue`: the queue they are in (a topic copy's destination names its topic)."""
        self._removed(entries)
        ops: list[Op] = []
        consumed: list[bytes] = []
        released = 0
        for entry in entries:
            if entry.persistent:
                message = entry.message
                key = entry.key or self._key(
                    queue or message.destination, entry.priority, entry.seq
                )
                ops.append((key, None))
                consumed.append(message.id.encode())
            else:
                released += entry.size
        if released:
            self.memory.release(released)
        if ops:
            # Their ids, for pruning the duplicate check later: one key for them all.
            ops.append((consumed_key(self._acks + 1), encode_ids(consumed)))
            self._acks += len(consumed)
            ops.append((META_ACK, self._acks.to_bytes(8, "big")))
            ops.extend(self._prune_dedup())
            self._write_behind(ops)

    def _prune_dedup(self) -> list[Op]:
        excess = self._acks - self._oldest_ack + 1 - self.config.dedup_window
        if excess < 1024:  # prune in chunks: a scan per ack would cost more than it frees
            return []
        ops: list[Op] = []
        oldest = self._oldest_ack + excess
        for key, number, ids in self.store.consumed_batches(self._oldest_ack, excess):
            ops.append((key, None))
            ops.extend((id_key_bytes(mid), None) for mid in ids)
            # A batch is forgotten whole, even where it reaches past the chunk.
            oldest = max(oldest, number + len(ids))
        self._oldest_ack = oldest
        return ops

    def _dead_letter(self, q: Queue, dead: list[tuple[Entry, str]]) -> None:
        if not dead:
            return
        self._removed([entry for entry, _ in dead])
        ops: list[Op] = []
        moved: list[Entry] = []
        for entry, reason in dead:
            old = entry.message
            target = dead_letter_queue(old.destination)
            message = Message()
            message.CopyFrom(old)
            message.destination = target
            # A topic message's dead letter is a queue message of its DLQ.
            message.topic = False
            # A dead letter is kept until an operator deals with it.
            message.expiration_ms = 0
            message.headers["dlq_reason"] = reason
            message.headers["dlq_original_queue"] = old.destination
            seq = self._next_seq()
            key: bytes | None = None
            data: bytes | None = None
            if entry.persistent:
                original = entry.key or self._key(q.name, entry.priority, entry.seq)
                ops.append((original, None))
                data = message.SerializeToString()
                key = self._key(target, message.priority, seq)
                ops.append((key, data))
            dead_letter = Entry(message, seq, entry.size, key, data)
            # Held where the original was: a persistent message's copy for a non-durable
            # subscription was in memory only, and so is its dead letter (its size stays
            # counted against the memory gate until it is consumed).
            dead_letter.persistent = entry.persistent
            moved.append(dead_letter)
            log.info("message %s of %s to %s: %s", old.id, old.destination, target, reason)
        if ops:
            ops.append((META_SEQ, self._seq.to_bytes(8, "big")))
            future = self.committer.submit(ops)
        else:
            future = asyncio.get_running_loop().create_future()
            future.set_result(None)

        def enqueue(done: asyncio.Future[None]) -> None:
            if done.exception() is not None:
                return  # the originals are still in the store and come back on restart
            for entry in moved:
                self._queue(entry.message.destination).enqueue(entry)
                self._mark(entry.message.destination)

        future.add_done_callback(enqueue)

    def expire(self) -> None:
        """Move expired pending messages of every queue to their dead-letter queues."""
        now = now_ms()
        for q in list(self.queues.values()):
            expired = q.expire(now)
            if expired:
                self._dead_letter(q, [(entry, "expired") for entry in expired])

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.expiry_interval)
            self.expire()

    # -- dispatch ------------------------------------------------------------------

    def _mark(self, queue: str) -> None:
        self._dirty.add(queue)
        self._schedule_dispatch()

    def _schedule_dispatch(self) -> None:
        # Many sends and acks in one loop turn share one dispatch pass.
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        dirty, self._dirty = self._dirty, set()
        now = now_ms()
        for name in dirty:
            q = self.queues.get(name)
            if q is None:
                continue
            while True:
                self._page_in(q, now)
                result = q.dispatch(now)
                marks: list[Op] = []
                for _, batch in result.deliveries:
                    for priority in q.advance_marks(batch):
                        seq = q.dispatched[priority]
                        marks.append((mark_key(q.name, priority), seq.to_bytes(8, "big")))
                if not marks and result.deliveries and self.committer.replicator is not None:
                    # Redeliveries only: their marks were written before, but maybe never
                    # committed (timed out); written again, they are known once this is.
                    # (Non-persistent ones do not outlive a failover: nothing to wait for.)
                    priorities = {
                        e.priority for _, b in result.deliveries for _t, e in b if e.persistent
                    }
                    marks = [
                        (mark_key(q.name, p), q.dispatched[p].to_bytes(8, "big"))
                        for p in sorted(priorities)
                    ]
                # Written before anything leaves, so that after a crash whatever may have
                # reached a consumer comes back marked redelivered. Standalone the local
                # write does (a process crash keeps it); in a group a failover does not
                # keep it, so the deliveries wait until the in-sync members hold it.
                gate = self.committer.write_now(marks) if marks else None
                if gate is None and not self._held:
                    for consumer, batch in result.deliveries:
                        consumer.sink.deliver(batch)
                elif result.deliveries:
                    self._hold(q, gate, result.deliveries)
                self._taken(result.first)
                self._dead_letter(q, result.dead)
                # Dispatch may have drained the window below the refill mark.
                if not (q.page_in_wanted() and q.consumers and result.deliveries):
                    break

    def _hold(
        self,
        q: Queue,
        gate: asyncio.Future[None] | None,
        deliveries: list[tuple[Consumer, list[tuple[int, Entry]]]],
    ) -> None:
        """Deliver once `gate` resolves and everything held before has left (one line
        for all keeps each consumer's order, and a delivery with no mark of its own,
        a redelivery, waits for the marks it relies on)."""
        self._held.append((q, gate, deliveries))
        if gate is not None:
            gate.add_done_callback(lambda _: self._release_held())
        elif len(self._held) == 1:
            self._release_held()

    def _release_held(self) -> None:
        held = self._held
        while held and (held[0][1] is None or held[0][1].done()):
            q, gate, deliveries = held.popleft()
            failed = gate is not None and (gate.cancelled() or gate.exception() is not None)
            for consumer, batch in deliveries:
                # Only what the consumer still holds for it: one that left meanwhile had
                # its in-flight entries returned to the queue (and maybe handed on).
                batch = [(tag, e) for tag, e in batch if consumer.in_flight.get(tag) is e]
                if not batch:
                    continue
                if not failed:
                    try:
                        consumer.sink.deliver(batch)
                    except Exception:
                        log.exception("queue %s: a deferred delivery failed", q.name)
                elif not self._aborted:
                    # Not known to the members (timed out): never sent, so back to the
                    # queue uncounted, to go out again under a new mark.
                    self.nack(q.name, consumer, [tag for tag, _ in batch], counted=False)
                # Aborted: nothing leaves; this broker serves no one any more.

    def _page_in(self, q: Queue, now: int) -> None:
        wanted = q.page_in_wanted()
        if not wanted:
            return
        found = 0
        for priority in PRIORITIES:
            if found >= wanted:
                break
            if not q.paged_out_by[priority]:
                continue
            asked = wanted - found
            rows = self.store.scan_queue(q.name, priority, q.cursor[priority], asked)
            entries = []
            for seq, data in rows:
                message = Message.FromString(data)
                entries.append(Entry(message, seq, len(data), None, data))
            q.page_in(
                priority, entries, rows[-1][0] if rows else q.cursor[priority], len(rows) < asked
            )
            found += len(rows)
        if found == 0:
            log.warning("queue %s: %d messages counted but none in the store", q.name, wanted)
            q.forget_paged_out()

    # -- admin ---------------------------------------------------------------------

    def snapshot(self) -> list[QueueSnapshot]:
        return [
            QueueSnapshot(
                name=q.name,
                pending=q.pending,
                in_flight=q.in_flight,
                consumers=len(q.consumers),
                enqueued=q.stats.enqueued,
                dequeued=q.stats.dequeued,
                expired=q.stats.expired,
                dead_lettered=q.stats.dead_lettered,
            )
            for q in sorted(self.queues.values(), key=lambda q: q.name)
            if not is_subscription_queue(q.name)
        ]

    def _existing(self, name: str) -> Queue:
        check_queue_name(name)
        q = self.queues.get(name)
        if q is None:
            raise BrokerError("NOT_FOUND", f"no queue named {name!r}")
        return q

    def purge(self, name: str) -> int:
        """Remove every pending message of a queue; in-flight ones stay with consumers."""
        return self._purge(self._existing(name))

    def _purge(self, q: Queue) -> int:
        name = q.name
        keep = {e.seq for c in q.consumers for e in c.in_flight.values()}
        window = q.purge()
        keep.update(e.seq for e in window)
        self._remove(window, name)
        purged = len(window)
        chunk: list[Entry] = []
        # The rest are paged out: read them in chunks so a deep queue is not loaded whole.
        for key, data in self.store.queue_items(name):
            _, priority, seq = parse_message_key(key)
            if seq in keep:
                continue
            q.purged_from_store(priority, seq)
            chunk.append(Entry(Message.FromString(data), seq, len(data)))
            if len(chunk) >= 10_000:
                self._remove(chunk, name)
                purged += len(chunk)
                chunk = []
        self._remove(chunk, name)
        return purged + len(chunk)

    def browse(self, name: str, limit: int) -> list[Message]:
        q = self._existing(name)
        messages = [e.message for e in q.browse(limit)]
        if len(messages) < limit and q.paged_out:
            # Paged-out messages come after the window in dispatch order.
            for priority in PRIORITIES:
                rows = self.store.scan_queue(
                    name, priority, q.cursor[priority], limit - len(messages)
                )
                messages.extend(Message.FromString(data) for _, data in rows)
                if len(messages) >= limit:
                    break
        return messages

    # -- transactions: sends and acknowledgements in one write ---------------------

    async def send_and_ack(
        self, messages: list[Message], acks: list[tuple[str, Consumer, list[int]]]
    ) -> Sent:
        """Store `messages` and acknowledge the deliveries `acks` names (queue, consumer,
        tags) in one group-commit write, so that after a crash either all of it took
        effect or none (a STOMP transaction's COMMIT). Raises, changing nothing, if a
        message is refused or a tag is not in flight to its consumer. A topic message
        goes to the subscriptions it matches when the write is built, as `send` does.

        The messages are new (a transaction's sends are no resends): each gets a fresh
        id, and no duplicate check applies. A delivery acknowledged here that went back
        to its queue meanwhile (its consumer left) is deleted all the same and may be
        delivered once more, marked redelivered."""
        for message in messages:
            self._check(message)
        stamp = now_ms()
        me = self.config.path_name
        ops: list[Op] = []
        accepted: list[Entry] = []
        fanned: list[tuple[str, Entry]] = []
        ids_only: list[str] = []
        ids: list[str] = []
        nonpersistent_bytes = 0
        for message in messages:
            message.id = new_message_id()
            ids.append(message.id)
            if not message.timestamp_ms:
                message.timestamp_ms = stamp
            message.broker_path.append(me)
            if message.topic:
                nonpersistent_bytes += self._fan_out(message, 1, ops, fanned, ids_only)[0]
                continue
            seq = self._next_seq()
            if message.persistent:
                data = message.SerializeToString()
                key = self._key(message.destination, message.priority, seq)
                ops.append((key, data))
                ops.append((id_key(message.id), (1).to_bytes(2, "big")))
                accepted.append(Entry(message, seq, len(data), key, data))
            else:
                size = message.ByteSize()
                nonpersistent_bytes += size
                accepted.append(Entry(message, seq, size))
        if ops:
            ops.append((META_SEQ, self._seq.to_bytes(8, "big")))
        if nonpersistent_bytes:
            await self.memory.reserve(nonpersistent_bytes)
        # From here on nothing awaits until the write is submitted: the tags checked are
        # the tags written.
        taken: list[tuple[Queue, Consumer, list[int], list[Entry]]] = []
        for queue, consumer, tags in acks:
            q = self.queues.get(queue)
            found = [consumer.in_flight.get(tag) for tag in tags]
            entries = [e for e in found if e is not None]
            if q is None or len(entries) < len(found):
                if nonpersistent_bytes:
                    self.memory.release(nonpersistent_bytes)
                raise InvalidArgument(
                    f"a delivery to acknowledge is not in flight to this consumer of "
                    f"queue {queue}"
                )
            taken.append((q, consumer, tags, entries))
        consumed: list[bytes] = []
        restore: list[Op] = []
        for q, _c, _t, entries in taken:
            for entry in entries:
                if entry.persistent:
                    key = entry.key or self._key(q.name, entry.priority, entry.seq)
                    ops.append((key, None))
                    restore.append((key, entry.data))
                    consumed.append(entry.message.id.encode())
        if consumed:
            ops.append((consumed_key(self._acks + 1), encode_ids(consumed)))
            self._acks += len(consumed)
            ops.append((META_ACK, self._acks.to_bytes(8, "big")))
        settled: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        answer: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        enqueue = functools.partial(
            self._written, accepted, fanned, [], (settled, answer), nonpersistent_bytes, {},
            ids_only,
        )  # fmt: skip

        def done(written: asyncio.Future[None]) -> None:
            failed = written.cancelled() or written.exception() is not None
            if failed:
                # The deletions may have reached the store: write the messages back,
                # still in flight as they were.
                if restore:
                    self._write_behind(restore)
            else:
                for q, consumer, tags, entries in taken:
                    live = [t for t, e in zip(tags, entries, strict=True)
                            if consumer.in_flight.get(t) is e]  # fmt: skip
                    if live:
                        self._removed(q.ack(consumer, live))
                    released = sum(e.size for e in entries if not e.persistent)
                    if released:
                        self.memory.release(released)
                    self._mark(q.name)
            enqueue(written)

        if ops:
            self.committer.submit(ops).add_done_callback(done)
        else:
            nothing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            nothing.set_result(None)
            done(nothing)
        error = await answer
        if error is not None:
            raise error
        return Sent(ids, [])
