"""`netbroker up` supervision, driven with a stand-in broker so every failure can be staged.

The stand-in takes the broker's flags, serves Admin.Status, prints the listening line and
waits for SIGTERM; FAKE_BROKER_MODE=name:mode,... makes one broker die, hang, stay quiet
(serve without printing the line) or ignore SIGTERM.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker import topology as topo
from broker import up

FAKE_BROKER = r'''
import argparse, os, signal, sys, threading
from concurrent import futures

p = argparse.ArgumentParser()
for flag in ("--name", "--host", "--data", "--sync", "--max-message-bytes"):
    p.add_argument(flag)
p.add_argument("--port", type=int)
a = p.parse_args()
modes = dict(x.split(":") for x in os.environ.get("FAKE_BROKER_MODE", "").split(",") if x)
mode = modes.get(a.name, "ok")
print(f"fake broker {a.name} starting", file=sys.stderr, flush=True)
if mode == "die":
    print("fatal: cannot open the store", file=sys.stderr, flush=True)
    sys.exit(3)
stop = threading.Event()
if mode == "ignore_term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
if mode != "hang":
    import grpc
    from broker.pb import admin_pb2, admin_pb2_grpc

    class Admin(admin_pb2_grpc.AdminServicer):
        def Status(self, request, context):
            return admin_pb2.StatusResponse(name=a.name, role="standalone",
                                            client_address=f"{a.host}:{a.port}")

        def ListQueues(self, request, context):
            return admin_pb2.ListQueuesResponse(
                queues=[admin_pb2.QueueInfo(name="q", depth=3, pending=3, consumers=1)])

    server = grpc.server(futures.ThreadPoolExecutor(2))
    admin_pb2_grpc.add_AdminServicer_to_server(Admin(), server)
    server.add_insecure_port(f"{a.host}:{a.port}")
    server.start()
    if mode != "quiet":
        print(f"netbroker: broker {a.name} listening on {a.host}:{a.port}", flush=True)
stop.wait()
print(f"fake broker {a.name} stopping", file=sys.stderr, flush=True)
'''


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[list[str]]:
    """The stand-in broker command. Afterwards, any process still running this test's
    script is a leftover: it is killed and the test fails."""
    script = tmp_path / "fake_broker.py"
    script.write_text(FAKE_BROKER)
    yield [sys.executable, str(script)]
    leftovers = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and str(script) in (up.cmdline(int(entry.name)) or []):
            if up.pid_alive(int(entry.name)):
                leftovers.append(int(entry.name))
            os.kill(int(entry.name), signal.SIGKILL)
    assert not leftovers, f"stand-in brokers left running: {leftovers}"


@pytest.fixture
def cluster(tmp_path: Path) -> topo.Topology:
    a, b, c = free_ports(3)
    text = f"""
data: run/c
groups:
  A:
    brokers:
      a: {{port: {a}}}
  B:
    sync: local_mem
    brokers:
      b: {{port: {b}}}
      c: {{port: {c}, max_message_bytes: 1000}}
"""
    return topo.validate(topo.parse(text, "c.yaml"), "c.yaml")


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[up.BrokerProcess]]:
    """Processes a test starts with the low-level API; whatever is left is stopped."""
    procs: list[up.BrokerProcess] = []
    yield procs
    up.stop(procs, timeout=1)
    assert not any(p.alive() for p in procs)


# --------------------------------------------------------------------------- planning


def test_plan(cluster: topo.Topology, tmp_path: Path) -> None:
    plans = up.plan(cluster, cwd=tmp_path, command=["nb"])
    assert [p.name for p in plans] == ["a", "b", "c"]
    c = plans[2]
    assert c.data_dir == tmp_path / "run" / "c" / "c"
    assert c.log_path == c.data_dir / "broker.log"
    assert c.argv == (
        "nb", "--name", "c", "--host", "127.0.0.1", "--port", str(c.spec.port),
        "--data", str(c.data_dir), "--max-message-bytes", "1000", "--sync", "local_mem",
    )
    assert "--sync" not in plans[0].argv


def test_default_command_runs_this_package() -> None:
    assert up.broker_command() == [sys.executable, "-m", "broker", "broker"]


def test_not_yet_supported_is_said_out_loud() -> None:
    text = """
zookeeper: embedded
groups:
  A:
    brokers: {a: {port: 1}}
    connectors: [{uri: "static:(127.0.0.1:2)"}]
  B:
    election: zookeeper
    sync: quorum_mem
    brokers: {b: {port: 2, replication_port: 3}, c: {port: 4}}
"""
    t = topo.validate(topo.parse(text, "x.yaml"), "x.yaml")
    assert up.not_yet_supported(t) == [
        "zookeeper",
        "groups.A.connectors",
        "groups.B as a master/slave group (its brokers run standalone)",
        "groups.B.election",
        "groups.B.sync=quorum_mem",
        "groups.B.brokers.b.replication_port",
    ]


def test_format_table() -> None:
    assert up.format_table(("name", "n", "x"), [("a", 1, None), ("long", 100, "y")]) == (
        "name    n  x\n"
        "a       1  -\n"
        "long  100  y"
    )


# ------------------------------------------------------------------ start, ready, stop


def test_start_wait_stop(cluster: topo.Topology, tmp_path: Path, fake: list[str],
                         started: list[up.BrokerProcess]) -> None:
    plans = up.plan(cluster, cwd=tmp_path, command=fake)
    started += up.start(plans, detach=False)
    up.wait_ready(started, timeout=30)
    assert [p.address for p in started] == [p.plan.address for p in started]
    probe = up.AdminProbe()
    try:
        st = probe.status(started[0].plan.address)
    finally:
        probe.close()
    assert st is not None and (st.name, st.role, st.queues, st.depth) == ("a", "standalone", 1, 3)
    up.stop(started)
    assert not any(p.alive() for p in started)
    log = started[0].plan.log_path.read_text()
    assert "--- netbroker up: starting broker a at " in log
    assert "fake broker a stopping" in log  # it got SIGTERM, not SIGKILL


def test_a_broker_that_dies_is_named_with_its_log(
    cluster: topo.Topology, tmp_path: Path, fake: list[str], started: list[up.BrokerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_BROKER_MODE", "b:die")
    started += up.start(up.plan(cluster, cwd=tmp_path, command=fake), detach=False)
    with pytest.raises(up.UpError) as info:
        up.wait_ready(started, timeout=30)
    text = str(info.value)
    log = started[1].plan.log_path
    assert text.splitlines()[0] == (
        f"broker b exited with code 3 before it was ready; last lines of {log}:"
    )
    assert "    fatal: cannot open the store" in text.splitlines()


def test_a_broker_that_never_gets_ready_times_out(
    cluster: topo.Topology, tmp_path: Path, fake: list[str], started: list[up.BrokerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_BROKER_MODE", "c:hang")
    started += up.start(up.plan(cluster, cwd=tmp_path, command=fake), detach=False)
    with pytest.raises(up.UpError) as info:
        up.wait_ready(started, timeout=3)
    assert str(info.value).splitlines()[0].startswith("broker c was not ready within 3 s; last")


def test_ready_by_admin_status_without_the_line(
    cluster: topo.Topology, tmp_path: Path, fake: list[str], started: list[up.BrokerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_BROKER_MODE", "a:quiet")
    started += up.start(up.plan(cluster, cwd=tmp_path, command=fake), detach=False)
    probe = up.AdminProbe()
    try:
        up.wait_ready(started, timeout=30, probe=probe)
    finally:
        probe.close()
    assert started[0].address == started[0].plan.address


def test_stop_escalates_to_sigkill(
    cluster: topo.Topology, tmp_path: Path, fake: list[str], started: list[up.BrokerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_BROKER_MODE", "a:ignore_term")
    started += up.start(up.plan(cluster, cwd=tmp_path, command=fake), detach=False)
    up.wait_ready(started, timeout=30)
    said: list[str] = []
    t0 = time.monotonic()
    up.stop(started, timeout=0.5, report=said.append)
    assert time.monotonic() - t0 < 5
    assert not any(p.alive() for p in started)
    assert started[0].returncode == -signal.SIGKILL
    assert said == [f"broker a (pid {started[0].pid}) did not stop within 0.5 s; killing it"]


def test_start_failure_stops_those_already_started(
    cluster: topo.Topology, tmp_path: Path, fake: list[str],
) -> None:
    plans = up.plan(cluster, cwd=tmp_path, command=fake)
    broken = up.BrokerPlan(plans[2].spec, plans[2].data_dir, plans[2].log_path,
                           (str(tmp_path / "no-such-program"),))
    spawned: list[up.BrokerProcess] = []
    real_spawn = up.spawn

    def spy(plan: up.BrokerPlan, *, detach: bool) -> up.BrokerProcess:
        proc = real_spawn(plan, detach=detach)
        spawned.append(proc)
        return proc

    with pytest.MonkeyPatch.context() as m:
        m.setattr(up, "spawn", spy)
        with pytest.raises(up.UpError, match=r"broker c: cannot start .*no-such-program"):
            up.start([plans[0], plans[1], broken], detach=False)
    assert len(spawned) == 2
    assert not any(p.alive() for p in spawned)


# ------------------------------------------------------------------ up / status / down


def test_up_detached_then_status_then_down(
    cluster: topo.Topology, tmp_path: Path, fake: list[str]
) -> None:
    out, err = io.StringIO(), io.StringIO()
    state_file = tmp_path / "run" / "c" / "netbroker-up.json"
    try:
        assert up.up(cluster, detach=True, out=out, err=err, command=fake, cwd=tmp_path) == 0
        lines = out.getvalue().splitlines()
        assert lines[0].split() == ["broker", "group", "role", "client", "pid", "log"]
        assert [line.split()[:3] for line in lines[1:]] == [
            ["a", "A", "standalone"], ["b", "B", "standalone"], ["c", "B", "standalone"]
        ]
        assert "logs in run/c/<broker>/broker.log" in err.getvalue()
        state = json.loads(state_file.read_text())
        pids = [b["pid"] for b in state["brokers"]]
        assert state["detached"] is True
        assert all(up.pid_alive(pid) for pid in pids)
        # Detached brokers lead sessions of their own, so they outlive a closed terminal.
        assert all(os.getsid(pid) == pid for pid in pids)

        out = io.StringIO()
        assert up.status(cluster, out=out, err=io.StringIO(), cwd=tmp_path) == 0
        rows = [line.split() for line in out.getvalue().splitlines()[1:4]]
        assert [r[0] for r in rows] == ["a", "b", "c"]
        assert all(r[-1] == "up" and r[-3:-1] == ["1", "3"] for r in rows), rows

        with pytest.raises(up.UpError, match="already running: a \\(pid"):
            up.up(cluster, out=io.StringIO(), err=io.StringIO(), command=fake, cwd=tmp_path)
    finally:
        out = io.StringIO()
        assert up.down(cluster, out=out, err=io.StringIO(), cwd=tmp_path) == 0
    assert out.getvalue().splitlines() == [
        f"stopped {n} (pid {pid})" for n, pid in zip("abc", pids, strict=True)
    ]
    assert not any(up.pid_alive(pid) for pid in pids)
    assert not state_file.exists()

    err = io.StringIO()
    assert up.status(cluster, out=io.StringIO(), err=err, cwd=tmp_path) == 1
    assert err.getvalue() == "netbroker: 3 of 3 brokers not answering: a, b, c\n"


def test_up_failure_leaves_nothing_running(
    cluster: topo.Topology, tmp_path: Path, fake: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_BROKER_MODE", "c:die")
    err = io.StringIO()
    with pytest.raises(up.UpError, match="broker c exited with code 3"):
        up.up(cluster, detach=True, out=io.StringIO(), err=err, command=fake, cwd=tmp_path)
    assert "netbroker: stopping a, b" in err.getvalue()
    assert not (tmp_path / "run" / "c" / "netbroker-up.json").exists()
    for name in "ab":
        log = (tmp_path / "run" / "c" / name / "broker.log").read_text()
        wait_for(lambda log=log, name=name: f"fake broker {name} stopping" in log, 1,
                 f"{name} to have stopped")


def test_up_foreground_supervises_until_sigterm(
    cluster: topo.Topology, tmp_path: Path, fake: list[str]
) -> None:
    state_file = tmp_path / "run" / "c" / "netbroker-up.json"
    out, err = io.StringIO(), io.StringIO()

    def stop_when_reported() -> None:
        # SIGTERM ourselves once `up` runs and has printed a status round: the handler
        # that `up` installed turns it into an orderly stop.
        deadline = time.monotonic() + 60
        while "c (B): standalone" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_reported, daemon=True).start()
    rc = up.up(cluster, interval=0.3, out=out, err=err, command=fake, cwd=tmp_path)
    assert rc == 0, err.getvalue()
    text = out.getvalue()
    assert "a (A): standalone, 1 queue, depth 3, in flight 0, consumers 1" in text
    assert "netbroker: stopping a, b, c" in err.getvalue()
    assert not state_file.exists()
    for name in "abc":
        log = (tmp_path / "run" / "c" / name / "broker.log").read_text()
        assert f"fake broker {name} stopping" in log


def test_up_foreground_reports_a_broker_that_exits(
    cluster: topo.Topology, tmp_path: Path, fake: list[str]
) -> None:
    out, err = io.StringIO(), io.StringIO()
    state_file = tmp_path / "run" / "c" / "netbroker-up.json"

    def kill_b_then_stop() -> None:
        deadline = time.monotonic() + 60
        while not state_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = next(b["pid"] for b in json.loads(state_file.read_text())["brokers"]
                   if b["name"] == "b")
        os.kill(pid, signal.SIGKILL)
        while "broker b was killed" not in err.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=kill_b_then_stop, daemon=True).start()
    rc = up.up(cluster, interval=0, out=out, err=err, command=fake, cwd=tmp_path)
    assert rc == 1  # a broker died on its own during the run
    assert "netbroker: broker b was killed by SIGKILL; last lines of" in err.getvalue()
    assert "netbroker: stopping a, c" in err.getvalue()


def test_down_ignores_a_reused_pid(cluster: topo.Topology, tmp_path: Path) -> None:
    # The state file names our own pid with another command line: not ours to kill.
    state_file = tmp_path / "run" / "c" / "netbroker-up.json"
    state_file.parent.mkdir(parents=True)
    state_file.write_text(json.dumps({
        "detached": True, "supervisor": None,
        "brokers": [{"name": "a", "pid": os.getpid(), "argv": ["something", "else"]}],
    }))
    out = io.StringIO()
    assert up.down(cluster, out=out, err=io.StringIO(), cwd=tmp_path) == 0
    assert out.getvalue() == "nothing was running\n"
    assert not state_file.exists()


def test_damaged_state_file(cluster: topo.Topology, tmp_path: Path) -> None:
    state_file = tmp_path / "run" / "c" / "netbroker-up.json"
    state_file.parent.mkdir(parents=True)
    state_file.write_text("{not json")
    with pytest.raises(up.UpError, match=r"run/c/netbroker-up\.json is damaged"):
        up.down(cluster, out=io.StringIO(), err=io.StringIO(), cwd=tmp_path)
