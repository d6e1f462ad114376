"""Whether this broker serves clients now, which broker core serves them, and its report.

A standalone broker opens the gate once at start. In a master/slave group the gate is
opened on promotion (with the core built over the freshly caught-up store) and closed
on demotion, which also ends every call admitted to the old core, so that clients fail
over. Plugged-in components (bridges, replication) report their state via `sources`.
"""

from __future__ import annotations

import asyncio
import weakref
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
    # The tasks of calls admitted to the current core; finished ones drop out by themselves.
    _calls: weakref.WeakSet[asyncio.Task[object]] = field(default_factory=weakref.WeakSet)

    def open(self, broker: Broker, role: str) -> None:
        self.broker = broker
        self.role = role

    def close(self, role: str, refusal: str) -> None:
        """Refuse new calls and end open streams (clients see CANCELLED and fail over)."""
        self.broker = None
        self.role = role
        self.refusal = refusal
        for task in list(self._calls):
            task.cancel()

    async def admit(self, context: grpc.aio.ServicerContext) -> Broker:
        """The serving broker core, or abort the call with UNAVAILABLE and the reason.

        The call is registered from here on, so that `close` ends it wherever it is:
        one admitted before a demotion never goes on serving the demoted core."""
        broker = self.broker
        if broker is None:
            # UNAVAILABLE so that failover clients and bridges move to the next address.
            await context.abort(grpc.StatusCode.UNAVAILABLE, self.refusal)
            raise AssertionError("unreachable: abort raises")
        task = asyncio.current_task()
        assert task is not None
        self._calls.add(task)
        return broker

    def components(self) -> list[ComponentStatus]:
        return [status for source in self.sources for status in source()]
