from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import BrokerProcess

pytest_plugins = ["tests.zk", "tests.uptools"]


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


def run(coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
    """Run a scenario on a fresh loop with a deadline, so a hang fails instead of stalling."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
