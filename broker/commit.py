"""Group commit: concurrent writes share one synced RocksDB write, numbered as a log.

rocksdict holds the GIL for the whole write, fsync included, so writing from threads
would not overlap with anything; one task on the broker's loop writes instead. While it
writes, new requests queue up and go out together in the next batch.

Each write is a log entry with a position (and the group epoch it was written in),
recorded in the store with the write itself; a replicator, when one is plugged in, is
handed every entry and says when it counts as committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from broker.errors import Unavailable
from broker.store import META_EPOCH, META_POS, Op, Store

log = logging.getLogger("netbroker.commit")


class Replicator(Protocol):
    def on_write(self, position: int, epoch: int, ops: Sequence[Op]) -> asyncio.Future[None] | None:
        """Take a written entry; a future that resolves once it is committed, or None
        when the local write is enough."""


class GroupCommitter:
    def __init__(self, store: Store, sync: bool, epoch: int | None = None) -> None:
        self._store = store
        self._sync = sync
        self._ops: list[Op] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.position = store.meta(META_POS)
        self.epoch = store.meta(META_EPOCH) if epoch is None else epoch
        self.replicator: Replicator | None = None
        self.batches = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    def submit(self, ops: Sequence[Op]) -> asyncio.Future[None]:
        """Queue `ops`; the future resolves once they are committed under the policy."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_exception(Unavailable("broker is not serving"))
            return future
        self._ops.extend(ops)
        self._waiters.append(future)
        self._wake.set()
        return future

    def write_now(self, ops: Sequence[Op]) -> None:
        """Write at once without fsync (a process crash keeps it) and log it; no waiting."""
        if not self._closed:
            self._write(list(ops), [], sync=False)

    async def close(self) -> None:
        """Write what is queued, then stop."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task

    def abort(self, error: Exception) -> None:
        """Stop at once: nothing queued is written and every waiter fails with `error`."""
        self._closed = True
        waiters, self._waiters, self._ops = self._waiters, [], []
        for future in waiters:
            if not future.done():
                future.set_exception(error)
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # One turn of the loop lets requests that are already readable join this batch.
            await asyncio.sleep(0)
            ops, waiters = self._ops, self._waiters
            self._ops, self._waiters = [], []
            if waiters:
                self._write(ops, waiters, sync=self._sync)
            if self._closed and not self._ops:
                return

    def _write(self, ops: list[Op], waiters: list[asyncio.Future[None]], sync: bool) -> None:
        position = self.position + 1
        ops.append((META_POS, position.to_bytes(8, "big")))
        ops.append((META_EPOCH, self.epoch.to_bytes(8, "big")))
        try:
            self._store.write(ops, sync)
        except Exception as exc:  # a failed write must fail its senders, not the loop
            log.error("store write failed: %s", exc)
            _fail(waiters, Unavailable(f"store write failed: {exc}"))
            return
        self.position = position
        self.batches += 1
        pending = self.replicator.on_write(position, self.epoch, ops) if self.replicator else None
        if pending is None:
            _resolve(waiters)
            return

        def done(result: asyncio.Future[None]) -> None:
            if result.cancelled():
                _fail(waiters, Unavailable("replication stopped"))
            elif (error := result.exception()) is not None:
                _fail(waiters, error)
            else:
                _resolve(waiters)

        pending.add_done_callback(done)


def _resolve(waiters: list[asyncio.Future[None]]) -> None:
    for future in waiters:
        if not future.done():
            future.set_result(None)


def _fail(waiters: list[asyncio.Future[None]], error: BaseException) -> None:
    for future in waiters:
        if not future.done():
            future.set_exception(error)
