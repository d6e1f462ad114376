"""One STOMP connection's decisions, with no I/O: events in, actions out.

The transport feeds it bytes as they arrive, the time, deliveries from the broker core
and the outcomes of the core calls it asked for; it answers with bytes to write and
core calls to make (`Send`, `Subscribe`, `Ack`, `Commit`, ...). It negotiates the
version (1.0, 1.1, 1.2) and heart-beats, maps destinations and headers onto messages
and back, keeps each subscription's unacknowledged deliveries (`client` acknowledges
cumulatively, `client-individual` one by one, `auto` on delivery), buffers transactions
until COMMIT, and answers every violation with an ERROR and the end of the connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from broker.core.names import check_queue_name
from broker.core.queue import Entry
from broker.core.topics import check_durable, check_topic_name, check_topic_pattern
from broker.errors import BrokerError
from broker.pb.message_pb2 import Message
from broker.stomp.frames import (
    HEARTBEAT,
    Escaping,
    Frame,
    FrameParser,
    Limits,
    ProtocolError,
    encode,
    escape,
)

VERSIONS = ("1.0", "1.1", "1.2")
SERVER = "netbroker"
# The most a subscription takes ahead of its acknowledgements (and the default).
MAX_PREFETCH = 65_535
DEFAULT_PREFETCH = 1000
# Bounds on what a client may make the broker hold for it.
MAX_SUBSCRIPTIONS = 1024
MAX_TRANSACTIONS = 64
MAX_TRANSACTION_FRAMES = 100_000
MAX_TRANSACTION_BYTES = 64 * 1024 * 1024
# Heart-beats: the shortest interval this broker sends at or asks for (a client cannot
# make it write every millisecond), and how late a client's may be before it is dead.
MIN_HEARTBEAT_MS = 100
HEARTBEAT_GRACE = 2.0
# SEND headers the broker interprets, or that name what a MESSAGE carries itself: not
# carried as message headers.
_RESERVED = frozenset(
    {
        "destination",
        "receipt",
        "transaction",
        "content-length",
        "persistent",
        "priority",
        "expires",
        "message-id",
        "subscription",
        "ack",
        "redelivered",
        "timestamp",
    }
)
_ACK_MODES = ("auto", "client", "client-individual")
QUEUE_PREFIX = "/queue/"
TOPIC_PREFIX = "/topic/"


# -- actions -------------------------------------------------------------------------


@dataclass(slots=True)
class Write:
    data: bytes


@dataclass(slots=True)
class Close:
    """Write what came before, then close the connection."""


@dataclass(slots=True)
class Send:
    """Store `message`; answer with `sent(token, error)`."""

    message: Message
    token: int


@dataclass(slots=True)
class Subscribe:
    """Subscribe to queue `queue`, or with `topic` to the topics the pattern `queue`
    matches (`durable`: the durable subscription's client id and name)."""

    sub: int
    queue: str
    prefetch: int
    topic: bool = False
    durable: tuple[str, str] | None = None


@dataclass(slots=True)
class Unsubscribe:
    """End subscription `sub`; with `durable`, also remove that durable subscription
    and what it holds."""

    sub: int
    durable: tuple[str, str] | None = None


@dataclass(slots=True)
class Ack:
    sub: int
    tags: list[int]


@dataclass(slots=True)
class Nack:
    sub: int
    tags: list[int]


@dataclass(slots=True)
class Credit:
    sub: int
    count: int


@dataclass(slots=True)
class Commit:
    """Store `messages` and acknowledge `acks` in one write (all or nothing); answer with
    `sent(token, error)`. The nacks follow once it succeeded."""

    messages: list[Message]
    acks: list[tuple[int, list[int]]]
    token: int


@dataclass(slots=True)
class Authenticate:
    """Check CONNECT's `login` and `passcode`; answer with `authenticated(error)`. The
    frames after the CONNECT wait in the parser until then."""

    login: str
    passcode: str = field(repr=False)


Action = (
    Write | Close | Send | Subscribe | Unsubscribe | Ack | Nack | Credit | Commit | Authenticate
)


# -- state -----------------------------------------------------------------------------


@dataclass
class Subscription:
    number: int
    id: str
    destination: str
    queue: str
    mode: str
    # A topic subscription: each MESSAGE names the topic it was published to.
    topic: bool = False
    durable: tuple[str, str] | None = None
    # Deliveries not yet acknowledged (client modes): tag -> message id, in delivery order.
    outstanding: dict[int, str] = field(default_factory=dict)


@dataclass
class Transaction:
    messages: list[Message] = field(default_factory=list)
    acks: list[tuple[int, list[int]]] = field(default_factory=list)
    nacks: list[tuple[int, list[int]]] = field(default_factory=list)
    frames: int = 0
    bytes: int = 0


@dataclass
class _Pending:
    """A core call under way: its RECEIPT, and what follows its success."""

    receipt: str | None
    credits: list[tuple[int, int]] = field(default_factory=list)
    nacks: list[tuple[int, list[int]]] = field(default_factory=list)


class StompSession:
    def __init__(
        self,
        session_id: str,
        now: float,
        limits: Limits | None = None,
        heartbeat_ms: int = 1_000,
        topics: bool = True,
        authenticate: bool = False,
    ) -> None:
        self.session_id = session_id
        # Whether CONNECT's credentials are checked (`Authenticate`) before CONNECTED.
        self.authenticate = authenticate
        self._connected_reply: list[tuple[str, str]] | None = None
        self.limits = limits or Limits()
        self.parser = FrameParser(self.limits)
        # What this broker offers: heart-beats every `heartbeat_ms` both ways at most.
        self.heartbeat_ms = max(heartbeat_ms, MIN_HEARTBEAT_MS)
        self.topics = topics
        self.version = ""
        self.connected = False
        self.closed = False
        self.client_id = ""
        self.subscriptions: dict[int, Subscription] = {}
        self._by_id: dict[str, int] = {}
        self._next_sub = 1
        self.transactions: dict[str, Transaction] = {}
        self._pending: dict[int, _Pending] = {}
        self._next_token = 1
        # A DISCONNECT's receipt waits until every core call before it is answered.
        self._disconnect_receipt: str | None = None
        # Negotiated heart-beats in seconds (0: none) and when each side last spoke.
        self.send_every = 0.0
        self.expect_every = 0.0
        self._last_read = now
        self._last_write = now
        self._escaping = Escaping.NONE
        # Destinations already checked, and the queue each names.
        self._queues: dict[str, str] = {}

    # -- events ------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Core calls under way (sends, commits) not yet answered."""
        return len(self._pending)

    def receive(self, data: bytes, now: float) -> list[Action]:
        """Bytes from the client."""
        if self.closed:
            return []
        self._last_read = now
        actions: list[Action] = []
        try:
            parser = self.parser
            parser.append(data)
            while (
                not self.closed
                and self._connected_reply is None
                and (frame := parser.next()) is not None
            ):
                self._frame(frame, actions, now)
        except ProtocolError as exc:
            self._error(actions, exc.message, exc.receipt, now)
        except BrokerError as exc:
            self._error(actions, exc.message, None, now)
        return actions

    def authenticated(self, error: str | None, now: float) -> list[Action]:
        """CONNECT's credentials were checked: accepted (error None) or refused."""
        reply, self._connected_reply = self._connected_reply, None
        if self.closed or reply is None:
            return []
        actions: list[Action] = []
        if error is not None:
            self._error(actions, error, None, now)
            return actions
        self.connected = True
        self._write(actions, encode("CONNECTED", reply), now)
        return actions + self.receive(b"", now)  # the frames that waited

    def sent(self, token: int, error: str | None, now: float) -> list[Action]:
        """A Send or Commit is done: stored (error None) or refused."""
        return self.sent_all((token,), error, now)

    def sent_all(self, tokens: Sequence[int], error: str | None, now: float) -> list[Action]:
        """Sends or Commits done together (one store write): each as `sent` says; an
        error ends the connection at the first of them."""
        actions: list[Action] = []
        pop = self._pending.pop
        for token in tokens:
            pending = pop(token, None)
            if pending is None or self.closed:
                continue
            if error is not None:
                self._error(actions, error, pending.receipt, now)
                return actions
            if pending.receipt is None and not pending.credits and not pending.nacks:
                continue  # most SENDs: nothing follows their store
            for sub, count in pending.credits:
                if sub in self.subscriptions:
                    actions.append(Credit(sub, count))
            for sub, tags in pending.nacks:
                if sub in self.subscriptions:
                    actions.append(Nack(sub, tags))
                    actions.append(Credit(sub, len(tags)))
            if pending.receipt is not None:
                self._write(actions, encode("RECEIPT", [("receipt-id", pending.receipt)]), now)
        if not self.closed:
            self._maybe_disconnect(actions, now)
        return actions

    def deliver(
        self, sub: int, deliveries: Sequence[tuple[int, Entry]], now: float
    ) -> list[Action]:
        """Messages the core hands to subscription `sub`."""
        actions: list[Action] = []
        subscription = self.subscriptions.get(sub)
        if subscription is None or self.closed:
            # Gone: the core took its deliveries back when it was unsubscribed.
            return actions
        auto = subscription.mode == "auto"
        v12 = self.version == "1.2"
        escaping = self._escaping
        outstanding = subscription.outstanding
        out: list[bytes] = []
        # The frame's text is built in one f-string per message: the headers every
        # MESSAGE of the subscription shares are escaped once.
        head = f"MESSAGE\nsubscription:{escape(subscription.id, escaping)}\n"
        if not subscription.topic:
            head += f"destination:{escape(subscription.destination, escaping)}\n"
        for tag, entry in deliveries:
            message = entry.message
            if subscription.topic:
                # The topic it was published to, not the pattern subscribed with.
                where = f"destination:{escape(TOPIC_PREFIX + message.destination, escaping)}\n"
            else:
                where = ""
            mid = message.id
            ack = ""
            if not auto:
                outstanding[tag] = mid
                if v12:
                    ack = f"ack:{sub}-{tag}\n"
            extra = ""
            if message.persistent:
                extra = "persistent:true\n"
            if message.expiration_ms:
                extra += f"expires:{message.expiration_ms}\n"
            if message.headers:
                extra += "".join(
                    f"{escape(k, escaping)}:{escape(v, escaping)}\n"
                    for k, v in message.headers.items()
                )
            body = message.body
            out.append(
                f"{head}{where}message-id:{escape(mid, escaping)}\n{ack}"
                f"redelivered:{'true' if message.redelivery_count else 'false'}\n"
                f"priority:{message.priority}\n{extra}timestamp:{message.timestamp_ms}\n"
                f"content-length:{len(body)}\n\n".encode()
            )
            out.append(body)
            out.append(b"\0")
        self._write(actions, b"".join(out), now)
        if auto:
            tags = [tag for tag, _ in deliveries]
            actions.append(Ack(sub, tags))
            actions.append(Credit(sub, len(tags)))
        return actions

    def tick(self, now: float) -> list[Action]:
        """Time passed: a heart-beat due, or the client's missed."""
        actions: list[Action] = []
        if self.closed or not self.connected:
            return actions
        if self.expect_every and now - self._last_read > self.expect_every * HEARTBEAT_GRACE:
            self._error(
                actions,
                f"no heart-beat from the client for {now - self._last_read:.1f} s "
                f"(negotiated every {self.expect_every * 1000:.0f} ms)",
                None,
                now,
            )
            return actions
        if self.send_every and now - self._last_write >= self.send_every:
            self._write(actions, HEARTBEAT, now)
        return actions

    def next_deadline(self) -> float | None:
        """When `tick` has something to do next, or None."""
        if self.closed or not self.connected:
            return None
        times = []
        if self.send_every:
            times.append(self._last_write + self.send_every)
        if self.expect_every:
            times.append(self._last_read + self.expect_every * HEARTBEAT_GRACE)
        return min(times) if times else None

    def shutdown(self, reason: str, now: float) -> list[Action]:
        """The broker stops serving (stopping, demoted): ERROR, then close."""
        actions: list[Action] = []
        if not self.closed:
            self._error(actions, reason, None, now)
        return actions

    def lost(self) -> list[Action]:
        """The connection is gone: every subscription ends (unacknowledged deliveries
        go back, marked) and open transactions are dropped (none took effect)."""
        self.closed = True
        self.transactions.clear()
        actions: list[Action] = [Unsubscribe(n) for n in self.subscriptions]
        self.subscriptions.clear()
        self._by_id.clear()
        return actions

    # -- frames ------------------------------------------------------------------------

    def _frame(self, frame: Frame, actions: list[Action], now: float) -> None:
        command = frame.command
        if not self.connected:
            if command not in ("CONNECT", "STOMP"):
                raise ProtocolError(
                    f"expected CONNECT or STOMP first, got {command}", frame.headers.get("receipt")
                )
            self._connect(frame, actions, now)
            return
        if self._disconnect_receipt is not None:
            return  # disconnecting: nothing after DISCONNECT counts
        handler = _HANDLERS.get(command)
        if handler is None:
            raise ProtocolError(f"{command} is not allowed once connected")
        handler(self, frame, actions, now)

    def _connect(self, frame: Frame, actions: list[Action], now: float) -> None:
        headers = frame.headers
        offered = [v.strip() for v in headers.get("accept-version", "1.0").split(",")]
        common = [v for v in VERSIONS if v in offered]
        if not common:
            self._write(
                actions,
                encode(
                    "ERROR",
                    [("version", ",".join(VERSIONS)), ("content-type", "text/plain"),
                     ("message", f"no common version: this broker speaks {', '.join(VERSIONS)}")],
                    b"",
                    Escaping.NONE,
                ),
                now,
            )  # fmt: skip
            self.closed = True
            actions.append(Close())
            return
        self.version = common[-1]
        self._escaping = {"1.0": Escaping.NONE, "1.1": Escaping.V11}.get(self.version, Escaping.V12)
        self.parser.escaping = self._escaping
        self.client_id = headers.get("client-id", "")
        reply = [("version", self.version), ("session", self.session_id), ("server", SERVER)]
        if self.version != "1.0":
            cx, cy = _heartbeat(headers.get("heart-beat", "0,0"))
            mine = self.heartbeat_ms
            # We send at the slower of what we offer and what the client asks for, and
            # expect the client at the slower of what it offers and what we ask for.
            self.send_every = max(mine, cy) / 1000 if cy else 0.0
            self.expect_every = max(mine, cx) / 1000 if cx else 0.0
            reply.append(("heart-beat", f"{mine},{mine}"))
        if self.authenticate:
            self._connected_reply = reply
            actions.append(Authenticate(headers.get("login", ""), headers.get("passcode", "")))
            return
        self.connected = True
        self._write(actions, encode("CONNECTED", reply), now)

    def _send(self, frame: Frame, actions: list[Action], now: float) -> None:
        headers = frame.headers
        receipt = headers.get("receipt")
        message = self._message(frame, receipt)
        tx_name = headers.get("transaction")
        if tx_name is not None:
            tx = self._tx(tx_name, receipt)
            self._count(tx, tx_name, len(frame.body), receipt)
            tx.messages.append(message)
            self._receipt(actions, receipt, now)
            return
        token = self._token(_Pending(receipt))
        actions.append(Send(message, token))

    def _message(self, frame: Frame, receipt: str | None) -> Message:
        headers = frame.headers
        destination = headers.get("destination")
        if destination is None:
            raise ProtocolError("SEND frame has no destination header", receipt)
        name, topic = self._destination(destination, receipt, publish=True)
        message = Message(destination=name, body=frame.body, priority=4, topic=topic)
        for name, value in headers.items():
            if name not in _RESERVED:
                message.headers[name] = value
        if headers.get("persistent", "false").lower() == "true":
            message.persistent = True
        priority = headers.get("priority")
        if priority is not None:
            if not (priority.isdigit() and int(priority) <= 9):
                raise ProtocolError(f"priority {priority[:20]!r} is not 0-9", receipt)
            message.priority = int(priority)
        expires = headers.get("expires")
        if expires is not None and expires != "0":
            if not (expires.isdigit() and len(expires) <= 18):
                raise ProtocolError(
                    f"expires {expires[:20]!r} is not a time in milliseconds since the epoch",
                    receipt,
                )
            message.expiration_ms = int(expires)
        return message

    def _destination(
        self, destination: str, receipt: str | None, *, publish: bool
    ) -> tuple[str, bool]:
        """The queue or topic (pattern, to subscribe) a destination names, and whether
        it is a topic."""
        if destination.startswith(TOPIC_PREFIX):
            if not self.topics:
                raise ProtocolError(
                    f"destination {destination[:80]!r}: topics are not available here",
                    receipt,
                )
            name = destination[len(TOPIC_PREFIX) :]
            try:
                return (check_topic_name(name) if publish else check_topic_pattern(name)), True
            except BrokerError as exc:
                raise ProtocolError(
                    f"destination {destination[:80]!r}: {exc.message}", receipt
                ) from None
        queue = self._queues.get(destination)
        if queue is None:
            queue = self._check_queue(destination, receipt)
            if len(self._queues) < 1024:  # a connection names few; the check is per frame
                self._queues[destination] = queue
        return queue, False

    def _check_queue(self, destination: str, receipt: str | None) -> str:
        if destination.startswith(QUEUE_PREFIX):
            name = destination[len(QUEUE_PREFIX) :]
        elif destination.startswith("/"):
            raise ProtocolError(
                f"destination {destination[:80]!r}: use /queue/NAME, /topic/NAME or a bare "
                "queue name",
                receipt,
            )
        else:
            name = destination
        try:
            return check_queue_name(name)
        except BrokerError as exc:
            raise ProtocolError(
                f"destination {destination[:80]!r}: {exc.message}", receipt
            ) from None

    def _subscribe(self, frame: Frame, actions: list[Action], now: float) -> None:
        headers = frame.headers
        receipt = headers.get("receipt")
        destination = headers.get("destination")
        if destination is None:
            raise ProtocolError("SUBSCRIBE frame has no destination header", receipt)
        sub_id = headers.get("id")
        if sub_id is None:
            if self.version != "1.0":
                raise ProtocolError("SUBSCRIBE frame has no id header", receipt)
            sub_id = destination
        if sub_id in self._by_id:
            raise ProtocolError(f"subscription id {sub_id[:80]!r} is already in use", receipt)
        if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise ProtocolError(
                f"over {MAX_SUBSCRIPTIONS} subscriptions on one connection", receipt
            )
        mode = headers.get("ack", "auto")
        if mode not in _ACK_MODES:
            raise ProtocolError(
                f"ack mode {mode[:40]!r}: expected auto, client or client-individual", receipt
            )
        raw = headers.get("activemq.prefetchSize")
        prefetch = DEFAULT_PREFETCH
        if raw is not None:
            if not (raw.isdigit() and int(raw) > 0):
                raise ProtocolError(
                    f"activemq.prefetchSize {raw[:20]!r} is not a positive number", receipt
                )
            prefetch = min(int(raw), MAX_PREFETCH)
        name, topic = self._destination(destination, receipt, publish=False)
        durable = self._durable(headers, receipt) if topic else None
        number = self._next_sub
        self._next_sub += 1
        shown = destination if destination.startswith("/") else QUEUE_PREFIX + name
        self.subscriptions[number] = Subscription(
            number, sub_id, shown, name, mode, topic=topic, durable=durable
        )
        self._by_id[sub_id] = number
        actions.append(Subscribe(number, name, prefetch, topic=topic, durable=durable))
        self._receipt(actions, receipt, now)

    def _durable(self, headers: dict[str, str], receipt: str | None) -> tuple[str, str] | None:
        """A durable topic subscription's key: ActiveMQ's `activemq.subscriptionName` (or
        `durable-subscription-name`) with the `client-id` given on CONNECT."""
        name = headers.get("activemq.subscriptionName") or headers.get("durable-subscription-name")
        if name is None:
            return None
        try:
            return check_durable(self.client_id, name)
        except BrokerError as exc:
            raise ProtocolError(f"{exc.message}: give client-id on CONNECT", receipt) from None

    def _unsubscribe(self, frame: Frame, actions: list[Action], now: float) -> None:
        headers = frame.headers
        receipt = headers.get("receipt")
        sub_id = headers.get("id")
        if sub_id is None and self.version == "1.0":
            sub_id = headers.get("destination")
        if sub_id is None:
            raise ProtocolError("UNSUBSCRIBE frame has no id header", receipt)
        number = self._by_id.pop(sub_id, None)
        if number is None:
            raise ProtocolError(f"no subscription with id {sub_id[:80]!r}", receipt)
        subscription = self.subscriptions.pop(number)
        # ActiveMQ's way to end a durable subscription for good: UNSUBSCRIBE naming it;
        # without the name the subscriber only leaves and the subscription keeps messages.
        name = headers.get("activemq.subscriptionName") or headers.get("durable-subscription-name")
        durable = subscription.durable if name is not None else None
        if name is not None and (durable is None or durable[1] != name):
            raise ProtocolError(
                f"subscription {sub_id[:80]!r} is not the durable subscription {name[:80]!r}",
                receipt,
            )
        actions.append(Unsubscribe(number, durable))
        self._receipt(actions, receipt, now)

    def _ack(self, frame: Frame, actions: list[Action], now: float) -> None:
        self._settle(frame, actions, now, nack=False)

    def _nack(self, frame: Frame, actions: list[Action], now: float) -> None:
        if self.version == "1.0":
            raise ProtocolError("NACK is not part of STOMP 1.0", frame.headers.get("receipt"))
        self._settle(frame, actions, now, nack=True)

    def _settle(self, frame: Frame, actions: list[Action], now: float, *, nack: bool) -> None:
        headers = frame.headers
        receipt = headers.get("receipt")
        sub, tag = self._find(headers, receipt, frame.command)
        subscription = self.subscriptions[sub]
        outstanding = subscription.outstanding
        if subscription.mode == "client":
            # Cumulative: this delivery and every earlier one of the subscription.
            tags = []
            for t in outstanding:
                tags.append(t)
                if t == tag:
                    break
        else:
            tags = [tag]
        tx_name = headers.get("transaction")
        if tx_name is not None:
            tx = self._tx(tx_name, receipt)
            self._count(tx, tx_name, 0, receipt)
            (tx.nacks if nack else tx.acks).append((sub, tags))
            self._receipt(actions, receipt, now)
            return
        for t in tags:
            del outstanding[t]
        if nack:
            actions.append(Nack(sub, tags))
            actions.append(Credit(sub, len(tags)))
        elif (
            len(actions) >= 2
            and isinstance(credit := actions[-1], Credit)
            and credit.sub == sub
            and isinstance(last := actions[-2], Ack)
            and last.sub == sub
        ):
            # The ACKs of one read go to the transport as one: the client-individual
            # client ACKs each MESSAGE, so a read often holds many.
            last.tags.extend(tags)
            credit.count += len(tags)
        else:
            actions.append(Ack(sub, tags))
            actions.append(Credit(sub, len(tags)))
        self._receipt(actions, receipt, now)

    def _find(self, headers: dict[str, str], receipt: str | None, command: str) -> tuple[int, int]:
        """The subscription and delivery tag an ACK or NACK names."""
        if self.version == "1.2":
            ack_id = headers.get("id")
            if ack_id is None:
                raise ProtocolError(f"{command} frame has no id header", receipt)
            number, _, raw_tag = ack_id.partition("-")
            if number.isdigit() and raw_tag.isdigit():
                sub, tag = int(number), int(raw_tag)
                subscription = self.subscriptions.get(sub)
                if subscription is not None and tag in subscription.outstanding:
                    return sub, tag
            raise ProtocolError(
                f"{command}: no unacknowledged message has ack id {ack_id[:80]!r}", receipt
            )
        message_id = headers.get("message-id")
        if message_id is None:
            raise ProtocolError(f"{command} frame has no message-id header", receipt)
        sub_id = headers.get("subscription")
        if sub_id is None and self.version == "1.1":
            raise ProtocolError(f"{command} frame has no subscription header", receipt)
        candidates = (
            [self._by_id[sub_id]] if sub_id in self._by_id else [] if sub_id is not None
            else list(self.subscriptions)
        )  # fmt: skip
        for sub in candidates:
            for tag, mid in self.subscriptions[sub].outstanding.items():
                if mid == message_id:
                    return sub, tag
        raise ProtocolError(
            f"{command}: no unacknowledged message with message-id {message_id[:80]!r}", receipt
        )

    def _begin(self, frame: Frame, actions: list[Action], now: float) -> None:
        receipt = frame.headers.get("receipt")
        name = frame.headers.get("transaction")
        if name is None:
            raise ProtocolError("BEGIN frame has no transaction header", receipt)
        if name in self.transactions:
            raise ProtocolError(f"transaction {name[:80]!r} is already open", receipt)
        if len(self.transactions) >= MAX_TRANSACTIONS:
            raise ProtocolError(f"over {MAX_TRANSACTIONS} open transactions", receipt)
        self.transactions[name] = Transaction()
        self._receipt(actions, receipt, now)

    def _commit(self, frame: Frame, actions: list[Action], now: float) -> None:
        receipt = frame.headers.get("receipt")
        name = self._tx_name(frame, receipt)
        tx = self.transactions.pop(name)
        # Acks whose deliveries are still unacknowledged: the same delivery acked twice,
        # or already acked outside the transaction, counts once.
        acks: list[tuple[int, list[int]]] = []
        credits: dict[int, int] = {}
        for sub, tags in tx.acks:
            subscription = self.subscriptions.get(sub)
            if subscription is None:
                continue  # unsubscribed: its deliveries went back already
            live = [t for t in tags if subscription.outstanding.pop(t, None) is not None]
            if live:
                acks.append((sub, live))
                credits[sub] = credits.get(sub, 0) + len(live)
        nacks: list[tuple[int, list[int]]] = []
        for sub, tags in tx.nacks:
            subscription = self.subscriptions.get(sub)
            if subscription is None:
                continue
            live = [t for t in tags if subscription.outstanding.pop(t, None) is not None]
            if live:
                nacks.append((sub, live))
        pending = _Pending(receipt, list(credits.items()), nacks)
        actions.append(Commit(tx.messages, acks, self._token(pending)))

    def _abort(self, frame: Frame, actions: list[Action], now: float) -> None:
        receipt = frame.headers.get("receipt")
        del self.transactions[self._tx_name(frame, receipt)]
        # Deliveries acknowledged in it stay unacknowledged, to be acked again or
        # returned when the subscription ends.
        self._receipt(actions, receipt, now)

    def _disconnect(self, frame: Frame, actions: list[Action], now: float) -> None:
        receipt = frame.headers.get("receipt")
        self.transactions.clear()
        if receipt is None:
            self.closed = True
            actions.append(Close())
            return
        self._disconnect_receipt = receipt
        # The receipt goes once the calls before it are answered.
        self._maybe_disconnect(actions, now)

    # -- helpers -------------------------------------------------------------------------

    def _maybe_disconnect(self, actions: list[Action], now: float) -> None:
        if self._disconnect_receipt is not None and not self._pending:
            self._write(actions, encode("RECEIPT", [("receipt-id", self._disconnect_receipt)]), now)
            self.closed = True
            actions.append(Close())

    def _tx_name(self, frame: Frame, receipt: str | None) -> str:
        name = frame.headers.get("transaction")
        if name is None:
            raise ProtocolError(f"{frame.command} frame has no transaction header", receipt)
        if name not in self.transactions:
            raise ProtocolError(f"no open transaction {name[:80]!r}", receipt)
        return name

    def _tx(self, name: str, receipt: str | None) -> Transaction:
        tx = self.transactions.get(name)
        if tx is None:
            raise ProtocolError(f"no open transaction {name[:80]!r}", receipt)
        return tx

    def _count(self, tx: Transaction, name: str, size: int, receipt: str | None) -> None:
        tx.frames += 1
        tx.bytes += size
        if tx.frames > MAX_TRANSACTION_FRAMES or tx.bytes > MAX_TRANSACTION_BYTES:
            raise ProtocolError(
                f"transaction {name[:80]!r} is over {MAX_TRANSACTION_FRAMES} frames or "
                f"{MAX_TRANSACTION_BYTES} bytes",
                receipt,
            )

    def _token(self, pending: _Pending) -> int:
        token = self._next_token
        self._next_token += 1
        self._pending[token] = pending
        return token

    def _receipt(self, actions: list[Action], receipt: str | None, now: float) -> None:
        if receipt is not None:
            self._write(
                actions, encode("RECEIPT", [("receipt-id", receipt)], b"", self._escaping), now
            )

    def _write(self, actions: list[Action], data: bytes, now: float) -> None:
        if data:
            actions.append(Write(data))
            self._last_write = now

    def _error(self, actions: list[Action], message: str, receipt: str | None, now: float) -> None:
        headers = [("message", message), ("content-type", "text/plain")]
        if receipt is not None:
            headers.append(("receipt-id", receipt))
        self._write(actions, encode("ERROR", headers, message.encode(), self._escaping), now)
        self.closed = True
        actions.append(Close())


def _heartbeat(value: str) -> tuple[int, int]:
    parts = value.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ProtocolError(f"heart-beat {value[:40]!r} is not two numbers like 10000,10000")
    return int(parts[0]), int(parts[1])


_HANDLERS = {
    "SEND": StompSession._send,
    "SUBSCRIBE": StompSession._subscribe,
    "UNSUBSCRIBE": StompSession._unsubscribe,
    "ACK": StompSession._ack,
    "NACK": StompSession._nack,
    "BEGIN": StompSession._begin,
    "COMMIT": StompSession._commit,
    "ABORT": StompSession._abort,
    "DISCONNECT": StompSession._disconnect,
}
