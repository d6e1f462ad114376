"""The netbroker Python client: async-first on grpc.aio, with a thin blocking facade.

Connect with a client URL, either ``host:port`` or
``failover:(host:port,host:port)?options``::

    async with await Client.connect("failover:(127.0.0.1:61616,127.0.0.1:61617)") as client:
        await client.send("orders", b"hello")               # waits for the broker's ack

        producer = client.producer()                         # pipelined, batched sends
        for body in bodies:
            await producer.send("orders", body)              # returns a future per message
        await producer.flush()                               # everything acked (or raises)

        consumer = await client.subscribe("orders", prefetch=1000)
        async for delivery in consumer:
            handle(delivery.body)
            delivery.ack()

Every stream carries batches (see ``proto/client.proto``): the producer gathers what was
queued since its last write into one request and keeps several batches in flight; the
consumer acknowledges in batches and returns credit in the same requests.

A failover client survives the loss of its broker: it moves to the next address that
accepts (backing off from ``initialReconnectDelay`` to ``maxReconnectDelay``), resends
every batch the broker had not acknowledged under the same message ids (the broker's
duplicate check keeps them single) and resubscribes its consumers (the broker redelivers
what the old stream held, marked redelivered). A plain ``host:port`` client raises
:class:`ConnectionLost` instead. Reconnects are logged on the ``netbroker.client`` logger.

Delivery is at least once: a message is gone only once its ack reached the broker, so a
consumer may see a message again (``redelivered`` set) after a failover or a crash.

A :class:`Client` belongs to the event loop it was connected on. Synchronous code uses
:class:`BlockingClient`, which runs one on a private event loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import grpc

from broker.errors import BrokerError
from broker.pb import admin_pb2, admin_pb2_grpc, client_pb2, client_pb2_grpc, message_pb2
from broker.reconnect import KEEPALIVE_INTERVAL_MS, KEEPALIVE_TIMEOUT_MS, AddressRotation, Backoff

__all__ = [
    "AddressRotation",
    "Backoff",
    "BlockingClient",
    "BlockingConsumer",
    "BlockingProducer",
    "BrokerError",
    "Client",
    "ClientUrl",
    "ConnectionLost",
    "Consumer",
    "Delivery",
    "Producer",
    "is_failover_code",
    "new_message_id",
    "parse_url",
]

log = logging.getLogger("netbroker.client")

_T = TypeVar("_T")

MiB = 1024 * 1024

#: gRPC's message size limits: the broker's default message limit (100 MiB) plus headroom.
MAX_GRPC_MESSAGE_BYTES = 101 * MiB
#: The largest message (body, headers and queue name) the client will send: gRPC's limit
#: less room for the message's other fields and the batch around it.
MAX_MESSAGE_BYTES = MAX_GRPC_MESSAGE_BYTES - 64 * 1024
#: A produce batch holds at most this many messages ...
MAX_BATCH_MESSAGES = 256
#: ... and about this many body bytes (a single larger message travels alone).
MAX_BATCH_BYTES = 4 * MiB
#: Consumer acks wait at most this long before they are written.
ACK_FLUSH_INTERVAL = 0.020
#: How long a connection probe (an Admin.Status call) may take ...
PROBE_TIMEOUT = 5.0
#: ... and with other addresses to try: a broker answers it in milliseconds, and a
#: frozen one would otherwise hold up the next address (a new master) for long.
FAILOVER_PROBE_TIMEOUT = 1.0
#: With several addresses, a probe not answered by then goes on while the next address
#: is tried too.
PROBE_HEAD_START = 0.2
#: The longest pause before asking again when the last broker asked answered but does
#: not serve (a slave, or electing): its group is choosing a master, which takes well
#: under a second, and the client must reach it about as soon as it is elected.
ELECTING_POLL = 0.1
#: A connection that lived this long counts as stable: the next loss retries at once.
STABLE_CONNECTION_SECONDS = 1.0
#: How long closing a stream waits for the broker to end it before cancelling it.
CLOSE_GRACE_SECONDS = 5.0
#: A produce stream with a batch unanswered this long, and no answer at all meanwhile,
#: is checked: the broker is asked (Admin.Status) whether it still serves. Keepalive
#: catches a frozen broker; this catches one whose loop stalled or that stopped serving
#: without ending its streams. A broker holding producers back (memory, quorum) answers
#: that it serves, and the stream goes on waiting.
STALL_SECONDS = 2.0

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

# Roles (StatusResponse.role_kind) of a broker that does not take clients.
_REFUSING_ROLES = frozenset({admin_pb2.ROLE_SLAVE, admin_pb2.ROLE_ELECTING})


def _refusal(status: admin_pb2.StatusResponse) -> str | None:
    """Why a broker's status says it does not serve clients now, or None if it does."""
    if status.role_kind in _REFUSING_ROLES or status.refusal:
        return status.refusal or f"broker {status.name!r} is {status.role}"
    return None

# Status codes that mean "this broker cannot serve us now" rather than "this request is
# wrong": a failover client moves to the next address and retries.
_FAILOVER_CODES = frozenset({"UNAVAILABLE", "FAILED_PRECONDITION", "CANCELLED"})


# --------------------------------------------------------------------------- errors


class ConnectionLost(BrokerError):
    """No broker can be reached: a plain ``host:port`` client lost its connection, or a
    failover client found no address that accepts within its ``timeout``, or the client
    was closed. The client is unusable afterwards; connect a new one."""

    def __init__(self, message: str) -> None:
        super().__init__("UNAVAILABLE", message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message,))


def is_failover_code(code: str) -> bool:
    """Whether a status code name means the broker cannot serve (move to another one)."""
    return code in _FAILOVER_CODES


# --------------------------------------------------------------------------- URLs

_OPTION_NAMES = {
    "maxreconnectdelay": "maxReconnectDelay",
    "initialreconnectdelay": "initialReconnectDelay",
    "timeout": "timeout",
    "randomize": "randomize",
}
_HOST_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9._-]*[A-Za-z0-9_])?")
_IPV6_RE = re.compile(r"[0-9A-Fa-f:.]+(%[A-Za-z0-9._-]+)?")


@dataclass(frozen=True)
class ClientUrl:
    """A parsed client URL. Durations are in seconds."""

    #: ``host:port`` strings, in the order given.
    addresses: tuple[str, ...]
    #: Whether the URL was a ``failover:`` URL (reconnect on loss) or a plain address.
    failover: bool = False
    #: First pause between connection attempts (``initialReconnectDelay``, default 10 ms).
    initial_reconnect_delay: float = 0.010
    #: Longest pause between attempts (``maxReconnectDelay``, default 1000 ms).
    max_reconnect_delay: float = 1.0
    #: Give up when no address accepted for this long (``timeout``); None retries forever.
    timeout: float | None = None
    #: Try the addresses in random order (``randomize``, default false).
    randomize: bool = False


def parse_url(url: str) -> ClientUrl:
    """Parse a client URL: ``host:port`` or ``failover:(host:port,...)?options``.

    The list may also be written without parentheses (``failover:a:1,b:2``), and an
    address may carry ActiveMQ's ``tcp://`` prefix. IPv6 hosts go in brackets. Options
    (names are case-insensitive): ``initialReconnectDelay`` and ``maxReconnectDelay`` in
    positive milliseconds, ``timeout`` in milliseconds (0 or negative: retry forever),
    ``randomize`` true or false.

    Raises ValueError naming the URL and what is wrong with it.
    """
    if not isinstance(url, str):
        raise ValueError(f"bad client URL {url!r}: not a string")
    text = url.strip()
    if not text:
        raise ValueError(f"bad client URL {url!r}: empty")
    if not text.lower().startswith("failover:"):
        if "?" in text:
            raise ValueError(f"bad client URL {url!r}: options need a failover:(...) URL")
        return ClientUrl(addresses=(_parse_address(text, url),))

    rest = text[len("failover:") :]
    if rest.startswith("("):
        close = rest.find(")")
        if close < 0:
            raise ValueError(f"bad client URL {url!r}: missing ')'")
        inner, tail = rest[1:close], rest[close + 1 :]
        if tail and not tail.startswith("?"):
            raise ValueError(f"bad client URL {url!r}: unexpected {tail!r} after ')'")
        query = tail[1:]
    else:
        inner, _, query = rest.partition("?")
    if not inner.strip():
        raise ValueError(f"bad client URL {url!r}: no addresses")
    addresses = tuple(_parse_address(part, url) for part in inner.split(","))
    return ClientUrl(addresses=addresses, failover=True, **_parse_options(query, url))


def _parse_address(text: str, url: str) -> str:
    """Check one ``host:port`` (optionally ``tcp://host:port``) and return it normalised."""
    address = text.strip()
    if not address:
        raise ValueError(f"bad client URL {url!r}: empty address")
    if "://" in address:
        scheme, _, address = address.partition("://")
        if scheme.lower() != "tcp":
            raise ValueError(f"bad client URL {url!r}: unsupported scheme {scheme + '://'!r}")
    if address.startswith("["):
        end = address.find("]")
        host, port_text = address[1:end], address[end + 1 :]
        if end < 0 or not _IPV6_RE.fullmatch(host) or ":" not in host:
            raise ValueError(f"bad client URL {url!r}: bad IPv6 address in {text.strip()!r}")
        if not port_text.startswith(":"):
            raise ValueError(f"bad client URL {url!r}: no port in {text.strip()!r}")
        port_text = port_text[1:]
        host = f"[{host}]"
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep:
            raise ValueError(f"bad client URL {url!r}: no port in {text.strip()!r}")
        if ":" in host:
            raise ValueError(
                f"bad client URL {url!r}: IPv6 addresses go in brackets, as [::1]:61616"
            )
        if not _HOST_RE.fullmatch(host):
            raise ValueError(f"bad client URL {url!r}: bad host {host!r}")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad client URL {url!r}: bad port {port_text!r}")
    return f"{host}:{int(port_text)}"


def _parse_options(query: str, url: str) -> dict[str, Any]:
    """Turn a failover URL's query string into ClientUrl keyword arguments."""
    options: dict[str, Any] = {}
    seen: set[str] = set()
    for item in query.split("&") if query else ():
        key, sep, value = item.partition("=")
        name = _OPTION_NAMES.get(key.strip().lower())
        if not sep or not key.strip():
            raise ValueError(f"bad client URL {url!r}: option {item!r} is not name=value")
        if name is None:
            known = ", ".join(sorted(_OPTION_NAMES.values()))
            raise ValueError(f"bad client URL {url!r}: unknown option {key!r} (known: {known})")
        if name in seen:
            raise ValueError(f"bad client URL {url!r}: option {name} given twice")
        seen.add(name)
        value = value.strip()
        if name == "randomize":
            if value.lower() not in ("true", "false"):
                raise ValueError(f"bad client URL {url!r}: randomize must be true or false")
            options["randomize"] = value.lower() == "true"
            continue
        try:
            millis = int(value)
        except ValueError:
            raise ValueError(
                f"bad client URL {url!r}: {name} must be whole milliseconds, not {value!r}"
            ) from None
        if name == "timeout":
            options["timeout"] = millis / 1000 if millis > 0 else None
        elif millis <= 0:
            raise ValueError(f"bad client URL {url!r}: {name} must be positive")
        elif name == "initialReconnectDelay":
            options["initial_reconnect_delay"] = millis / 1000
        else:
            options["max_reconnect_delay"] = millis / 1000
    return options


# --------------------------------------------------------------------------- messages

class _MessageIds:
    """32 hex digits: 80 random bits drawn once per process, then a 48-bit counter.

    As unique as a random UUID across processes, at a tenth of the cost of drawing 128
    random bits for every message (measured ~1 us each, a tenth of a producer's CPU per
    message). A forked child draws its own prefix, or it would repeat the parent's ids."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = os.urandom(10).hex()
        self.counter = itertools.count()

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFF_FFFF_FFFF:012x}"


_ids = _MessageIds()


def new_message_id() -> str:
    """A fresh, globally unique message id (32 hex digits)."""
    return _ids.next()


# One message waiting for a batch: (id, queue, body, headers or None, persistent,
# priority, expiration_ms, future resolved at the ack).
_Outgoing: TypeAlias = tuple[
    str, str, bytes, dict[str, str] | None, bool, int, int, "asyncio.Future[str]"
]


def _outgoing_fields(
    queue: str,
    body: bytes | bytearray | memoryview | str,
    headers: Mapping[str, str] | None,
    persistent: bool,
    priority: int,
    ttl: float | None,
    message_id: str | None,
) -> tuple[str, str, bytes, dict[str, str] | None, bool, int, int]:
    """Validate a send's arguments (here, not later in the writer) and normalise them."""
    if not isinstance(queue, str):
        raise TypeError(f"queue must be a string, not {type(queue).__name__}")
    if type(body) is not bytes:
        if isinstance(body, str):
            body = body.encode()
        elif isinstance(body, bytes | bytearray | memoryview):
            body = bytes(body)
        else:
            raise TypeError(f"body must be bytes or str, not {type(body).__name__}")
    size = len(body) + len(queue)
    header_dict: dict[str, str] | None = None
    if headers:
        header_dict = dict(headers)
        for key, value in header_dict.items():
            if type(key) is not str or type(value) is not str:
                raise TypeError(f"header {key!r}: names and values must be strings")
            size += len(key) + len(value)
    if size > MAX_MESSAGE_BYTES:
        # gRPC would fail the whole stream on it (the broker's own limit is lower still).
        raise BrokerError(
            "RESOURCE_EXHAUSTED",
            f"a message of {size:,} bytes is over the client's limit of {MAX_MESSAGE_BYTES:,}",
        )
    if type(priority) is not int or not 0 <= priority <= 9:
        raise ValueError(f"priority must be an integer from 0 to 9, not {priority!r}")
    expiration_ms = 0
    if ttl is not None:
        if ttl <= 0:
            raise ValueError(f"ttl must be positive seconds (or None), not {ttl!r}")
        expiration_ms = int((time.time() + ttl) * 1000)
    if message_id is None:
        message_id = new_message_id()
    elif not isinstance(message_id, str) or not message_id:
        raise ValueError("message_id must be a non-empty string")
    return message_id, queue, body, header_dict, bool(persistent), priority, expiration_ms


def _resolve(future: asyncio.Future[_T], value: _T) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
        # The error also reaches the user through flush(); don't log it as unretrieved.
        future.exception()


# --------------------------------------------------------------------------- streams


class _StreamFailure(Exception):
    """A stream ended other than by our own close: why, and whether to fail over."""

    def __init__(self, error: BrokerError) -> None:
        super().__init__(str(error))
        self.error = error
        self.failover = is_failover_code(error.code)


# The details grpc.aio gives a call whose write failed inside gRPC Core (the transport
# went away under it); the status code it sets, INTERNAL, would hide a broker's loss.
_CORE_SEND_FAILURE = "Internal error from Core"


class _StreamEnded(Exception):
    """The broker ended a stream (status OK) while we still expected answers."""


async def _failure_of(call: Any, exc: BaseException | None) -> _StreamFailure:
    """Describe why a stream's reader or writer stopped."""
    if isinstance(exc, grpc.aio.AioRpcError):
        if exc.code() == grpc.StatusCode.INTERNAL and exc.details() == _CORE_SEND_FAILURE:
            # grpc.aio's verdict when a write fails below it: the stream is broken.
            return _StreamFailure(BrokerError("UNAVAILABLE", "the stream broke while writing"))
        return _StreamFailure(BrokerError(exc.code().name, exc.details() or "no details"))
    if isinstance(exc, _StreamFailure):
        return exc
    if isinstance(exc, _StreamEnded):
        return _StreamFailure(BrokerError("UNAVAILABLE", str(exc)))
    if exc is None or isinstance(exc, asyncio.CancelledError | asyncio.InvalidStateError):
        # Cancelled under us (the channel was closed) or written to after it finished.
        if call.done() and not call.cancelled():
            code = await call.code()
            if code != grpc.StatusCode.OK:
                return _StreamFailure(BrokerError(code.name, await call.details() or ""))
        return _StreamFailure(BrokerError("CANCELLED", "the stream was cancelled"))
    log.error("unexpected error on a broker stream", exc_info=exc)
    return _StreamFailure(BrokerError("INTERNAL", f"client error: {exc!r}"))


async def _run_stream(
    call: Any, reader: Coroutine[Any, Any, None], writer: Coroutine[Any, Any, None]
) -> None:
    """Run a stream's reader and writer until the reader returns (a clean end).

    Raises _StreamFailure when either of them fails. Cancels the call on the way out.
    """
    read_task = asyncio.create_task(reader)
    write_task = asyncio.create_task(writer)
    try:
        waiting: set[asyncio.Task[None]] = {read_task, write_task}
        while read_task in waiting:
            done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if write_task in done and read_task not in done and _failed(write_task):
                # The reader learns the stream's real status (the broker's words, or the
                # transport's); a failed write only knows that it failed.
                done_reading, _ = await asyncio.wait({read_task}, timeout=1.0)
                if done_reading and _failed(read_task):
                    done = {read_task}
            for task in done:
                if _failed(task):
                    # A child task cancelled while we were not: the call was cancelled
                    # under us (its channel was closed).
                    raise await _failure_of(call, None if task.cancelled() else task.exception())
    finally:
        read_task.cancel()
        write_task.cancel()
        call.cancel()
        await asyncio.gather(read_task, write_task, return_exceptions=True)


def _failed(task: asyncio.Task[None]) -> bool:
    return task.cancelled() or task.exception() is not None


async def _stop_task(task: asyncio.Task[None] | None, grace: float) -> None:
    """Give ``task`` up to ``grace`` seconds to finish, then cancel it and wait."""
    if task is None:
        return
    if grace > 0 and not task.done():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), grace)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


# --------------------------------------------------------------------------- connection


@dataclass(eq=False)
class _Connection:
    address: str
    channel: grpc.aio.Channel
    broker: client_pb2_grpc.BrokerStub
    admin: admin_pb2_grpc.AdminStub


class _Refused(Exception):
    """An address did not accept us; `not_serving`: a broker there answered that it
    takes no clients now (a slave, electing), rather than not answering at all."""

    def __init__(self, reason: str, not_serving: bool = False) -> None:
        super().__init__(reason)
        self.not_serving = not_serving


class Client:
    """An async connection to a broker (or, with a failover URL, to whichever of several
    brokers accepts). Create with :meth:`connect`; use from one event loop."""

    def __init__(self, url: ClientUrl) -> None:
        """Use :meth:`Client.connect`, which also connects."""
        self.url = url
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
    async def connect(cls, url: str | ClientUrl) -> Client:
        """Connect to the first address that accepts, trying the URL's addresses in turn
        with backoff (a failover URL tries until its ``timeout``; a plain one tries once).

        Raises ValueError for a malformed URL and ConnectionLost when no broker accepts.
        """
        client = cls(parse_url(url) if isinstance(url, str) else url)
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
        if self._shared_producer is None:
            self._shared_producer = self.producer()
        future = await self._shared_producer.send(
            queue,
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
        queue: str,
        *,
        prefetch: int = 1000,
        auto_ack: bool = False,
        priority: int = 0,
        name: str = "",
    ) -> Consumer:
        """Open a consumer on ``queue``: the broker holds out at most ``prefetch``
        unacknowledged deliveries to it (brokers serve at most 65,535, and at most 64 MiB
        of messages, whatever is asked). With ``auto_ack`` a delivery is acked when the
        next one is asked for (or on close). Returns once the subscription is sent; the
        broker's refusal (a bad queue name) is raised by the first ``receive``."""
        self._check_open()
        if not isinstance(queue, str):
            raise TypeError(f"queue must be a string, not {type(queue).__name__}")
        if not 1 <= prefetch <= 0xFFFFFFFF:
            raise ValueError("prefetch must be at least 1")
        consumer = Consumer(self, queue, prefetch, auto_ack, priority, name)
        self._consumers.add(consumer)
        try:
            await consumer._start()
        except BaseException:
            await consumer.close()
            raise
        return consumer

    # ---------------------------------------------------------------- admin

    async def status(self) -> admin_pb2.StatusResponse:
        """The connected broker's name, role, address, version and components."""
        return await self._admin("Status", admin_pb2.StatusRequest())

    async def queues(self) -> list[admin_pb2.QueueInfo]:
        """Every queue the broker holds, with its depth and counters."""
        response = await self._admin("ListQueues", admin_pb2.ListQueuesRequest())
        return list(response.queues)

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
        while True:
            conn = await self._connection()
            try:
                return await getattr(conn.admin, method)(request)
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
        electing = False  # the last address to answer said it does not serve now
        probes: dict[asyncio.Task[_Connection], str] = {}
        head_start = PROBE_HEAD_START if len(url.addresses) > 1 else None

        def settle(done: set[asyncio.Task[_Connection]]) -> _Connection | None:
            """The first accepted connection among finished probes, recording refusals."""
            nonlocal electing
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
                log.debug("connecting to %s failed: %s", address, error)
                electing = error.not_serving
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
                    if electing:
                        delay = min(delay, ELECTING_POLL)
                    if deadline is not None and loop.time() + delay >= deadline:
                        break
                    conn = await wait(delay, until_answer=False)
                    if conn is not None:
                        return self._accepted(conn)
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
        raise ConnectionLost(
            f"no broker accepted within {url.timeout:g} s after {attempts} attempts "
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
        channel = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
        admin = admin_pb2_grpc.AdminStub(channel)
        try:
            status = await admin.Status(
                admin_pb2.StatusRequest(), timeout=timeout, wait_for_ready=False
            )
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                await channel.close()
                raise _Refused(f"{e.code().name}: {e.details()}") from None
        except BaseException:
            await channel.close()
            raise
        else:
            if (refused := _refusal(status)) is not None:
                await channel.close()
                raise _Refused(refused, True)
        return _Connection(address, channel, client_pb2_grpc.BrokerStub(channel), admin)


# --------------------------------------------------------------------------- producer


class _Batch:
    """One ProduceRequest awaiting its ProduceResponse."""

    __slots__ = ("first_seq", "futures", "ids", "request", "written_at")

    def __init__(self, request: client_pb2.ProduceRequest, first_seq: int) -> None:
        self.request = request
        self.first_seq = first_seq
        self.written_at = 0.0  # loop time of its last write
        self.ids: list[str] = []
        self.futures: list[asyncio.Future[str]] = []


class Producer:
    """A pipelined producer on its own Produce stream (create with
    :meth:`Client.producer`).

    ``send`` queues a message and returns a future; a writer task gathers everything
    queued since its last write into one batch and keeps several batches in flight; each
    future resolves with the message id at the broker's ack, or raises BrokerError.
    Messages on one producer reach the broker in send order, also across failovers.
    """

    def __init__(self, client: Client, max_in_flight: int) -> None:
        """Use :meth:`Client.producer`."""
        self._client = client
        self._loop = client._loop
        self._max_in_flight = max_in_flight
        self._pending: deque[_Outgoing] = deque()  # queued, not yet in a batch
        self._batches: dict[int, _Batch] = {}  # written (or being written), not yet answered
        self._batch_ids = itertools.count(1)  # increasing across streams, so resends keep order
        self._unacked = 0  # messages pending or in batches, plus room granted to waiters
        self._sent = 0  # messages ever queued: the next message's sequence number
        # Senders waiting for room, first come first served: each is woken with its room
        # already counted in _unacked (no stampede of waiters re-checking).
        self._room_waiters: deque[asyncio.Future[None]] = deque()
        self._wakeup = asyncio.Event()
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        # Failed batches not yet reported by flush(): (first sequence number, error).
        self._errors: deque[tuple[int, BrokerError]] = deque(maxlen=1024)
        self._failure: BrokerError | None = None  # terminal: the client was lost or closed
        self._task: asyncio.Task[None] | None = None
        self._last_answer = 0.0  # loop time of the current stream's last answer
        self._closing = False
        self._closed = False

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
    ) -> asyncio.Future[str]:
        """Queue a message; return a future that resolves with its id when the broker
        acknowledges it (or raises BrokerError). Waits while ``max_in_flight`` messages
        are unacknowledged. ``ttl`` is in seconds; the id is generated when not given.
        Cancelling the future does not withdraw the message."""
        fields = _outgoing_fields(queue, body, headers, persistent, priority, ttl, message_id)
        self._check_accepting()
        if self._unacked < self._max_in_flight and not self._room_waiters:
            self._unacked += 1
        else:
            await self._wait_for_room()
        return self._enqueue(fields)

    @property
    def in_flight(self) -> int:
        """Messages queued or sent and not yet acknowledged."""
        return self._unacked

    async def flush(self) -> None:
        """Wait until every message sent so far is acknowledged or failed; raise the first
        failure among them (each failure is raised by one flush only)."""
        target = self._sent
        if self._watermark() < target:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._flush_waiters.append((target, waiter))
            await waiter
        first: BrokerError | None = None
        while self._errors and self._errors[0][0] < target:
            error = self._errors.popleft()[1]
            first = first or error
        if first is not None:
            raise first

    async def close(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds (None: no limit) for the acks of everything
        sent, then end the stream; messages still unacknowledged fail with
        ConnectionLost. Does not raise send failures: use :meth:`flush` for those."""
        if self._closing:
            return
        self._closing = True
        drained = False
        try:
            if self._watermark() < self._sent:
                waiter: asyncio.Future[None] = self._loop.create_future()
                self._flush_waiters.append((self._sent, waiter))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter, timeout)
            drained = self._watermark() >= self._sent
        finally:
            self._closed = True
            self._wakeup.set()
            # Drained: the writer half-closes the stream and the broker ends it.
            await _stop_task(self._task, CLOSE_GRACE_SECONDS if drained else 0)
            self._fail_all(
                ConnectionLost("the producer was closed before the broker acked"), terminal=True
            )
            self._client._producers.discard(self)

    # ---------------------------------------------------------------- internals

    def _check_accepting(self) -> None:
        if self._closing:
            raise RuntimeError("the producer is closed")
        if self._failure is not None:
            raise self._failure

    async def _wait_for_room(self) -> None:
        """Wait in line until room is granted (counted in _unacked for us)."""
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._room_waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Room was granted as we were cancelled: hand it to the next in line.
                self._unacked -= 1
                self._grant_room()
            raise
        try:
            self._check_accepting()
        except BaseException:
            self._unacked -= 1
            self._grant_room()
            raise

    def _grant_room(self) -> None:
        while self._room_waiters and self._unacked < self._max_in_flight:
            waiter = self._room_waiters.popleft()
            if not waiter.done():
                self._unacked += 1
                waiter.set_result(None)

    def _enqueue(self, fields: tuple[Any, ...]) -> asyncio.Future[str]:
        """Queue a validated message whose room is already counted in _unacked."""
        future: asyncio.Future[str] = self._loop.create_future()
        self._pending.append((*fields, future))
        self._sent += 1
        self._wakeup.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="netbroker-producer")
        return future

    def _watermark(self) -> int:
        """Sequence number of the oldest unresolved message (all before it are done)."""
        if self._batches:
            return min(batch.first_seq for batch in self._batches.values())
        return self._sent - len(self._pending)

    def _resolved(self, count: int) -> None:
        self._unacked -= count
        if self._room_waiters:
            self._grant_room()
        if self._flush_waiters:
            mark = self._watermark()
            still = []
            for target, waiter in self._flush_waiters:
                if target <= mark:
                    _resolve(waiter, None)
                else:
                    still.append((target, waiter))
            self._flush_waiters = still

    def _fail_batch(self, batch: _Batch, error: BrokerError) -> None:
        for future in batch.futures:
            _reject(future, error)
        self._errors.append((batch.first_seq, error))
        self._resolved(len(batch.futures))

    def _fail_batches(self, error: BrokerError) -> None:
        """Fail every batch awaiting an answer (the stream that carried them failed)."""
        batches = sorted(self._batches.items())
        self._batches.clear()
        for _, batch in batches:
            self._fail_batch(batch, error)

    def _fail_all(self, error: BrokerError, *, terminal: bool) -> None:
        """Fail every unresolved message; when ``terminal``, refuse later sends too."""
        if terminal and self._failure is None:
            self._failure = error
        self._fail_batches(error)
        if self._pending:
            first = self._sent - len(self._pending)
            pending, self._pending = self._pending, deque()
            for item in pending:
                _reject(item[7], error)
            self._errors.append((first, error))
            self._resolved(len(pending))
        if terminal:
            # Senders waiting for room: they see the failure (or the close) and raise.
            waiters, self._room_waiters = self._room_waiters, deque()
            for waiter in waiters:
                if not waiter.done():
                    self._unacked += 1
                    waiter.set_result(None)

    async def _run(self) -> None:
        """Open streams (again after a failover) until closed or lost for good."""
        try:
            while not self._closed:
                if not self._pending and not self._batches:
                    # Nothing to send: open no stream until there is.
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                conn = await self._client._connection()
                call = conn.broker.Produce()
                try:
                    await _run_stream(call, self._read(call), self._write_watched(conn, call))
                    return
                except _StreamFailure as failure:
                    if self._closed and not self._batches and not self._pending:
                        return
                    if not failure.failover:
                        # Whether the broker stored them is unknown: fail what was in
                        # flight; what is still queued goes on a new stream.
                        log.warning("produce stream failed: %s", failure.error)
                        self._fail_batches(failure.error)
                        continue
                    await self._client._replace(conn, failure.error.message)
                    log.info(
                        "producer resending %d unacknowledged batches on %s",
                        len(self._batches),
                        self._client.address,
                    )
        except ConnectionLost as e:
            self._fail_all(e, terminal=True)
        except Exception as e:
            log.exception("producer failed")
            self._fail_all(BrokerError("INTERNAL", f"producer failed: {e!r}"), terminal=True)

    async def _write_watched(self, conn: _Connection, call: Any) -> None:
        """The writer, beside a watch on the broker that fails the stream over when the
        broker no longer serves or no longer answers."""
        writer = asyncio.create_task(self._write(call))
        watch = asyncio.create_task(self._watch(conn))
        try:
            await asyncio.wait({writer, watch}, return_when=asyncio.FIRST_COMPLETED)
            if watch.done():
                watch.result()
            await writer
        finally:
            writer.cancel()
            watch.cancel()
            await asyncio.gather(writer, watch, return_exceptions=True)

    async def _watch(self, conn: _Connection) -> None:
        loop = self._loop
        self._last_answer = loop.time()
        while True:
            await asyncio.sleep(STALL_SECONDS / 4)
            now = loop.time()
            written = (b.written_at for b in self._batches.values() if b.written_at)
            oldest = min(written, default=now)
            if now - oldest < STALL_SECONDS or now - self._last_answer < STALL_SECONDS:
                continue
            try:
                status = await conn.admin.Status(
                    admin_pb2.StatusRequest(), timeout=self._client._probe_timeout()
                )
            except grpc.aio.AioRpcError as e:
                raise _StreamFailure(
                    BrokerError("UNAVAILABLE", f"the broker stopped answering ({e.code().name})")
                ) from None
            if (refused := _refusal(status)) is not None:
                raise _StreamFailure(BrokerError("UNAVAILABLE", refused))
            # It serves and holds us back: look again a stall later.
            self._last_answer = loop.time()

    async def _write(self, call: Any) -> None:
        # Resend what the last stream left unanswered, oldest first, under the same ids.
        for batch_id in sorted(self._batches):
            batch = self._batches.get(batch_id)
            if batch is not None:
                batch.written_at = self._loop.time()
                await call.write(batch.request)
        while True:
            if not self._pending:
                if self._closed:
                    await call.done_writing()
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._take_batch()
            self._batches[batch.request.batch_id] = batch
            batch.written_at = self._loop.time()
            await call.write(batch.request)

    def _take_batch(self) -> _Batch:
        """Move queued messages into one request: up to MAX_BATCH_MESSAGES and about
        MAX_BATCH_BYTES; each protobuf Message is built once, in place."""
        pending = self._pending
        request = client_pb2.ProduceRequest(batch_id=next(self._batch_ids))
        batch = _Batch(request, self._sent - len(pending))
        add = request.messages.add
        ids = batch.ids
        futures = batch.futures
        size = 0
        while pending and len(futures) < MAX_BATCH_MESSAGES:
            size += len(pending[0][2]) + 64
            if futures and size > MAX_BATCH_BYTES:
                break
            message_id, queue, body, headers, persistent, priority, expiration_ms, future = (
                pending.popleft()
            )
            if headers:
                add(
                    id=message_id,
                    destination=queue,
                    body=body,
                    headers=headers,
                    persistent=persistent,
                    priority=priority,
                    expiration_ms=expiration_ms,
                )
            else:
                add(
                    id=message_id,
                    destination=queue,
                    body=body,
                    persistent=persistent,
                    priority=priority,
                    expiration_ms=expiration_ms,
                )
            ids.append(message_id)
            futures.append(future)
        return batch

    async def _read(self, call: Any) -> None:
        failover = self._client.url.failover
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                if self._closed and not self._batches and not self._pending:
                    return
                raise _StreamEnded("the broker ended the produce stream")
            self._last_answer = self._loop.time()
            batch = self._batches.pop(response.batch_id, None)
            if batch is None:
                log.warning("ack for unknown batch %d ignored", response.batch_id)
                continue
            if response.ok:
                ids = response.ids
                if len(ids) != len(batch.futures):
                    ids = batch.ids
                for future, message_id in zip(batch.futures, ids, strict=True):
                    if not future.done():
                        future.set_result(message_id)
                self._resolved(len(batch.futures))
                continue
            error = BrokerError(response.code or "UNKNOWN", response.error or "rejected")
            if failover and is_failover_code(error.code):
                # This broker cannot take it now: keep the batch for the next one.
                self._batches[response.batch_id] = batch
                raise _StreamFailure(error)
            self._fail_batch(batch, error)


# --------------------------------------------------------------------------- consumer


class Delivery:
    """A message handed to a consumer. Settle it with :meth:`ack` or :meth:`nack`."""

    __slots__ = ("_consumer", "_generation", "_pb", "_settled")

    def __init__(self, consumer: Consumer, generation: int, pb: client_pb2.Delivery) -> None:
        self._consumer = consumer
        self._generation = generation
        self._pb = pb
        self._settled = False

    @property
    def message(self) -> message_pb2.Message:
        """The whole message as the broker sent it."""
        return self._pb.message

    @property
    def body(self) -> bytes:
        return self._pb.message.body

    @property
    def id(self) -> str:
        return self._pb.message.id

    @property
    def queue(self) -> str:
        return self._pb.message.destination

    @property
    def headers(self) -> dict[str, str]:
        """A copy of the message's headers."""
        return dict(self._pb.message.headers)

    @property
    def redelivered(self) -> bool:
        """True when the message was handed out before and came back unacknowledged."""
        return self._pb.redelivered

    @property
    def redelivery_count(self) -> int:
        return self._pb.message.redelivery_count

    @property
    def tag(self) -> int:
        """The delivery tag: unique within the consumer's current stream."""
        return self._pb.tag

    def ack(self) -> None:
        """Done with the message: the broker removes it. Non-blocking (acks are written
        in batches); idempotent. After a reconnect the old stream's deliveries cannot be
        acked (the broker redelivers them), so this does nothing for them."""
        if not self._settled:
            self._settled = True
            self._consumer._settle(self, True)

    def nack(self) -> None:
        """Give the message back: the broker redelivers it, marked and counted.
        Non-blocking; does nothing on a delivery already acked or nacked."""
        if not self._settled:
            self._settled = True
            self._consumer._settle(self, False)

    def __repr__(self) -> str:
        return (
            f"<Delivery tag={self.tag} id={self.id!r} queue={self.queue!r} "
            f"bytes={len(self.body)} redelivered={self.redelivered}>"
        )


class Consumer:
    """A subscription to one queue on its own Consume stream (create with
    :meth:`Client.subscribe`). Receive with :meth:`receive` or ``async for``."""

    def __init__(
        self,
        client: Client,
        queue: str,
        prefetch: int,
        auto_ack: bool,
        priority: int,
        name: str,
    ) -> None:
        """Use :meth:`Client.subscribe`."""
        self._client = client
        self._loop = client._loop
        self._thread = threading.get_ident()
        self.queue = queue
        self.prefetch = prefetch
        self.auto_ack = auto_ack
        self._subscribe = client_pb2.Subscribe(
            queue=queue, prefetch=prefetch, priority=priority, name=name
        )
        self._generation = 0  # which stream's deliveries can be acked
        self._buffer: deque[Delivery] = deque()
        self._available = asyncio.Event()
        self._acks: list[int] = []
        self._nacks: list[int] = []
        self._ack_threshold = max(1, prefetch // 4)
        self._flush = asyncio.Event()
        self._flush_timer: asyncio.TimerHandle | None = None
        self._last: Delivery | None = None  # with auto_ack: acked on the next receive
        self._error: BrokerError | None = None
        self._started: asyncio.Future[None] = self._loop.create_future()
        self._task: asyncio.Task[None] | None = None
        self._streaming = False  # a stream is open and subscribed
        self._closing = False
        self._closed = False

    async def receive(self, timeout: float | None = None) -> Delivery | None:
        """The next delivery; None after ``timeout`` seconds without one, or once the
        consumer is closed. Raises BrokerError when the broker ended the subscription
        (a bad queue name...) and ConnectionLost when no broker can be reached."""
        if self._last is not None:
            last, self._last = self._last, None
            last.ack()
        if self._closing:
            return None
        if not self._buffer:
            if self._error is not None:
                raise self._error
            self._flush_acks()  # going back to wait: let the broker send more
            try:
                async with asyncio.timeout(timeout):
                    while not self._buffer:
                        if self._closing:
                            return None
                        if self._error is not None:
                            raise self._error
                        self._available.clear()
                        await self._available.wait()
            except TimeoutError:
                return None
        delivery = self._buffer.popleft()
        if self.auto_ack:
            self._last = delivery
        return delivery

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        delivery = await self.receive()
        if delivery is None:
            raise StopAsyncIteration
        return delivery

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._closing

    async def close(self) -> None:
        """Write pending acks (with auto_ack, the last delivery's too), then end the
        stream: unacknowledged and undelivered messages go back to the broker."""
        if self._closing:
            return
        if self._last is not None:
            last, self._last = self._last, None
            last.ack()
        self._closing = True
        self._flush.set()
        self._available.set()
        try:
            # With a stream open, the writer flushes the acks and half-closes it, and the
            # broker ends it. Without one (reconnecting), there is nothing to wait for.
            await _stop_task(self._task, CLOSE_GRACE_SECONDS if self._streaming else 0)
        finally:
            self._closed = True
            self._buffer.clear()
            self._cancel_flush_timer()
            if not self._started.done():
                _reject(self._started, ConnectionLost("the consumer was closed"))
            self._client._consumers.discard(self)

    # ---------------------------------------------------------------- internals

    async def _start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"netbroker-consumer-{self.queue}")
        await asyncio.shield(self._started)

    async def _receive_many(self, timeout: float | None) -> list[Delivery]:
        """Everything buffered, waiting up to ``timeout`` for at least one (for the
        blocking facade, which hands them out one by one)."""
        first = await self.receive(timeout)
        if first is None:
            return []
        batch = [first, *self._buffer]
        self._buffer.clear()
        return batch

    def _settle(self, delivery: Delivery, ack: bool) -> None:
        if threading.get_ident() != self._thread:
            if not self._closed:
                # The blocking facade's thread: settle on the loop's thread.
                with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to ack
                    self._loop.call_soon_threadsafe(self._settle, delivery, ack)
            return
        if delivery._generation != self._generation or self._closed:
            return  # a delivery of a stream that is gone: the broker redelivers it
        (self._acks if ack else self._nacks).append(delivery._pb.tag)
        if len(self._acks) + len(self._nacks) >= self._ack_threshold:
            self._flush.set()
        elif self._flush_timer is None:
            self._flush_timer = self._loop.call_later(ACK_FLUSH_INTERVAL, self._on_flush_timer)

    def _on_flush_timer(self) -> None:
        self._flush_timer = None
        self._flush.set()

    def _cancel_flush_timer(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None

    def _flush_acks(self) -> None:
        if self._acks or self._nacks:
            self._flush.set()

    def _fail(self, error: BrokerError) -> None:
        """The subscription is over for good: receivers raise ``error``."""
        self._error = error
        self._buffer.clear()
        self._available.set()
        if not self._started.done():
            _reject(self._started, error)

    async def _run(self) -> None:
        """Subscribe (again after a failover) until closed, refused or lost for good."""
        try:
            while True:
                conn = await self._client._connection()
                # A new stream: the old one's tags mean nothing any more, and what it
                # buffered or held unacked the broker redelivers.
                self._generation += 1
                self._buffer.clear()
                self._acks = []
                self._nacks = []
                self._cancel_flush_timer()
                call = conn.broker.Consume()
                try:
                    await _run_stream(call, self._read(call), self._write(call))
                    return
                except _StreamFailure as failure:
                    self._streaming = False
                    if self._closing:
                        return
                    if not failure.failover:
                        self._fail(failure.error)
                        return
                    await self._client._replace(conn, failure.error.message)
                    log.info("resubscribing to %s on %s", self.queue, self._client.address)
        except ConnectionLost as e:
            self._fail(e)
        except Exception as e:
            log.exception("consumer of %s failed", self.queue)
            self._fail(BrokerError("INTERNAL", f"consumer failed: {e!r}"))

    async def _write(self, call: Any) -> None:
        await call.write(client_pb2.ConsumeRequest(subscribe=self._subscribe))
        self._streaming = True
        _resolve(self._started, None)
        while True:
            if not self._closing:
                # Write when told to (enough acks, the timer, a receiver about to wait):
                # not after every ack, each write costs about as much as 100 acks.
                await self._flush.wait()
            self._flush.clear()
            if self._acks or self._nacks:
                acks, nacks = self._acks, self._nacks
                self._acks, self._nacks = [], []
                self._cancel_flush_timer()
                await call.write(
                    client_pb2.ConsumeRequest(credit=len(acks) + len(nacks), ack=acks, nack=nacks)
                )
            elif self._closing:
                # Every ack made before close() is written (also those made while the
                # last write was in progress); now end our side of the stream.
                await call.done_writing()
                return

    async def _read(self, call: Any) -> None:
        generation = self._generation
        buffer = self._buffer
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                if self._closing:
                    return
                raise _StreamEnded("the broker ended the consume stream")
            if self._closing:
                continue  # given back when the stream ends
            buffer.extend([Delivery(self, generation, d) for d in response.deliveries])
            self._available.set()


# --------------------------------------------------------------------------- blocking facade


class BlockingClient:
    """A synchronous facade over :class:`Client`: the async client runs on a private
    event loop in a daemon thread. Same methods, blocking. Any thread may call it; a
    BlockingConsumer is for one thread at a time."""

    def __init__(
        self, client: Client, loop: asyncio.AbstractEventLoop, thread: threading.Thread
    ) -> None:
        """Use :meth:`BlockingClient.connect`."""
        self._client = client
        self._loop = loop
        self._thread = thread

    @classmethod
    def connect(cls, url: str | ClientUrl) -> BlockingClient:
        """Connect as :meth:`Client.connect` does, blocking until connected."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="netbroker-client", daemon=True)
        thread.start()
        try:
            client = asyncio.run_coroutine_threadsafe(Client.connect(url), loop).result()
        except BaseException:
            _stop_loop(loop, thread)
            raise
        return cls(client, loop, thread)

    def _run(self, coroutine: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("BlockingClient used from its own event loop thread")
        if self._loop.is_closed():
            coroutine.close()
            raise RuntimeError("the client is closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def client(self) -> Client:
        """The async client underneath (use it only on its loop)."""
        return self._client

    def send(self, queue: str, body: bytes | str, **options: Any) -> str:
        """Send one message and wait for its ack; see :meth:`Client.send`."""
        return self._run(self._client.send(queue, body, **options))

    def producer(self, max_in_flight: int = 5000) -> BlockingProducer:
        """A pipelined producer; see :meth:`Client.producer`."""
        producer = self._run(self._make_producer(max_in_flight))
        return BlockingProducer(self, producer, max_in_flight)

    async def _make_producer(self, max_in_flight: int) -> Producer:
        return self._client.producer(max_in_flight)

    def subscribe(self, queue: str, **options: Any) -> BlockingConsumer:
        """Open a consumer; see :meth:`Client.subscribe` (same keyword arguments)."""
        auto_ack = options.pop("auto_ack", False)
        consumer = self._run(self._client.subscribe(queue, auto_ack=False, **options))
        return BlockingConsumer(self, consumer, auto_ack)

    def status(self) -> admin_pb2.StatusResponse:
        return self._run(self._client.status())

    def queues(self) -> list[admin_pb2.QueueInfo]:
        return self._run(self._client.queues())

    def purge(self, queue: str) -> int:
        return self._run(self._client.purge(queue))

    def browse(self, queue: str, limit: int = 100) -> list[message_pb2.Message]:
        return self._run(self._client.browse(queue, limit))

    def close(self, *, drain_timeout: float | None = 10.0) -> None:
        """Close the client (see :meth:`Client.close`) and stop its thread. Idempotent."""
        if self._loop.is_closed():
            return
        try:
            self._run(self._client.close(drain_timeout=drain_timeout))
        finally:
            _stop_loop(self._loop, self._thread)


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


class BlockingProducer:
    """The blocking face of a :class:`Producer`. ``send`` hands the message to the loop
    thread without waiting for it (blocking only while ``max_in_flight`` messages are
    unacknowledged), so a thread can pipeline as the async producer does."""

    def __init__(self, owner: BlockingClient, producer: Producer, max_in_flight: int) -> None:
        self._owner = owner
        self._producer = producer
        self._room = threading.BoundedSemaphore(max_in_flight)
        # Messages handed to the loop thread, drained by one callback per wakeup.
        self._handoff: deque[tuple[tuple[Any, ...], concurrent.futures.Future[str]]] = deque()
        self._drain_scheduled = False

    def send(
        self,
        queue: str,
        body: bytes | str,
        *,
        headers: Mapping[str, str] | None = None,
        persistent: bool = True,
        priority: int = 4,
        ttl: float | None = None,
        message_id: str | None = None,
    ) -> concurrent.futures.Future[str]:
        """Queue a message; the returned future resolves with its id at the broker's
        ack, or raises BrokerError. See :meth:`Producer.send`."""
        fields = _outgoing_fields(queue, body, headers, persistent, priority, ttl, message_id)
        if threading.current_thread() is self._owner._thread:
            raise RuntimeError("BlockingProducer used from its own event loop thread")
        self._room.acquire()
        result: concurrent.futures.Future[str] = concurrent.futures.Future()
        result.add_done_callback(lambda _: self._room.release())
        self._handoff.append((fields, result))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._owner._loop.call_soon_threadsafe(self._drain)
        return result

    def _drain(self) -> None:
        # On the loop thread. Room is bounded by self._room, not by the producer's waiters.
        self._drain_scheduled = False
        producer = self._producer
        handoff = self._handoff
        while handoff:
            fields, result = handoff.popleft()
            try:
                producer._check_accepting()
            except BaseException as e:
                result.set_exception(e)
                continue
            producer._unacked += 1
            future = producer._enqueue(fields)
            future.add_done_callback(functools.partial(_copy_outcome, target=result))

    def flush(self) -> None:
        """Wait until everything sent so far is acked; raise the first failure."""
        self._owner._run(self._flush())

    async def _flush(self) -> None:
        self._drain()  # what this thread sent before flush() counts
        await self._producer.flush()

    def close(self, timeout: float | None = None) -> None:
        """See :meth:`Producer.close`."""
        self._owner._run(self._close(timeout))

    async def _close(self, timeout: float | None) -> None:
        self._drain()
        await self._producer.close(timeout)

    def __enter__(self) -> BlockingProducer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _copy_outcome(source: asyncio.Future[_T], *, target: concurrent.futures.Future[_T]) -> None:
    if source.cancelled():
        target.cancel()
    elif (error := source.exception()) is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())


class BlockingConsumer:
    """The blocking face of a :class:`Consumer`: ``receive(timeout)`` and iteration.

    Fetches whatever the consumer has buffered in one hop to the loop thread and hands it
    out locally; ``auto_ack`` acks a delivery when the next one is asked for.
    """

    def __init__(self, owner: BlockingClient, consumer: Consumer, auto_ack: bool) -> None:
        self._owner = owner
        self._consumer = consumer
        self._auto_ack = auto_ack
        self._local: deque[Delivery] = deque()
        self._last: Delivery | None = None

    def receive(self, timeout: float | None = None) -> Delivery | None:
        """The next delivery, or None after ``timeout`` seconds or once closed."""
        if self._last is not None:
            last, self._last = self._last, None
            last.ack()
        consumer = self._consumer
        while True:
            while self._local:
                delivery = self._local.popleft()
                if delivery._generation == consumer._generation:  # else: from a lost stream
                    if self._auto_ack:
                        self._last = delivery
                    return delivery
            batch = self._owner._run(consumer._receive_many(timeout))
            if not batch:
                return None
            self._local.extend(batch)

    def __iter__(self) -> Iterator[Delivery]:
        while (delivery := self.receive()) is not None:
            yield delivery

    def close(self) -> None:
        """See :meth:`Consumer.close`."""
        if self._last is not None:
            last, self._last = self._last, None
            last.ack()
        self._local.clear()
        self._owner._run(self._consumer.close())

    def __enter__(self) -> BlockingConsumer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
