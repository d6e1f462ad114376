"""`netbroker up` with real broker processes: the shipped topologies come up with every
bridge up, carry messages end to end, and `netbroker down` leaves nothing running.

Every test runs a shipped topology rewritten into tmp_path (`relocated`): free ports and
a data directory under tmp_path, so a test never touches a real deployment's ports or
run/ directory. Processes are stopped by `netbroker down` in a finalizer, with a /proc
sweep behind it that kills (and fails on) anything left.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker import up
from broker.client import Client

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGIES = ROOT / "topologies"
# `netbroker up`'s own start deadline; bridges retry at most 1 s apart, so this is slack.
UP_TIMEOUT = 40.0


def free_ports(n: int) -> list[int]:
    """n distinct ports nothing listens on (all bound at once, so no two are equal)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(frozen=True)
class Relocated:
    """A shipped topology rewritten for a test: its file, data root and broker ports."""

    path: Path
    data: Path
    ports: dict[str, int]

    def url(self, broker: str) -> str:
        return f"127.0.0.1:{self.ports[broker]}"


def relocate(source: Path, into: Path, overrides: dict[str, Any] | None = None) -> Relocated:
    """Load a topology file and write a copy into `into` with fresh ports and data dir.

    Every `port` and `replication_port` gets a free port, and so does a fixed
    `zookeeper_port`; connector URIs that name a remapped port as `host:port` are rewritten
    to match (names need nothing: they resolve to the new ports). `overrides` maps group
    names to replacement connector lists, for tests that break a shipped file on purpose.
    """
    raw = yaml.safe_load(source.read_text())
    brokers = [
        (group, name, spec) for group, g in raw["groups"].items()
        for name, spec in g["brokers"].items()
    ]
    keys = [(spec, key) for _, _, spec in brokers for key in ("port", "replication_port")
            if key in spec]
    keys += [(raw, "zookeeper_port")] if "zookeeper_port" in raw else []
    fresh = free_ports(len(keys))
    remap = {}
    for (spec, key), port in zip(keys, fresh, strict=True):
        remap[spec[key]] = port
        spec[key] = port

    def rewrite(uri: str) -> str:
        return re.sub(r"(?<=:)(\d+)(?=[,)?]|$)", lambda m: str(remap.get(int(m[1]), m[1])), uri)

    for name, g in raw["groups"].items():
        if overrides and name in overrides:
            g["connectors"] = overrides[name]
        for c in g.get("connectors", []):
            c["uri"] = rewrite(c["uri"])
    data = into / "run" / source.stem
    raw["data"] = str(data)
    path = into / source.name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return Relocated(path, data, {name: spec["port"] for _, name, spec in brokers})


def netbroker(*args: str, cwd: Path, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    """Run the netbroker command as an operator would, from `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "broker", *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def broker_pids(data: Path) -> list[int]:
    """Live processes whose command line mentions `data` (our brokers, and only ours)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            argv = up.cmdline(int(entry.name)) or []
            if any(str(data) in a for a in argv) and up.pid_alive(int(entry.name)):
                pids.append(int(entry.name))
    return pids


@pytest.fixture
def relocated(tmp_path: Path) -> Iterator[Callable[..., Relocated]]:
    """Factory of relocated topologies; whatever they started is stopped afterwards."""
    made: list[Relocated] = []

    def make(name: str, overrides: dict[str, Any] | None = None) -> Relocated:
        r = relocate(TOPOLOGIES / name, tmp_path, overrides)
        made.append(r)
        return r

    yield make
    leftovers = []
    for r in made:
        netbroker("down", str(r.path), "--timeout", "5", cwd=tmp_path)
        for pid in broker_pids(r.data):
            leftovers.append(pid)
            os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes left running after `netbroker down`: {leftovers}"


def bridge_cells(table: str) -> list[str]:
    """The bridges column of a `netbroker up`/`status` table, one cell per bridge."""
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("broker "))
    start = header.index("bridges")
    return [line[start:] for line in lines[lines.index(header) + 1:]
            if len(line) > start and not line.startswith("started ")]


def columns(text: str, first: str) -> list[dict[str, str]]:
    """The rows of the table in `text` whose header starts with `first`, by column."""
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(first + " "))
    header = lines[i]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    rows = []
    for line in lines[i + 1:]:
        if not line.strip():
            break
        bounds = [*starts[1:], None]
        rows.append({n: line[a:b].strip() for n, a, b in zip(names, starts, bounds, strict=True)})
    return rows


def assert_all_bridges_up(table: str, expected: int) -> list[str]:
    cells = bridge_cells(table)
    assert len(cells) == expected, table
    assert all(re.fullmatch(r"static:127\.0\.0\.1:\d+ \u2192 [a-z] up", c) for c in cells), table
    return cells


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


# ----------------------------------------------------------------------------- chain


async def _through_the_chain(t: Relocated, n: int) -> None:
    """n messages sent on a reach a consumer on c two hops away, each exactly once."""
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
    assert "not acted on yet" not in r.stderr

    r = netbroker("status", str(t.path), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_all_bridges_up(r.stdout, 4)

    # `stat` lists b's two outbound bridges and the two links a and c opened to it.
    r = netbroker("stat", "--url", t.url("b"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = columns(r.stdout, "component")
    assert sorted((row["name"], row["state"]) for row in rows) == sorted([
        (f"static:127.0.0.1:{t.ports['c']}", "up"), (f"static:127.0.0.1:{t.ports['a']}", "up"),
        ("from a", "up"), ("from c", "up"),
    ])
    assert any(row["detail"].startswith(f"c@127.0.0.1:{t.ports['c']}, forwarded ")
               for row in rows)

    asyncio.run(asyncio.wait_for(_through_the_chain(t, 200), 120))

    pids = broker_pids(t.data)
    assert len(pids) == 3
    r = netbroker("down", str(t.path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(line.split()[1] for line in r.stdout.splitlines()) == ["a", "b", "c"]
    assert not any(up.pid_alive(pid) for pid in pids)
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


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("connectors", "reason"),
    [
        ([{"uri": "static:(b)", "networkTtl": 2}],
         "groups.A.connectors[0]: static:(b): unknown option 'networkTtl' in the YAML options "
         "(did you mean 'networkTTL'?"),
        ([{"uri": "static:(b)"}, {"uri": "static:(nosuch)?networkTTL=2"}],
         "groups.A.connectors[1]: static:(nosuch)?networkTTL=2: unknown broker 'nosuch' "
         "(expected host:port or a broker of this file: a, b)"),
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
    t = relocated("ab.yaml", overrides={
        "A": [{"uri": "static:(b)"}, {"uri": f"static:(127.0.0.1:{nobody})"}],
    })
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
    assert not (t.data / up.STATE_FILE).exists()
