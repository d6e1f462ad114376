"""Errors the broker reports to clients and operators, each with a readable message."""

from __future__ import annotations


class StartupError(Exception):
    """The broker cannot start (port in use, unreadable data directory, ...)."""


class BrokerError(Exception):
    """A request the broker refuses, or a client could not carry out.

    `code` is a gRPC status code name (INVALID_ARGUMENT, RESOURCE_EXHAUSTED,
    UNAVAILABLE, ...), `message` says what is wrong in words. Raised by the broker's
    core and by the Python client alike.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[object, ...]:
        return (BrokerError, (self.code, self.message))


class InvalidArgument(BrokerError):
    def __init__(self, message: str) -> None:
        super().__init__("INVALID_ARGUMENT", message)


class Unavailable(BrokerError):
    def __init__(self, message: str) -> None:
        super().__init__("UNAVAILABLE", message)
