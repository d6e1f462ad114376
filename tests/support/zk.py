"""Pytest fixtures running real Apache ZooKeeper (registered by tests/conftest.py).

* `zookeeper`: a standalone server in tmp_path, started for the test and stopped after it.
* `zk_ensemble`: three servers (a leader and two followers) likewise.
* `kazoo_client`: a factory of started KazooClients, all stopped at the end.

Both servers are `broker.cluster.zookeeper.Ensemble` objects: `.connect_string`, `.leader()`,
`.kill(i)`, `.pause()`, `.resume()`, `.restart(i)`, ... A machine without Debian's
zookeeper package fails these tests with the install command rather than skipping them:
master/slave groups cannot be tested without it, and a skip would hide that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.retry import KazooRetry

from broker.cluster.zookeeper import Ensemble


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
