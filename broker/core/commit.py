"""Group commit: concurrent writes share one fsync, numbered as a log.

The broker's loop writes batches to RocksDB without fsync (a write holds the GIL; from
several threads they would only queue): what was submitted during one turn of the loop
is written as one batch on the next. Under load the fsync runs on a thread of its own
(`flush_wal` lets the loop go on meanwhile) and covers every batch written before it
started; while it runs the loop keeps accepting and writing, and the next fsync takes
all of that at once. A batch is answered once an fsync that began after it has ended.
A small batch (a few messages) is synced on the loop at once when writes are sparse (no
fsync under way, and the disk idle for longer than the last one took): at low rates the
hand-off to the thread and back (two wake-ups, each a context switch) costs more than
the fsync, and nothing else waits to be written meanwhile.

Each write is a log entry with a position (and the group epoch it was written in),
recorded in the store with the write itself; a replicator, when one is plugged in, is
handed every entry and says when it counts as committed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from broker.core.histogram import OPS, SECONDS, Histogram
from broker.core.store import META_EPOCH, META_POS, Op, Store
from broker.errors import Unavailable

log = logging.getLogger("netbroker.commit")

# The largest batch (in store operations, about two per message) that is synced on the
# loop: a larger one means load, where overlapping the fsync with the loop's other work
# pays. Counted in operations, not senders: one producer's request carries hundreds.
INLINE_FSYNC_MAX_OPS = 32


class Replicator(Protocol):
    def on_write(self, position: int, epoch: int, ops: Sequence[Op]) -> asyncio.Future[None] | None:
        """Take a written entry; a future that resolves once it is committed, or None
        when the local write is enough."""

    def on_synced(self, position: int) -> None:
        """Everything up to `position` is on this broker's disk."""


class GroupCommitter:
    def __init__(self, store: Store, sync: bool, epoch: int | None = None) -> None:
        self._store = store
        self._sync = sync
        self._ops: list[Op] = []
        self._waiters: list[asyncio.Future[None]] = []
        # Futures of writes behind (see `submit`), queued with the rest.
        self._behind: list[asyncio.Future[None]] = []
        # The pending turn of the loop that writes what was submitted meanwhile.
        self._turn: asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.position = store.meta(META_POS)
        self.epoch = store.meta(META_EPOCH) if epoch is None else epoch
        self.replicator: Replicator | None = None
        self.synced = self.position
        # When the last fsync ended and how long it took: the disk idle at least that long
        # means writes are sparse, and the next small one may be synced on the loop.
        self._fsync_ended = 0.0
        self._fsync_took = 0.0
        # (position, waiters) written but not yet covered by an fsync.
        self._unsynced: list[tuple[int, list[asyncio.Future[None]]]] = []
        self._syncing: asyncio.Task[None] | None = None
        self._sync_thread = concurrent.futures.ThreadPoolExecutor(1, "fsync")
        # For the metrics: how long each fsync took, and how many operations each write had.
        self.fsync_seconds = Histogram(SECONDS)
        self.batch_ops = Histogram(OPS)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if (self._waiters or self._behind) and self._turn is None:
            self._turn = self._loop.call_soon(self._write_queued)

    def submit(self, ops: Sequence[Op], *, behind: bool = False) -> asyncio.Future[None]:
        """Queue `ops`; the future resolves once they are committed under the policy.

        `behind`: nobody waits on the write's durability (an ack, a raised redelivery
        count), so on a broker of its own it starts no fsync: it is written with the next
        batch and reaches the disk with the next fsync of anyone's. A process crash keeps
        it either way (the write is in the operating system's cache); a power loss before
        the next fsync brings the message back, as it does to a dispatch mark. In a group
        it is committed like any write: the members' log order needs it."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_exception(Unavailable("broker is not serving"))
            return future
        self._ops.extend(ops)
        if behind and self.replicator is None:
            self._behind.append(future)
        else:
            self._waiters.append(future)
        if self._turn is None and self._loop is not None:
            # Written on the loop's next turn: requests already readable join this batch.
            self._turn = self._loop.call_soon(self._write_queued)
        return future

    def write_now(self, ops: Sequence[Op]) -> asyncio.Future[None] | None:
        """Write at once, without the group-commit batching, and log it.

        Returns the replicator's future, resolved once the in-sync members hold the
        write (a failover keeps it), or None without a replicator: the local write is
        all there is to wait for (nor any fsync then: a process crash keeps it). Closed,
        a group member's future fails at once: its writes no longer reach anyone."""
        if self._closed:
            if self.replicator is None:
                return None
            refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            refused.set_exception(Unavailable("broker is not serving"))
            return refused
        if self.replicator is None:
            self._write(list(ops), [], sync=False)
            return None
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Under a disk policy the members' count includes this broker's fsync: one must
        # follow, or a write with nothing after it would never count as committed.
        self._write(list(ops), [waiter], sync=self._sync)  # a refused write fails the waiter
        return waiter

    async def close(self) -> None:
        """Write what is queued, then stop."""
        self._closed = True
        self._write_queued()
        if self._syncing is not None:
            await self._syncing
        self._sync_thread.shutdown(wait=True)

    def abort(self, error: Exception) -> None:
        """Stop at once: nothing queued is written and every waiter fails with `error`."""
        self._closed = True
        waiters, self._waiters, self._ops = self._waiters + self._behind, [], []
        self._behind = []
        for _, unsynced in self._unsynced:
            waiters.extend(unsynced)
        self._unsynced = []
        for future in waiters:
            if not future.done():
                future.set_exception(error)
        if self._turn is not None:
            self._turn.cancel()
            self._turn = None
        self._sync_thread.shutdown(wait=False)

    def _write_queued(self) -> None:
        if self._turn is not None:
            self._turn.cancel()
            self._turn = None
        ops, waiters, behind = self._ops, self._waiters, self._behind
        self._ops, self._waiters, self._behind = [], [], []
        if waiters:
            if self._write(ops, waiters, sync=self._sync):
                _resolve(behind)
            else:
                _fail(behind, Unavailable("store write failed"))
        elif behind:
            self._write(ops, behind, sync=False)

    def _write(self, ops: list[Op], waiters: list[asyncio.Future[None]], sync: bool) -> bool:
        """Write and log `ops`; False (with `waiters` failed) if the store refused them."""
        position = self.position + 1
        ops.append((META_POS, position.to_bytes(8, "big")))
        ops.append((META_EPOCH, self.epoch.to_bytes(8, "big")))
        try:
            self._store.write(ops, sync=False)
        except Exception as exc:  # a failed write must fail its senders, not the loop
            log.error("store write failed: %s", exc)
            _fail(waiters, Unavailable(f"store write failed: {exc}"))
            return False
        self.position = position
        self.batch_ops.observe(len(ops))
        pending = self.replicator.on_write(position, self.epoch, ops) if self.replicator else None
        if sync and self._syncing is None and self._sparse(len(ops)):
            self._sync_inline(position, [] if pending is not None else waiters)
            if pending is None:
                return True
            sync = False
        if sync:
            # With a replicator the acknowledgement waits for its future alone (it counts
            # this broker's fsync among the members'); without one, for the fsync.
            self._unsynced.append((position, [] if pending is not None else waiters))
            if self._syncing is None:
                self._syncing = asyncio.get_running_loop().create_task(self._fsync_loop())
        if pending is None:
            if not sync:
                _resolve(waiters)
            return True

        def done(result: asyncio.Future[None]) -> None:
            if result.cancelled():
                _fail(waiters, Unavailable("replication stopped"))
            elif (error := result.exception()) is not None:
                _fail(waiters, error)
            else:
                _resolve(waiters)

        pending.add_done_callback(done)
        return True

    def _sparse(self, ops: int) -> bool:
        """Whether a write of `ops` may be synced on the loop: it is small, and the disk has
        been idle for longer than its last fsync took. Writes arriving while an fsync runs
        (a fast producer, a slow disk) find it busy and go to the thread, where they share
        the next fsync; synced on the loop one by one they would queue up behind it."""
        return ops <= INLINE_FSYNC_MAX_OPS and (
            time.monotonic() - self._fsync_ended >= self._fsync_took
        )

    def _synced_in(self, started: float) -> None:
        self._fsync_ended = time.monotonic()
        self._fsync_took = self._fsync_ended - started
        self.fsync_seconds.observe(self._fsync_took)

    def _sync_inline(self, position: int, waiters: list[asyncio.Future[None]]) -> None:
        started = time.monotonic()
        try:
            self._store.sync_wal()
        except Exception as exc:
            log.error("fsync failed: %s", exc)
            _fail(waiters, Unavailable(f"fsync failed: {exc}"))
            return
        finally:
            self._synced_in(started)
        self.synced = position
        _resolve(waiters)
        if self.replicator is not None:
            self.replicator.on_synced(position)

    async def _fsync_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._unsynced:
                target = self.position
                started = time.monotonic()
                try:
                    await loop.run_in_executor(self._sync_thread, self._store.sync_wal)
                except Exception as exc:
                    log.error("fsync failed: %s", exc)
                    covered, self._unsynced = self._unsynced, []
                    for _, waiters in covered:
                        _fail(waiters, Unavailable(f"fsync failed: {exc}"))
                    return
                finally:
                    self._synced_in(started)
                self.synced = target
                while self._unsynced and self._unsynced[0][0] <= target:
                    _resolve(self._unsynced.pop(0)[1])
                if self.replicator is not None:
                    self.replicator.on_synced(target)
        finally:
            self._syncing = None


def _resolve(waiters: list[asyncio.Future[None]]) -> None:
    for future in waiters:
        if not future.done():
            future.set_result(None)


def _fail(waiters: list[asyncio.Future[None]], error: BaseException) -> None:
    for future in waiters:
        if not future.done():
            future.set_exception(error)
