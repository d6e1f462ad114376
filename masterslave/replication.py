"""Store replication over gRPC: the master's Leader and a slave's Follower.

Adapters only: what a follower needs (stream or bulk copy) is `catch_up_plan`'s call,
what counts as committed is the AckTracker's, and changes to the in-sync set are the
IsrPolicy's. This module moves entries and acknowledgements between them and the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import grpc
from google.protobuf.message import DecodeError

from broker.config import Sync
from broker.core.commit import GroupCommitter
from broker.core.store import META_EPOCH, META_POS, Op, Store
from broker.core.wire import varint
from broker.errors import Unavailable
from broker.pb import replication_pb2, replication_pb2_grpc
from broker.server.tls import peer_refusal
from masterslave.acks import AckTracker
from masterslave.election import IsrState
from masterslave.isr import IsrPolicy, reconcile
from masterslave.replog import (
    OutOfWindow,
    ReplicationLog,
    Snapshot,
    StaleMaster,
    catch_up_plan,
)

log = logging.getLogger("netbroker.replication")

# How much of the log one frame carries, and a bulk copy's chunk size.
FRAME_BYTES = 1024 * 1024
SNAPSHOT_KEYS = 2_000


def to_pb_ops(ops: Sequence[Op]) -> replication_pb2.Ops:
    return replication_pb2.Ops(
        keys=[k for k, _ in ops],
        values=[b"" if v is None else v for _, v in ops],
        deleted=[i for i, (_, v) in enumerate(ops) if v is None],
    )


def encode_log_entry(position: int, epoch: int, ops: Sequence[Op]) -> bytes:
    """A serialized LogEntry, written directly: the master encodes every write, and
    building the protobuf objects first cost it more than the write itself."""
    parts: list[bytes] = []
    append = parts.append
    for key, _ in ops:
        append(b"\x0a" + varint(len(key)) + key)  # Ops.keys = 1
    deleted: list[bytes] = []
    for index, (_, value) in enumerate(ops):
        if value is None:
            append(b"\x12\x00")  # Ops.values = 2: empty for a deletion
            deleted.append(varint(index))
        else:
            append(b"\x12" + varint(len(value)))
            append(value)
    if deleted:
        packed = b"".join(deleted)
        append(b"\x1a" + varint(len(packed)) + packed)  # Ops.deleted = 3, packed
    encoded_ops = b"".join(parts)
    head = b"\x08" + varint(position) if position else b""  # LogEntry.position = 1
    if epoch:
        head += b"\x10" + varint(epoch)  # LogEntry.epoch = 2
    return head + b"\x1a" + varint(len(encoded_ops)) + encoded_ops  # LogEntry.ops = 3


def encode_log_frame(epoch: int, entries: Sequence[bytes | replication_pb2.LogEntry]) -> bytes:
    """A serialized LogFrame of entries, serialized already or not (a promoted slave's
    log holds the entries it received as parsed)."""
    parts = [b"\x08" + varint(epoch)] if epoch else []  # LogFrame.epoch = 1
    for entry in entries:
        data = entry if isinstance(entry, bytes) else entry.SerializeToString()
        parts.append(b"\x12" + varint(len(data)))  # LogFrame.entries = 2
        parts.append(data)
    return b"".join(parts)


def serialize_log_frame(frame: bytes | replication_pb2.LogFrame) -> bytes:
    """The Follow stream's serializer: log frames come encoded, bulk copies do not."""
    return frame if isinstance(frame, bytes) else frame.SerializeToString()


def from_pb_ops(ops: replication_pb2.Ops) -> list[Op]:
    out: list[Op] = list(zip(ops.keys, ops.values, strict=True))
    for i in ops.deleted:
        out[i] = (out[i][0], None)
    return out


class BadRequest(Exception):
    """A follower broke the protocol; the stream ends with INVALID_ARGUMENT."""


async def parse_follow_requests(
    raw: AsyncIterator[bytes],
) -> AsyncIterator[replication_pb2.FollowRequest]:
    """Parse the Follow stream's requests (registered with no deserializer, so that an
    undecodable one is answered INVALID_ARGUMENT rather than UNKNOWN: DecodeError)."""
    async for data in raw:
        try:
            yield replication_pb2.FollowRequest.FromString(data)
        except DecodeError as exc:
            raise BadRequest(f"undecodable FollowRequest: {exc}") from None


class Leader(replication_pb2_grpc.ReplicationServicer):
    """The master's side: log window, followers' streams, quorum acknowledgements."""

    def __init__(
        self,
        member: str,
        store: Store,
        committer: GroupCommitter,
        isr: IsrState,
        isr_version: int,
        write_isr: Callable[[IsrState, int], Awaitable[int | None]],
        replication_log: ReplicationLog,
        sync_mode: Sync | str,
        min_insync: int,
        lag_timeout: float,
        commit_timeout: float,
        token: str,
        on_fenced: Callable[[str], None],
        group: str,
        may_follow: Callable[[str], str | None] = lambda member: None,
        read_isr: Callable[[], Awaitable[tuple[IsrState | None, int]]] | None = None,
        tls_members: tuple[str, ...] | None = None,
    ) -> None:
        """`may_follow(member)` is None when `member` may follow, else why not (the
        group member passes the ids registered under the group's zkPath).

        `read_isr()` reads the in-sync node back (state, version) after a write whose
        outcome is unknown; without it such a write fences this master."""
        self.member = member
        self.store = store
        self.committer = committer
        self.isr = isr
        self.isr_version = isr_version
        self._write_isr = write_isr
        self.log = replication_log
        self.sync_mode = Sync(sync_mode)
        self.min_insync = min_insync
        self.lag_timeout = lag_timeout
        self.commit_timeout = commit_timeout
        self.token = token
        self.group = group
        self._on_fenced = on_fenced
        self._may_follow = may_follow
        self._read_isr = read_isr
        # Under TLS, the members whose certificates may follow (empty: any the CA
        # signed); None without TLS.
        self.tls_members = tls_members
        self._local_sync = self.sync_mode.fsyncs
        self.tracker = AckTracker(member, sync_mode, min_insync, start=committer.position)
        self.policy = IsrPolicy()
        # (position, answer, when written): sends waiting for the in-sync set.
        self._waiting: list[tuple[int, asyncio.Future[None], float]] = []
        self._wake = asyncio.Event()
        self._followers: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._isr_busy = False
        self.closed = False

    @property
    def epoch(self) -> int:
        return self.isr.epoch

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch_isr(), name="isr")

    def stop(self, reason: str) -> None:
        self.closed = True
        if self._task is not None:
            self._task.cancel()
        waiting, self._waiting = self._waiting, []
        for _, future, _ in waiting:
            if not future.done():
                future.set_exception(Unavailable(reason))
        self._wake.set()

    # -- the committer's side ------------------------------------------------------

    def on_write(self, position: int, epoch: int, ops: Sequence[Op]) -> asyncio.Future[None] | None:
        entry = encode_log_entry(position, epoch, ops)
        self.log.append(position, epoch, entry, len(entry))
        now = time.monotonic()
        self.tracker.local(position, self.committer.synced, now)
        self._wake.set()
        self._wake = asyncio.Event()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((position, future, now))
        self._release()
        return future

    def on_synced(self, position: int) -> None:
        self.tracker.local(self.committer.position, position, time.monotonic())
        self._release()

    def _release(self) -> None:
        """Answer every write the in-sync set now holds."""
        if not self._waiting:
            return
        committed = self.tracker.committed()
        while self._waiting and self._waiting[0][0] <= committed:
            _, future, _ = self._waiting.pop(0)
            if not future.done():
                future.set_result(None)

    def _expire_waiting(self, now: float) -> None:
        """Fail sends the in-sync set has not acknowledged within the commit timeout.

        The core then takes the write back out of the store (a resend is stored anew);
        nothing is ever acknowledged without the quorum."""
        while self._waiting and now - self._waiting[0][2] > self.commit_timeout:
            _, future, _ = self._waiting.pop(0)
            if not future.done():
                reason = self.tracker.stalled_reason() or "the in-sync set did not acknowledge"
                future.set_exception(
                    Unavailable(
                        f"group {self.group}: not acknowledged within {self.commit_timeout:g}s: "
                        f"{reason}"
                    )
                )

    # -- the in-sync set -----------------------------------------------------------

    async def _watch_isr(self) -> None:
        while not self.closed:
            await asyncio.sleep(0.05)
            self._expire_waiting(time.monotonic())
            await self.review_isr()

    async def review_isr(self) -> None:
        """Shrink or grow the in-sync set in ZooKeeper, then count acks by the new set."""
        if self._isr_busy or self.closed:
            return
        if self.policy.doubtful:
            await self._settle_doubt()
            return
        now = time.monotonic()
        change = self.policy.next_change(
            self.isr, self.tracker, now, self.lag_timeout, self.committer.position
        )
        if change is None:
            self._release()  # joiners may have changed what counts
            return
        self._isr_busy = True
        try:
            version = await self._write_isr(change, self.isr_version)
        except Exception as exc:
            # The outcome is unknown (a ConnectionLoss after the request went out may
            # still have applied it): commits wait for the old and the proposed members
            # alike until the node is read back. (Losing the session stops this master
            # through the group member.)
            log.warning("writing the in-sync set failed, its outcome is unknown: %r", exc)
            self.policy.in_doubt(self.isr, self.tracker, time.monotonic())
            return
        finally:
            self._isr_busy = False
        if version is None:
            self.policy.abort(self.isr, self.tracker, time.monotonic())
            # The node changed under us (a newer master): this master may not
            # acknowledge anything more.
            self._on_fenced("the in-sync node was changed by another member")
            return
        self._confirmed(change, version)

    def _confirmed(self, change: IsrState, version: int) -> None:
        log.info("in-sync set now %s (was %s)", sorted(change.isr), sorted(self.isr.isr))
        self.isr, self.isr_version = change, version
        self.policy.confirm(change, self.tracker, time.monotonic())
        self._release()

    async def _settle_doubt(self) -> None:
        """Read the in-sync node back and settle the write whose outcome was unknown."""
        proposed = self.policy.pending
        assert proposed is not None
        if self._read_isr is None:
            self._on_fenced("the outcome of an in-sync set write is unknown")
            return
        self._isr_busy = True
        try:
            read, version = await self._read_isr()
        except Exception as exc:
            log.warning("reading the in-sync set back failed, will retry: %r", exc)
            return
        finally:
            self._isr_busy = False
        if self.closed or not self.policy.doubtful:
            return
        outcome = reconcile(self.isr, self.isr_version, proposed, read, version)
        log.info("in-sync write of %s read back: %s", sorted(proposed.isr), outcome)
        if outcome == "written":
            self._confirmed(proposed, version)
        elif outcome == "not_written":
            self.policy.abort(self.isr, self.tracker, time.monotonic())
        else:
            self.policy.abort(self.isr, self.tracker, time.monotonic())
            self._on_fenced("the in-sync node was changed by another member")

    async def _leave_isr(self, member: str) -> None:
        """Take `member` out of the in-sync set in ZooKeeper before its store is cleared
        for a bulk copy: part of a store must never be electable. Returns early only if
        this master stops."""
        self.policy.evict(member)
        while self.policy.holds(self.isr, member) and not self.closed:
            await self.review_isr()
            if self.policy.holds(self.isr, member):
                await asyncio.sleep(0.02)

    def follower_left(self, member: str) -> None:
        self._followers.discard(member)
        self.tracker.follower_gone(member, time.monotonic())

    # -- the Follow service --------------------------------------------------------

    async def Follow(
        self,
        request_iterator: AsyncIterator[replication_pb2.FollowRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[bytes | replication_pb2.LogFrame]:
        try:
            first = await anext(aiter(request_iterator), None)
        except BadRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise
        if first is None:
            return
        if self.token and not hmac.compare_digest(first.token.encode(), self.token.encode()):
            log.warning(
                "refused replication from %s (%s): wrong securityToken",
                first.member or "?",
                context.peer(),
            )
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "wrong securityToken")
        if self.tls_members is not None:
            why = peer_refusal(
                context, first.member, self.tls_members, f"a member of group {self.group}"
            )
            if why is not None:
                log.warning("refused replication from %s (%s): %s", first.member or "?",
                            context.peer(), why)  # fmt: skip
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
        if self.closed:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no longer the master")
        member = first.member
        refused = self._may_follow(member)
        if refused is not None:
            log.warning("refused replication from %s (%s): %s", member, context.peer(), refused)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refused)
        if member == self.member or member in self._followers:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"{member} already follows")
        head = self.committer.position
        try:
            plan = catch_up_plan(self.log, self.isr.history, first.epoch, first.position, head)
        except StaleMaster as exc:
            self._on_fenced(str(exc))
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"no longer the master: {exc}")
            raise
        self._followers.add(member)
        held = 0 if isinstance(plan, Snapshot) else first.position
        self.tracker.follower_ack(member, held, held if self._local_sync else 0, time.monotonic())
        log.info(
            "%s follows from epoch %d position %d: %s", member, first.epoch, first.position, plan
        )

        # The last position sent on this stream: an ack beyond it is a lie, and would let
        # the tracker count writes this follower never received.
        # During a bulk copy nothing counts as held until its last chunk goes out.
        sent = 0 if isinstance(plan, Snapshot) else plan.from_position

        async def read_acks() -> None:
            async for request in request_iterator:
                if request.received > sent or request.synced > sent:
                    raise BadRequest(
                        f"{member} acknowledged position "
                        f"{max(request.received, request.synced)}, beyond the last sent, {sent}"
                    )
                self.tracker.follower_ack(
                    member, request.received, request.synced, time.monotonic()
                )
                self._release()

        reader = asyncio.create_task(read_acks())
        try:
            if isinstance(plan, Snapshot):
                # It rejoins, as any lagging member does, once it has caught up.
                await self._leave_isr(member)
                if self.closed:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "no longer the master")
                async for frame in self._snapshot(head):
                    if frame.snapshot.last:
                        sent = head
                        self.policy.readmit(member)
                    yield frame
            while not self.closed:
                if reader.done():
                    break
                wake = self._wake
                try:
                    entries = self.log.entries_after(sent, FRAME_BYTES)
                except OutOfWindow:
                    log.warning("%s fell out of the log window; it must reconnect", member)
                    break
                if entries:
                    sent = entries[-1].position
                    yield encode_log_frame(self.epoch, [e.payload for e in entries])
                    continue
                waiter = asyncio.ensure_future(wake.wait())
                await asyncio.wait([waiter, reader], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
            if reader.done() and not reader.cancelled():
                error = reader.exception()
                if isinstance(error, BadRequest):
                    log.warning("ending replication to %s: %s", member, error)
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError, BadRequest):
                await reader
            self.follower_left(member)
            self.policy.readmit(member)
            log.info("%s stopped following", member)

    async def _snapshot(self, head: int) -> AsyncIterator[replication_pb2.LogFrame]:
        """A fuzzy copy of the store from `head` on: keys change while it is read, and
        replaying the log after `head` over it yields the master's exact state."""
        after = b""
        first = True
        while True:
            rows = self.store.scan_all(after, SNAPSHOT_KEYS)
            last = len(rows) < SNAPSHOT_KEYS
            chunk = replication_pb2.SnapshotChunk(
                first=first, last=last, ops=to_pb_ops(rows), position=head, epoch=self.epoch
            )
            yield replication_pb2.LogFrame(epoch=self.epoch, snapshot=chunk)
            if last:
                return
            first = False
            after = rows[-1][0]
            await asyncio.sleep(0)


class Follower:
    """A slave's side: apply the master's log to the local store and acknowledge it."""

    def __init__(
        self,
        member: str,
        store: Store,
        replication_log: ReplicationLog,
        sync_mode: Sync | str,
        token: str,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.member = member
        # TLS to the master, presenting this member's certificate (None: plaintext).
        self.credentials = credentials
        self.store = store
        self.log = replication_log
        self.sync = Sync(sync_mode) is Sync.QUORUM_DISK
        self.token = token
        self.position = store.meta(META_POS)
        self.epoch = store.meta(META_EPOCH)
        # Called once a bulk copy has started (the store is marked for resync): the
        # group member republishes its node, which now says it is not electable.
        self.on_reset: Callable[[], None] | None = None

    async def follow(
        self, address: str, min_epoch: int, on_open: Callable[[], None] | None = None
    ) -> None:
        """Follow the master at `address` until the stream ends or fails; `on_open` is
        called once the stream is open (connected, the first request written)."""
        options = [
            ("grpc.max_receive_message_length", 256 * 1024 * 1024),
            ("grpc.keepalive_time_ms", 2_000),
            ("grpc.keepalive_timeout_ms", 2_000),
            ("grpc.http2.ping_timeout_ms", 2_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
        channel = (
            grpc.aio.insecure_channel(address, options=options)
            if self.credentials is None
            else grpc.aio.secure_channel(address, self.credentials, options=options)
        )
        async with channel:
            call = replication_pb2_grpc.ReplicationStub(channel).Follow()
            await call.write(
                replication_pb2.FollowRequest(
                    member=self.member, token=self.token, epoch=self.epoch, position=self.position
                )
            )
            if on_open is not None and channel.get_state() is grpc.ChannelConnectivity.READY:
                on_open()
            while True:
                frame = await call.read()
                if frame is grpc.aio.EOF:
                    return
                if frame.epoch < min_epoch:
                    raise ConnectionRefusedError(
                        f"master at {address} is at epoch {frame.epoch}, older than {min_epoch}"
                    )
                if frame.HasField("snapshot"):
                    self._apply_snapshot(frame.snapshot)
                    if not frame.snapshot.last and not frame.entries:
                        # Mid bulk copy the store holds no position yet: nothing to ack
                        # (the position from before the copy is not held any more).
                        continue
                if frame.entries:
                    self._apply(frame.entries)
                await call.write(
                    replication_pb2.FollowRequest(
                        received=self.position, synced=self.position if self.sync else 0
                    )
                )

    def _apply_snapshot(self, chunk: replication_pb2.SnapshotChunk) -> None:
        if chunk.first:
            log.info("receiving a bulk copy of the master's store")
            # Marked before anything is deleted, durably: a restart mid-copy finds a
            # store that must not be elected, and asks for a copy again.
            self.store.mark_reset()
            self.store.clear()
            self.position, self.epoch = self.store.meta(META_POS), self.store.meta(META_EPOCH)
            if self.on_reset is not None:
                self.on_reset()
        self.store.write(from_pb_ops(chunk.ops), sync=False)
        if chunk.last:
            self.store.write(
                [
                    (META_POS, chunk.position.to_bytes(8, "big")),
                    (META_EPOCH, chunk.epoch.to_bytes(8, "big")),
                ],
                sync=True,
            )
            self.position, self.epoch = chunk.position, chunk.epoch
            self.log.reset(chunk.position)
            log.info("bulk copy complete at position %d", chunk.position)
            self.store.finish_resync()

    def _apply(self, entries: Sequence[replication_pb2.LogEntry]) -> None:
        ops: list[Op] = []
        for entry in entries:
            if entry.position != self.position + 1:
                raise ConnectionAbortedError(
                    f"log gap: expected position {self.position + 1}, got {entry.position}"
                )
            ops.extend(from_pb_ops(entry.ops))
            self.position = entry.position
            self.epoch = entry.epoch
            self.log.append(entry.position, entry.epoch, entry, entry.ByteSize())
        # Entries carry their own position and epoch keys, so the store's meta follows.
        self.store.write(ops, sync=self.sync)
