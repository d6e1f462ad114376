"""STOMP through `topologies/ab_c.yaml` with real processes, a real embedded ZooKeeper and
`kill -9`: a stomp.py producer on A, a stomp.py consumer on B's master, B's master killed
mid-stream and the consumer moved to the new one. Nothing receipted is lost, and every
repeat is marked redelivered. The slave's STOMP port refuses work with an ERROR."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from stomp.exception import StompException

from broker.client import Client
from tests.integration.test_up_groups import pid_of, roles
from tests.support.stomp_peer import Collector, RawStomp, connect
from tests.support.uptools import (
    Relocated,
    netbroker,
    wait_until,
)

UP_TIMEOUT = 60.0
N = 600


@pytest.fixture
def ab_c(relocated: Callable[..., Relocated]) -> Relocated:
    """ab_c.yaml relocated into tmp_path; everything it started is gone afterwards."""
    return relocated("ab_c.yaml")


def stomp_ports(t: Relocated) -> dict[str, int]:
    raw = yaml.safe_load(t.path.read_text())
    return {
        name: spec["stomp_port"]
        for group in raw["groups"].values()
        for name, spec in group["brokers"].items()
    }


def depths(t: Relocated) -> dict[str, object]:
    """Each serving broker's queues (name: depth), for a failure's message."""

    async def one(name: str) -> object:
        try:
            client = await Client.connect(t.url(name))
        except Exception as exc:
            return repr(exc)
        try:
            return {q.name: str(q).replace("\n", " ") for q in await client.queues()}
        finally:
            await client.close()

    return {name: asyncio.run(asyncio.wait_for(one(name), 10)) for name in ("a", "c")}


def more(listener: Collector, than: int) -> bool:
    return len(listener.messages) > than


def connect_when_serving(port: int, timeout: float = 30.0) -> tuple[Any, Collector]:
    """A STOMP connection once the broker at `port` serves (a slave answers ERROR)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn, listener = connect(port)
            if conn.is_connected() and not listener.errors:
                return conn, listener
            conn.disconnect()
        except (StompException, OSError):
            pass
        assert time.monotonic() < deadline, f"STOMP on {port} never served"
        time.sleep(0.2)


def test_stomp_producer_on_a_consumer_on_b_through_a_failover(
    ab_c: Relocated, tmp_path: Path
) -> None:
    t = ab_c
    r = netbroker("up", str(t.path), "--detach", "--timeout", str(UP_TIMEOUT), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ports = stomp_ports(t)
    assert (
        f"stomp: a at 127.0.0.1:{ports['a']}, b at 127.0.0.1:{ports['b']}, "
        f"c at 127.0.0.1:{ports['c']}"
    ) in r.stdout, r.stdout

    # The slave takes no STOMP work: ERROR, then close.
    raw = RawStomp(ports["c"])
    raw.write(b"CONNECT\naccept-version:1.2\nhost:c\n\n\0")
    refused = raw.read_until_closed()
    assert refused.startswith(b"ERROR") and b"message:" in refused, refused
    raw.close()

    # The producer on A: N persistent SENDs, each with a receipt, at a steady pace that
    # goes on through the failover (A is not part of B).
    producer, plist = connect(ports["a"])
    sent_all = threading.Event()

    def produce() -> None:
        for i in range(N):
            producer.send(
                "/queue/orders",
                f"m{i}".encode(),
                headers={"persistent": "true", "receipt": f"r{i}"},
            )
            time.sleep(0.004)
        sent_all.set()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()

    # The consumer on B's master acknowledges each message; B's master dies mid-stream.
    seen: dict[bytes, int] = {}
    unmarked: list[bytes] = []

    def take(frames: list[Any]) -> None:
        for frame in frames:
            body = bytes(frame.body)
            if body in seen and frame.headers.get("redelivered") != "true":
                unmarked.append(body)
            seen[body] = seen.get(body, 0) + 1

    consumer, clist = connect_when_serving(ports["b"])
    consumer.subscribe("/queue/orders", id="s", ack="client-individual")
    acked = 0
    while len(clist.messages) < N // 4:
        clist.wait_messages(acked + 1, timeout=30)
        for frame in clist.messages[acked:]:
            consumer.ack(frame.headers["ack"])
        acked = len(clist.messages)
    os.kill(pid_of(t, "b"), signal.SIGKILL)
    clist.wait(lambda: clist.disconnected, 10, "the consumer to see b gone")
    take(clist.messages)
    wait_until(lambda: roles(t, tmp_path).get("c") == "master", 30, "c to be master")

    consumer, clist = connect_when_serving(ports["c"])
    consumer.subscribe("/queue/orders", id="s", ack="client-individual")
    assert sent_all.wait(60), "the producer on A stalled"
    plist.wait(lambda: len(plist.receipts) == N or bool(plist.errors), 30, "every receipt")
    assert not plist.errors, [e.headers for e in plist.errors]
    receipted = {f"m{i}".encode() for i in range(N) if f"r{i}" in plist.receipts}
    assert len(receipted) == N
    deadline = time.monotonic() + 120
    done = 0
    while not receipted <= set(seen) | {bytes(f.body) for f in clist.messages}:
        assert time.monotonic() < deadline, (
            f"{len(receipted - set(seen) - {bytes(f.body) for f in clist.messages})} missing"
        )
        try:
            clist.wait(functools.partial(more, clist, done), 90, "more messages from c")
        except AssertionError:
            got = set(seen) | {bytes(f.body) for f in clist.messages}
            missing = sorted(receipted - got, key=lambda b: int(b[1:]))
            raise AssertionError(
                f"{len(missing)} missing {missing[:20]}; depths {depths(t)}"
            ) from None
        for frame in clist.messages[done:]:
            consumer.ack(frame.headers["ack"])
        done = len(clist.messages)
    assert clist.quiet(1.0) == 0
    take(clist.messages)
    consumer.disconnect()
    producer.disconnect()
    thread.join(5)
    assert receipted <= set(seen), f"{len(receipted - set(seen))} receipted messages lost"
    assert not unmarked, f"{len(unmarked)} unmarked repeats: {unmarked[:5]}"
