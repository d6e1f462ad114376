"""Lock-file master/slave (`election: lockfile`): for members on one machine sharing one
store directory. The member holding the directory's lock is master; the others poll
the lock every 50 ms, so one takes over well within a second of the master's exit (the
kernel drops a dead process's lock at once), not ActiveMQ's 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from pathlib import Path

from broker.config import BrokerConfig
from broker.core.broker import Broker
from broker.core.store import Store
from broker.server.gate import ServiceGate
from broker.server.status import GroupStatus, Role
from masterslave.group import AttachHooks

log = logging.getLogger("netbroker.lockfile")

POLL_SECONDS = 0.05


class LockfileMember:
    def __init__(
        self, config: BrokerConfig, shared_dir: Path, gate: ServiceGate, hooks: AttachHooks
    ) -> None:
        self.config = config
        self.shared_dir = shared_dir
        self.lock_path = shared_dir / "master.lock"
        self.gate = gate
        self.hooks = hooks
        self.role = Role.SLAVE
        self.broker: Broker | None = None
        self.store: Store | None = None
        self._fd: int | None = None
        self._task: asyncio.Task[None] | None = None
        gate.sources.append(self.status)
        gate.close(Role.SLAVE, self._refusal())

    def _refusal(self) -> str:
        return (
            f"broker {self.config.name} is a slave in group {self.config.group}: "
            f"waiting for the lock on {self.lock_path}"
        )

    async def start(self) -> None:
        self.shared_dir.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        self._task = asyncio.get_running_loop().create_task(self._acquire())

    def _try_lock(self) -> bool:
        assert self._fd is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    async def _acquire(self) -> None:
        while not self._try_lock():
            await asyncio.sleep(POLL_SECONDS)
        log.info("took the lock on %s: master of group %s", self.lock_path, self.config.group)
        self.store = Store(self.shared_dir / "store")
        broker = Broker(self.config, self.store)
        await broker.start()
        self.broker = broker
        self.role = Role.MASTER
        self.gate.open(broker, Role.MASTER)
        self.hooks.attach(broker)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.broker is not None:
            self.gate.close(Role.STOPPED, f"broker {self.config.name} is shutting down")
            await self.hooks.detach()
            await self.broker.stop()
        if self.store is not None:
            self.store.close()
        if self._fd is not None:
            os.close(self._fd)  # releases the lock: a waiting member takes over

    def status(self) -> list[GroupStatus]:
        return [GroupStatus(self.config.group, self.role, lock=str(self.lock_path))]
