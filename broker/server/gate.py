"""Whether this broker serves clients now, which broker core serves them, and its report.

A standalone broker opens the gate once at start. In a master/slave group the gate is
opened on promotion (with the core built over the freshly caught-up store) and closed
on demotion, which also ends every call admitted to the old core, so that clients fail
over. Plugged-in components (bridges, replication) report their state via `sources`
(broker/server/status.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from broker.server.status import Report, Role

if TYPE_CHECKING:
    from broker.core.broker import Broker


@dataclass
class ServiceGate:
    role: Role = Role.STANDALONE
    # Where clients reach this broker (known once the server is bound).
    client_address: str = ""
    # Why clients are refused while there is no serving broker core.
    refusal: str = "broker is starting"
    broker: Broker | None = None
    sources: list[Callable[[], Sequence[Report]]] = field(default_factory=list)
    # The calls admitted to the current core, by the task serving each; a finished call
    # drops out by itself.
    _calls: dict[asyncio.Task[object], grpc.aio.ServicerContext] = field(default_factory=dict)
    # Status sends of calls being ended, kept referenced until they are done.
    _ending: set[asyncio.Task[None]] = field(default_factory=set)

    def open(self, broker: Broker, role: Role) -> None:
        self.broker = broker
        self.role = role

    def close(self, role: Role, refusal: str) -> None:
        """Refuse new calls and end every open one with UNAVAILABLE and `refusal`, so that
        clients and bridges fail over at once."""
        self.broker = None
        self.role = role
        self.refusal = refusal
        calls, self._calls = self._calls, {}
        for task, context in calls.items():
            # Cancelling alone leaves the call open at the client: grpc.aio sends no
            # status for a handler that ends cancelled. So the status goes out here, and
            # the cancel stops the handler from serving the old core meanwhile.
            task.cancel()
            ending = asyncio.get_running_loop().create_task(_end_call(context, refusal))
            self._ending.add(ending)
            ending.add_done_callback(self._ending.discard)

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
        self._calls[task] = context
        task.add_done_callback(self._forget)
        return broker

    def _forget(self, task: asyncio.Task[object]) -> None:
        self._calls.pop(task, None)

    @property
    def open_calls(self) -> int:
        """Calls admitted to the serving core and still open (streams, for the most)."""
        return len(self._calls)

    def reports(self) -> list[Report]:
        return [report for source in self.sources for report in source()]


async def _end_call(context: grpc.aio.ServicerContext, refusal: str) -> None:
    """Send a stopped call's final status (retryable: the client moves on)."""
    # AbortError is how abort ends its caller; a call that already sent its status
    # (it ended on its own meanwhile) refuses a second one: nothing more to do then.
    with contextlib.suppress(Exception):
        await context.abort(grpc.StatusCode.UNAVAILABLE, refusal)
