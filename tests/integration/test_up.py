"""`netbroker up` supervision, driven with a stand-in broker so every failure can be staged.

The stand-in takes the broker's `--config` file, serves Admin.Status, prints the listening line and
waits for SIGTERM; FAKE_BROKER_MODE=name:mode,... makes one broker die, hang, stay quiet
(serve without printing the line) or ignore SIGTERM. It reports one bridge per connector
address, named as real brokers name them, "up" unless the mode is bridge_down (backoff
with an error) or bridge_late (up 1.5 s after start); plus an inbound link, which `up`
must not wait for or list.

A stand-in given `--election` plays a group member: FAKE_BROKER_ROLE=name:role,... sets
its role (master, slave, electing; `electing>master` switches 1.5 s after start, or once
the file FAKE_BROKER_SWITCH names exists), with a group component as real members report
it; as slave or electing it runs no bridges and refuses ListQueues, as real ones do.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.cluster import processes, registry
from broker.cluster.commands import down, restart, status, up
from broker.cluster.configs import write_configs
from broker.cluster.errors import UpError
from broker.cluster.loader import parse
from broker.cluster.model import Topology
from broker.cluster.plan import (
    BrokerPlan,
    broker_command,
    connector_argument,
    expected_bridges,
    plan,
)
from broker.cluster.probe import AdminProbe, BridgeView, BrokerStatus, GroupView, bridges_of
from broker.cluster.processes import BrokerProcess, cmdline, pid_alive, spawn, start, stop
from broker.cluster.readiness import ProblemKind, cluster_problems, problem_line, wait_ready
from broker.cluster.report import (
    GROUP_TABLE_HEADERS,
    TABLE_HEADERS,
    bridge_cell,
    format_table,
    group_lines,
    role_change_line,
    status_line,
    table_headers,
    table_rows,
)
from broker.cluster.schema import validate
from broker.cluster.zookeeper import free_ports
from broker.config import BrokerConfig, Election, Sync
from broker.pb import admin_pb2
from netconnector.uri import ConnectorSpec, parse_connector
from tests.support.uptools import wait_until

FAKE_BROKER = r'''
import argparse, json, os, signal, sys, threading, time, types
from concurrent import futures

p = argparse.ArgumentParser()
p.add_argument("--config", required=True)
with open(p.parse_args().config) as f:
    config = json.load(f)
a = types.SimpleNamespace(**config)
a.connector = config["connectors"]
started = time.monotonic()
modes = dict(x.split(":") for x in os.environ.get("FAKE_BROKER_MODE", "").split(",") if x)
mode = modes.get(a.name, "ok")
roles = dict(x.split(":") for x in os.environ.get("FAKE_BROKER_ROLE", "").split(",") if x)

switch = os.environ.get("FAKE_BROKER_SWITCH")

def role():
    if not a.election:
        return "standalone"
    first, _, then = roles.get(a.name, "electing").partition(">")
    switched = os.path.exists(switch) if switch else time.monotonic() - started > 1.5
    return then if then and switched else first
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
        label = f"static:{address}"
        if up:
            return (admin_pb2.Component(kind="bridge", name=label, state="up",
                                        detail=f"peer@{address}, forwarded 0"),
                    admin_pb2.BridgeStatus(label=label, state=admin_pb2.LINK_UP,
                                           peer="peer", address=address, forwarded=0))
        error = "UNAVAILABLE: connection refused"
        return (admin_pb2.Component(kind="bridge", name=label, state="backoff",
                                    detail=f"{address}, {error}"),
                admin_pb2.BridgeStatus(label=label, state=admin_pb2.LINK_BACKOFF,
                                       address=address, last_error=error))

    ROLES = {"standalone": admin_pb2.ROLE_STANDALONE, "master": admin_pb2.ROLE_MASTER,
             "slave": admin_pb2.ROLE_SLAVE, "electing": admin_pb2.ROLE_ELECTING}

    class Admin(admin_pb2_grpc.AdminServicer):
        def Status(self, request, context):
            now = role()
            components = [admin_pb2.Component(kind="bridge", name="from elsewhere",
                                              state="up", detail="received 0")]
            bridges = [admin_pb2.BridgeStatus(label="from elsewhere", state=admin_pb2.LINK_UP,
                                              peer="elsewhere", inbound=True)]
            for spec in specs if now in ("standalone", "master") else ():
                for address in spec.addresses:
                    component, typed = bridge(address)
                    components.append(component)
                    bridges.append(typed)
            refusal = ""
            group = None
            if now != "standalone":
                detail = {"master": "epoch 1, position 42, in-sync b,c",
                          "slave": "master b at 127.0.0.1:1, position 40"}.get(
                              now, "new group: waiting for 2 of 2 members")
                components.append(admin_pb2.Component(kind="group", name=a.group, state=now,
                                                      detail=detail))
                group = admin_pb2.GroupStatus(name=a.group, role=ROLES[now])
                if now == "master":
                    group.epoch, group.position = 1, 42
                    group.in_sync.extend(["b", "c"])
                elif now == "slave":
                    group.master, group.master_address, group.position = "b", "127.0.0.1:1", 40
                else:
                    group.waiting = detail
                if now != "master":
                    refusal = f"broker {a.name} is a {now} in group {a.group}"
            return admin_pb2.StatusResponse(name=a.name, role=now, role_kind=ROLES[now],
                                            client_address=f"{a.host}:{a.port}",
                                            components=components, refusal=refusal,
                                            group=group, bridges=bridges)

        def ListQueues(self, request, context):
            if role() not in ("standalone", "master"):
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "a slave")
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


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[list[str]]:
    """The stand-in broker command. Afterwards, any process still running this test's
    script is a leftover: it is killed and the test fails."""
    script = tmp_path / "fake_broker.py"
    script.write_text(FAKE_BROKER)
    yield [sys.executable, str(script)]
    leftovers = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and str(script) in (cmdline(int(entry.name)) or []):
            if pid_alive(int(entry.name)):
                leftovers.append(int(entry.name))
            os.kill(int(entry.name), signal.SIGKILL)
    assert not leftovers, f"stand-in brokers left running: {leftovers}"


@pytest.fixture
def cluster(tmp_path: Path) -> Topology:
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
  C:
    brokers:
      c: {{port: {c}, max_message_bytes: 1000}}
"""
    return validate(parse(text, "c.yaml"), "c.yaml", parse_connector)


@pytest.fixture
def grouped(tmp_path: Path) -> Topology:
    """A standalone broker and a ZooKeeper pair linked both ways, as in ab_c.yaml. The
    stand-ins never contact the (nonexistent) ZooKeeper the file names."""
    a, b, c, rb, rc = free_ports(5)
    text = f"""
zookeeper: "127.0.0.1:9"
data: run/g
groups:
  A:
    brokers:
      a: {{port: {a}}}
    connectors:
      - uri: "static:(b)"
        securityToken: s3cret
  B:
    min_insync: 1
    securityToken: s3cret
    brokers:
      b: {{port: {b}, replication_port: {rb}, weight: 2}}
      c: {{port: {c}, replication_port: {rc}}}
    connectors:
      - uri: "static:(a)"
        networkTTL: 1
"""
    return validate(parse(text, "g.yaml"), "g.yaml", parse_connector)


@pytest.fixture
def linked(tmp_path: Path) -> Topology:
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
    return validate(parse(text, "l.yaml"), "l.yaml", parse_connector)


def planned(topology: Topology, tmp_path: Path, command: list[str]) -> list[BrokerPlan]:
    """The plans as `up` starts them: with their config files written."""
    plans = plan(topology, cwd=tmp_path, command=command, configs=True)
    write_configs(plans)
    return plans


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[BrokerProcess]]:
    """Processes a test starts with the low-level API; whatever is left is stopped."""
    procs: list[BrokerProcess] = []
    yield procs
    stop(procs, timeout=1)
    assert not any(p.alive() for p in procs)


# --------------------------------------------------------------------------- planning


def config_of(p: BrokerPlan) -> BrokerConfig:
    assert p.config is not None
    return p.config


def test_plan(cluster: Topology, tmp_path: Path) -> None:
    plans = plan(cluster, cwd=tmp_path, command=["nb"], configs=True)
    assert [p.name for p in plans] == ["a", "b", "c"]
    c = plans[2]
    assert c.data_dir == tmp_path / "run" / "c" / "c"
    assert c.log_path == c.data_dir / "broker.log"
    assert c.config_path == c.data_dir / "broker.json"
    assert c.argv == ("nb", "--config", str(c.config_path))
    assert c.config == BrokerConfig(
        name="c", host="127.0.0.1", port=c.spec.port, data_dir=c.data_dir, group="C",
        max_message_bytes=1000,
    )  # fmt: skip
    assert config_of(plans[1]).sync is Sync.LOCAL_MEM
    assert config_of(plans[0]).sync is Sync.LOCAL_DISK  # the default
    assert all(p.bridges == () and p.election is None for p in plans)
    # Finding brokers running (status, down) needs their command lines only.
    assert [p.argv for p in plan(cluster, cwd=tmp_path, command=["nb"])] == [
        p.argv for p in plans
    ]
    assert all(p.config is None for p in plan(cluster, cwd=tmp_path, command=["nb"]))


def test_plan_passes_connectors_resolved_with_options_folded_in(
    linked: Topology, tmp_path: Path
) -> None:
    a, b = plan(linked, cwd=tmp_path, command=["nb"], configs=True)
    pa, pb = a.spec.port, b.spec.port
    assert (config_of(a).group, config_of(a).connectors) == (
        "A", (f"static:(127.0.0.1:{pb})?networkTTL=2",),
    )  # fmt: skip
    assert (config_of(b).group, config_of(b).connectors) == (
        "B", (f"static:(127.0.0.1:{pa})?duplex=false&excludedDestinations=secret.>,audit.*",),
    )  # fmt: skip
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
    raw = parse(text, "x.yaml")
    raw["groups"]["A"]["connectors"] = [{"uri": uri, **options}]
    (connector,) = validate(raw, "x.yaml", parse_connector).groups[0].connectors
    assert connector_argument(connector) == argument
    assert isinstance(connector.spec, ConnectorSpec)
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
    election: lockfile
    brokers: {b: {port: 2}, c: {port: 3}}
"""
    group = validate(parse(text, "x.yaml"), "x.yaml", parse_connector).groups[0]
    assert expected_bridges(group) == [
        "static:127.0.0.1:2", "static:127.0.0.1:3",
        "masterslave:(127.0.0.1:2,127.0.0.1:3)", "to-bc", "masterslave:127.0.0.1:2",
    ]


def test_default_command_runs_this_package() -> None:
    assert broker_command() == [sys.executable, "-m", "broker", "broker"]


def test_format_table() -> None:
    assert format_table(("name", "n", "x"), [("a", 1, None), ("long", 100, "y")]) == (
        "name    n  x\n"
        "a       1  -\n"
        "long  100  y"
    )
    # Blank continuation cells keep a column of numbers right-aligned.
    assert format_table(("name", "n", "x"), [("a", 10, "p"), ("", "", "q")]) == (
        "name   n  x\n"
        "a     10  p\n"
        "          q"
    )


def _status(*bridges: BridgeView) -> BrokerStatus:
    return BrokerStatus(name="a", role="standalone", address="127.0.0.1:1",
                        role_kind=admin_pb2.ROLE_STANDALONE, bridges=bridges, queues=2, depth=7)


def test_bridges_of_reads_states_peers_and_errors() -> None:
    st = _status(
        BridgeView("static:h:1", admin_pb2.LINK_UP, peer="b"),
        BridgeView("static:h:2", admin_pb2.LINK_BACKOFF,
                   last_error="UNAVAILABLE: failed to connect"),
        BridgeView("static:h:3", admin_pb2.LINK_CONNECTING),
        BridgeView("from b", admin_pb2.LINK_UP, peer="b", inbound=True),
    )
    bridges = bridges_of(["static:h:1", "static:h:2", "static:h:3", "static:h:4"], st)
    assert [(b.state, b.peer, b.error) for b in bridges] == [
        ("up", "b", ""),
        ("backoff", "", "UNAVAILABLE: failed to connect"),
        ("connecting", "", ""),
        ("missing", "", "the broker does not report it (it reports: static:h:1, static:h:2, "
                        "static:h:3, from b)"),
    ]
    assert [bridge_cell(b) for b in bridges[:3]] == [
        "static:h:1 \u2192 b up",
        "static:h:2 backoff (UNAVAILABLE: failed to connect)",
        "static:h:3 connecting",
    ]
    assert status_line("a", "A", st, ["static:h:1", "static:h:2"]) == (
        "a (A): standalone, 2 queues, depth 7, in flight 0, consumers 0, "
        "bridges \u2192b up \u2192h:2 backoff"
    )
    assert bridges_of(["static:h:1"], None) == []


# ------------------------------------------------------------------ master/slave groups


def test_plan_gives_group_members_their_flags(grouped: Topology, tmp_path: Path) -> None:
    a, b, c = plan(grouped, cwd=tmp_path, command=["nb"], configs=True)
    rb, rc = (x.replication_port for x in grouped.groups[1].brokers)
    assert (a.election, b.election, c.election) == (None, "zookeeper", "zookeeper")
    ca, cb, cc = config_of(a), config_of(b), config_of(c)
    assert (ca.election, ca.token) == (Election.NONE, "")
    assert (
        cb.group, cb.election, cb.zookeeper, cb.replication_port, cb.replicas, cb.min_insync,
        cb.weight, cb.token, cb.connectors, cb.sync,
    ) == (
        "B", Election.ZOOKEEPER, "127.0.0.1:9", rb, 2, 1, 2, "s3cret",
        (f"static:(127.0.0.1:{a.spec.port})?networkTTL=1",), Sync.QUORUM_MEM,
    )  # fmt: skip
    assert "s3cret" not in " ".join(b.argv)  # in the broker's config file only
    assert cc.replication_port == rc
    assert cc.weight == 1  # the default
    # Only the master runs a group's bridges, but each member must be able to.
    assert b.bridges == c.bridges == (f"static:127.0.0.1:{a.spec.port}",)
    # An embedded ZooKeeper's connect string is known once it runs: `up` passes it in.
    b2 = plan(grouped, cwd=tmp_path, command=["nb"], zookeeper="127.0.0.1:2181", configs=True)[1]
    assert config_of(b2).zookeeper == "127.0.0.1:2181"


def test_plan_lockfile_group_and_zookeeper_group_of_one(tmp_path: Path) -> None:
    text = """
zookeeper: embedded
zookeeper_port: 2999
groups:
  L:
    election: lockfile
    sync: local_mem
    brokers: {l1: {port: 1}, l2: {port: 2}}
  Z:
    election: zookeeper
    session_timeout: 2.5
    zkPath: /x/Z
    sync: quorum_disk
    brokers: {z: {port: 3}}
"""
    t = validate(parse(text, "x.yaml"), "x.yaml", parse_connector)
    l1, l2, z = plan(t, cwd=tmp_path, command=["nb"], pick_port=lambda: 4444, configs=True)
    shared = tmp_path / "run" / "x" / "shared-L"
    for p in (l1, l2):
        cp = config_of(p)
        assert (cp.group, cp.election, cp.shared_dir, cp.sync) == (
            "L", Election.LOCKFILE, shared, Sync.LOCAL_MEM,
        )  # fmt: skip
    cz = config_of(z)
    assert (
        cz.group, cz.election, cz.zookeeper, cz.replication_port, cz.replicas, cz.zk_path,
        cz.session_timeout, cz.sync,
    ) == ("Z", Election.ZOOKEEPER, "127.0.0.1:2999", 4444, 1, "/x/Z", 2.5, Sync.QUORUM_DISK)


def _plans(grouped: Topology, tmp_path: Path) -> list[BrokerPlan]:
    return plan(grouped, cwd=tmp_path, command=["nb"])


_ROLES = {"standalone": admin_pb2.ROLE_STANDALONE, "master": admin_pb2.ROLE_MASTER,
          "slave": admin_pb2.ROLE_SLAVE, "electing": admin_pb2.ROLE_ELECTING}


def _member(
    name: str, role: str, detail: str = "", bridges: str = "up", position: int | None = None
) -> BrokerStatus:
    group = GroupView(role, detail, position)
    links: tuple[BridgeView, ...] = ()
    if role in ("standalone", "master"):
        links = (BridgeView("static:127.0.0.1:1", admin_pb2.LINK_UP, peer="x")
                 if bridges == "up" else
                 BridgeView("static:127.0.0.1:1", admin_pb2.LINK_BACKOFF,
                            last_error="UNAVAILABLE: refused"),)
    return BrokerStatus(name=name, role=role, address=f"127.0.0.1:{ord(name)}",
                        role_kind=_ROLES[role], group=group if role != "standalone" else None,
                        bridges=links)


def problem_lines(
    plans: list[BrokerPlan], statuses: dict[str, BrokerStatus | None]
) -> list[str]:
    return [problem_line(p) for p in cluster_problems(plans, statuses)]


def test_cluster_problems_for_groups(grouped: Topology, tmp_path: Path) -> None:
    plans = [dataclasses.replace(p, bridges=("static:127.0.0.1:1",)) for p in
             _plans(grouped, tmp_path)]
    a = _member("a", "standalone")
    master = _member("b", "master", "epoch 1, position 7, in-sync b,c")
    slave = _member("c", "slave", "master b at 127.0.0.1:98, position 7")
    assert problem_lines(plans, {"a": a, "b": master, "c": slave}) == []
    # Either member may be the master; a slave runs no bridges and is not asked for any.
    assert problem_lines(plans, {
        "a": a, "b": _member("b", "slave", "master c at x, position 7"),
        "c": _member("c", "master", "epoch 2, position 7, in-sync c"),
    }) == []
    electing = _member("c", "electing", "new group: waiting for 2 of 2 members")
    assert problem_lines(plans, {"a": a, "b": master, "c": electing}) == [
        "c: electing (new group: waiting for 2 of 2 members), not yet a slave of b"
    ]
    assert problem_lines(plans, {"a": a, "b": None, "c": electing}) == [
        f"b: not answering Admin.Status at {plans[1].address}",
        "group B: no master yet: c electing (new group: waiting for 2 of 2 members)",
    ]
    assert problem_lines(plans, {"a": a, "b": master, "c": _member("c", "master")}) == [
        "group B: 2 members say they are master: b, c"
    ]
    down = _member("b", "master", "epoch 1, position 7, in-sync b,c", bridges="backoff")
    assert problem_lines(plans, {"a": a, "b": down, "c": slave}) == [
        "b: bridge static:127.0.0.1:1 backoff: UNAVAILABLE: refused"
    ]

    # Typed, so that status can sort them without reading the words back.
    assert [p.kind for p in cluster_problems(plans, {"a": a, "b": None, "c": electing})] == [
        ProblemKind.NOT_ANSWERING, ProblemKind.NO_MASTER
    ]
    assert [(p.kind, p.broker, p.subject) for p in cluster_problems(
        plans, {"a": a, "b": down, "c": slave})] == [
        (ProblemKind.BRIDGE_DOWN, "b", "static:127.0.0.1:1")
    ]


def test_table_and_lines_show_roles_positions_and_the_master(
    grouped: Topology, tmp_path: Path
) -> None:
    plans = [dataclasses.replace(p, bridges=("static:127.0.0.1:1",)) for p in
             _plans(grouped, tmp_path)]
    master = _member("b", "master", "epoch 3, position 1042, in-sync b,c", position=1042)
    slave = _member("c", "slave", "master b at 127.0.0.1:98, position 1040", position=1040)
    assert table_headers(plans) == GROUP_TABLE_HEADERS
    assert table_headers(plans[:1]) == TABLE_HEADERS
    assert (master.position, slave.position, _member("a", "standalone").position) == (
        1042, 1040, None
    )
    b_row, = table_rows(plans[1], 11, "up", master, position=True)
    c_row, = table_rows(plans[2], 12, "up", slave, position=True)
    assert b_row[2:4] == ("master", 1042) and b_row[-1] == "static:127.0.0.1:1 \u2192 x up"
    assert c_row[2:4] == ("slave", 1040) and c_row[-1] == "-"  # slaves run no bridges
    assert group_lines(plans, {"b": master, "c": slave}) == [
        "group B (zookeeper): master b at 127.0.0.1:98 (epoch 3, position 1042, in-sync b,c)"
    ]
    assert group_lines(plans, {"b": None, "c": _member("c", "electing", "waiting")}) == [
        "group B (zookeeper): no master: b not answering; c electing (waiting)"
    ]
    assert status_line("b", "B", master, ["static:127.0.0.1:1"]) == (
        "b (B): master, epoch 3, position 1042, in-sync b,c, bridges \u2192x up"
    )
    assert status_line("c", "B", slave, ["static:127.0.0.1:1"]) == (
        "c (B): slave, master b at 127.0.0.1:98, position 1040"
    )
    assert role_change_line("c", "B", "slave", master) == (
        "c (B): slave \u2192 master, epoch 3, position 1042, in-sync b,c"
    )
    assert role_change_line("b", "B", "master", None) == "b (B): master \u2192 not answering"


# ------------------------------------------------------------------ start, ready, stop


def test_start_wait_stop(cluster: Topology, tmp_path: Path, fake: list[str],
                         started: list[BrokerProcess]) -> None:
    plans = planned(cluster, tmp_path, fake)
    started += start(plans, detach=False)
    wait_ready(started, timeout=30)
    assert [p.address for p in started] == [p.plan.address for p in started]
    probe = AdminProbe()
    try:
        st = probe.status(started[0].plan.address)
    finally:
        probe.close()
    assert st is not None and (st.name, st.role, st.queues, st.depth) == ("a", "standalone", 1, 3)
    stop(started)
    assert not any(p.alive() for p in started)
    log = started[0].plan.log_path.read_text()
    assert "--- netbroker up: starting broker a at " in log
    assert "fake broker a stopping" in log  # it got SIGTERM, not SIGKILL


def test_a_broker_that_dies_is_named_with_its_log(
    cluster: Topology, tmp_path: Path, fake: list[str], started: list[BrokerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_BROKER_MODE", "b:die")
    started += start(planned(cluster, tmp_path, fake), detach=False)
    with pytest.raises(UpError) as info:
        wait_ready(started, timeout=30)
    text = str(info.value)
    log = started[1].plan.log_path
    assert text.splitlines()[0] == (
        f"broker b exited with code 3 before it was ready; last lines of {log}:"
    )
    assert "    fatal: cannot open the store" in text.splitlines()


def test_a_broker_that_never_gets_ready_times_out(
    cluster: Topology, tmp_path: Path, fake: list[str], started: list[BrokerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_BROKER_MODE", "c:hang")
    started += start(planned(cluster, tmp_path, fake), detach=False)
    with pytest.raises(UpError) as info:
        wait_ready(started, timeout=3)
    assert str(info.value).splitlines()[0].startswith("broker c was not ready within 3 s; last")


def test_ready_by_admin_status_without_the_line(
    cluster: Topology, tmp_path: Path, fake: list[str], started: list[BrokerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_BROKER_MODE", "a:quiet")
    started += start(planned(cluster, tmp_path, fake), detach=False)
    probe = AdminProbe()
    try:
        wait_ready(started, timeout=30, probe=probe)
    finally:
        probe.close()
    assert started[0].address == started[0].plan.address


def test_stop_escalates_to_sigkill(
    cluster: Topology, tmp_path: Path, fake: list[str], started: list[BrokerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_BROKER_MODE", "a:ignore_term")
    started += start(planned(cluster, tmp_path, fake), detach=False)
    wait_ready(started, timeout=30)
    said: list[str] = []
    t0 = time.monotonic()
    stop(started, timeout=0.5, report=said.append)
    assert time.monotonic() - t0 < 5
    assert not any(p.alive() for p in started)
    assert started[0].returncode == -signal.SIGKILL
    assert said == [f"broker a (pid {started[0].pid}) did not stop within 0.5 s; killing it"]


def test_start_failure_stops_those_already_started(
    cluster: Topology, tmp_path: Path, fake: list[str],
) -> None:
    plans = planned(cluster, tmp_path, fake)
    broken = BrokerPlan(plans[2].spec, plans[2].data_dir, plans[2].log_path,
                           (str(tmp_path / "no-such-program"),))
    spawned: list[BrokerProcess] = []
    real_spawn = spawn

    def spy(plan: BrokerPlan, *, detach: bool) -> BrokerProcess:
        proc = real_spawn(plan, detach=detach)
        spawned.append(proc)
        return proc

    with pytest.MonkeyPatch.context() as m:
        m.setattr(processes, "spawn", spy)
        with pytest.raises(UpError, match=r"broker c: cannot start .*no-such-program"):
            start([plans[0], plans[1], broken], detach=False)
    assert len(spawned) == 2
    assert not any(p.alive() for p in spawned)


# ------------------------------------------------------------------ up / status / down


def test_up_detached_then_status_then_down(
    cluster: Topology, tmp_path: Path, fake: list[str]
) -> None:
    out, err = io.StringIO(), io.StringIO()
    state_file = tmp_path / "run" / "c" / "netbroker-up.json"
    try:
        assert up(cluster, detach=True, out=out, err=err, command=fake, cwd=tmp_path) == 0
        lines = out.getvalue().splitlines()
        assert lines[0].split() == [
            "broker", "group", "role", "client", "pid", "state", "depth", "bridges"
        ]
        assert [line.split()[:3] for line in lines[1:]] == [
            ["a", "A", "standalone"], ["b", "B", "standalone"], ["c", "C", "standalone"]
        ]
        assert all(line.split()[5:] == ["up", "3", "-"] for line in lines[1:])
        assert "logs in run/c/<broker>/broker.log" in err.getvalue()
        state = json.loads(state_file.read_text())
        pids = [b["pid"] for b in state["brokers"]]
        assert state["detached"] is True
        assert all(pid_alive(pid) for pid in pids)
        # Detached brokers lead sessions of their own, so they outlive a closed terminal.
        assert all(os.getsid(pid) == pid for pid in pids)

        out = io.StringIO()
        assert status(cluster, out=out, err=io.StringIO(), cwd=tmp_path) == 0
        rows = [line.split() for line in out.getvalue().splitlines()[1:4]]
        assert [r[0] for r in rows] == ["a", "b", "c"]
        assert all(r[-3:] == ["up", "3", "-"] for r in rows), rows

        with pytest.raises(UpError, match="already running: a \\(pid"):
            up(cluster, out=io.StringIO(), err=io.StringIO(), command=fake, cwd=tmp_path)
    finally:
        out = io.StringIO()
        assert down(cluster, out=out, err=io.StringIO(), cwd=tmp_path) == 0
    assert out.getvalue().splitlines() == [
        f"stopped {n} (pid {pid})" for n, pid in zip("abc", pids, strict=True)
    ]
    assert not any(pid_alive(pid) for pid in pids)
    assert not state_file.exists()

    err = io.StringIO()
    assert status(cluster, out=io.StringIO(), err=err, cwd=tmp_path) == 1
    assert err.getvalue() == "netbroker: 3 of 3 brokers not answering: a, b, c\n"


def test_status_and_down_find_a_cluster_started_from_another_directory(
    cluster: Topology, tmp_path: Path, fake: list[str]
) -> None:
    """The data directory is relative to where `up` ran; the registry says where that
    was, so `status`, `down` and a second `up` from elsewhere find the running cluster."""
    here, there = tmp_path, tmp_path / "elsewhere"
    there.mkdir()
    try:
        assert up(cluster, detach=True, out=io.StringIO(), err=io.StringIO(), command=fake,
                  cwd=here) == 0  # fmt: skip
        state = json.loads((here / "run" / "c" / "netbroker-up.json").read_text())
        pids = [b["pid"] for b in state["brokers"]]
        out, err = io.StringIO(), io.StringIO()
        assert status(cluster, out=out, err=err, cwd=there) == 0
        assert err.getvalue() == f"netbroker: {cluster.source} was started from {here}\n"
        assert [line.split()[0] for line in out.getvalue().splitlines()[1:4]] == ["a", "b", "c"]
        with pytest.raises(UpError, match=f"already running, started from {here}"):
            up(cluster, out=io.StringIO(), err=io.StringIO(), command=fake, cwd=there)
        assert not (there / "run").exists()
    finally:
        assert down(cluster, out=io.StringIO(), err=io.StringIO(), cwd=there) == 0
    assert not any(pid_alive(pid) for pid in pids)
    assert registry.lookup(cluster.source) is None


def test_a_second_up_of_one_file_is_refused_at_once_naming_the_first(
    cluster: Topology, tmp_path: Path, fake: list[str]
) -> None:
    """While one `up` starts or supervises the file's cluster (it holds the lock), a
    second fails at once instead of racing it for the ports and the data."""
    with registry.up_lock(cluster.source, tmp_path):
        started = time.monotonic()
        with pytest.raises(UpError, match=rf"another `netbroker up` of this file is running "
                           rf"\(pid {os.getpid()}, started from {tmp_path}\)"):  # fmt: skip
            up(cluster, out=io.StringIO(), err=io.StringIO(), command=fake, cwd=tmp_path / "x")
        assert time.monotonic() - started < 1.0
    assert not (tmp_path / "x").exists()


def test_up_waits_for_every_bridge_then_shows_them(
    linked: Topology, tmp_path: Path, fake: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_BROKER_MODE", "b:bridge_late")
    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    try:
        assert up(linked, detach=True, out=out, err=err, command=fake, cwd=tmp_path) == 0
        assert time.monotonic() - t0 >= 1.5  # b's bridge came up only after 1.5 s
        pa, pb = (b.port for b in linked.brokers)
        # The table shows each bridge with its peer and state (pid, client column aside).
        rows = [line.split() for line in out.getvalue().splitlines()[1:]]
        assert [r[:3] + r[5:] for r in rows] == [
            ["a", "A", "standalone", "up", "3", f"static:127.0.0.1:{pb}", "\u2192", "peer", "up"],
            ["b", "B", "standalone", "up", "3", f"static:127.0.0.1:{pa}", "\u2192", "peer", "up"],
        ]
        assert "netbroker: brokers ready; waiting for 2 bridges" in err.getvalue()
    finally:
        down(linked, out=io.StringIO(), err=io.StringIO(), cwd=tmp_path)


def test_up_names_the_bridges_not_up_and_stops_everything(
    linked: Topology, tmp_path: Path, fake: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_BROKER_MODE", "a:bridge_down")
    err = io.StringIO()
    t0 = time.monotonic()
    with pytest.raises(UpError) as info:
        up(linked, detach=True, timeout=2, out=io.StringIO(), err=err, command=fake,
              cwd=tmp_path)
    assert time.monotonic() - t0 < 10
    pb = linked.brokers[1].port
    assert str(info.value) == (
        "the cluster was not ready within 2 s:\n"
        f"    a: bridge static:127.0.0.1:{pb} backoff: UNAVAILABLE: connection refused"
    )
    assert "netbroker: stopping a, b" in err.getvalue()
    assert not (tmp_path / "run" / "l" / "netbroker-up.json").exists()


def test_status_fails_while_a_bridge_is_down(
    linked: Topology, tmp_path: Path, fake: list[str], started: list[BrokerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Started without `up` (which would refuse to finish): status works from the ports.
    monkeypatch.setenv("FAKE_BROKER_MODE", "b:bridge_down")
    started += start(planned(linked, tmp_path, fake), detach=False)
    wait_ready(started, timeout=30)
    out, err = io.StringIO(), io.StringIO()
    assert status(linked, out=out, err=err, cwd=tmp_path) == 1
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
    cluster: Topology, tmp_path: Path, fake: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_BROKER_MODE", "c:die")
    err = io.StringIO()
    with pytest.raises(UpError, match="broker c exited with code 3"):
        up(cluster, detach=True, out=io.StringIO(), err=err, command=fake, cwd=tmp_path)
    assert "netbroker: stopping a, b" in err.getvalue()
    assert not (tmp_path / "run" / "c" / "netbroker-up.json").exists()
    for name in "ab":
        log = tmp_path / "run" / "c" / name / "broker.log"

        def stopped(log: Path = log, name: str = name) -> bool:
            return f"fake broker {name} stopping" in log.read_text()

        wait_until(stopped, 5, f"{name} to have stopped")


def test_up_foreground_supervises_until_sigterm(
    cluster: Topology, tmp_path: Path, fake: list[str]
) -> None:
    state_file = tmp_path / "run" / "c" / "netbroker-up.json"
    out, err = io.StringIO(), io.StringIO()

    def stop_when_reported() -> None:
        # SIGTERM ourselves once `up` runs and has printed a status round: the handler
        # that `up` installed turns it into an orderly stop.
        deadline = time.monotonic() + 60
        while "c (C): standalone" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_reported, daemon=True).start()
    rc = up(cluster, interval=0.3, out=out, err=err, command=fake, cwd=tmp_path)
    assert rc == 0, err.getvalue()
    text = out.getvalue()
    assert "a (A): standalone, 1 queue, depth 3, in flight 0, consumers 1" in text
    assert "netbroker: stopping a, b, c" in err.getvalue()
    assert not state_file.exists()
    for name in "abc":
        log = (tmp_path / "run" / "c" / name / "broker.log").read_text()
        assert f"fake broker {name} stopping" in log


def test_up_foreground_reports_a_broker_that_exits(
    cluster: Topology, tmp_path: Path, fake: list[str]
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
    rc = up(cluster, interval=0, out=out, err=err, command=fake, cwd=tmp_path)
    assert rc == 1  # a broker died on its own during the run
    assert "netbroker: broker b was killed by SIGKILL; last lines of" in err.getvalue()
    assert "netbroker: stopping a, c" in err.getvalue()


def _pid_of(state_file: Path, name: str) -> int:
    return int(next(b["pid"] for b in json.loads(state_file.read_text())["brokers"]
                    if b["name"] == name))  # fmt: skip


def test_restart_brings_one_member_back_after_kill_9(
    cluster: Topology, tmp_path: Path, fake: list[str]
) -> None:
    state_file = tmp_path / "run" / "c" / "netbroker-up.json"
    try:
        assert up(cluster, detach=True, out=io.StringIO(), err=io.StringIO(), command=fake,
                  cwd=tmp_path) == 0  # fmt: skip
        old = _pid_of(state_file, "b")
        with pytest.raises(UpError, match=rf"broker b is running \(pid {old}\)"):
            restart(cluster, "b", out=io.StringIO(), err=io.StringIO(), cwd=tmp_path)
        unknown = r"no broker 'x' was started by `up` \(brokers: a, b, c\)"
        with pytest.raises(UpError, match=unknown):
            restart(cluster, "x", out=io.StringIO(), err=io.StringIO(), cwd=tmp_path)
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(old) and time.monotonic() < deadline:
            time.sleep(0.02)
        out = io.StringIO()
        assert restart(cluster, "b", out=out, err=io.StringIO(), cwd=tmp_path) == 0
        new = _pid_of(state_file, "b")
        assert new != old and pid_alive(new)
        assert out.getvalue().splitlines()[0] == f"restarted b (pid {new})"
        assert status(cluster, out=io.StringIO(), err=io.StringIO(), cwd=tmp_path) == 0
    finally:
        out = io.StringIO()
        assert down(cluster, out=out, err=io.StringIO(), cwd=tmp_path) == 0
    assert f"stopped b (pid {new})" in out.getvalue().splitlines()
    assert not pid_alive(new)


def test_a_foreground_up_adopts_a_restarted_member(
    cluster: Topology, tmp_path: Path, fake: list[str]
) -> None:
    """kill -9 of a member of a foreground `up`, `restart` from elsewhere: the running
    `up` says so, and its Ctrl-C stops the new process too."""
    out, err = io.StringIO(), io.StringIO()
    state_file = tmp_path / "run" / "c" / "netbroker-up.json"
    pids: list[int] = []

    def kill_b_restart_then_stop() -> None:
        deadline = time.monotonic() + 60
        while not state_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(_pid_of(state_file, "b"), signal.SIGKILL)
        while "broker b was killed" not in err.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        restart(cluster, "b", out=io.StringIO(), err=io.StringIO(), cwd=tmp_path)
        pids.append(_pid_of(state_file, "b"))
        while "broker b restarted" not in err.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=kill_b_restart_then_stop, daemon=True).start()
    rc = up(cluster, interval=0, out=out, err=err, command=fake, cwd=tmp_path)
    assert f"netbroker: broker b restarted (pid {pids[0]})" in err.getvalue()
    assert rc == 0  # the member that died is back
    assert not pid_alive(pids[0])


def test_down_ignores_a_reused_pid(cluster: Topology, tmp_path: Path) -> None:
    # The state file names our own pid with another command line: not ours to kill.
    state_file = tmp_path / "run" / "c" / "netbroker-up.json"
    state_file.parent.mkdir(parents=True)
    state_file.write_text(json.dumps({
        "detached": True, "supervisor": None,
        "brokers": [{"name": "a", "pid": os.getpid(), "argv": ["something", "else"]}],
    }))
    out = io.StringIO()
    assert down(cluster, out=out, err=io.StringIO(), cwd=tmp_path) == 0
    assert out.getvalue() == "nothing was running\n"
    assert not state_file.exists()


def test_damaged_state_file(cluster: Topology, tmp_path: Path) -> None:
    state_file = tmp_path / "run" / "c" / "netbroker-up.json"
    state_file.parent.mkdir(parents=True)
    state_file.write_text("{not json")
    with pytest.raises(UpError, match=r"run/c/netbroker-up\.json is damaged"):
        down(cluster, out=io.StringIO(), err=io.StringIO(), cwd=tmp_path)


# ------------------------------------------------------- groups with stand-in brokers


def test_up_waits_for_a_master_then_shows_roles(
    grouped: Topology, tmp_path: Path, fake: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_BROKER_ROLE", "b:electing>master,c:slave")
    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    try:
        assert up(grouped, detach=True, out=out, err=err, command=fake, cwd=tmp_path) == 0
        assert time.monotonic() - t0 >= 1.5  # b became master only after 1.5 s
        assert "waiting for group B to elect a master and 2 bridges" in err.getvalue()
        lines = out.getvalue().splitlines()
        assert lines[0].split() == list(GROUP_TABLE_HEADERS)
        rows = [line.split() for line in lines[1:4]]
        assert [r[:4] for r in rows] == [
            ["a", "A", "standalone", "-"], ["b", "B", "master", "42"], ["c", "B", "slave", "40"],
        ]
        assert rows[2][-3:] == ["up", "-", "-"]  # the slave: no depth, no bridges
        pb = grouped.brokers[1].port
        assert lines[4] == (
            f"group B (zookeeper): master b at 127.0.0.1:{pb} (epoch 1, position 42, "
            "in-sync b,c)"
        )
        state_file = tmp_path / "run" / "g" / "netbroker-up.json"
        assert state_file.stat().st_mode & 0o077 == 0  # argv holds the securityToken

        # The token is in each broker's own config file, readable by its owner only,
        # and not on its command line.
        entries = json.loads(state_file.read_text())["brokers"]
        pid_b = next(e["pid"] for e in entries if e["name"] == "b")
        config_b = tmp_path / "run" / "g" / "b" / "broker.json"
        assert cmdline(pid_b) == [*fake, "--config", str(config_b)]
        assert "s3cret" not in (Path("/proc") / str(pid_b) / "cmdline").read_text()
        assert config_b.stat().st_mode & 0o777 == 0o600
        assert BrokerConfig.from_file(config_b).token == "s3cret"

        out, err = io.StringIO(), io.StringIO()
        assert status(grouped, out=out, err=err, cwd=tmp_path) == 0, err.getvalue()
        assert f"group B (zookeeper): master b at 127.0.0.1:{pb}" in out.getvalue()
        assert "zookeeper: 127.0.0.1:9 (external)" in out.getvalue()
    finally:
        down(grouped, out=io.StringIO(), err=io.StringIO(), cwd=tmp_path)


def test_up_names_a_group_that_elects_no_master_and_stops_everything(
    grouped: Topology, tmp_path: Path, fake: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_BROKER_ROLE", "b:electing,c:electing")
    err = io.StringIO()
    with pytest.raises(UpError) as info:
        up(grouped, detach=True, timeout=5, out=io.StringIO(), err=err, command=fake,
              cwd=tmp_path)
    assert str(info.value) == (
        "the cluster was not ready within 5 s:\n"
        "    group B: no master yet: b electing (new group: waiting for 2 of 2 members); "
        "c electing (new group: waiting for 2 of 2 members)"
    )
    assert "netbroker: stopping a, b, c" in err.getvalue()
    assert not (tmp_path / "run" / "g" / "netbroker-up.json").exists()


def test_up_foreground_reports_a_failover_as_it_happens(
    grouped: Topology, tmp_path: Path, fake: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # b is master, then electing; c slave, then master: once `up` runs and says so.
    switch = tmp_path / "failover"
    monkeypatch.setenv("FAKE_BROKER_ROLE", "b:master>electing,c:slave>master")
    monkeypatch.setenv("FAKE_BROKER_SWITCH", str(switch))
    out, err = io.StringIO(), io.StringIO()

    def fail_over_then_stop() -> None:
        deadline = time.monotonic() + 60
        while "running; Ctrl-C" not in err.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        switch.touch()
        while "c (B): slave \u2192 master" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=fail_over_then_stop, daemon=True).start()
    rc = up(grouped, interval=0, out=out, err=err, command=fake, cwd=tmp_path)
    assert rc == 0, err.getvalue()
    text = out.getvalue()
    assert "] b (B): master \u2192 electing, new group: waiting for 2 of 2 members" in text
    assert "] c (B): slave \u2192 master, epoch 1, position 42, in-sync b,c" in text
    assert "netbroker: stopping a, b, c" in err.getvalue()
