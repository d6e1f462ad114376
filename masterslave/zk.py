"""kazoo glue for one group member: its own node, the members, the in-sync-set node.

kazoo calls back on its own threads; every event is handed to the broker's loop with
`call_soon_threadsafe`, and blocking kazoo calls run in the default executor, so no
state is shared across threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError
from kazoo.retry import KazooRetry

from masterslave.election import parse_seq

log = logging.getLogger("netbroker.zk")


class ZkGroup:
    def __init__(
        self,
        hosts: str,
        path: str,
        session_timeout: float,
        on_change: Callable[[], None],
        on_state: Callable[[str], None],
        on_alive: Callable[[float], None] | None = None,
    ) -> None:
        """`on_alive(sent_at)` is called (on the loop) whenever a request begun at
        `sent_at` (monotonic) was answered: the server touched our session after that,
        so it cannot expire before `sent_at + session timeout`."""
        self.path = path.rstrip("/")
        self.members_path = f"{self.path}/members"
        self.isr_path = f"{self.path}/isr"
        self._on_change = on_change
        self._on_state = on_state
        self._on_alive = on_alive
        self._heartbeat: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self.zk = KazooClient(
            hosts=hosts,
            timeout=session_timeout,
            # Reconnect quickly and forever: losing ZooKeeper must not kill the broker.
            connection_retry=KazooRetry(max_tries=-1, delay=0.05, max_delay=0.5),
            command_retry=KazooRetry(max_tries=3, delay=0.05, max_delay=0.5),
        )
        self.zk.add_listener(self._state_listener)
        self.node: str | None = None

    # -- events from kazoo's threads --------------------------------------------------

    def _state_listener(self, state: str) -> None:
        name = {
            KazooState.SUSPENDED: "suspended",
            KazooState.LOST: "lost",
            KazooState.CONNECTED: "connected",
        }.get(state, str(state))
        self._loop.call_soon_threadsafe(self._on_state, name)

    def _changed(self, *_: Any) -> None:
        self._loop.call_soon_threadsafe(self._on_change)

    # -- calls, run off the loop ----------------------------------------------------

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        sent_at = time.monotonic()
        result = await self._loop.run_in_executor(None, lambda: fn(*args, **kwargs))
        if self._on_alive is not None:
            self._on_alive(sent_at)
        return result

    def start_heartbeat(self, interval: float) -> None:
        """Ask ZooKeeper something small every `interval` s and report each answer.

        kazoo's own pings are invisible from outside; these answers tell the member how
        long its session is certainly still alive while the connection is suspended.
        Asynchronous kazoo calls: a request queued while suspended ties up no thread.
        """

        async def beat() -> None:
            while True:
                sent_at = time.monotonic()
                answered: asyncio.Future[bool] = self._loop.create_future()

                def done(result: Any, answered: asyncio.Future[bool] = answered) -> None:
                    self._loop.call_soon_threadsafe(_settle, answered, result.successful())

                try:
                    self.zk.exists_async(self.members_path).rawlink(done)
                    await asyncio.wait_for(answered, 10 * interval)
                except Exception:  # only answers count; the next beat retries
                    pass
                else:
                    if self._on_alive is not None and answered.result():
                        self._on_alive(sent_at)
                await asyncio.sleep(interval)

        def _settle(future: asyncio.Future[bool], ok: bool) -> None:
            if not future.done():
                future.set_result(ok)

        self._heartbeat = self._loop.create_task(beat(), name="zk-heartbeat")

    async def start(self, timeout: float) -> None:
        await self._call(self.zk.start, timeout=timeout)
        await self._call(self.zk.ensure_path, self.members_path)

    async def watch(self) -> None:
        """Report changes of the members and the in-sync set from now on. (Setting a
        watch reads the node, retrying while ZooKeeper is away: off the loop too.)"""
        await self._call(self.zk.ChildrenWatch, self.members_path, self._changed)
        await self._call(self.zk.DataWatch, self.isr_path, self._changed)

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        # A clean close deletes our ephemeral node at once: the others elect in ms.
        await self._call(self.zk.stop)
        await self._call(self.zk.close)

    async def register(self, data: dict[str, Any]) -> None:
        self.node = await self._call(
            self.zk.create,
            f"{self.members_path}/m-",
            json.dumps(data).encode(),
            ephemeral=True,
            sequence=True,
        )
        log.info("registered as %s", self.node)

    async def update(self, data: dict[str, Any]) -> None:
        if self.node is not None:
            try:
                await self._call(self.zk.set, self.node, json.dumps(data).encode())
            except NoNodeError:
                self.node = None  # the session expired; re-registered on reconnect

    async def node_exists(self) -> bool:
        return self.node is not None and await self._call(self.zk.exists, self.node) is not None

    async def node_alive_since(self) -> float | None:
        """The time (monotonic) a request was sent that found our member node, so the
        session was alive at the server after it; None if the node is gone (the session
        expired, whatever session kazoo holds now) or ZooKeeper did not answer."""
        node = self.node
        if node is None:
            return None
        sent_at = time.monotonic()
        try:
            stat = await self._loop.run_in_executor(None, self.zk.exists, node)
        except Exception:
            return None
        return sent_at if stat is not None else None

    async def members(self) -> list[tuple[int, bytes]]:
        """(sequence number, data) of every registered member."""
        out = []
        for child in await self._call(self.zk.get_children, self.members_path):
            try:
                data, _ = await self._call(self.zk.get, f"{self.members_path}/{child}")
            except NoNodeError:
                continue  # left meanwhile
            try:
                out.append((parse_seq(child), data))
            except ValueError:
                log.warning("ignoring member node %s: not a sequential name", child)
        return out

    async def read_isr(self) -> tuple[bytes | None, int]:
        """The in-sync-set node's data and version (None, -1 when absent)."""
        try:
            data, stat = await self._call(self.zk.get, self.isr_path)
        except NoNodeError:
            return None, -1
        return data, stat.version

    async def write_isr(self, data: bytes, version: int) -> int | None:
        """Compare-and-set the in-sync-set node; its new version, or None if we lost."""
        try:
            if version < 0:
                await self._call(self.zk.create, self.isr_path, data)
                return 0
            stat = await self._call(self.zk.set, self.isr_path, data, version=version)
            return stat.version
        except (BadVersionError, NodeExistsError, NoNodeError):
            return None
