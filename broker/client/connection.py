"""The async client: connects to a broker (with a failover URL, to whichever of several
accepts, probing them), fails over when a stream breaks, and opens producers, consumers
and Admin calls on the connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc

from broker.client.channel import _Connection, _refusal
from broker.client.consumer import Consumer
from broker.client.errors import ConnectionLost, is_failover_code
from broker.client.limits import (
    ELECTING_POLL,
    FAILOVER_PROBE_TIMEOUT,
    MAX_GRPC_MESSAGE_BYTES,
    PROBE_HEAD_START,
    PROBE_TIMEOUT,
    STABLE_CONNECTION_SECONDS,
)
from broker.client.producer import Producer
from broker.client.url import ClientUrl, parse_url
from broker.credentials import credentials_metadata
from broker.errors import BrokerError
from broker.pb import admin_pb2, admin_pb2_grpc, client_pb2, client_pb2_grpc, message_pb2
from broker.reconnect import KEEPALIVE_INTERVAL_MS, KEEPALIVE_TIMEOUT_MS, AddressRotation, Backoff
from broker.security.tls import PLAINTEXT_HINT, TlsError, read_ca, tls_failure

log = logging.getLogger("netbroker.client")

_CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_BYTES),
    # A broker that stops answering (paused, cut off) is given up within about
    # 1.1 s, so that producers reach a new master about as soon as it is elected
    # (1-1.5 s after a master freezes). Pings are answered by gRPC's own threads, not the
    # broker's loop: a busy broker still answers them in time. Brokers permit pings
    # this often (broker/server/listen.py).
    ("grpc.keepalive_time_ms", KEEPALIVE_INTERVAL_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    # Without it gRPC waits 60 s for a ping answer, whatever keepalive_timeout says.
    ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    # Keep pinging on long idle streams (a consumer waiting on an empty queue): gRPC's
    # default stops after two pings without data, and a dead broker would go unnoticed.
    ("grpc.http2.max_pings_without_data", 0),
    # A private subchannel per channel: a fresh channel to an address that just failed
    # must really try to connect, not inherit a shared subchannel's reconnect backoff.
    ("grpc.use_local_subchannel_pool", 1),
)


class _Refused(Exception):
    """An address did not accept us; `not_serving`: a broker there answered that it
    takes no clients now (a slave, electing), rather than not answering at all."""

    def __init__(self, reason: str, not_serving: bool = False) -> None:
        super().__init__(reason)
        self.not_serving = not_serving


def _why(error: grpc.aio.AioRpcError, tls: bool = False) -> str:
    """A failed probe in few words: gRPC's text for a refused or unreachable address is
    three nested messages long; the last says what happened."""
    details = error.details() or ""
    if error.code() == grpc.StatusCode.UNAVAILABLE:
        # A TLS port hangs up on a plaintext client ("Socket closed"); a TLS client that
        # does not trust the broker's certificate fails the handshake.
        if tls and (cause := tls_failure(details)) is not None:
            return cause
        if not tls and details.rstrip().endswith("Socket closed"):
            return PLAINTEXT_HINT
    if error.code() == grpc.StatusCode.UNAVAILABLE and "last error:" in details:
        last = details.rsplit(":", 1)[-1].strip()
        return last[0].lower() + last[1:] if last else "unavailable"
    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "no answer in time"
    return f"{error.code().name}: {details}"


class Client:
    """An async connection to a broker (or, with a failover URL, to whichever of several
    brokers accepts). Create with :meth:`connect`; use from one event loop."""

    def __init__(
        self,
        url: ClientUrl,
        user: str | None = None,
        password: str | None = None,
        ca: bytes | None = None,
    ) -> None:
        """Use :meth:`Client.connect`, which also connects."""
        self.url = url
        # TLS, verifying brokers against `ca` (None: the system's roots); None: plaintext.
        self._credentials = (
            grpc.ssl_channel_credentials(ca) if (url.tls or ca is not None) else None
        )
        self._metadata = credentials_metadata(user or url.user, password or url.password)
        self._loop = asyncio.get_running_loop()
        self._rotation = AddressRotation(url.addresses, url.randomize)
        self._backoff = Backoff(url.initial_reconnect_delay, url.max_reconnect_delay)
        self._lock = asyncio.Lock()
        self._conn: _Connection | None = None
        self._connected_at = float("-inf")
        self._lost: ConnectionLost | None = None
        self._closing = False
        self._closed = False
        self._producers: set[Producer] = set()
        self._consumers: set[Consumer] = set()
        self._shared_producer: Producer | None = None

    @classmethod
    async def connect(
        cls,
        url: str | ClientUrl,
        *,
        user: str | None = None,
        password: str | None = None,
        ca: str | Path | None = None,
    ) -> Client:
        """Connect to the first address that accepts, trying the URL's addresses in turn
        with backoff (a failover URL tries until its ``timeout``; a plain one tries once).
        ``user`` and ``password`` (else the URL's ``user:password@``) go with every call
        to a broker that has users. ``ca``, a PEM file, turns TLS on (as ``ssl://`` in the
        URL does) and is what brokers' certificates are verified against (without it, the
        system's roots); a broker that does not verify is refused.

        Raises ValueError for a malformed URL or an unreadable CA, and ConnectionLost
        when no broker accepts.
        """
        roots = None
        if ca is not None:
            try:
                roots = read_ca(Path(ca))
            except TlsError as exc:
                raise ValueError(str(exc)) from None
        parsed = parse_url(url) if isinstance(url, str) else url
        client = cls(parsed, user, password, roots)
        async with client._lock:
            client._conn = await client._establish(after_loss=False)
        return client

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def address(self) -> str | None:
        """The address currently connected to (None while reconnecting)."""
        return self._conn.address if self._conn else None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closing

    # ---------------------------------------------------------------- messaging

    def producer(self, max_in_flight: int = 5000) -> Producer:
        """A pipelined producer with its own stream: at most ``max_in_flight`` messages
        queued or awaiting their ack at once (``send`` waits for room beyond that)."""
        self._check_open()
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        producer = Producer(self, max_in_flight)
        self._producers.add(producer)
        return producer

    def _shared(self) -> Producer:
        """The producer that `send` and `publish` share (batched together)."""
        if self._shared_producer is None:
            self._shared_producer = self.producer()
        return self._shared_producer

    async def send(
        self,
        queue: str,
        body: bytes | str,
        *,
        headers: Mapping[str, str] | None = None,
        persistent: bool = True,
        priority: int = 4,
        ttl: float | None = None,
        message_id: str | None = None,
    ) -> str:
        """Send one message and wait for the broker's ack; return the message's id.

        Concurrent calls share one stream and are batched together. Raises BrokerError
        when the broker rejects the message, ConnectionLost when no broker can be reached.
        """
        future = await self._shared().send(
            queue,
            body,
            headers=headers,
            persistent=persistent,
            priority=priority,
            ttl=ttl,
            message_id=message_id,
        )
        return await future

    async def publish(
        self,
        topic: str,
        body: bytes | str,
        *,
        headers: Mapping[str, str] | None = None,
        persistent: bool = True,
        priority: int = 4,
        ttl: float | None = None,
        message_id: str | None = None,
    ) -> str:
        """Publish one message to ``topic`` and wait for the broker's ack; return its id.
        Every subscription to the topic when it arrives gets a copy; with none, the
        broker drops it (and still acknowledges it). A persistent message is
        acknowledged once every durable subscription's copy is durable."""
        future = await self._shared().publish(
            topic,
            body,
            headers=headers,
            persistent=persistent,
            priority=priority,
            ttl=ttl,
            message_id=message_id,
        )
        return await future

    async def subscribe(
        self,
        queue: str | None = None,
        *,
        topic: str | None = None,
        subscription: str = "",
        client_id: str = "",
        prefetch: int = 1000,
        auto_ack: bool = False,
        priority: int = 0,
        name: str = "",
    ) -> Consumer:
        """Open a consumer on ``queue``, or a subscriber to ``topic`` (a name, or a
        pattern: ``*`` one dot-separated segment, ``>`` the rest): the broker holds out
        at most ``prefetch`` unacknowledged deliveries to it (brokers serve at most
        65,535, and at most 64 MiB of messages, whatever is asked). With ``auto_ack`` a
        delivery is acked when the next one is asked for (or on close).

        A topic subscription is non-durable (it sees what is published while it is
        open) unless ``subscription`` names it, with ``client_id``: a durable one keeps
        messages while no subscriber holds it, for the next to subscribe under the same
        names (one at a time); with another topic it is replaced. Remove it with
        :meth:`unsubscribe`.

        A queue consumer is returned once its subscription is sent: the broker's refusal
        (a bad queue name) is raised by the first ``receive``. A topic subscriber is
        returned once the broker has it in place, so that it receives everything
        published after; a refusal (a bad pattern, a durable subscription held by
        another subscriber) is raised here."""
        self._check_open()
        if (queue is None) == (topic is None):
            raise ValueError("subscribe to a queue or to a topic= (one of the two)")
        destination = queue if queue is not None else topic
        if not isinstance(destination, str):
            what = "queue" if queue is not None else "topic"
            raise TypeError(f"{what} must be a string, not {type(destination).__name__}")
        if (subscription or client_id) and topic is None:
            raise ValueError("subscription and client_id are for topic subscriptions")
        if subscription and not client_id:
            raise ValueError("a durable subscription needs a client_id")
        if client_id and not subscription:
            raise ValueError("client_id without subscription: a durable one needs both")
        if not 1 <= prefetch <= 0xFFFFFFFF:
            raise ValueError("prefetch must be at least 1")
        request = client_pb2.Subscribe(prefetch=prefetch, priority=priority, name=name)
        if queue is not None:
            request.queue = queue
        else:
            request.topic = destination
            request.client_id = client_id
            request.subscription = subscription
        consumer = Consumer(self, destination, prefetch, auto_ack, request)
        self._consumers.add(consumer)
        try:
            await consumer._start()
        except BaseException:
            await consumer.close()
            raise
        return consumer

    async def unsubscribe(self, client_id: str, subscription: str) -> None:
        """Remove durable subscription ``subscription`` of ``client_id`` and every
        message kept for it. Raises BrokerError NOT_FOUND if there is none, and
        ALREADY_EXISTS while a subscriber holds it."""
        request = client_pb2.UnsubscribeRequest(client_id=client_id, subscription=subscription)
        await self._call(lambda conn: conn.broker.Unsubscribe(request, metadata=conn.metadata))

    # ---------------------------------------------------------------- admin

    async def status(self) -> admin_pb2.StatusResponse:
        """The connected broker's name, role, address, version and components."""
        return await self._admin("Status", admin_pb2.StatusRequest())

    async def queues(self) -> list[admin_pb2.QueueInfo]:
        """Every queue the broker holds, with its depth and counters."""
        response = await self._admin("ListQueues", admin_pb2.ListQueuesRequest())
        return list(response.queues)

    async def topics(self) -> admin_pb2.ListQueuesResponse:
        """Topic subscriptions by topic (``topics``), each with its depth, and the topic
        messages published and dropped (``published``, ``dropped``)."""
        response = await self._admin("ListQueues", admin_pb2.ListQueuesRequest())
        return response

    async def purge(self, queue: str) -> int:
        """Remove ``queue``'s pending messages (in-flight ones stay); return how many."""
        response = await self._admin("Purge", admin_pb2.PurgeRequest(queue=queue))
        return response.purged

    async def browse(self, queue: str, limit: int = 100) -> list[message_pb2.Message]:
        """Up to ``limit`` of ``queue``'s pending messages, in dispatch order, left in place."""
        response = await self._admin("Browse", admin_pb2.BrowseRequest(queue=queue, limit=limit))
        return list(response.messages)

    async def _admin(self, method: str, request: Any) -> Any:
        """A unary Admin call; a failover client retries it on the next broker."""
        return await self._call(
            lambda conn: getattr(conn.admin, method)(request, metadata=conn.metadata)
        )

    async def _call(self, call: Any) -> Any:
        """A unary call made by ``call(connection)``; a failover client retries it on the
        next broker."""
        while True:
            conn = await self._connection()
            try:
                return await call(conn)
            except grpc.aio.AioRpcError as e:
                error = BrokerError(e.code().name, e.details() or "no details")
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                error = BrokerError("CANCELLED", "the call was cancelled")
            if not is_failover_code(error.code):
                raise error
            await self._replace(conn, error.message)

    # ---------------------------------------------------------------- lifecycle

    async def close(self, *, drain_timeout: float | None = 10.0) -> None:
        """Close consumers (their pending acks are written first; unacked messages go back
        to the broker), then producers: wait up to ``drain_timeout`` seconds (None: no
        limit) for the acks of messages already sent, failing the rest with
        ConnectionLost. Then close the connection. Idempotent."""
        if self._closing:
            return
        self._closing = True
        try:
            await asyncio.gather(
                *(consumer.close() for consumer in list(self._consumers)),
                *(producer.close(timeout=drain_timeout) for producer in list(self._producers)),
                return_exceptions=True,
            )
        finally:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.channel.close()

    def _check_open(self) -> None:
        if self._closing:
            raise RuntimeError("the client is closed")
        if self._lost is not None:
            raise self._lost

    def _check_usable(self) -> None:
        """Raise if no connection may be (re)made: closed, or lost for good."""
        if self._closed:
            raise ConnectionLost("the client is closed")
        if self._lost is not None:
            raise self._lost

    async def _connection(self) -> _Connection:
        """The current connection, waiting while another task reconnects."""
        self._check_usable()
        conn = self._conn
        if conn is not None:
            return conn
        async with self._lock:
            self._check_usable()
            if self._conn is None:
                await self._reconnect_locked()
            assert self._conn is not None
            return self._conn

    async def _replace(self, failed: _Connection, reason: str) -> None:
        """A stream on ``failed`` broke for ``reason``: move to another broker, unless
        another task already did. Raises ConnectionLost when the client must give up."""
        async with self._lock:
            self._check_usable()
            if self._conn is not failed:
                return
            self._conn = None
            with contextlib.suppress(Exception):
                await failed.channel.close()
            if not self.url.failover:
                self._lost = ConnectionLost(f"connection to {failed.address} lost: {reason}")
                log.warning("%s", self._lost.message)
                raise self._lost
            log.warning("connection to %s lost (%s); failing over", failed.address, reason)
            await self._reconnect_locked()

    async def _reconnect_locked(self) -> None:
        started = self._loop.time()
        try:
            conn = await self._establish(after_loss=True)
        except ConnectionLost as e:
            if not self._closed:
                self._lost = e
                log.error("%s", e.message)
            raise
        self._conn = conn
        log.info("reconnected to %s after %.3f s", conn.address, self._loop.time() - started)

    async def _establish(self, *, after_loss: bool) -> _Connection:
        """Try addresses in rotation, with backoff, until one accepts. Holds the lock.

        A probe that has not answered within PROBE_HEAD_START goes on beside the next
        address's: a frozen broker (it takes the connection and answers nothing) must not
        hold up the group's new master for the whole probe timeout."""
        url = self.url
        loop = self._loop
        deadline = None if url.timeout is None else loop.time() + url.timeout
        # A connection that dropped soon after it was made (a broker refusing us on the
        # stream, a flapping network) continues the backoff instead of retrying at once.
        flapping = after_loss and loop.time() - self._connected_at < STABLE_CONNECTION_SECONDS
        if not flapping:
            self._backoff.reset()
        attempts = 0
        failures: deque[str] = deque(maxlen=len(url.addresses))  # the last of each address
        # What each address last failed with, as told: a new failure is told once (a
        # failover URL with no live broker must not be silent while it retries).
        told: dict[str, str] = {}
        most = url.max_reconnect_attempts
        limit = None if most is None else len(url.addresses) * (1 + most)
        # Addresses whose last answer was that they do not serve now (a slave, electing).
        # While any does, its group is choosing a master: the pause stays short however
        # the others fail (a dead master's refused port must not stretch the polling of
        # the member about to replace it).
        not_serving: set[str] = set()
        probes: dict[asyncio.Task[_Connection], str] = {}
        head_start = PROBE_HEAD_START if len(url.addresses) > 1 else None

        def settle(done: set[asyncio.Task[_Connection]]) -> _Connection | None:
            """The first accepted connection among finished probes, recording refusals."""
            accepted = None
            for task in done:
                address = probes.pop(task)
                error = task.exception()
                if error is None:
                    if accepted is None:
                        accepted = task.result()
                    else:
                        self._loop.create_task(task.result().channel.close())
                    continue
                if not isinstance(error, _Refused):
                    raise error
                if url.failover and told.get(address) != str(error):
                    told[address] = str(error)
                    log.warning("cannot connect to %s: %s; trying on", address, error)
                if error.not_serving:
                    not_serving.add(address)
                else:
                    not_serving.discard(address)
                failures.append(f"{address}: {error}")
                if not url.failover:
                    raise ConnectionLost(f"cannot connect to {address}: {error}") from None
            return accepted

        async def wait(timeout: float | None, until_answer: bool) -> _Connection | None:
            """Wait `timeout` (None: until the probes end) for a probe to accept; with
            `until_answer`, stop at the first answer of any kind."""
            end = None if timeout is None else loop.time() + timeout
            while True:
                left = None if end is None else end - loop.time()
                if left is not None and left <= 0:
                    return None
                if not probes:
                    if left is not None and not until_answer:
                        await asyncio.sleep(left)
                    return None
                done, _ = await asyncio.wait(
                    probes, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                conn = settle(done)
                if conn is not None or (done and until_answer):
                    return conn

        try:
            while True:
                if self._closed:
                    raise ConnectionLost("the client is closed")
                if attempts or flapping:
                    delay = self._backoff.next()
                    if not_serving:
                        delay = min(delay, ELECTING_POLL)
                    if deadline is not None and loop.time() + delay >= deadline:
                        break
                    conn = await wait(delay, until_answer=False)
                    if conn is not None:
                        return self._accepted(conn)
                if limit is not None and attempts >= limit:
                    break
                attempts += 1
                address = self._rotation.next()
                if address not in probes.values():
                    probe_timeout = self._probe_timeout()
                    if deadline is not None:
                        probe_timeout = min(probe_timeout, max(deadline - loop.time(), 0.001))
                    probes[loop.create_task(self._probe(address, probe_timeout))] = address
                conn = await wait(head_start, until_answer=True)
                if conn is not None:
                    return self._accepted(conn)
                if deadline is not None and loop.time() >= deadline:
                    break
        finally:
            for task in probes:
                task.cancel()
            await asyncio.gather(*probes, return_exceptions=True)
            for task in probes:
                if not task.cancelled() and task.exception() is None:
                    await task.result().channel.close()
        within = f"within {url.timeout:g} s " if url.timeout is not None else ""
        raise ConnectionLost(
            f"no broker accepted {within}after {attempts} attempts "
            f"({'; '.join(failures) or 'no attempt'})"
        )

    def _accepted(self, conn: _Connection) -> _Connection:
        if self._closed:
            self._loop.create_task(conn.channel.close())
            raise ConnectionLost("the client is closed")
        self._connected_at = self._loop.time()
        return conn

    def _probe_timeout(self) -> float:
        return FAILOVER_PROBE_TIMEOUT if len(self.url.addresses) > 1 else PROBE_TIMEOUT

    async def _probe(self, address: str, timeout: float) -> _Connection:
        """Open a channel to ``address`` and check that a broker there takes clients."""
        channel = (
            grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
            if self._credentials is None
            else grpc.aio.secure_channel(address, self._credentials, options=_CHANNEL_OPTIONS)
        )
        admin = admin_pb2_grpc.AdminStub(channel)
        try:
            status = await admin.Status(
                admin_pb2.StatusRequest(), timeout=timeout, wait_for_ready=False
            )
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                await channel.close()
                raise _Refused(_why(e, self._credentials is not None)) from None
        except BaseException:
            await channel.close()
            raise
        else:
            if (refused := _refusal(status)) is not None:
                await channel.close()
                raise _Refused(refused, True)
        return _Connection(
            address, channel, client_pb2_grpc.BrokerStub(channel), admin, self._metadata
        )
