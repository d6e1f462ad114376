"""A failover client with no live broker: it says what each address answered as it
tries, and `timeout` or `maxReconnectAttempts` bounds the wait with an error naming
them all. Real sockets on 127.0.0.1: two ports nothing listens on."""

from __future__ import annotations

import logging
import time

import pytest

from broker.client import Client, ConnectionLost
from tests.support.aio import run
from tests.support.procs import free_port


def test_reconnect_attempts_bound_the_wait_and_each_address_is_told(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = free_port(), free_port()
    url = f"failover://(tcp://127.0.0.1:{a},tcp://127.0.0.1:{b})?maxReconnectAttempts=2"

    async def scenario() -> None:
        started = time.monotonic()
        with pytest.raises(ConnectionLost) as lost:
            await Client.connect(url)
        assert time.monotonic() - started < 10
        text = str(lost.value)
        assert "after 6 attempts" in text, text
        assert f"127.0.0.1:{a}" in text and f"127.0.0.1:{b}" in text

    with caplog.at_level(logging.WARNING, logger="netbroker.client"):
        run(scenario())
    told = [r.getMessage() for r in caplog.records if "cannot connect to" in r.getMessage()]
    # Each address once (the same failure again is not repeated).
    assert len(told) == 2, told
    assert {f"127.0.0.1:{a}", f"127.0.0.1:{b}"} == {m.split()[3].rstrip(":") for m in told}


def test_timeout_bounds_the_wait() -> None:
    url = f"failover:(127.0.0.1:{free_port()})?timeout=700"

    async def scenario() -> None:
        started = time.monotonic()
        with pytest.raises(ConnectionLost, match=r"no broker accepted within 0.7 s after"):
            await Client.connect(url)
        assert time.monotonic() - started < 3

    run(scenario())
