"""Asking every broker of the layout for its status, a few times a second, and the
console's Admin calls (browse, purge) to one broker: grpc.aio calls whose answers are
handed to a callback as snapshots (None: the broker did not answer in time)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import grpc

from broker.client.limits import MAX_GRPC_MESSAGE_BYTES
from broker.console.layout import Layout
from broker.console.snapshot import BrokerSnapshot, read_status, with_queues
from broker.pb import admin_pb2, admin_pb2_grpc, message_pb2

# gRPC call metadata: the console's credentials, if any.
Metadata = tuple[tuple[str, str], ...]

# Between the starts of two polls of one broker: a change shows within about this plus
# one call's time.
POLL_INTERVAL = 0.25
# A call that takes longer counts as no answer: the broker is shown down.
CALL_TIMEOUT = 0.8

_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_BYTES),
    # Brokers come and go: retry a refused address within 200 ms-1 s, not gRPC's
    # default of up to two minutes, so a broker that is back shows at once.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
    ("grpc.use_local_subchannel_pool", 1),
]

OnSnapshot = Callable[[str, BrokerSnapshot | None], None]


class CallFailed(Exception):
    """An Admin call the console made for the page failed: the gRPC code's name and the
    broker's words."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


class Poller:
    def __init__(
        self,
        layout: Layout,
        on_snapshot: OnSnapshot,
        interval: float = POLL_INTERVAL,
        timeout: float = CALL_TIMEOUT,
        metadata: Metadata = (),
        ca: bytes | None = None,
    ) -> None:
        self.layout = layout
        # Credentials for brokers with users (Status is open; the rest needs them).
        self.metadata = metadata
        self.on_snapshot = on_snapshot
        self.interval = interval
        self.timeout = timeout
        # The topology's CA: brokers with TLS are asked over TLS, verified with it.
        credentials = grpc.ssl_channel_credentials(ca) if ca is not None else None
        self._channels = {
            b.name: (
                grpc.aio.secure_channel(b.address, credentials, options=_OPTIONS)
                if credentials is not None
                else grpc.aio.insecure_channel(b.address, options=_OPTIONS)
            )
            for b in layout.brokers
        }
        self._stubs = {n: admin_pb2_grpc.AdminStub(c) for n, c in self._channels.items()}

    async def run(self) -> None:
        """Poll every broker, each on its own schedule (a silent one delays no other),
        until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for name in self._stubs:
                tg.create_task(self._poll(name))

    async def _poll(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            self.on_snapshot(name, await self.snapshot(name))
            await asyncio.sleep(max(0.0, started + self.interval - loop.time()))

    async def snapshot(self, name: str) -> BrokerSnapshot | None:
        stub = self._stubs[name]
        try:
            st = await stub.Status(admin_pb2.StatusRequest(), timeout=self.timeout)
        except grpc.aio.AioRpcError:
            return None
        snap = read_status(st)
        if not snap.serving or snap.refusal:
            return snap
        try:
            lq = await stub.ListQueues(
                admin_pb2.ListQueuesRequest(), timeout=self.timeout, metadata=self.metadata
            )
        except grpc.aio.AioRpcError as e:
            # E.g. it just stepped down, or the console's user may not list queues: the
            # role still says what it is.
            return replace(snap, queues_error=f"{e.code().name}: {e.details() or 'no details'}")
        return with_queues(snap, lq)

    async def browse(self, broker: str, queue: str, limit: int) -> list[message_pb2.Message]:
        request = admin_pb2.BrowseRequest(queue=queue, limit=limit)
        response = await self._call(broker, "Browse", request)
        return list(response.messages)

    async def purge(self, broker: str, queue: str) -> int:
        response = await self._call(broker, "Purge", admin_pb2.PurgeRequest(queue=queue))
        return int(response.purged)

    async def _call(self, broker: str, method: str, request: object) -> Any:
        stub = self._stubs.get(broker)
        if stub is None:
            raise CallFailed("NOT_FOUND", f"no broker {broker!r} in this cluster")
        try:
            # The view says the broker answers: wait out a reconnect backoff left from
            # when it did not, rather than fail at once.
            call = getattr(stub, method)
            return await call(
                request, timeout=5 * self.timeout, metadata=self.metadata, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as e:
            raise CallFailed(e.code().name, e.details() or "no details") from None

    async def close(self) -> None:
        for channel in self._channels.values():
            with contextlib.suppress(Exception):
                await channel.close()
