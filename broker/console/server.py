"""The console's HTTP server on asyncio streams: each connection's request read within
bounds and time, parsed and routed by `http`, answered from the static files, the view,
or an Admin call through the poller; Server-Sent Events to a bounded set of pages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from importlib import resources
from typing import TypeVar

from broker.console import http
from broker.console.http import HttpError, Request
from broker.console.messages import message_json
from broker.console.poller import CallFailed, Poller
from broker.console.view import ClusterView, Event

log = logging.getLogger("netbroker.console")
T = TypeVar("T")

# A request's head and body must arrive within this; an idle keep-alive is not kept.
REQUEST_TIMEOUT = 5.0
# Pages watching at once; one more gets 503 until one leaves.
MAX_WATCHERS = 16
# Other requests open at once (a page makes one or two at a time).
MAX_REQUESTS = 64
# Events queued for a page that does not read them; past this it is dropped (its
# EventSource reconnects and starts again from the whole state).
WATCHER_QUEUE = 256
# A comment this often keeps an idle event stream from looking dead to proxies and
# lets a closed page be noticed.
KEEPALIVE = 15.0

# What a failed Admin call the page asked for is answered with.
_CALL_STATUS = {
    "NOT_FOUND": 404,
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 409,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def _static() -> dict[str, bytes]:
    root = resources.files("broker.console") / "static"
    return {f: (root / f).read_bytes() for f, _ in http.STATIC.values()}


class ConsoleServer:
    def __init__(self, view: ClusterView, poller: Poller, host: str, port: int) -> None:
        self.view = view
        self.poller = poller
        self.host = host
        self.port = port
        self.files = _static()
        self._watchers: set[asyncio.Queue[bytes | None]] = set()
        self._requests = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen; raises OSError if the port is taken."""
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=http.MAX_HEAD + 4
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def publish(self, events: list[Event]) -> None:
        """Hand each event to every page watching; drop a page that has fallen behind."""
        if not events:
            return
        frames = b"".join(http.sse(e.kind, e.data) for e in events)
        for q in list(self._watchers):
            try:
                q.put_nowait(frames)
            except asyncio.QueueFull:
                self._watchers.discard(q)
                with contextlib.suppress(asyncio.QueueFull):
                    q.get_nowait()
                    q.put_nowait(None)

    async def close(self) -> None:
        """Stop listening, end every event stream, and give open requests a moment."""
        if self._server is not None:
            self._server.close()
        for q in list(self._watchers):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(None)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2.0)
        for task in list(self._tasks):
            task.cancel()

    # ------------------------------------------------------------- connections

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._request(reader, writer)
        except asyncio.CancelledError:
            # The console stops with this connection open. Ending normally: Python 3.11's
            # stream server logs a handler that ends cancelled as an error.
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    async def _request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self._requests >= MAX_REQUESTS:
                raise HttpError(503, "too many requests at once; try again")
            self._requests += 1
            try:
                req, body = await asyncio.wait_for(self._read(reader), REQUEST_TIMEOUT)
                await self._answer(req, body, reader, writer)
            finally:
                self._requests -= 1
        except HttpError as e:
            await self._write(writer, http.error_response(e))
        except TimeoutError:
            await self._write(writer, http.error_response(HttpError(408, "request too slow")))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("console request failed")
            await self._write(writer, http.error_response(HttpError(500, "internal error")))

    async def _read(self, reader: asyncio.StreamReader) -> tuple[Request, bytes]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise HttpError(431, f"the request head is over {http.MAX_HEAD} bytes") from None
        req = http.parse_head(head[:-4])
        n = req.body_length()
        body = await reader.readexactly(n) if n else b""
        return req, body

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(data)
            await writer.drain()

    async def _answer(
        self,
        req: Request,
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        http.check_host(req, self.port)
        r = http.route(req)
        if isinstance(r, http.Static):
            await self._write(writer, http.response(200, self.files[r.file], r.content_type))
        elif isinstance(r, http.State):
            await self._write(writer, http.json_response(200, self.view.state()))
        elif isinstance(r, http.Events):
            await self._watch(reader, writer)
        elif isinstance(r, http.Browse):
            self._reachable(r.broker)
            messages = await self._admin(self.poller.browse(r.broker, r.queue, r.limit))
            data = {"broker": r.broker, "queue": r.queue,
                    "messages": [message_json(m) for m in messages]}  # fmt: skip
            await self._write(writer, http.json_response(200, data))
        elif isinstance(r, http.Purge):
            queue = http.check_purge(req, body, self.origin)
            self._reachable(r.broker)
            purged = await self._admin(self.poller.purge(r.broker, queue))
            log.info("console: purged %d from %s on %s", purged, queue, r.broker)
            done = {"broker": r.broker, "queue": queue, "purged": purged}
            await self._write(writer, http.json_response(200, done))

    def _reachable(self, broker: str) -> None:
        why = self.view.unreachable(broker)
        if why is not None:
            raise HttpError(*why)

    @staticmethod
    async def _admin(call: Awaitable[T]) -> T:
        try:
            return await call
        except CallFailed as e:
            raise HttpError(_CALL_STATUS.get(e.code, 502), e.details) from None

    async def _watch(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._watchers) >= MAX_WATCHERS:
            raise HttpError(503, f"{MAX_WATCHERS} pages are watching already")
        q: asyncio.Queue[bytes | None] = asyncio.Queue(WATCHER_QUEUE)
        self._watchers.add(q)
        # A page sends nothing more on its event stream: the end of its input is its
        # leaving, which frees its place at once rather than at the next write.
        gone = asyncio.ensure_future(reader.read(1))
        try:
            # The whole state first, then changes; `retry`: reconnect within a second.
            writer.write(http.SSE_HEAD + b"retry: 1000\n\n" + http.sse("state", self.view.state()))
            await writer.drain()
            while True:
                get = asyncio.ensure_future(q.get())
                done, _ = await asyncio.wait(
                    {get, gone}, timeout=KEEPALIVE, return_when=asyncio.FIRST_COMPLETED
                )
                if get not in done:
                    get.cancel()
                if gone in done:
                    return
                frames = get.result() if get in done else b": keepalive\n\n"
                if frames is None:
                    return
                writer.write(frames)
                await writer.drain()
        finally:
            gone.cancel()
            self._watchers.discard(q)
