"""Whether this broker serves clients now, which broker core serves them, and its report.

A standalone broker opens the gate once at start. In a master/slave group the gate is
opened on promotion (with the core built over the freshly caught-up store) and closed
on demotion, which also ends every open client and bridge stream so that clients fail
over. Plugged-in components (bridges, replication) report their state via `sources`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from broker.core import Broker


@dataclass(frozen=True)
class ComponentStatus:
    kind: str
    name: str
    state: str
    detail: str = ""


@dataclass
class ServiceGate:
    role: str = "standalone"
    # Where clients reach this broker (known once the server is bound).
    client_address: str = ""
    # Why clients are refused while there is no serving broker core.
    refusal: str = "broker is starting"
    broker: Broker | None = None
    sources: list[Callable[[], list[ComponentStatus]]] = field(default_factory=list)
    _streams: set[asyncio.Task[object]] = field(default_factory=set)

    def open(self, broker: Broker, role: str) -> None:
        self.broker = broker
        self.role = role

    def close(self, role: str, refusal: str) -> None:
        """Refuse new calls and end open streams (clients see CANCELLED and fail over)."""
        self.broker = None
        self.role = role
        self.refusal = refusal
        for task in list(self._streams):
            task.cancel()

    async def admit(self, context: grpc.aio.ServicerContext) -> Broker:
        """The serving broker core, or abort the call with UNAVAILABLE and the reason."""
        broker = self.broker
        if broker is None:
            # UNAVAILABLE so that failover clients and bridges move to the next address.
            await context.abort(grpc.StatusCode.UNAVAILABLE, self.refusal)
            raise AssertionError("unreachable: abort raises")
        return broker

    def track(self) -> asyncio.Task[object]:
        """Register the current call's task while its stream is open (see `close`)."""
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        return task

    def untrack(self, task: asyncio.Task[object]) -> None:
        self._streams.discard(task)

    def components(self) -> list[ComponentStatus]:
        return [status for source in self.sources for status in source()]
