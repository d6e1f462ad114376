"""The client's own error and which broker status codes mean "try another broker"."""

from __future__ import annotations

from typing import Any

from broker.errors import BrokerError

# Status codes that mean "this broker cannot serve us now" rather than "this request is
# wrong": a failover client moves to the next address and retries.
_FAILOVER_CODES = frozenset({"UNAVAILABLE", "FAILED_PRECONDITION", "CANCELLED"})


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
