"""The memory bound on non-persistent messages: senders wait while they hold too much."""

from __future__ import annotations

import asyncio


class MemoryGate:
    """Bounds the memory non-persistent messages hold, pending or in flight (released at
    their ack); senders wait past the limit.

    Callers count serialized bytes; a message held parsed costs more than that: it keeps
    the request buffer it was parsed from besides its own fields (measured 1.8 times its
    serialized size for 1 KiB bodies, more for small ones). So the limit is held against
    COST_PER_BYTE times what is counted, and a limit of 256 MiB means about that much
    memory, not 256 MiB of messages costing three quarters of a gigabyte."""

    COST_PER_BYTE = 2

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0  # serialized bytes held
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def cost(self) -> int:
        """The memory the held messages are taken to cost, in bytes."""
        return self.used * self.COST_PER_BYTE

    async def reserve(self, nbytes: int) -> None:
        # A single message larger than the whole limit may still pass when nothing
        # else is held, or it could never be sent.
        while self.used and (self.used + nbytes) * self.COST_PER_BYTE > self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        self.used += nbytes

    def release(self, nbytes: int) -> None:
        self.used -= nbytes
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
