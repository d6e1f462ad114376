"""Pytest fixtures running real Apache ZooKeeper (registered by tests/conftest.py).

* `zookeeper`: a standalone server in tmp_path, started for the test and stopped after it.
* `zk_ensemble`: three servers (a leader and two followers) likewise.
* `kazoo_client`: a factory of started KazooClients, all stopped at the end.

Both servers are this module's `Ensemble`: `broker.cluster.zookeeper.Ensemble`
(`.connect_string`, `.leader()`, `.kill(i)`, ...) with the powers only tests use:
`.pause()`, `.resume()` and `.restart(i)`. Tests that start ZooKeeper themselves import it
from here too. A machine without Debian's zookeeper package fails these tests with the
install command rather than skipping them: master/slave groups cannot be tested without
it, and a skip would hide that.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.retry import KazooRetry

from broker.cluster.zookeeper import Ensemble as RunEnsemble
from broker.cluster.zookeeper import ZooKeeperServer


def _pause(server: ZooKeeperServer) -> None:
    """SIGSTOP: the process holds its sockets but answers nothing (a hung/cut-off node)."""
    server._signal(signal.SIGSTOP)
    server.paused = server.alive


def _resume(server: ZooKeeperServer) -> None:
    server._signal(signal.SIGCONT)
    server.paused = False


class Ensemble(RunEnsemble):
    """ZooKeeper servers as `netbroker up` runs them, plus what only tests do to them:
    freeze and thaw a server, start a killed one again."""

    def restart(self, index: int, timeout: float = 30.0) -> None:
        """Start server `index` again on the same ports and data, and wait until it serves."""
        server = self.servers[index]
        if server.alive:
            server.stop()
        server.spawn(die_with_parent=self.die_with_parent)
        self.wait_ready(timeout, indexes=[index])

    def pause(self, index: int | None = None) -> None:
        """SIGSTOP server `index`, or every server: clients time out as if cut off."""
        for i in self._indexes(index):
            _pause(self.servers[i])

    def resume(self, index: int | None = None) -> None:
        for i in self._indexes(index):
            _resume(self.servers[i])


@pytest.fixture
def zookeeper(tmp_path: Path) -> Iterator[Ensemble]:
    """A standalone ZooKeeper server on a free port of 127.0.0.1."""
    with Ensemble(tmp_path / "zookeeper", size=1) as zk:
        yield zk


@pytest.fixture
def zk_ensemble(tmp_path: Path) -> Iterator[Ensemble]:
    """A three-node ZooKeeper ensemble on 127.0.0.1, every node serving."""
    with Ensemble(tmp_path / "zk-ensemble", size=3) as zk:
        yield zk


@pytest.fixture
def kazoo_client() -> Iterator[Callable[..., KazooClient]]:
    """`kazoo_client(hosts, timeout=1.0)` -> a started KazooClient; all closed at the end.

    Reconnection retries stay under half a second apart: kazoo's default backoff doubles
    to a minute, so a client that failed a few times while ZooKeeper was down would
    then take far longer to come back than the failover being measured.
    """
    clients: list[KazooClient] = []

    def make(hosts: str, timeout: float = 1.0, **kwargs: object) -> KazooClient:
        retry = KazooRetry(max_tries=-1, delay=0.05, backoff=2, max_delay=0.5)
        client = KazooClient(hosts=hosts, timeout=timeout, connection_retry=retry, **kwargs)
        clients.append(client)
        client.start(timeout=10)
        return client

    yield make
    for client in clients:
        client.stop()
        client.close()
