"""Whether this broker serves clients now, and what it reports about itself.

A standalone broker always serves. Group membership (masterslave) sets `refusal` while
the broker is a slave or electing, and plugged-in components (bridges, replication)
report their state through `sources`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import grpc


@dataclass(frozen=True)
class ComponentStatus:
    kind: str
    name: str
    state: str
    detail: str = ""


@dataclass
class ServiceGate:
    role: str = "standalone"
    # When set, client and bridge calls are refused with this message (UNAVAILABLE, so
    # that failover clients move on to the next address).
    refusal: str | None = None
    sources: list[Callable[[], list[ComponentStatus]]] = field(default_factory=list)

    async def check(self, context: grpc.aio.ServicerContext) -> None:
        if self.refusal is not None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, self.refusal)

    def components(self) -> list[ComponentStatus]:
        return [status for source in self.sources for status in source()]
