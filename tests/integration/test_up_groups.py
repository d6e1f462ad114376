"""`netbroker up` with master/slave groups: topologies/ab_c.yaml with real broker
processes, a real embedded ZooKeeper and `kill -9`.

Each test runs ab_c.yaml rewritten into tmp_path (`relocate` from test_up_cluster: free
ports, data under tmp_path). Whatever it started is stopped afterwards by `netbroker
down`, with a /proc sweep behind it that kills, and fails the test on, any process left
whose command line names the test's data directory: the brokers and ZooKeeper's java
(`-Dzookeeper.log.dir=DATA/zookeeper`) alike.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.client import Client
from broker.cluster.processes import cmdline, pid_alive
from broker.cluster.report import GROUP_TABLE_HEADERS
from broker.cluster.state import STATE_FILE
from tests.support.uptools import (
    ROOT,
    Lines,
    Relocated,
    broker_pids,
    netbroker,
    wait_until,
)

UP_TIMEOUT = 60.0
N = 300


@pytest.fixture
def ab_c(relocated: Callable[..., Relocated]) -> Relocated:
    """ab_c.yaml relocated into tmp_path; everything it started is gone afterwards."""
    return relocated("ab_c.yaml")


def rows(table: str) -> dict[str, list[str]]:
    """The broker rows of an `up`/`status` table by broker name, split on whitespace
    (broker group role position client pid state depth bridges...)."""
    lines = table.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("broker "))
    assert lines[header].split() == list(GROUP_TABLE_HEADERS), table
    out = {}
    for line in lines[header + 1 :]:
        if line[:1] in ("a", "b", "c") and line[1:2] == " ":
            out[line[0]] = line.split()
    return out


def group_b_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("group B "))


def roles(t: Relocated, cwd: Path) -> dict[str, str]:
    """Each broker's role as `netbroker status` shows it ("-" when not answering)."""
    r = netbroker("status", str(t.path), cwd=cwd, timeout=30)
    return {name: row[2] for name, row in rows(r.stdout).items()}


def state(t: Relocated) -> dict[str, object]:
    return json.loads((t.data / STATE_FILE).read_text())


def pid_of(t: Relocated, name: str) -> int:
    brokers = state(t)["brokers"]
    assert isinstance(brokers, list)
    return next(int(b["pid"]) for b in brokers if b["name"] == name)


async def send_to_b(t: Relocated, queue_name: str, n: int) -> list[bytes]:
    """n persistent messages through a failover client to B's master, each acknowledged."""
    bodies = [f"order-{i}".encode() for i in range(n)]
    client = await Client.connect(f"failover:({t.url('b')},{t.url('c')})")
    try:
        for body in bodies:
            await client.send(queue_name, body)
    finally:
        await client.close()
    return bodies


async def receive_on_a(t: Relocated, queue_name: str, n: int) -> list[bytes]:
    """Up to n messages from a consumer on a (stopping at the first 10 s silence), then a
    short wait for anything more, which would be a duplicate."""
    client = await Client.connect(t.url("a"))
    got: list[bytes] = []
    try:
        consumer = await client.subscribe(queue_name, prefetch=100)
        while len(got) < n:
            d = await consumer.receive(timeout=10)
            if d is None:
                break
            got.append(bytes(d.body))
            d.ack()
        extra = await consumer.receive(timeout=2)
        if extra is not None:
            got.append(bytes(extra.body))
            extra.ack()
        await consumer.close()
    finally:
        await client.close()
    return got


def test_ab_c_fails_over_without_losing_a_message(ab_c: Relocated, tmp_path: Path) -> None:
    t = ab_c
    r = netbroker("up", str(t.path), "--detach", "--timeout", str(UP_TIMEOUT), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    table = rows(r.stdout)
    # b is preferred (weight 2) at the first election; c follows it.
    assert [table[n][:3] for n in "abc"] == [
        ["a", "A", "standalone"],
        ["b", "B", "master"],
        ["c", "B", "slave"],
    ]
    assert table["c"][3].isdigit() and table["b"][3].isdigit()  # replication positions
    assert table["a"][-3:] == ["\u2192", "b", "up"], r.stdout  # a's masterslave bridge
    assert table["b"][-3:] == ["\u2192", "a", "up"], r.stdout  # the master's static:(a)
    assert table["c"][-1] == "-"  # the slave runs no bridge
    assert group_b_line(r.stdout).startswith(
        f"group B (zookeeper): master b at {t.url('b')} (epoch "
    )
    zk = state(t)["zookeeper"]
    assert isinstance(zk, dict) and pid_alive(int(zk["pid"]))
    assert f"zookeeper: embedded at {zk['connect_string']}, pid {zk['pid']}" in r.stdout

    r = netbroker("status", str(t.path), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    table = rows(r.stdout)
    assert {n: table[n][2] for n in "abc"} == {"a": "standalone", "b": "master", "c": "slave"}
    assert table["a"][-3:] == ["\u2192", "b", "up"]
    assert group_b_line(r.stdout).startswith(f"group B (zookeeper): master b at {t.url('b')}")
    assert f"zookeeper: embedded at {zk['connect_string']}, pid {zk['pid']}, serving" in (r.stdout)

    # N persistent messages to B, no consumer anywhere: they wait on B's master, and
    # (sync quorum_mem) every acknowledged one is also held by the slave.
    sent = asyncio.run(asyncio.wait_for(send_to_b(t, "orders", N), 120))
    master, slave = "b", "c"
    pids = {name: pid_of(t, name) for name in "abc"}
    os.kill(pids[master], signal.SIGKILL)
    wait_until(lambda: roles(t, tmp_path).get(slave) == "master", 30, f"{slave} to be master")

    r = netbroker("status", str(t.path), cwd=tmp_path)
    assert r.returncode == 1  # b is down
    table = rows(r.stdout)
    assert table[master][2:4] == ["-", "-"] and table[master][6] == "down", r.stdout
    assert group_b_line(r.stdout).startswith(
        f"group B (zookeeper): master {slave} at {t.url(slave)} (epoch "
    )
    assert f"netbroker: 1 of 3 brokers not answering: {master}" in r.stderr

    # A consumer on a: c's static:(a) bridge brings every message over, once.
    got = asyncio.run(asyncio.wait_for(receive_on_a(t, "orders", N), 120))
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} duplicates"
    assert sorted(got) == sorted(sent), f"{len(set(sent) - set(got))} lost"

    r = netbroker("down", str(t.path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        f"stopped a (pid {pids['a']})",
        f"stopped {slave} (pid {pids[slave]})",
        f"stopped zookeeper (pid {zk['pid']})",
    ]
    assert not any(pid_alive(pid) for pid in [*pids.values(), int(zk["pid"])])
    assert broker_pids(t.data) == []
    assert not (t.data / STATE_FILE).exists()


@pytest.fixture
def foreground(ab_c: Relocated, tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Starts `netbroker up` in the foreground; killed (group and all) if still running."""
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            [sys.executable, "-m", "broker", "up", str(ab_c.path), "--interval", "0",
             "--timeout", str(UP_TIMEOUT)],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
        for stream in (p.stdout, p.stderr):
            if stream is not None:
                stream.close()


def test_foreground_up_shows_a_failover_live_and_ctrl_c_stops_everything(
    ab_c: Relocated, tmp_path: Path, foreground: Callable[[], subprocess.Popen[bytes]]
) -> None:
    t = ab_c
    proc = foreground()
    lines = Lines(proc.stdout)
    lines.expect(r"^broker\s+group\s+role\s+position\s+client", UP_TIMEOUT + 10)
    lines.expect(r"^group B \(zookeeper\): master b at ", 5)
    lines.expect(r"^zookeeper: embedded at ", 5)
    zk_pid = int(state(t)["zookeeper"]["pid"])  # type: ignore[index]
    # Only an in-sync slave may take over: b dies once c holds everything it has.
    def c_in_sync() -> bool:
        shown = netbroker("status", str(t.path), cwd=tmp_path).stdout
        return "in-sync b,c" in group_b_line(shown)

    wait_until(c_in_sync, 30, "c to be in b's in-sync set")
    os.kill(pid_of(t, "b"), signal.SIGKILL)
    # The role changes as they happen, not at the next status interval (there is none).
    lines.expect(r"^\[\d\d:\d\d:\d\d\] b \(B\): master \u2192 exited$", 10)
    lines.expect(r"^\[\d\d:\d\d:\d\d\] c \(B\): slave \u2192 master, epoch \d+, position \d+", 30)

    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 1  # a broker died on its own during the run
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert "netbroker: broker b was killed by SIGKILL" in err
    assert err.index("netbroker: stopping a, c") < err.index("netbroker: stopping ZooKeeper")
    assert not pid_alive(zk_pid)
    assert broker_pids(t.data) == []
    assert not (t.data / STATE_FILE).exists()


def test_a_killed_up_takes_its_brokers_and_zookeeper_with_it(
    ab_c: Relocated, tmp_path: Path, foreground: Callable[[], subprocess.Popen[bytes]]
) -> None:
    t = ab_c
    proc = foreground()
    Lines(proc.stdout).expect(r"^zookeeper: embedded at ", UP_TIMEOUT + 10)
    pids = broker_pids(t.data)
    assert len(pids) == 4, [cmdline(pid) for pid in pids]  # a, b, c and java
    proc.kill()  # no chance to clean up: the parent-death signal does it
    proc.wait()
    wait_until(lambda: broker_pids(t.data) == [], 30, "every broker and ZooKeeper to exit")


def test_a_failed_start_stops_the_brokers_and_zookeeper(ab_c: Relocated, tmp_path: Path) -> None:
    t = ab_c
    with socket.socket() as taken:  # c's client port is in use: c cannot start
        taken.bind(("127.0.0.1", t.ports["c"]))
        taken.listen()
        r = netbroker("up", str(t.path), "--detach", "--timeout", str(UP_TIMEOUT), cwd=tmp_path)
    assert r.returncode == 1
    assert "netbroker: broker c exited with code 1 before it was ready" in r.stderr, r.stderr
    assert "netbroker: stopping ZooKeeper" in r.stderr, r.stderr
    assert r.stdout == ""
    assert broker_pids(t.data) == []  # a, b and java too
    assert not (t.data / STATE_FILE).exists()
