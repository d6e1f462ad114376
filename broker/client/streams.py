"""Stream plumbing shared by producers and consumers: the client a stream runs under,
running a stream's reader and writer, why a stream ended, stopping a stream's task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

import grpc

from broker.client.channel import _Connection
from broker.client.errors import is_failover_code
from broker.client.url import ClientUrl
from broker.errors import BrokerError

log = logging.getLogger("netbroker.client")


class StreamOwner(Protocol):
    """The client as its producers and consumers see it: the connection to open a stream
    on, a new one when a stream broke, and the sets that track them (they leave on close)."""

    url: ClientUrl
    _loop: asyncio.AbstractEventLoop
    _producers: set[Any]
    _consumers: set[Any]

    @property
    def address(self) -> str | None: ...

    async def _connection(self) -> _Connection: ...

    async def _replace(self, failed: _Connection, reason: str) -> None: ...

    def _probe_timeout(self) -> float: ...


class _StreamFailure(Exception):
    """A stream ended other than by our own close: why, and whether to fail over."""

    def __init__(self, error: BrokerError) -> None:
        super().__init__(str(error))
        self.error = error
        self.failover = is_failover_code(error.code)


# The details grpc.aio gives a call whose write failed inside gRPC Core (the transport
# went away under it); the status code it sets, INTERNAL, would hide a broker's loss.
_CORE_SEND_FAILURE = "Internal error from Core"


class _StreamEnded(Exception):
    """The broker ended a stream (status OK) while we still expected answers."""


async def _failure_of(call: Any, exc: BaseException | None) -> _StreamFailure:
    """Describe why a stream's reader or writer stopped."""
    if isinstance(exc, grpc.aio.AioRpcError):
        if exc.code() == grpc.StatusCode.INTERNAL and exc.details() == _CORE_SEND_FAILURE:
            # grpc.aio's verdict when a write fails below it: the stream is broken, or
            # the broker ended it first (refused credentials): then its status says why.
            if call.done() and not call.cancelled():
                code = await call.code()
                if code not in (grpc.StatusCode.OK, grpc.StatusCode.INTERNAL):
                    return _StreamFailure(BrokerError(code.name, await call.details() or ""))
            return _StreamFailure(BrokerError("UNAVAILABLE", "the stream broke while writing"))
        return _StreamFailure(BrokerError(exc.code().name, exc.details() or "no details"))
    if isinstance(exc, _StreamFailure):
        return exc
    if isinstance(exc, _StreamEnded):
        return _StreamFailure(BrokerError("UNAVAILABLE", str(exc)))
    if exc is None or isinstance(exc, asyncio.CancelledError | asyncio.InvalidStateError):
        # Cancelled under us (the channel was closed) or written to after it finished.
        if call.done() and not call.cancelled():
            code = await call.code()
            if code != grpc.StatusCode.OK:
                return _StreamFailure(BrokerError(code.name, await call.details() or ""))
        return _StreamFailure(BrokerError("CANCELLED", "the stream was cancelled"))
    log.error("unexpected error on a broker stream", exc_info=exc)
    return _StreamFailure(BrokerError("INTERNAL", f"client error: {exc!r}"))


async def _run_stream(
    call: Any, reader: Coroutine[Any, Any, None], writer: Coroutine[Any, Any, None]
) -> None:
    """Run a stream's reader and writer until the reader returns (a clean end).

    Raises _StreamFailure when either of them fails. Cancels the call on the way out.
    """
    read_task = asyncio.create_task(reader)
    write_task = asyncio.create_task(writer)
    try:
        waiting: set[asyncio.Task[None]] = {read_task, write_task}
        while read_task in waiting:
            done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if write_task in done and read_task not in done and _failed(write_task):
                # The reader learns the stream's real status (the broker's words, or the
                # transport's); a failed write only knows that it failed.
                done_reading, _ = await asyncio.wait({read_task}, timeout=1.0)
                if done_reading and _failed(read_task):
                    done = {read_task}
            for task in done:
                if _failed(task):
                    # A child task cancelled while we were not: the call was cancelled
                    # under us (its channel was closed).
                    raise await _failure_of(call, None if task.cancelled() else task.exception())
    finally:
        read_task.cancel()
        write_task.cancel()
        call.cancel()
        await asyncio.gather(read_task, write_task, return_exceptions=True)


def _failed(task: asyncio.Task[None]) -> bool:
    return task.cancelled() or task.exception() is not None


async def _stop_task(task: asyncio.Task[None] | None, grace: float) -> None:
    """Give ``task`` up to ``grace`` seconds to finish, then cancel it and wait."""
    if task is None:
        return
    if grace > 0 and not task.done():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), grace)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
