"""The web console as `netbroker up` runs it: the view, the poller and the HTTP server on
an asyncio loop of their own, on a thread beside `up`'s watch of its processes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time

from broker.cluster.model import Topology
from broker.console.layout import Layout
from broker.console.poller import Metadata, Poller
from broker.console.server import ConsoleServer
from broker.console.snapshot import BrokerSnapshot
from broker.console.view import ClusterView

HOST = "127.0.0.1"
# How long the start may take to bind, and the stop to finish.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


class ConsoleError(Exception):
    """The console could not start (its port is taken); the words are for the operator."""


class Console:
    """A running console; `start` binds its port or raises ConsoleError."""

    def __init__(
        self,
        topology: Topology,
        port: int,
        host: str = HOST,
        metadata: Metadata = (),
        ca: bytes | None = None,
    ) -> None:
        self.layout = Layout.of(topology)
        self.metadata = metadata
        self.ca = ca
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @classmethod
    def start(
        cls,
        topology: Topology,
        port: int,
        host: str = HOST,
        metadata: Metadata = (),
        ca: bytes | None = None,
    ) -> Console:
        """Serve on `host:port` (0: a free port); `metadata`: credentials for the Admin
        calls of brokers with users; `ca`: the topology's CA, for brokers with TLS."""
        console = cls(topology, port, host, metadata, ca)
        bound: concurrent.futures.Future[int] = concurrent.futures.Future()
        console._thread = threading.Thread(
            target=console._run, args=(bound,), name="console", daemon=True
        )
        console._thread.start()
        try:
            console.port = bound.result(timeout=START_TIMEOUT)
        except OSError as e:
            console._thread.join(STOP_TIMEOUT)
            raise ConsoleError(
                f"the web console cannot listen on {host}:{port}: {e.strerror or e}"
            ) from None
        except concurrent.futures.TimeoutError:
            raise ConsoleError(f"the web console did not start within {START_TIMEOUT} s") from None
        except Exception as e:
            raise ConsoleError(f"the web console could not start: {e}") from None
        return console

    def _run(self, bound: concurrent.futures.Future[int]) -> None:
        try:
            asyncio.run(self._main(bound))
        except BaseException as e:
            # Failed before it could say it had bound: the start says why at once.
            if not bound.done():
                bound.set_exception(e)
            raise

    async def _main(self, bound: concurrent.futures.Future[int]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        view = ClusterView(self.layout)
        server: ConsoleServer | None = None

        def observe(name: str, snap: BrokerSnapshot | None) -> None:
            events = view.observe(name, snap, time.time())
            if server is not None:
                server.publish(events)

        poller = Poller(self.layout, observe, metadata=self.metadata, ca=self.ca)
        server = ConsoleServer(view, poller, self.host, self.port)
        try:
            await server.start()
        except OSError as e:
            await poller.close()
            bound.set_exception(e)
            return
        bound.set_result(server.port)
        polling = asyncio.create_task(poller.run())
        try:
            await self._stop.wait()
        finally:
            polling.cancel()
            with contextlib.suppress(BaseException):
                await polling
            await server.close()
            await poller.close()

    def close(self) -> None:
        """Stop serving and polling; returns within STOP_TIMEOUT."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # its loop has ended already
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
            self._thread = None
