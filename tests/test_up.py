"""`netbroker up` supervision, driven with a stand-in broker so every failure can be staged.

The stand-in takes the broker's flags, serves Admin.Status, prints the listening line and
waits for SIGTERM; FAKE_BROKER_MODE=name:mode,... makes one broker die, hang, stay quiet
(serve without printing the line) or ignore SIGTERM. It reports one bridge per connector
address, named as real brokers name them, "up" unless the mode is bridge_down (backoff
with an error) or bridge_late (up 1.5 s after start); plus an inbound link, which `up`
must not wait for or list.
"""

from __future__ import annotations

import dataclasses
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
from netconnector.uri import parse_connector

FAKE_BROKER = r'''
import argparse, os, signal, sys, threading, time
from concurrent import futures

p = argparse.ArgumentParser()
for flag in ("--name", "--host", "--data", "--sync", "--max-message-bytes", "--group"):
    p.add_argument(flag)
p.add_argument("--port", type=int)
p.add_argument("--connector", action="append", default=[])
a = p.parse_args()
started = time.monotonic()
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
    from netconnector.uri import parse_connector

    specs = [parse_connector(uri) for uri in a.connector]

    def bridge(address):
        up = mode not in ("bridge_down", "bridge_late") or (
            mode == "bridge_late" and time.monotonic() - started > 1.5)
        if up:
            return "up", f"peer@{address}, forwarded 0"
        return "backoff", f"{address}, UNAVAILABLE: connection refused"

    class Admin(admin_pb2_grpc.AdminServicer):
        def Status(self, request, context):
            components = [admin_pb2.Component(kind="bridge", name="from elsewhere",
                                              state="up", detail="received 0")]
            for spec in specs:
                for address in spec.addresses:
                    state, detail = bridge(address)
                    components.append(admin_pb2.Component(
                        kind="bridge", name=f"static:{address}", state=state, detail=detail))
            return admin_pb2.StatusResponse(name=a.name, role="standalone",
                                            client_address=f"{a.host}:{a.port}",
                                            components=components)

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
def linked(tmp_path: Path) -> topo.Topology:
    """Two groups linked both ways, by broker name, with options as YAML keys."""
    a, b = free_ports(2)
    text = f"""
data: run/l
groups:
  A:
    brokers:
      a: {{port: {a}}}
    connectors:
      - uri: "static:(b)"
        networkTTL: 2
  B:
    brokers:
      b: {{port: {b}}}
    connectors:
      - uri: "static:(a)?duplex=false"
        excludedDestinations: [secret.>, "audit.*"]
"""
    return topo.validate(topo.parse(text, "l.yaml"), "l.yaml")


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
        "--data", str(c.data_dir), "--group", "B", "--max-message-bytes", "1000",
        "--sync", "local_mem",
    )
    assert "--sync" not in plans[0].argv
    assert all(p.bridges == () for p in plans)


def test_plan_passes_connectors_resolved_with_options_folded_in(
    linked: topo.Topology, tmp_path: Path
) -> None:
    a, b = up.plan(linked, cwd=tmp_path, command=["nb"])
    pa, pb = a.spec.port, b.spec.port
    assert a.argv[a.argv.index("--group"):] == (
        "--group", "A", "--connector", f"static:(127.0.0.1:{pb})?networkTTL=2",
    )
    assert b.argv[b.argv.index("--group"):] == (
        "--group", "B", "--connector",
        f"static:(127.0.0.1:{pa})?duplex=false&excludedDestinations=secret.>,audit.*",
    )
    assert a.bridges == (f"static:127.0.0.1:{pb}",)
    assert b.bridges == (f"static:127.0.0.1:{pa}",)


@pytest.mark.parametrize(
    ("uri", "options", "argument"),
    [
        ("static:(127.0.0.1:1)", {}, "static:(127.0.0.1:1)"),
        (" static:(127.0.0.1:1)? ", {"duplex": True}, "static:(127.0.0.1:1)?duplex=true"),
        ("static:(127.0.0.1:1)?networkTTL=2&", {"networkTTL": 2, "prefetchSize": 10},
         "static:(127.0.0.1:1)?networkTTL=2&prefetchSize=10"),
        ("masterslave:(127.0.0.1:1,127.0.0.1:2)",
         {"staticallyIncludedDestinations": ["orders.>", " jobs.* "], "name": "to B & C"},
         "masterslave:(127.0.0.1:1,127.0.0.1:2)?staticallyIncludedDestinations=orders.>,"
         "jobs.*&name=to%20B%20%26%20C"),
        ("static:(127.0.0.1:1)", {"securityToken": "s=cr%t#1?"},
         "static:(127.0.0.1:1)?securityToken=s%3Dcr%25t%231%3F"),
        ("static:(127.0.0.1:1)", {"excludedDestinations": "a.>,b.>", "messageTTL": "3"},
         "static:(127.0.0.1:1)?excludedDestinations=a.>,b.>&messageTTL=3"),
    ],
)
def test_connector_argument_round_trips(
    uri: str, options: dict[str, object], argument: str
) -> None:
    """The broker re-parses the folded URI into exactly the connector the file describes."""
    text = "groups: {A: {brokers: {a: {port: 9}}, connectors: [{uri: x}]}}"
    raw = topo.parse(text, "x.yaml")
    raw["groups"]["A"]["connectors"] = [{"uri": uri, **options}]
    (connector,) = topo.validate(raw, "x.yaml").groups[0].connectors
    assert up.connector_argument(connector) == argument
    assert connector.spec is not None
    reparsed = parse_connector(argument)
    assert dataclasses.replace(reparsed, uri="") == dataclasses.replace(connector.spec, uri="")


def test_bridge_labels_match_what_brokers_report() -> None:
    text = """
groups:
  A:
    brokers: {a: {port: 1}}
    connectors:
      - uri: "static:(b,c)"
      - uri: "masterslave:(b,c)"
      - uri: "masterslave:(b,c)"
        name: to-bc
      - uri: "masterslave:(b)"
      - uri: "multicast://default"
  B:
    brokers: {b: {port: 2}, c: {port: 3}}
"""
    group = topo.validate(topo.parse(text, "x.yaml"), "x.yaml").groups[0]
    assert up.expected_bridges(group) == [
        "static:127.0.0.1:2", "static:127.0.0.1:3",
        "masterslave:(127.0.0.1:2,127.0.0.1:3)", "to-bc", "masterslave:127.0.0.1:2",
    ]


def test_default_command_runs_this_package() -> None:
    assert up.broker_command() == [sys.executable, "-m", "broker", "broker"]


def test_not_yet_supported_is_said_out_loud() -> None:
    text = """
zookeeper: embedded
groups:
  A:
    brokers: {a: {port: 1}}
    connectors: [{uri: "static:(127.0.0.1:2)"}, {uri: "multicast://x"}]
  B:
    election: zookeeper
    sync: quorum_mem
    brokers: {b: {port: 2, replication_port: 3}, c: {port: 4}}
"""
    t = topo.validate(topo.parse(text, "x.yaml"), "x.yaml")
    assert up.not_yet_supported(t) == [
        "zookeeper",
        "groups.A.connectors[1] (multicast://x: discovery is not wired yet)",
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
    # Blank continuation cells keep a column of numbers right-aligned.
    assert up.format_table(("name", "n", "x"), [("a", 10, "p"), ("", "", "q")]) == (
        "name   n  x\n"
        "a     10  p\n"
        "          q"
    )


def _status(*components: tuple[str, str, str, str]) -> up.BrokerStatus:
    return up.BrokerStatus(name="a", role="standalone", address="127.0.0.1:1",
                           components=list(components), queues=2, depth=7)


def test_bridges_of_reads_states_peers_and_errors() -> None:
    st = _status(
        ("bridge", "static:h:1", "up", "b@h:1, forwarded 12"),
        ("bridge", "static:h:2", "backoff", "h:2, UNAVAILABLE: failed to connect"),
        ("bridge", "static:h:3", "connecting", "h:3"),
        ("bridge", "from b", "up", "received 3"),
        ("replication", "static:h:4", "up", ""),
    )
    bridges = up.bridges_of(["static:h:1", "static:h:2", "static:h:3", "static:h:4"], st)
    assert [(b.state, b.peer, b.error) for b in bridges] == [
        ("up", "b", ""),
        ("backoff", "", "UNAVAILABLE: failed to connect"),
        ("connecting", "", ""),
        ("missing", "", "the broker does not report it (it reports: static:h:1, static:h:2, "
                        "static:h:3, from b)"),
    ]
    assert [up.bridge_cell(b) for b in bridges[:3]] == [
        "static:h:1 \u2192 b up",
        "static:h:2 backoff (UNAVAILABLE: failed to connect)",
        "static:h:3 connecting",
    ]
    assert up.status_line("a", "A", st, ["static:h:1", "static:h:2"]) == (
        "a (A): standalone, 2 queues, depth 7, in flight 0, consumers 0, "
        "bridges \u2192b up \u2192h:2 backoff"
    )
    assert up.bridges_of(["static:h:1"], None) == []


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
        assert lines[0].split() == [
            "broker", "group", "role", "client", "pid", "state", "depth", "bridges"
        ]
        assert [line.split()[:3] for line in lines[1:]] == [
            ["a", "A", "standalone"], ["b", "B", "standalone"], ["c", "B", "standalone"]
        ]
        assert all(line.split()[5:] == ["up", "3", "-"] for line in lines[1:])
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
        assert all(r[-3:] == ["up", "3", "-"] for r in rows), rows

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


def test_up_waits_for_every_bridge_then_shows_them(
    linked: topo.Topology, tmp_path: Path, fake: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_BROKER_MODE", "b:bridge_late")
    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    try:
        assert up.up(linked, detach=True, out=out, err=err, command=fake, cwd=tmp_path) == 0
        assert time.monotonic() - t0 >= 1.5  # b's bridge came up only after 1.5 s
        pa, pb = (b.port for b in linked.brokers)
        # The table shows each bridge with its peer and state (pid, client column aside).
        rows = [line.split() for line in out.getvalue().splitlines()[1:]]
        assert [r[:3] + r[5:] for r in rows] == [
            ["a", "A", "standalone", "up", "3", f"static:127.0.0.1:{pb}", "\u2192", "peer", "up"],
            ["b", "B", "standalone", "up", "3", f"static:127.0.0.1:{pa}", "\u2192", "peer", "up"],
        ]
        assert "netbroker: brokers ready; waiting for 2 bridges" in err.getvalue()
        assert "not acted on yet" not in err.getvalue()
    finally:
        up.down(linked, out=io.StringIO(), err=io.StringIO(), cwd=tmp_path)


def test_up_names_the_bridges_not_up_and_stops_everything(
    linked: topo.Topology, tmp_path: Path, fake: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_BROKER_MODE", "a:bridge_down")
    err = io.StringIO()
    t0 = time.monotonic()
    with pytest.raises(up.UpError) as info:
        up.up(linked, detach=True, timeout=2, out=io.StringIO(), err=err, command=fake,
              cwd=tmp_path)
    assert time.monotonic() - t0 < 10
    pb = linked.brokers[1].port
    assert str(info.value) == (
        "not every bridge was up within 2 s:\n"
        f"    a: bridge static:127.0.0.1:{pb} backoff: UNAVAILABLE: connection refused"
    )
    assert "netbroker: stopping a, b" in err.getvalue()
    assert not (tmp_path / "run" / "l" / "netbroker-up.json").exists()


def test_status_fails_while_a_bridge_is_down(
    linked: topo.Topology, tmp_path: Path, fake: list[str], started: list[up.BrokerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Started without `up` (which would refuse to finish): status works from the ports.
    monkeypatch.setenv("FAKE_BROKER_MODE", "b:bridge_down")
    started += up.start(up.plan(linked, cwd=tmp_path, command=fake), detach=False)
    up.wait_ready(started, timeout=30)
    out, err = io.StringIO(), io.StringIO()
    assert up.status(linked, out=out, err=err, cwd=tmp_path) == 1
    pa, pb = (b.port for b in linked.brokers)
    rows = [line.split() for line in out.getvalue().splitlines()[1:]]
    assert [r[4] for r in rows] == ["-", "-"]  # not started by `up`: no recorded pid
    assert [" ".join(r[5:]) for r in rows] == [
        f"up 3 static:127.0.0.1:{pb} \u2192 peer up",
        f"up 3 static:127.0.0.1:{pa} backoff (UNAVAILABLE: connection refused)",
    ]
    assert err.getvalue() == (
        f"netbroker: 1 bridge not up: b: static:127.0.0.1:{pa} backoff "
        "(UNAVAILABLE: connection refused)\n"
    )


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
