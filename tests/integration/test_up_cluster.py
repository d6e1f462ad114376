"""`netbroker up` with real broker processes: the shipped topologies come up with every
bridge up, carry messages end to end, and `netbroker down` leaves nothing running.

Every test runs a shipped topology rewritten into tmp_path (`relocated`): free ports and
a data directory under tmp_path, so a test never touches a real deployment's ports or
run/ directory. Processes are stopped by `netbroker down` in a finalizer, with a /proc
sweep behind it that kills (and fails on) anything left.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from broker.client import Client
from broker.cluster.processes import pid_alive
from broker.cluster.state import STATE_FILE
from broker.cluster.zookeeper import free_ports
from tests.support.uptools import (
    UP_TIMEOUT,
    Relocated,
    assert_all_bridges_up,
    broker_pids,
    columns,
    netbroker,
    wait_until,
)


async def _from_a_to_c(t: Relocated, n: int) -> None:
    """n messages sent on a reach a consumer on c, each exactly once, none left behind."""
    producer = await Client.connect(t.url("a"))
    consumer_client = await Client.connect(t.url("c"))
    try:
        consumer = await consumer_client.subscribe("orders", prefetch=100)
        bodies = [f"order-{i}".encode() for i in range(n)]
        await asyncio.gather(*(producer.send("orders", body) for body in bodies))
        got: list[bytes] = []
        while len(got) < n:
            d = await consumer.receive(timeout=10)
            assert d is not None, f"only {len(got)} of {n} arrived on c"
            got.append(bytes(d.body))
            d.ack()
        # Anything more would be a duplicate: give it a moment to show up.
        extra = await consumer.receive(timeout=1)
        assert extra is None, f"duplicate delivery {extra.body!r}"
        await consumer.close()
        assert sorted(got) == sorted(bodies)
        assert len(set(got)) == n

        async def depths() -> list[int]:
            out = []
            for name in "abc":
                client = await Client.connect(t.url(name))
                try:
                    out += [q.depth for q in await client.queues() if q.name == "orders"]
                finally:
                    await client.close()
            return out

        # Nothing stranded on a or b: every copy was removed once the next hop stored it.
        deadline = time.monotonic() + 10
        while any(await depths()):
            assert time.monotonic() < deadline, f"depths stay {await depths()}"
            await asyncio.sleep(0.1)
    finally:
        await producer.close()
        await consumer_client.close()


def test_chain_up_forward_and_down(relocated: Callable[..., Relocated], tmp_path: Path) -> None:
    t = relocated("chain.yaml")
    r = netbroker("up", str(t.path), "--detach", "--timeout", str(UP_TIMEOUT), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # `up` printed its table only once every bridge was up: a->b, b->c, b->a, c->b.
    cells = assert_all_bridges_up(r.stdout, 4)
    assert [c.rsplit(" ", 2)[1] for c in cells] == ["b", "c", "a", "b"]

    r = netbroker("status", str(t.path), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_all_bridges_up(r.stdout, 4)

    # `stat` lists b's two outbound bridges and the two links a and c opened to it.
    r = netbroker("stat", "--url", t.url("b"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = columns(r.stdout, "component")
    assert sorted((row["name"], row["state"]) for row in rows) == sorted(
        [
            (f"static:127.0.0.1:{t.ports['c']}", "up"),
            (f"static:127.0.0.1:{t.ports['a']}", "up"),
            ("from a", "up"),
            ("from c", "up"),
        ]
    )
    assert any(row["detail"].startswith(f"c@127.0.0.1:{t.ports['c']}, forwarded ") for row in rows)

    asyncio.run(asyncio.wait_for(_from_a_to_c(t, 200), 120))

    pids = broker_pids(t.data)
    assert len(pids) == 3
    r = netbroker("down", str(t.path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(line.split()[1] for line in r.stdout.splitlines()) == ["a", "b", "c"]
    assert not any(pid_alive(pid) for pid in pids)
    assert broker_pids(t.data) == []
    r = netbroker("status", str(t.path), cwd=tmp_path)
    assert r.returncode == 1
    assert "3 of 3 brokers not answering: a, b, c" in r.stderr


# ------------------------------------------------------------------------------ mesh


def test_mesh_comes_up_with_six_bridges(
    relocated: Callable[..., Relocated], tmp_path: Path
) -> None:
    t = relocated("mesh.yaml")
    r = netbroker("up", str(t.path), "--detach", "--timeout", str(UP_TIMEOUT), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cells = assert_all_bridges_up(r.stdout, 6)
    assert sorted(c.rsplit(" ", 2)[1] for c in cells) == ["a", "a", "b", "b", "c", "c"]
    r = netbroker("status", str(t.path), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_all_bridges_up(r.stdout, 6)
    # And the mesh carries messages, once each, with no copy circling it.
    asyncio.run(asyncio.wait_for(_from_a_to_c(t, 200), 120))


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("connectors", "reason"),
    [
        (
            [{"uri": "static:(b)", "networkTtl": 2}],
            "groups.A.connectors[0]: static:(b): unknown option 'networkTtl' in the YAML options "
            "(did you mean 'networkTTL'?",
        ),
        (
            [{"uri": "static:(b)"}, {"uri": "static:(nosuch)?networkTTL=2"}],
            "groups.A.connectors[1]: static:(nosuch)?networkTTL=2: unknown broker 'nosuch' "
            "(expected host:port or a broker of this file: a, b)",
        ),
    ],
)
def test_bad_connector_starts_nothing(
    relocated: Callable[..., Relocated], tmp_path: Path, connectors: list[Any], reason: str
) -> None:
    t = relocated("ab.yaml", overrides={"A": connectors})
    r = netbroker("up", str(t.path), "--detach", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.startswith(f"netbroker: {t.path}: {reason}"), r.stderr
    assert len(r.stderr.splitlines()) == 1
    assert r.stdout == ""
    assert not t.data.exists()  # not even a data directory: nothing was started
    assert broker_pids(t.data) == []


def test_bridge_that_never_comes_up_fails_up_and_stops_everything(
    relocated: Callable[..., Relocated], tmp_path: Path
) -> None:
    # a links to b as shipped, and to a port where nothing listens: that bridge stays in
    # backoff, so `up` must give up at its deadline, say which bridge and why, and stop.
    (nobody,) = free_ports(1)
    t = relocated(
        "ab.yaml",
        overrides={
            "A": [{"uri": "static:(b)"}, {"uri": f"static:(127.0.0.1:{nobody})"}],
        },
    )
    started = time.monotonic()
    r = netbroker("up", str(t.path), "--timeout", "4", cwd=tmp_path)
    assert r.returncode == 1
    assert time.monotonic() - started < 30
    lines = r.stderr.splitlines()
    i = lines.index("netbroker: the cluster was not ready within 4 s:")
    assert re.fullmatch(
        rf"    a: bridge static:127\.0\.0\.1:{nobody} (backoff|connecting)(: .*)?", lines[i + 1]
    ), r.stderr
    assert "Connection refused" in lines[i + 1] or "UNAVAILABLE" in lines[i + 1], r.stderr
    assert len(lines) == i + 2, r.stderr  # a->b and b->a came up: only that one is named
    assert "netbroker: stopping a, b" in lines
    assert r.stdout == ""  # no table: the cluster never was up
    wait_until(lambda: broker_pids(t.data) == [], 10, "every broker to be gone")
    assert not (t.data / STATE_FILE).exists()
