"""One member of a master/slave group: election through ZooKeeper, then master or slave.

What to do is `MemberRole`'s (masterslave/role.py): the choice of master, when to stop
serving (session lost, or suspended past the moment it could have expired; the in-sync
set rewritten by someone else), whom to follow. Replication is the Leader's and
Follower's. This adapter feeds ZooKeeper's view and the leader's reports into the
machine and carries out its actions: it builds the broker core and opens the gate when
promoted, closes the gate (ending every open stream) when told to stop serving, and
follows the master as a slave.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import grpc

from broker.config import BrokerConfig, Sync
from broker.core.broker import Broker
from broker.core.commit import GroupCommitter
from broker.core.store import META_EPOCH, META_POS, Store
from broker.pb import replication_pb2, replication_pb2_grpc
from broker.reconnect import Backoff
from broker.security.tls import TlsMaterial
from broker.server.gate import ServiceGate
from broker.server.status import GroupStatus, Role
from broker.server.tls import peer_channel_credentials
from masterslave.election import IsrState, Member
from masterslave.isr import new_epoch
from masterslave.lag import replica_lags
from masterslave.liveness import gone
from masterslave.replication import (
    Follower,
    Leader,
    parse_follow_requests,
    serialize_log_frame,
)
from masterslave.replog import ReplicationLog
from masterslave.role import (
    Action,
    Alive,
    Connected,
    Event,
    Fenced,
    Follow,
    GroupRead,
    Lost,
    MasterGone,
    MemberRole,
    ReadGroup,
    Refuse,
    Register,
    Registered,
    Serve,
    Shutdown,
    StopFollowing,
    StopServing,
    Suspended,
    TakeOver,
    TakeOverFailed,
    Tick,
    TookOver,
    UpdateNode,
    WakeAt,
)
from masterslave.zk import ZkGroup

log = logging.getLogger("netbroker.group")


@dataclass(frozen=True)
class GroupConfig:
    name: str
    zookeeper: str
    zk_path: str
    replication_host: str
    replication_port: int
    replicas: int
    sync: Sync
    min_insync: int
    weight: int = 1
    session_timeout: float = 1.0
    lag_timeout: float = 1.0
    commit_timeout: float = 10.0
    token: str = ""
    # TLS on the replication port and to the master (None: plaintext), and the members
    # whose certificates may follow (empty: any the CA signed).
    tls: TlsMaterial | None = None
    members: tuple[str, ...] = ()

    @property
    def replication_address(self) -> str:
        return f"{self.replication_host}:{self.replication_port}"


class GroupMember:
    """Carries out a `MemberRole`'s actions: ZooKeeper calls, the gate, Leader/Follower.

    I/O actions run one at a time, in order, on a worker task: a step-down's teardown
    finishes before a re-election builds the next core. Closing the gate (which ends
    every open stream) and stopping the leader happen at once, before any await.
    """

    def __init__(
        self,
        config: BrokerConfig,
        group: GroupConfig,
        store: Store,
        gate: ServiceGate,
        attach: AttachHooks,
    ) -> None:
        self.config = config
        self.group = group
        self.store = store
        self.gate = gate
        self.hooks = attach
        self.machine = MemberRole(
            config.name, group.name, group.replicas, group.session_timeout,
            fast_takeover=group.sync.quorum,
        )  # fmt: skip
        self.leader: Leader | None = None
        self.broker: Broker | None = None
        self.log = ReplicationLog(
            max_entries=200_000, max_bytes=256 * 1024 * 1024, last=store.meta(META_POS)
        )
        self.follower = Follower(
            config.name, store, self.log, group.sync, group.token,
            None if group.tls is None else peer_channel_credentials(group.tls),
        )  # fmt: skip
        self._follow_task: asyncio.Task[None] | None = None
        self._zk: ZkGroup | None = None
        # Why the last replication stream from the master ended (shown by status).
        self.replication_error = ""
        self._jobs: collections.deque[Callable[[], Awaitable[None]]] = collections.deque()
        # The teardown of a core that stopped serving: started at once, not queued behind
        # ZooKeeper work (which may wait for an unreachable ZooKeeper, the very reason
        # for stepping down); the next take-over waits for it.
        self._teardown: asyncio.Task[None] | None = None
        self._queued: set[str] = set()
        self._work = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._wake: asyncio.TimerHandle | None = None
        self._last_decision: object = None
        gate.sources.append(self.status)
        gate.close(Role.ELECTING, self.machine.refusal())
        store.on_resynced = self._resynced
        self.follower.on_reset = self._resynced  # the node then says "resync"

    @property
    def role(self) -> Role:
        return self.machine.role

    @property
    def epoch(self) -> int:
        return self.machine.epoch

    @property
    def master(self) -> Member | None:
        return self.machine.master

    # -- life cycle ----------------------------------------------------------------

    async def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run_jobs(), name="group")
        self._zk = ZkGroup(
            self.group.zookeeper, self.group.zk_path, self.group.session_timeout,
            self._changed, self._state, self._alive,
        )  # fmt: skip
        await self._zk.start(timeout=30)
        await self._zk.watch()
        # Each answer touches the session at the server, so a crashed member's session
        # expires that much later after its last beat: every tenth of the timeout cost
        # ~0.25 s of failover against a fifth (bench_failover medians 1.41 s vs 1.16 s).
        self._zk.start_heartbeat(self.group.session_timeout / 5)

    async def stop(self) -> None:
        self._feed(Shutdown())
        # What ZooKeeper work is queued or under way is moot now, and may wait for a
        # ZooKeeper that is gone (a shutdown must not hang on it): only the teardown of
        # the core, which runs on its own, is left to wait for, bounded.
        self._jobs.clear()
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        if self._teardown is not None:
            await asyncio.wait([self._teardown], timeout=10)
        if self._follow_task is not None:
            self._follow_task.cancel()
        if self._zk is not None:
            await self._zk.stop()

    def install(self, server: grpc.aio.Server) -> None:
        """The replication service, for the replication port's server."""
        # By hand rather than through the generated helper: log frames come encoded, and
        # requests are parsed in the handler so that garbage gets INVALID_ARGUMENT.
        follow: grpc.RpcMethodHandler[bytes, bytes | replication_pb2.LogFrame]
        follow = grpc.stream_stream_rpc_method_handler(
            _ReplicationService(self).Follow,
            request_deserializer=None,
            response_serializer=serialize_log_frame,
        )
        name = replication_pb2.DESCRIPTOR.services_by_name["Replication"].full_name
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(name, {"Follow": follow}),)
        )

    # -- events in -----------------------------------------------------------------

    def _changed(self) -> None:
        # A watch fired: read again; the machine decides once the read is in.
        self._do(ReadGroup())

    def _state(self, state: str) -> None:
        log.info("ZooKeeper connection %s", state)
        now = time.monotonic()
        kinds: dict[str, type[Connected] | type[Suspended] | type[Lost]] = {
            "connected": Connected,
            "suspended": Suspended,
            "lost": Lost,
        }
        event = kinds.get(state)
        if event is not None:
            self._feed(event(now))

    def _alive(self, sent_at: float) -> None:
        self._feed(Alive(sent_at))

    def _feed(self, event: Event) -> None:
        for action in self.machine.handle(event):
            self._do(action)
        decision = self.machine.decision
        if decision != self._last_decision:
            log.info("election: %s (members %s)", decision, sorted(self.machine.members))
            self._last_decision = decision

    # -- actions out ---------------------------------------------------------------

    def _do(self, action: Action) -> None:
        match action:
            case Register():
                self._queue("register", self._register)
            case ReadGroup():
                self._queue("read", self._read_group)
            case TakeOver():
                self._queue("takeover", lambda: self._take_over(action))
            case Serve():
                assert self.broker is not None
                self.gate.open(self.broker, Role.MASTER)
                self.hooks.attach(self.broker)
                log.info(
                    "master of group %s at epoch %d from position %d",
                    self.group.name, action.epoch, self.store.meta(META_POS),
                )  # fmt: skip
            case StopServing():
                self._stop_serving(action)
            case Follow():
                self._follow(action.master, action.epoch)
            case StopFollowing():
                if self._follow_task is not None:
                    self._follow_task.cancel()
                    self._follow_task = None
            case Refuse():
                self.gate.close(action.role, action.refusal)
            case UpdateNode():
                self._queue("update", self._update_node)
            case WakeAt():
                if self._wake is not None:
                    self._wake.cancel()
                delay = max(0.0, action.at - time.monotonic())
                self._wake = asyncio.get_running_loop().call_later(
                    delay, lambda: self._feed(Tick(time.monotonic()))
                )

    def _queue(self, kind: str, job: Callable[[], Awaitable[None]]) -> None:
        # A read, registration or node update already waiting covers a new one.
        if kind in ("read", "register", "update"):
            if kind in self._queued:
                return
            self._queued.add(kind)

            async def once() -> None:
                self._queued.discard(kind)
                await job()

            self._jobs.append(once)
        else:
            self._jobs.append(job)
        self._work.set()

    async def _run_jobs(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            while self._jobs:
                job = self._jobs.popleft()
                try:
                    await job()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # ZooKeeper hiccups: read again shortly
                    log.warning("group step failed: %r", exc)
                    await asyncio.sleep(0.2)
                    if not self.machine.stopped:
                        self._do(ReadGroup())

    async def _register(self) -> None:
        assert self._zk is not None
        if self.machine.session != "connected":
            return  # registered on the next Connected
        # A read that raced with the last registration may ask again: one node a session.
        if not await self._zk.node_exists():
            await self._zk.register(self._node_data())
        self._feed(Registered())

    async def _read_group(self) -> None:
        zk = self._zk
        assert zk is not None
        node_present = await zk.node_exists()
        raw_isr, version = await zk.read_isr()
        isr = IsrState.parse(raw_isr) if raw_isr else None
        members = []
        for seq, data in await zk.members():
            try:
                members.append(Member.parse(data, seq))
            except ValueError as exc:
                log.warning("ignoring a malformed member node: %s", exc)
        self._feed(GroupRead(tuple(members), isr, version, node_present))

    async def _update_node(self) -> None:
        if self._zk is not None:
            with contextlib.suppress(Exception):
                await self._zk.update(self._node_data())

    def _node_data(self) -> dict[str, object]:
        master = self.role == Role.MASTER
        return {
            "id": self.config.name,
            "address": self.group.replication_address,
            "client": self.gate.client_address,
            "position": self._position() if master else self.follower.position,
            "epoch": self.epoch if master else self.follower.epoch,
            "weight": self.group.weight,
            "elected": self.epoch if master else None,
            # A store reset after damage: not electable until its bulk copy is complete.
            **({"resync": True} if self.store.resync_pending else {}),
        }

    def _resynced(self) -> None:
        self._queue("update", self._update_node)

    def _position(self) -> int:
        return self.broker.committer.position if self.broker is not None else 0

    # -- slave ---------------------------------------------------------------------

    def _follow(self, master: Member, epoch: int) -> None:
        if self._follow_task is not None:
            self._follow_task.cancel()
        self.replication_error = ""
        log.info("following %s at %s (epoch %d)", master.id, master.address, epoch)
        self._follow_task = asyncio.get_running_loop().create_task(self._follow_loop(master, epoch))

    async def _follow_loop(self, master: Member, epoch: int) -> None:
        backoff = Backoff(0.05, 1.0)
        # Whether a stream to this master's process was ever open: only then does a
        # refused connection to its port say the process died (rather than that the
        # address never led to it).
        reached = False
        probe: asyncio.Task[None] | None = None

        def opened() -> None:
            nonlocal reached
            reached = True

        async def probe_master() -> None:
            if await gone(master.address):
                log.warning(
                    "master %s is gone: its replication port %s refuses connections",
                    master.id, master.address,
                )  # fmt: skip
                self._feed(MasterGone(master.seq))

        try:
            while self.role == Role.SLAVE and self.master is master:
                try:
                    await self.follower.follow(master.address, epoch, on_open=opened)
                    self.replication_error = "master closed the stream"
                except asyncio.CancelledError:
                    raise
                except grpc.aio.AioRpcError as exc:
                    self.replication_error = f"{exc.code().name}: {exc.details()}"
                except Exception as exc:
                    self.replication_error = f"{type(exc).__name__}: {exc}"
                log.info("replication from %s: %s", master.id, self.replication_error)
                # At once, not after the backoff: a kill -9 shows here within
                # milliseconds, and the election waits for nothing else. Beside the
                # reconnects, so that probing a live master delays none of them.
                if reached and self.machine.fast_takeover and (probe is None or probe.done()):
                    probe = asyncio.get_running_loop().create_task(probe_master())
                await asyncio.sleep(backoff.next())
        finally:
            if probe is not None:
                probe.cancel()

    # -- master --------------------------------------------------------------------

    async def _take_over(self, action: TakeOver) -> None:
        try:
            await self._build_master(action)
        except Exception as exc:
            # Whatever failed, the machine must hear of it or it waits for this forever.
            log.warning("taking over failed: %r", exc)
            self._feed(TakeOverFailed(f"taking over failed: {exc!r}"))

    async def _build_master(self, action: TakeOver) -> None:
        assert self._zk is not None
        if self._teardown is not None:
            # The last core's bridges and streams are gone before the next one serves.
            await asyncio.wait([self._teardown])
        if self._follow_task is not None:
            self._follow_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow_task
            self._follow_task = None
        position = self.store.meta(META_POS)
        min_epoch = max(self.store.meta(META_EPOCH), action.min_epoch)
        state = new_epoch(action.isr, self.config.name, position, min_epoch=min_epoch)
        written = await self._zk.write_isr(state.to_bytes(), action.isr_version)
        if written is None:
            log.info("lost the race to become master; reconsidering")
            self._feed(TakeOverFailed("another member took over first"))
            return
        committer = GroupCommitter(
            self.store, sync=self.group.sync.fsyncs, epoch=state.epoch
        )
        if self.log.last != position:
            # Keep the window this member filled while following (it ends where the store
            # does): followers a little behind then stream instead of taking a bulk copy.
            self.log.reset(position)
        leader = Leader(
            member=self.config.name, store=self.store, committer=committer, isr=state,
            isr_version=written, write_isr=self._write_isr, replication_log=self.log,
            sync_mode=self.group.sync, min_insync=self.group.min_insync,
            lag_timeout=self.group.lag_timeout, commit_timeout=self.group.commit_timeout,
            token=self.group.token, on_fenced=self._fenced, group=self.group.name,
            may_follow=self._may_follow, read_isr=self._read_isr,
            tls_members=None if self.group.tls is None else self.group.members,
        )  # fmt: skip
        committer.replicator = leader
        broker = Broker(self.config, self.store, committer)
        await broker.start()
        # Starting a core that holds a large backlog takes seconds (600,000 messages:
        # 1.5-2.5 s here) during which the loop, and the heartbeat on it, mostly stall:
        # the last answer on record is then older than the grace, and the new master
        # stopped the moment it served, was elected again and stopped again, for good.
        # One round trip that finds our own member node shows that the session is still
        # alive, as the next heartbeat would have; without that, the machine stops
        # serving at once as before.
        alive = await self._zk.node_alive_since()
        if alive is not None:
            self._feed(Alive(alive))
        leader.start()
        self.leader, self.broker = leader, broker
        self._feed(TookOver(state.epoch))

    def _may_follow(self, member: str) -> str | None:
        """None if `member` may follow this master, else why not."""
        registered = self.machine.members - {self.config.name}
        if member in registered:
            return None
        listed = ", ".join(sorted(registered)) or "none"
        return (
            f"{member!r} is not a registered member of group {self.group.name} "
            f"(registered under {self.group.zk_path}: {listed})"
        )

    async def _write_isr(self, state: IsrState, version: int) -> int | None:
        assert self._zk is not None
        return await self._zk.write_isr(state.to_bytes(), version)

    async def _read_isr(self) -> tuple[IsrState | None, int]:
        assert self._zk is not None
        raw, version = await self._zk.read_isr()
        return (IsrState.parse(raw) if raw else None), version

    def _fenced(self, reason: str) -> None:
        self._feed(Fenced(reason))

    def _stop_serving(self, action: StopServing) -> None:
        log.warning("no longer master of group %s: %s", self.group.name, action.reason)
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        self.gate.close(action.role, action.refusal)
        broker, leader = self.broker, self.leader
        self.broker = self.leader = None
        if leader is not None:
            leader.stop(action.reason)
        if broker is not None and not action.clean:
            broker.abort(f"broker {self.config.name} is no longer master: {action.reason}")
        # Our in-memory state now follows the store again, for the next election.
        self.follower.position = self.store.meta(META_POS)
        self.follower.epoch = self.store.meta(META_EPOCH)

        previous = self._teardown

        async def teardown() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            if broker is not None:
                await self.hooks.detach()
                if action.clean:
                    await broker.stop()

        self._teardown = asyncio.get_running_loop().create_task(teardown(), name="teardown")

    def status(self) -> list[GroupStatus]:
        name = self.group.name
        elections, won = self.machine.elections, self.machine.became_master
        if self.role == Role.MASTER and self.leader is not None:
            head = self._position()
            return [
                GroupStatus(
                    name,
                    Role.MASTER,
                    epoch=self.epoch,
                    position=head,
                    in_sync=tuple(sorted(self.leader.isr.isr)),
                    lags=replica_lags(self.leader.tracker, time.monotonic(), head),
                    elections=elections,
                    became_master=won,
                )
            ]
        if self.role == Role.SLAVE and self.master is not None:
            return [
                GroupStatus(
                    name,
                    Role.SLAVE,
                    position=self.follower.position,
                    master=self.master.id,
                    master_address=self.master.client,
                    replication_error=self.replication_error,
                    elections=elections,
                    became_master=won,
                )
            ]
        return [
            GroupStatus(
                name,
                Role.ELECTING,
                waiting=self.machine.waiting_reason,
                elections=elections,
                became_master=won,
            )
        ]


class AttachHooks(Protocol):
    """What a newly promoted master plugs in and a demoted one unplugs (the assembly
    hands the network of brokers, which has exactly these two methods)."""

    def attach(self, broker: Broker) -> None: ...

    async def detach(self) -> None: ...


class _ReplicationService(replication_pb2_grpc.ReplicationServicer):
    def __init__(self, member: GroupMember) -> None:
        self.member = member

    async def Follow(
        self,
        request_iterator: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[bytes | replication_pb2.LogFrame]:
        leader = self.member.leader
        if leader is None:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"broker {self.member.config.name} is not the master of group "
                f"{self.member.group.name}",
            )
        assert leader is not None
        async for frame in leader.Follow(parse_follow_requests(request_iterator), context):
            yield frame
