"""Errors the broker reports to clients and operators, each with a readable message."""

from __future__ import annotations


class StartupError(Exception):
    """The broker cannot start (port in use, unreadable data directory, ...)."""


class BrokerError(Exception):
    """A request the broker refuses; `code` is a gRPC status code name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidArgument(BrokerError):
    def __init__(self, message: str) -> None:
        super().__init__("INVALID_ARGUMENT", message)


class Unavailable(BrokerError):
    def __init__(self, message: str) -> None:
        super().__init__("UNAVAILABLE", message)
