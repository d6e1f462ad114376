from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.procs import BrokerProcess

pytest_plugins = ["tests.support.zk", "tests.support.uptools"]


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
