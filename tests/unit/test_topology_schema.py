"""The topology schema's pydantic side: which problem is reported first when a file has
several, and host:port values checked by the shared address parser."""

from __future__ import annotations

import pytest

from broker.cluster.errors import TopologyError
from broker.cluster.loader import parse
from broker.cluster.model import Topology
from broker.cluster.schema import validate
from netconnector.uri import parse_connector

SRC = "topologies/x.yaml"


def check(text: str) -> Topology:
    return validate(parse(text, SRC), SRC, parse_connector)


def error(text: str) -> str:
    with pytest.raises(TopologyError) as info:
        check(text)
    return str(info.value)


def test_an_unknown_key_comes_before_problems_inside_its_mapping() -> None:
    text = "groups: {A: {brokers: {a: {port: 70000}}, zzz: 1}}"
    assert error(text).startswith(f"{SRC}: groups.A.zzz: unknown key;")
    text = "groups: {A: {brokers: {a: {port: 70000, prot: 1}}}}"
    assert error(text) == f"{SRC}: groups.A.brokers.a.prot: unknown key; did you mean 'port'?"


def test_a_bad_name_comes_before_the_keys_it_names() -> None:
    text = "groups: {'a b': {zzz: 1, brokers: {a: {port: 1}}}}"
    assert error(text).startswith(f"{SRC}: groups.a b: invalid group name 'a b'")


def test_a_groups_rule_comes_before_a_later_groups_problem() -> None:
    text = "groups: {A: {replicas: 2, brokers: {a: {port: 1}}}, B: {brokers: {b: {port: x}}}}"
    assert error(text) == (
        f"{SRC}: groups.A.replicas: only for election: zookeeper (group A has one broker "
        "and no election)"
    )


def test_non_string_keys_are_unknown_keys() -> None:
    assert error("groups: {A: {1: 2, brokers: {a: {port: 1}}}}").startswith(
        f"{SRC}: groups.A.1: unknown key; expected one of brokers,"
    )
    text = "groups: {A: {brokers: {a: {port: 1}}, connectors: [{uri: 'static:(b)', 5: 1}]}}"
    assert error(text) == f"{SRC}: groups.A.connectors[0]: option names must be strings, got 5"


@pytest.mark.parametrize("host", ["'a b'", "'999.1.1.1'", "'fe80::zz'"])
def test_a_broker_host_is_checked_as_an_address(host: str) -> None:
    text = f"groups: {{A: {{brokers: {{a: {{port: 1, host: {host}}}}}}}}}"
    assert error(text) == (
        f"{SRC}: groups.A.brokers.a.host: expected a host name or address, got {host}"
    )


def test_an_ipv6_host_is_reached_in_brackets() -> None:
    t = check("groups: {A: {brokers: {a: {port: 7, host: '::1'}}}}")
    assert t.brokers[0].client_address == "[::1]:7"


@pytest.mark.parametrize(
    ("value", "servers"),
    [("'tcp://zk1:2181'", ("zk1:2181",)), ("[' zk1:02181']", ("zk1:2181",))],
)
def test_zookeeper_servers_are_normalised(value: str, servers: tuple[str, ...]) -> None:
    t = check(f"zookeeper: {value}\ngroups: {{A: {{brokers: {{a: {{port: 1}}}}}}}}")
    assert t.zookeeper is not None and t.zookeeper.servers == servers


def test_a_bad_zookeeper_host_is_refused() -> None:
    text = "zookeeper: 'a b:2181'\ngroups: {A: {brokers: {a: {port: 1}}}}"
    assert (
        error(text) == f"{SRC}: zookeeper: expected host:port with a port 1-65535, got 'a b:2181'"
    )
