"""The STOMP listener: asyncio connections that feed a `StompSession` and carry out its
actions against the broker core.

Each connection is bound to the core that served when it opened; once the broker's
`ServiceGate` no longer serves that core (stopping, demoted, a slave) the connection
gets an ERROR and is closed, and a new one is refused the same way, as gRPC calls get
UNAVAILABLE. Consecutive SENDs of one connection are stored as one core batch (a SEND
without a receipt need not wait for the one before), a few batches in flight at a time;
past a bound of messages waiting the connection stops reading, so one fast producer
cannot make the broker buffer without limit. Deliveries stop (credit is withheld) while
the socket's write buffer is full; acks and credit go to the core in batches, not one
ACK frame at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import socket
import time
from collections.abc import Sequence
from ssl import SSLContext

from broker.core.broker import Broker
from broker.core.queue import Consumer, Entry
from broker.errors import BrokerError
from broker.pb.message_pb2 import Message
from broker.security.authenticator import AuthenticationError, Authenticator
from broker.security.authorization import Operation
from broker.security.principal import Principal, denial
from broker.server.gate import ServiceGate
from broker.stomp import session as s
from broker.stomp.frames import Limits

log = logging.getLogger("netbroker.stomp")

# Send batches of one connection stored at once, and the messages it may have waiting
# for the store before it stops reading.
MAX_BATCHES_IN_FLIGHT = 4
MAX_WAITING = 8192
# Bytes of messages one subscription may hold unacknowledged (one always goes out).
MAX_CONSUMER_BYTES = 64 * 1024 * 1024
# The socket's write buffer: past the high mark deliveries stop until it drains.
WRITE_HIGH = 4 * 1024 * 1024
# How long a closing connection may take to flush its last frames to a client that
# does not read.
CLOSE_GRACE = 5.0
# Acks held to go to the core together: at most this long, or this many.
ACK_DELAY = 0.002
MAX_ACKS_HELD = 1024
# How often connections check that the core they serve still serves.
GATE_CHECK = 0.25


class _Sink:
    """A subscription's deliveries, handed to its connection's session."""

    __slots__ = ("conn", "sub")

    def __init__(self, conn: StompConnection, sub: int) -> None:
        self.conn = conn
        self.sub = sub

    def deliver(self, deliveries: list[tuple[int, Entry]]) -> None:
        self.conn.deliver(self.sub, deliveries)


class StompConnection(asyncio.Protocol):
    def __init__(self, server: StompServer) -> None:
        self.server = server
        self.broker: Broker | None = None
        self.transport: asyncio.Transport | None = None
        self.session: s.StompSession | None = None
        self.consumers: dict[int, tuple[str, Consumer]] = {}
        self._batch: list[Message] = []
        self._tokens: list[int] = []
        self._flush_scheduled = False
        self._in_flight = 0
        self._waiting = 0
        self._reading_paused = False
        self._writing_paused = False
        self._withheld: dict[int, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._acks: dict[int, list[int]] = {}
        self._acks_held = 0
        self._ack_timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.peer = ""
        # Who CONNECT authenticated as (None: no users file, or not yet).
        self.principal: Principal | None = None

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        transport.set_write_buffer_limits(high=WRITE_HIGH)
        server = self.server
        server.connections.add(self)
        now = time.monotonic()
        self.session = s.StompSession(
            f"{server.name}-{next(server.ids)}", now, server.limits, server.heartbeat_ms,
            authenticate=server.authenticator is not None,
        )  # fmt: skip
        self.broker = server.gate.broker
        if self.broker is None:
            self._run(self.session.shutdown(server.gate.refusal, now))

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None or self._closing:
            return
        if not self._serving():
            return
        connected = session.connected
        self._run(session.receive(data, time.monotonic()))
        if not connected and session.connected:
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        self._flush_acks()  # acked before the connection went: not returned with the rest
        if self.session is not None:
            self._run(self.session.lost())

    def pause_writing(self) -> None:
        # A client that does not read what it is sent is not read from either: its
        # frames' answers (receipts, errors) would pile up here without bound.
        self._writing_paused = True
        self._reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._reading()
        for sub in list(self._withheld):
            self._credit(sub, 0, now=True)

    def _reading(self) -> None:
        """Read while neither the sends waiting for the store nor the socket's write
        buffer are over their bounds."""
        pause = (
            self._writing_paused
            or self._waiting >= MAX_WAITING
            or (self._reading_paused and self._waiting >= MAX_WAITING // 2)
        )
        if self.transport is None or self._closing or pause == self._reading_paused:
            return
        self._reading_paused = pause
        if pause:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # -- events from the core and the clock --------------------------------------------

    def deliver(self, sub: int, deliveries: Sequence[tuple[int, Entry]]) -> None:
        if self.session is None or not self._serving():
            return
        self._run(self.session.deliver(sub, deliveries, time.monotonic()))

    def check_gate(self) -> None:
        if not self._closing:
            self._serving()

    def _serving(self) -> bool:
        """Whether the core this connection serves still serves; if not, ERROR and close."""
        if self.broker is not None and self.server.gate.broker is self.broker:
            return True
        if self.session is not None and not self.session.closed:
            refusal = self.server.gate.refusal or "broker is not serving"
            self._run(self.session.shutdown(refusal, time.monotonic()))
        return False

    def _arm(self) -> None:
        session = self.session
        if session is None or self._closing:
            return
        deadline = session.next_deadline()
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, deadline - time.monotonic())
        self._timer = loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self.session is None or self._closing:
            return
        self._run(self.session.tick(time.monotonic()))
        self._arm()

    # -- carrying out actions ----------------------------------------------------------

    def _run(self, actions: list[s.Action]) -> None:
        transport = self.transport
        for action in actions:
            if isinstance(action, s.Write):
                if transport is not None and not transport.is_closing():
                    transport.write(action.data)
            elif isinstance(action, s.Ack):
                self._ack(action)
            elif isinstance(action, s.Credit):
                self._credit(action.sub, action.count)
            else:
                # Whatever else comes after the acks before it.
                self._flush_acks()
                if isinstance(action, s.Send):
                    self._send(action)
                elif isinstance(action, s.Nack):
                    self._core(lambda b, q, c, a=action: b.nack(q, c, a.tags), action.sub)
                elif isinstance(action, s.Subscribe):
                    self._subscribe(action)
                elif isinstance(action, s.Unsubscribe):
                    self._unsubscribe(action)
                elif isinstance(action, s.Commit):
                    self._commit(action)
                elif isinstance(action, s.Authenticate):
                    self._authenticate(action)
                elif isinstance(action, s.Close):
                    self._close()

    def _authenticate(self, action: s.Authenticate) -> None:
        authenticator = self.server.authenticator
        assert authenticator is not None
        host = self.peer.rsplit(":", 1)[0]

        async def check() -> None:
            error: str | None = None
            try:
                self.principal = await authenticator.authenticate(
                    action.login, action.passcode, host
                )
            except AuthenticationError as exc:
                error = exc.message
            session = self.session
            if session is not None and not self._closing:
                self._run(session.authenticated(error, time.monotonic()))
                if session.connected:
                    self._arm()

        self._spawn(check())

    def _refused(self, op: Operation, topic: bool, destination: str) -> str | None:
        """Why the principal may not do `op` on `destination`, or None when it may."""
        principal = self.principal
        if principal is None or principal.authorization is None:
            return None
        if principal.may(op, topic, destination):
            return None
        return denial(op, topic, destination, principal)

    def _ack(self, action: s.Ack) -> None:
        """Acks go to the core together, per subscription, within ACK_DELAY: a client
        ACKing one MESSAGE at a time (client-individual) would otherwise make a core
        call, a store write and a dispatch pass per message. An ack is never durable
        when its frame is read (it is written behind), so the delay changes no promise;
        anything that ends a subscription takes the acks before it first."""
        self._acks.setdefault(action.sub, []).extend(action.tags)
        self._acks_held += len(action.tags)
        if self._acks_held >= MAX_ACKS_HELD:
            self._flush_acks()
        elif self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._flush_acks)

    def _flush_acks(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if not self._acks:
            return
        acks, self._acks, self._acks_held = self._acks, {}, 0
        for sub, tags in acks.items():
            self._core(lambda b, q, c, t=tags: b.ack(q, c, t), sub)

    def _fail(self, message: str) -> None:
        if self.session is not None:
            self._run(self.session.shutdown(message, time.monotonic()))

    def _core(self, call: object, sub: int) -> None:
        held = self.consumers.get(sub)
        if held is None or self.broker is None:
            return
        try:
            call(self.broker, held[0], held[1])  # type: ignore[operator]
        except BrokerError as exc:
            self._fail(exc.message)

    def _credit(self, sub: int, count: int, *, now: bool = False) -> None:
        held = self.consumers.get(sub)
        if held is None or self.broker is None:
            return
        total = self._withheld.get(sub, 0) + count
        # Credit goes back in chunks of a quarter of the prefetch: one ACK at a time
        # (client-individual) would otherwise make a dispatch pass and a socket write
        # per message. The consumer keeps at least three quarters of its window, and
        # never less than one message, so nothing waits on what is withheld.
        if self._writing_paused or (not now and total < max(1, held[1].prefetch // 4)):
            self._withheld[sub] = total
            return
        self._withheld.pop(sub, None)
        self.broker.credit(held[0], held[1], total)

    def _subscribe(self, action: s.Subscribe) -> None:
        if self.broker is None:
            return
        refused = self._refused(Operation.READ, action.topic, action.queue)
        if refused is not None:
            self._fail(refused)
            return
        name = f"stomp {self.peer} #{action.sub}"
        sink = _Sink(self, action.sub)
        try:
            if action.topic:
                queue, consumer = self.broker.subscribe_topic(
                    action.queue, sink, action.prefetch, durable=action.durable, name=name
                )
            else:
                queue = action.queue
                consumer = self.broker.subscribe(queue, sink, action.prefetch, name=name)
        except BrokerError as exc:
            self._fail(exc.message)
            return
        consumer.max_bytes = MAX_CONSUMER_BYTES
        self.consumers[action.sub] = (queue, consumer)

    def _unsubscribe(self, action: s.Unsubscribe) -> None:
        held = self.consumers.pop(action.sub, None)
        if held is None or self.broker is None:
            return
        self.broker.unsubscribe(held[0], held[1])
        if action.durable is not None:
            try:
                self.broker.unsubscribe_durable(*action.durable)
            except BrokerError as exc:
                self._fail(exc.message)

    def _send(self, action: s.Send) -> None:
        broker = self.broker
        if broker is None:
            return
        message = action.message
        try:
            refused = self._refused(Operation.WRITE, message.topic, message.destination)
            if refused is not None:
                raise BrokerError("PERMISSION_DENIED", refused)
            broker.check(message)
        except BrokerError as exc:
            if self.session is not None:  # the ERROR names the SEND's receipt
                self._run(self.session.sent(action.token, exc.message, time.monotonic()))
            return
        self._batch.append(action.message)
        self._tokens.append(action.token)
        self._waiting += 1
        if self._waiting >= MAX_WAITING:
            self._reading()
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._batch or self._in_flight >= MAX_BATCHES_IN_FLIGHT:
            return  # the next batch goes when one in flight is answered
        messages, tokens = self._batch, self._tokens
        self._batch, self._tokens = [], []
        self._in_flight += 1
        self._spawn(self._store(messages, tokens))

    async def _store(self, messages: list[Message], tokens: list[int]) -> None:
        error: str | None = None
        try:
            assert self.broker is not None
            await self.broker.send(messages, checked=True)
        except BrokerError as exc:
            error = exc.message
        finally:
            self._in_flight -= 1
            self._waiting -= len(messages)
        if self.session is not None:
            self._run(self.session.sent_all(tokens, error, time.monotonic()))
        if self._reading_paused:
            self._reading()
        self._flush()

    def _commit(self, action: s.Commit) -> None:
        broker = self.broker
        if broker is None:
            return
        for message in action.messages:
            refused = self._refused(Operation.WRITE, message.topic, message.destination)
            if refused is not None and self.session is not None:
                self._run(self.session.sent(action.token, refused, time.monotonic()))
                return
        # What was sent before the COMMIT goes to the store before it.
        self._flush_now()
        acks = [
            (self.consumers[sub][0], self.consumers[sub][1], tags)
            for sub, tags in action.acks
            if sub in self.consumers
        ]

        async def commit() -> None:
            error: str | None = None
            try:
                await broker.send_and_ack(action.messages, acks)
            except BrokerError as exc:
                error = exc.message
            if self.session is not None:
                self._run(self.session.sent(action.token, error, time.monotonic()))

        self._spawn(commit())

    def _flush_now(self) -> None:
        if self._batch:
            messages, tokens = self._batch, self._tokens
            self._batch, self._tokens = [], []
            self._in_flight += 1
            self._spawn(self._store(messages, tokens))

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _close(self) -> None:
        transport = self.transport
        if transport is None or self._closing:
            return
        self._closing = True
        transport.close()
        # A client that does not read would keep the last frames (and the socket) here.
        asyncio.get_running_loop().call_later(CLOSE_GRACE, transport.abort)


class StompServer:
    """The STOMP listener of one broker."""

    def __init__(
        self,
        gate: ServiceGate,
        host: str,
        port: int,
        *,
        name: str = "netbroker",
        limits: Limits | None = None,
        heartbeat_ms: int = 1_000,
        authenticator: Authenticator | None = None,
        ssl: SSLContext | None = None,
    ) -> None:
        self.gate = gate
        # TLS on the port (None: plaintext).
        self.ssl = ssl
        # CONNECT must present credentials it accepts (None: every client is let in).
        self.authenticator = authenticator
        self.host = host
        self.port = port
        self.name = name
        self.limits = limits or Limits()
        self.heartbeat_ms = heartbeat_ms
        self.connections: set[StompConnection] = set()
        self.ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Listen; returns the port (the one picked when asked for 0)."""
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: StompConnection(self), self.host, self.port, reuse_address=True,
                ssl=self.ssl,
            )  # fmt: skip
        except OSError as exc:
            why = "port in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            raise OSError(f"cannot listen for STOMP on {self.host}:{self.port}: {why}") from exc
        self.port = self._server.sockets[0].getsockname()[1]
        self._watch = loop.create_task(self._watch_gate())
        return self.port

    async def _watch_gate(self) -> None:
        # Idle connections learn that their core stopped serving within GATE_CHECK;
        # busy ones at their next frame or delivery.
        while True:
            await asyncio.sleep(GATE_CHECK)
            for conn in list(self.connections):
                conn.check_gate()

    async def stop(self, reason: str = "broker is shutting down") -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn._fail(reason)
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
