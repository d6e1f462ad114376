"""How the command line tells a failure: one line on stderr and an exit code.

Every failure ends with one line on stderr, `netbroker: what went wrong`, and a non-zero
exit code: 2 for a usage error, 1 for anything else, 130 for Ctrl-C.
"""

from __future__ import annotations

import sys
from typing import TextIO

from broker import invocation

PROG = "netbroker"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A bad command line, as argparse found it."""

    def __init__(self, prog: str, message: str) -> None:
        self.prog = prog
        sub = prog.removeprefix(invocation.prog()).strip()
        text = " ".join(message.split())  # argparse messages may wrap; keep one line
        super().__init__(f"{sub + ': ' if sub else ''}{text} (see '{prog} --help')")


class CliError(Exception):
    """A failure with a message for the operator; exits 1 unless `code` says otherwise."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def reason(e: BaseException) -> str:
    """An exception from the client or gRPC in an operator's words."""
    code = getattr(e, "code", None)
    message = getattr(e, "message", None)
    if isinstance(code, str) and isinstance(message, str):  # BrokerError
        return f"{code}: {message}" if code else message
    details = getattr(e, "details", None)
    if callable(code) and callable(details):  # grpc.RpcError
        return f"{code().name}: {details()}"
    text = str(e)
    return text if text else type(e).__name__


def say(message: str, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    stream.write(f"{PROG}: {message}\n")
    stream.flush()
