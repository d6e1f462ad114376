"""Group commit: concurrent writes share one synced RocksDB write.

rocksdict holds the GIL for the whole write, fsync included, so writing from threads
would not overlap with anything; one task on the broker's loop writes instead. While it
writes, new requests queue up and go out together in the next batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from broker.errors import Unavailable
from broker.store import Op, Store

log = logging.getLogger("netbroker.commit")

# Called after each local write with the write's position and ops; what it returns is
# awaited before the write counts as committed (replication plugs in here).
CommitHook = Callable[[int, Sequence[Op]], Awaitable[None] | None]


class GroupCommitter:
    def __init__(self, store: Store, sync: bool) -> None:
        self._store = store
        self._sync = sync
        self._ops: list[Op] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.position = 0
        self.hooks: list[CommitHook] = []
        self.batches = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    def submit(self, ops: Sequence[Op]) -> asyncio.Future[None]:
        """Queue `ops`; the future resolves once they are durable under the sync policy."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_exception(Unavailable("broker is shutting down"))
            return future
        self._ops.extend(ops)
        self._waiters.append(future)
        self._wake.set()
        return future

    async def close(self) -> None:
        """Write what is queued, then stop."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # One turn of the loop lets requests that are already readable join this batch.
            await asyncio.sleep(0)
            ops, waiters = self._ops, self._waiters
            self._ops, self._waiters = [], []
            if waiters:
                await self._write(ops, waiters)
            if self._closed and not self._ops:
                return

    async def _write(self, ops: list[Op], waiters: list[asyncio.Future[None]]) -> None:
        try:
            self._store.write(ops, self._sync)
            self.position += 1
            self.batches += 1
            for hook in self.hooks:
                pending = hook(self.position, ops)
                if pending is not None:
                    await pending
        except Exception as exc:  # a failed write must fail its senders, not the loop
            log.error("store write failed: %s", exc)
            error = (
                exc if isinstance(exc, Unavailable) else Unavailable(f"store write failed: {exc}")
            )
            for future in waiters:
                if not future.done():
                    future.set_exception(error)
            return
        for future in waiters:
            if not future.done():
                future.set_result(None)
