"""`stomp_port` and `metrics_port` in topology files: parsed, checked like every port,
handed to the broker's config, and shipped in topologies/ab_c.yaml."""

from __future__ import annotations

from pathlib import Path

from broker.cluster.configs import metrics_port, write_configs
from broker.cluster.loader import load
from broker.cluster.model import AUTO_PORT
from broker.cluster.plan import broker_config, plan
from netconnector.uri import parse_connector
from tests.unit.test_topology import ROOT, check, error


def test_stomp_port_is_parsed_and_reaches_the_config(tmp_path: Path) -> None:
    t = check(
        "groups: {A: {brokers: {a: {port: 1, stomp_port: 61613}}}, X: {brokers: {x: {port: 2}}}}"
    )
    (a,), (x,) = (g.brokers for g in t.groups)
    assert (a.stomp_port, x.stomp_port) == (61613, None)
    assert broker_config(t.groups[0], a, tmp_path).stomp_port == 61613
    assert broker_config(t.groups[1], x, tmp_path).stomp_port == 0  # no STOMP


def test_stomp_port_is_checked_like_every_port() -> None:
    assert error("groups: {A: {brokers: {a: {port: 1, stomp_port: 1}}}}").endswith(
        "groups.A.brokers.a.stomp_port: port 1 is already used by groups.A.brokers.a.port"
    )
    assert "groups.A.brokers.a.stomp_port: expected an integer 1-65535, got 0" in error(
        "groups: {A: {brokers: {a: {port: 1, stomp_port: 0}}}}"
    )
    assert (
        "groups.B.brokers.b.port: port 5 is already used by groups.A.brokers.a.stomp_port"
        in error(
            "groups: {A: {brokers: {a: {port: 1, stomp_port: 5}}}, B: {brokers: {b: {port: 5}}}}"
        )
    )


def test_ab_c_yaml_has_stomp_on_every_broker() -> None:
    t = load(ROOT / "topologies" / "ab_c.yaml", parse_connector)
    assert {b.name: b.stomp_port for b in t.brokers} == {"a": 61613, "b": 61614, "c": 61615}


def test_metrics_port_is_parsed_checked_and_shipped(tmp_path: Path) -> None:
    t = check("groups: {A: {brokers: {a: {port: 1, metrics_port: 9404}}}}")
    (a,) = t.groups[0].brokers
    assert broker_config(t.groups[0], a, tmp_path).metrics_port == 9404
    assert error("groups: {A: {brokers: {a: {port: 1, stomp_port: 7, metrics_port: 7}}}}").endswith(
        "groups.A.brokers.a.metrics_port: port 7 is already used by groups.A.brokers.a.stomp_port"
    )
    shipped = load(ROOT / "topologies" / "ab_c.yaml", parse_connector)
    assert {b.name: b.metrics_port for b in shipped.brokers} == {"a": 9404, "b": 9405, "c": 9406}


def test_metrics_port_auto_gets_distinct_free_ports_none_of_the_files(tmp_path: Path) -> None:
    t = check(
        "groups: {A: {brokers: {a: {port: 1, metrics_port: auto}, "
        "b: {port: 2, metrics_port: 9404}, c: {port: 3, metrics_port: auto}}, "
        "election: lockfile}}"
    )
    assert [b.metrics_port for b in t.brokers] == [AUTO_PORT, 9404, AUTO_PORT]
    plans = plan(t, cwd=tmp_path, configs=True)
    ports = [p.metrics_port for p in plans]
    assert ports[1] == 9404
    assert ports[0] and ports[2] and len(set(ports)) == 3
    assert all(p.config is not None and p.config.metrics_port == p.metrics_port for p in plans)
    # Without configs (status, down) an auto port is not known from the file alone...
    assert [p.metrics_port for p in plan(t, cwd=tmp_path)] == [None, 9404, None]
    # ...but from the config file `up` wrote.
    write_configs(plans)
    assert [metrics_port(p) for p in plan(t, cwd=tmp_path)] == ports


def test_metrics_port_auto_is_no_port_of_its_own_and_other_values_are_refused() -> None:
    # Two autos never clash with each other in the file's port check.
    check("groups: {A: {brokers: {a: {port: 1, metrics_port: auto}}}, "
          "B: {brokers: {b: {port: 2, metrics_port: auto}}}}")  # fmt: skip
    for bad, shown in (("0", "0"), ("Auto", "'Auto'"), ("'9404'", "'9404'"), ("true", "true")):
        assert error(
            f"groups: {{A: {{brokers: {{a: {{port: 1, metrics_port: {bad}}}}}}}}}"
        ).endswith(
            "groups.A.brokers.a.metrics_port: expected an integer 1-65535, or auto "
            f"(`up` picks a free port), got {shown}"
        )
