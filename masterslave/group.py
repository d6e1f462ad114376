"""One member of a master/slave group: election through ZooKeeper, then master or slave.

The choice of master is `choose_master`'s; replication is the Leader's and Follower's.
This controller feeds ZooKeeper's view into the choice and carries out the result:
it builds the broker core and opens the gate when promoted, follows the master as a
slave, and stops serving at once when it may no longer be master (ZooKeeper session
suspended, or the in-sync set rewritten by someone else).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import grpc

from broker.commit import GroupCommitter
from broker.config import BrokerConfig, master_fsyncs
from broker.core import Broker
from broker.gate import ComponentStatus, ServiceGate
from broker.pb import replication_pb2, replication_pb2_grpc
from broker.reconnect import Backoff
from broker.store import META_EPOCH, META_POS, Store
from masterslave.election import (
    Elect,
    IsrState,
    Keep,
    Member,
    Wait,
    choose_master,
    latest_nodes,
)
from masterslave.isr import new_epoch
from masterslave.replication import Follower, Leader, serialize_log_frame
from masterslave.replog import ReplicationLog
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
    sync: str
    min_insync: int
    weight: int = 1
    session_timeout: float = 1.0
    lag_timeout: float = 1.0
    commit_timeout: float = 10.0
    token: str = ""

    @property
    def replication_address(self) -> str:
        return f"{self.replication_host}:{self.replication_port}"


class GroupMember:
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
        self.role = "electing"
        self.epoch = 0
        self.master: Member | None = None
        self.leader: Leader | None = None
        self.broker: Broker | None = None
        self.log = ReplicationLog(
            max_entries=200_000, max_bytes=256 * 1024 * 1024, last=store.meta(META_POS)
        )
        self.follower = Follower(config.name, store, self.log, group.sync, group.token)
        self._follow_task: asyncio.Task[None] | None = None
        self._zk: ZkGroup | None = None
        self._lock = asyncio.Lock()
        self._again = False
        self._registered = False
        self.waiting_reason = "starting"
        # Why the last replication stream from the master ended (shown by status).
        self.replication_error = ""
        self._members: list[Member] = []
        self._last_decision: object = None
        self._started = False
        gate.sources.append(self.status)
        gate.close("electing", self._refusal())
        store.on_resynced = self._resynced

    # -- life cycle ----------------------------------------------------------------

    async def start(self) -> None:
        self._zk = ZkGroup(
            self.group.zookeeper, self.group.zk_path, self.group.session_timeout,
            self._changed, self._state,
        )  # fmt: skip
        await self._zk.start(timeout=30)
        await self._register()
        self._started = True
        await self._zk.watch()

    async def stop(self) -> None:
        await self._step_down("broker is shutting down", clean=True)
        if self._follow_task is not None:
            self._follow_task.cancel()
        if self._zk is not None:
            await self._zk.stop()

    def install(self, server: grpc.aio.Server) -> None:
        """The replication service, for the replication port's server."""
        # By hand rather than through the generated helper: log frames come encoded.
        follow = grpc.stream_stream_rpc_method_handler(
            _ReplicationService(self).Follow,
            request_deserializer=replication_pb2.FollowRequest.FromString,
            response_serializer=serialize_log_frame,
        )
        name = replication_pb2.DESCRIPTOR.services_by_name["Replication"].full_name
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(name, {"Follow": follow}),)
        )

    # -- ZooKeeper events (already on the loop) ------------------------------------

    def _changed(self) -> None:
        asyncio.get_running_loop().create_task(self._reconsider())

    def _state(self, state: str) -> None:
        log.info("ZooKeeper connection %s", state)
        if state in ("suspended", "lost") and self.role == "master":
            # Another member may be elected once our session ends: stop serving now.
            asyncio.get_running_loop().create_task(
                self._step_down(f"lost contact with ZooKeeper ({state})")
            )
        if state == "lost":
            self._registered = False
        if state == "connected" and self._started:
            self._changed()

    # -- the decision --------------------------------------------------------------

    def _node_data(self) -> dict[str, object]:
        return {
            "id": self.config.name,
            "address": self.group.replication_address,
            "client": self.gate.client_address,
            "position": self.follower.position if self.role != "master" else self._position(),
            "epoch": self.follower.epoch if self.role != "master" else self.epoch,
            "weight": self.group.weight,
            "elected": self.epoch if self.role == "master" else None,
            # A store reset after damage: not electable until its bulk copy is complete.
            **({"resync": True} if self.store.resync_pending else {}),
        }

    def _resynced(self) -> None:
        if self._zk is not None:
            asyncio.get_running_loop().create_task(self._zk.update(self._node_data()))

    def _position(self) -> int:
        return self.broker.committer.position if self.broker is not None else 0

    async def _register(self) -> None:
        assert self._zk is not None
        await self._zk.register(self._node_data())
        self._registered = True

    async def _reconsider(self) -> None:
        if self._lock.locked():
            self._again = True
            return
        async with self._lock:
            self._again = True
            while self._again:
                self._again = False
                try:
                    await self._decide()
                except Exception as exc:  # ZooKeeper hiccups: try again on the next event
                    log.warning("election step failed: %r", exc)
                    await asyncio.sleep(0.2)
                    self._again = True

    async def _decide(self) -> None:
        zk = self._zk
        assert zk is not None
        if not self._registered or not await zk.node_exists():
            await self._register()
        raw_isr, version = await zk.read_isr()
        isr = IsrState.parse(raw_isr) if raw_isr else None
        members = []
        for seq, data in await zk.members():
            try:
                members.append(Member.parse(data, seq))
            except ValueError as exc:
                log.warning("ignoring a malformed member node: %s", exc)
        self._members = members
        me = self.config.name
        if self.role == "master":
            if isr is None or isr.master != me or isr.epoch != self.epoch:
                await self._step_down("another member was elected")
            return
        decision = choose_master(members, isr, self.group.replicas)
        if decision != self._last_decision:
            log.info("election: %s (members %s)", decision, sorted(m.id for m in members))
            self._last_decision = decision
        if isinstance(decision, Wait):
            self.waiting_reason = decision.reason
            self._set_electing()
            return
        chosen = decision.member_id if isinstance(decision, Elect) else decision.master_id
        if chosen == me:
            await self._promote(isr, version)
            return
        # Its newest node: a restarted member may briefly have its dead session's too.
        master = latest_nodes(members).get(chosen)
        # The chosen member is master once it has written the in-sync node for its
        # epoch; its own node's "elected" mark may follow a moment later, and is not
        # watched, so the in-sync node is what counts here.
        is_master = isinstance(decision, Keep) or (isr is not None and isr.master == chosen)
        if is_master and master is not None:
            self._follow(master, isr.epoch if isr else 0)
        else:
            self.waiting_reason = f"waiting for {chosen} to take over"
            self._set_electing()

    def _set_electing(self) -> None:
        if self.role == "slave" and self.master is not None:
            return  # keep following until the new master is known
        self.role = "electing"
        self.gate.close("electing", self._refusal())

    def _refusal(self) -> str:
        where = f"group {self.group.name}"
        if self.role == "slave" and self.master is not None:
            return (
                f"broker {self.config.name} is a slave in {where}; "
                f"the master is {self.master.id} at {self.master.client}"
            )
        return f"broker {self.config.name} in {where} is not serving: {self.waiting_reason}"

    # -- slave ---------------------------------------------------------------------

    def _follow(self, master: Member, epoch: int) -> None:
        current = self.master
        if (
            self.role == "slave"
            and current is not None
            and (current.id, current.address, self.epoch) == (master.id, master.address, epoch)
        ):
            return
        if self._follow_task is not None:
            self._follow_task.cancel()
        self.role = "slave"
        self.master = master
        self.epoch = epoch
        self.replication_error = ""
        self.gate.close("slave", self._refusal())
        log.info("following %s at %s (epoch %d)", master.id, master.address, epoch)
        self._follow_task = asyncio.get_running_loop().create_task(self._follow_loop(master, epoch))

    async def _follow_loop(self, master: Member, epoch: int) -> None:
        backoff = Backoff(0.05, 1.0)
        while self.role == "slave" and self.master is master:
            try:
                await self.follower.follow(master.address, epoch)
                self.replication_error = "master closed the stream"
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                self.replication_error = f"{exc.code().name}: {exc.details()}"
            except Exception as exc:
                self.replication_error = f"{type(exc).__name__}: {exc}"
            log.info("replication from %s: %s", master.id, self.replication_error)
            await asyncio.sleep(backoff.next())

    # -- master --------------------------------------------------------------------

    async def _promote(self, isr: IsrState | None, version: int) -> None:
        assert self._zk is not None
        if self._follow_task is not None:
            self._follow_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow_task
            self._follow_task = None
        position = self.store.meta(META_POS)
        min_epoch = max([self.store.meta(META_EPOCH), *(m.epoch for m in self._members)])
        state = new_epoch(isr, self.config.name, position, min_epoch=min_epoch)
        written = await self._zk.write_isr(state.to_bytes(), version)
        if written is None:
            log.info("lost the race to become master; reconsidering")
            self._again = True
            return
        self.epoch = state.epoch
        self.role = "master"
        self.master = None
        committer = GroupCommitter(
            self.store, sync=master_fsyncs(self.group.sync), epoch=state.epoch
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
        )  # fmt: skip
        committer.replicator = leader
        broker = Broker(self.config, self.store, committer)
        await broker.start()
        leader.start()
        self.leader, self.broker = leader, broker
        self.gate.open(broker, "master")
        self.hooks.attach(broker)
        await self._zk.update(self._node_data())
        log.info(
            "master of group %s at epoch %d from position %d",
            self.group.name,
            state.epoch,
            position,
        )

    async def _write_isr(self, state: IsrState, version: int) -> int | None:
        assert self._zk is not None
        return await self._zk.write_isr(state.to_bytes(), version)

    def _fenced(self, reason: str) -> None:
        asyncio.get_running_loop().create_task(self._step_down(reason))

    async def _step_down(self, reason: str, clean: bool = False) -> None:
        if self.role != "master":
            return
        log.warning("no longer master of group %s: %s", self.group.name, reason)
        self.role = "electing"
        self.waiting_reason = reason
        self.gate.close("electing", self._refusal())
        broker, leader = self.broker, self.leader
        self.broker = self.leader = None
        if leader is not None:
            leader.stop(reason)
        if broker is not None:
            await self.hooks.detach()
            if clean:
                await broker.stop()
            else:
                broker.abort(f"broker {self.config.name} is no longer master: {reason}")
        # Our in-memory state now follows the store again, for the next election.
        self.follower.position = self.store.meta(META_POS)
        self.follower.epoch = self.store.meta(META_EPOCH)
        if not clean and self._zk is not None:
            with contextlib.suppress(Exception):
                await self._zk.update(self._node_data())
            self._again = True
            self._changed()

    def status(self) -> list[ComponentStatus]:
        if self.role == "master" and self.leader is not None:
            isr = ",".join(sorted(self.leader.isr.isr))
            detail = f"epoch {self.epoch}, position {self._position()}, in-sync {isr}"
            return [ComponentStatus("group", self.group.name, "master", detail)]
        if self.role == "slave" and self.master is not None:
            detail = (
                f"master {self.master.id} at {self.master.client}, "
                f"position {self.follower.position}"
            )
            if self.replication_error:
                detail += f", last replication error: {self.replication_error}"
            return [ComponentStatus("group", self.group.name, "slave", detail)]
        return [ComponentStatus("group", self.group.name, "electing", self.waiting_reason)]


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
        request_iterator: AsyncIterator[replication_pb2.FollowRequest],
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
        async for frame in leader.Follow(request_iterator, context):
            yield frame
