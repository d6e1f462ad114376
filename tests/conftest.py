from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.procs import BrokerProcess

pytest_plugins = ["tests.support.zk", "tests.support.uptools"]


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (scripts/test runs the suite in two sessions side by side),
    each session and every process it starts picks ports in a slice of its own
    (broker/ports.py), so that two sessions never pick the same port to bind later."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and count.isdigit():
        os.environ["NETBROKER_PORT_SLICE"] = f"{worker[2:]}/{count}"


@pytest.fixture(autouse=True, scope="session")
def _private_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`up`'s registry of running clusters (broker/cluster/registry.py) in a directory of
    the test run's own, for the CLI processes the tests start too: never the user's."""
    before = os.environ.get("NETBROKER_STATE_HOME")
    os.environ["NETBROKER_STATE_HOME"] = str(tmp_path_factory.mktemp("registry"))
    yield
    if before is None:
        del os.environ["NETBROKER_STATE_HOME"]
    else:
        os.environ["NETBROKER_STATE_HOME"] = before


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[Callable[..., BrokerProcess]]:
    """Factory of started broker processes; every one is stopped at the end."""
    started: list[BrokerProcess] = []

    def start(name: str = "a", *args: str, port: int = 0) -> BrokerProcess:
        proc = BrokerProcess(name, tmp_path / name, port=port, args=args)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def broker(brokers: Callable[..., BrokerProcess]) -> BrokerProcess:
    return brokers("a")
