"""Topology files: the shape that is accepted, and the exact words of every refusal."""

from __future__ import annotations

import textwrap
from pathlib import Path, PurePath

import pytest

from broker.cluster.errors import TopologyError
from broker.cluster.loader import load, parse
from broker.cluster.model import BrokerSpec, Connector, Topology, ZooKeeper
from broker.cluster.rules import UnknownBroker, resolve_broker_names
from broker.cluster.schema import check_name, validate
from netconnector.uri import ConnectorSpec, parse_connector

ROOT = Path(__file__).resolve().parents[2]
SRC = "topologies/x.yaml"

AB_C = """\
zookeeper: embedded
data: run/ab_c
groups:
  A:
    brokers:
      a: {port: 61616}
    connectors:
      - uri: "masterslave:(127.0.0.1:61617,127.0.0.1:61618)"
  B:
    election: zookeeper
    replicas: 2
    sync: quorum_mem
    brokers:
      b: {port: 61617, replication_port: 62621}
      c: {port: 61618, replication_port: 62622, weight: 2}
    connectors:
      - uri: "static:(127.0.0.1:61616)"
        networkTTL: 1
        excludedDestinations: ["audit.>"]
"""


def check(text: str) -> Topology:
    return validate(parse(textwrap.dedent(text), SRC), SRC, parse_connector)


def spec_of(c: Connector) -> ConnectorSpec:
    """The connector's parsed URI (the topology keeps it behind a protocol)."""
    assert isinstance(c.spec, ConnectorSpec)
    return c.spec


def error(text: str) -> str:
    with pytest.raises(TopologyError) as info:
        check(text)
    return str(info.value)


# ------------------------------------------------------------------------ accepted


def test_reference_shape_is_parsed_into_dataclasses() -> None:
    t = check(AB_C)
    assert t.source == SRC
    assert t.zookeeper == ZooKeeper(embedded=True)
    assert t.data == PurePath("run/ab_c")
    assert [g.name for g in t.groups] == ["A", "B"]
    a, b = t.groups
    assert a.brokers == (BrokerSpec(name="a", group="A", port=61616),)
    assert a.connectors == (Connector("masterslave:(127.0.0.1:61617,127.0.0.1:61618)", {}),)
    assert (b.election, b.replicas, b.sync) == ("zookeeper", 2, "quorum_mem")
    assert [x.name for x in t.brokers] == ["a", "b", "c"]
    assert b.brokers[1].replication_port == 62622
    assert b.brokers[1].weight == 2
    assert b.connectors[0].options == {"networkTTL": 1, "excludedDestinations": ["audit.>"]}
    assert t.brokers[0].client_address == "127.0.0.1:61616"


def test_data_is_relative_to_the_working_directory(tmp_path: Path) -> None:
    t = check(AB_C)
    assert t.data_root(tmp_path) == tmp_path / "run" / "ab_c"
    assert t.broker_data_dir(t.brokers[2], tmp_path) == tmp_path / "run" / "ab_c" / "c"


def test_data_defaults_to_run_and_the_file_name() -> None:
    t = check("groups: {A: {brokers: {a: {port: 1}}}}")
    assert t.data == PurePath("run/x")


def test_optional_broker_keys() -> None:
    t = check("""
        groups:
          G:
            election: lockfile
            sync: local_mem
            brokers:
              g1: {port: 7000, host: 0.0.0.0, max_message_bytes: 1048576, sync: local_disk}
              g2: {port: 7001}
    """)
    g = t.groups[0]
    assert g.brokers[0].host == "0.0.0.0"
    assert g.brokers[0].client_address == "127.0.0.1:7000"  # wildcard reached via loopback
    assert g.brokers[0].max_message_bytes == 1048576
    assert g.effective_sync(g.brokers[0]) == "local_disk"
    assert g.effective_sync(g.brokers[1]) == "local_mem"


def test_same_port_on_different_hosts_is_allowed() -> None:
    t = check("""
        groups:
          A: {brokers: {a: {port: 7000, host: 127.0.0.1}}}
          B: {brokers: {b: {port: 7000, host: 127.0.0.2}}}
    """)
    assert [b.port for b in t.brokers] == [7000, 7000]


@pytest.mark.parametrize(
    ("value", "servers"),
    [
        ('"zk1:2181,zk2:2181"', ("zk1:2181", "zk2:2181")),
        ("[zk1:2181, '127.0.0.1:2182']", ("zk1:2181", "127.0.0.1:2182")),
    ],
)
def test_external_zookeeper(value: str, servers: tuple[str, ...]) -> None:
    t = check(f"zookeeper: {value}\ngroups: {{A: {{brokers: {{a: {{port: 1}}}}}}}}")
    assert t.zookeeper == ZooKeeper(embedded=False, servers=servers)
    assert t.zookeeper.connect_string == ",".join(servers)


def test_shipped_topologies_load() -> None:
    for path in sorted((ROOT / "topologies").glob("*.yaml")):
        assert load(path, parse_connector).brokers, path


def _links(path: str) -> list[tuple[str, tuple[str, ...], int]]:
    """(group, resolved addresses, networkTTL) for each connector of a shipped file."""
    t = load(ROOT / "topologies" / path, parse_connector)
    return [
        (g.name, spec_of(c).addresses, spec_of(c).network_ttl)
        for g in t.groups for c in g.connectors if c.spec is not None
    ]


def test_ab_yaml() -> None:
    t = load(ROOT / "topologies" / "ab.yaml", parse_connector)
    assert [(b.name, b.group, b.port) for b in t.brokers] == [("a", "A", 61616), ("b", "B", 61617)]
    assert t.data == PurePath("run/ab")
    assert _links("ab.yaml") == [("A", ("127.0.0.1:61617",), 1), ("B", ("127.0.0.1:61616",), 1)]


def test_chain_yaml() -> None:
    t = load(ROOT / "topologies" / "chain.yaml", parse_connector)
    assert [(b.name, b.port) for b in t.brokers] == [("a", 61616), ("b", 61617), ("c", 61618)]
    assert t.data == PurePath("run/chain")
    assert _links("chain.yaml") == [
        ("A", ("127.0.0.1:61617",), 2),
        ("B", ("127.0.0.1:61618",), 2),
        ("B", ("127.0.0.1:61616",), 2),
        ("C", ("127.0.0.1:61617",), 2),
    ]


def test_mesh_yaml() -> None:
    t = load(ROOT / "topologies" / "mesh.yaml", parse_connector)
    assert [(b.name, b.port) for b in t.brokers] == [("a", 61616), ("b", 61617), ("c", 61618)]
    assert t.data == PurePath("run/mesh")
    links = _links("mesh.yaml")
    assert all(ttl == 2 for *_, ttl in links)
    # Every broker reaches both others: six bridges.
    pairs = {(g, address) for g, addresses, _ in links for address in addresses}
    assert len(pairs) == 6


def test_single_yaml() -> None:
    t = load(ROOT / "topologies" / "single.yaml", parse_connector)
    assert [(b.name, b.group, b.port) for b in t.brokers] == [("a", "A", 61616)]
    assert t.data == PurePath("run/single")
    assert t.zookeeper is None


def test_ab_c_yaml_is_the_reference_deployment() -> None:
    t = load(ROOT / "topologies" / "ab_c.yaml", parse_connector)
    assert t.zookeeper == ZooKeeper(embedded=True)
    assert t.data == PurePath("run/ab_c")
    assert t.uses_zookeeper
    a, b = t.groups
    assert [(x.name, x.port) for x in a.brokers] == [("a", 61616)]
    assert a.election is None
    assert (b.election, b.replicas, b.sync, b.min_insync) == ("zookeeper", 2, "quorum_mem", 1)
    assert [(x.name, x.port, x.replication_port) for x in b.brokers] == [
        ("b", 61617, 62621), ("c", 61618, 62622)
    ]
    assert _links("ab_c.yaml") == [
        ("A", ("127.0.0.1:61617", "127.0.0.1:61618"), 1),
        ("B", ("127.0.0.1:61616",), 1),
    ]
    assert spec_of(a.connectors[0]).kind == "masterslave"
    assert b.connectors[0].uri == "static:(a)"
    assert t.zookeeper_dir(Path("/x")) == Path("/x/run/ab_c/zookeeper")


# ----------------------------------------------------------------- master/slave groups


ZK_PAIR = """
    zookeeper: embedded
    groups:
      B:
        brokers:
          b: {port: 7001, replication_port: 7101}
          c: {port: 7002, replication_port: 7102}
"""


def test_a_group_of_two_or_more_elects_through_zookeeper_by_default() -> None:
    t = check(ZK_PAIR)
    (g,) = t.groups
    assert (g.election, g.replicas, g.sync, g.min_insync, g.zk_path) == (
        "zookeeper", 2, None, None, None
    )
    assert g.is_group and t.uses_zookeeper


def test_a_group_of_one_is_standalone_unless_it_says_otherwise() -> None:
    t = check("groups: {A: {brokers: {a: {port: 1}}}}")
    assert (t.groups[0].election, t.groups[0].replicas) == (None, None)
    assert not t.groups[0].is_group and not t.uses_zookeeper
    # A ZooKeeper group of one (more members may join from elsewhere): no replication
    # port needed in the file, `up` picks one.
    t = check("zookeeper: 'zk:2181'\ngroups: {A: {election: zookeeper, replicas: 3, "
              "brokers: {a: {port: 1}}}}")
    assert (t.groups[0].election, t.groups[0].replicas) == ("zookeeper", 3)
    assert t.groups[0].brokers[0].replication_port is None


def test_group_settings_are_kept() -> None:
    t = check("""
        zookeeper: "zk1:2181,zk2:2181"
        securityToken: t0p-s3cret
        groups:
          B:
            replicas: 3
            min_insync: 2
            sync: quorum_disk
            zkPath: /prod/groups/B
            session_timeout: 2
            securityToken: 0wn-s3cret
            brokers:
              b: {port: 7001, replication_port: 7101, weight: 5}
              c: {port: 7002, replication_port: 7102, weight: 0}
          C:
            election: lockfile
            brokers: {d: {port: 7003}, e: {port: 7004}}
    """)
    b, c = t.groups
    assert (b.replicas, b.min_insync, b.sync, b.zk_path, b.session_timeout) == (
        3, 2, "quorum_disk", "/prod/groups/B", 2.0
    )
    assert [x.weight for x in b.brokers] == [5, 0]
    assert (b.security_token, c.security_token, t.security_token) == (
        "0wn-s3cret", "t0p-s3cret", "t0p-s3cret"
    )
    assert (c.election, c.replicas) == ("lockfile", None)
    assert "s3cret" not in repr(t)  # secrets stay out of logs


def test_embedded_zookeeper_port() -> None:
    t = check("zookeeper: embedded\nzookeeper_port: 2999\n" + textwrap.dedent(ZK_PAIR).split(
        "\n", 2)[2])
    assert t.zookeeper == ZooKeeper(embedded=True, port=2999)
    assert t.zookeeper.connect_string == "127.0.0.1:2999"
    assert ZooKeeper(embedded=True).connect_string == ""  # known once it runs


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # ZooKeeper required, said at the group (implicit election) or its election key.
        ("groups: {B: {brokers: {b: {port: 1, replication_port: 3}, c: {port: 2, "
         "replication_port: 4}}}}",
         "groups.B: a group of 2 brokers elects its master through ZooKeeper, but the file "
         "names no ZooKeeper: add a top-level 'zookeeper: embedded' (netbroker up runs one) "
         "or 'zookeeper: host:port,...', or set 'election: lockfile' for members on one "
         "machine"),
        ("groups: {A: {election: zookeeper, brokers: {a: {port: 1}}}}",
         "groups.A.election: election: zookeeper, but the file names no ZooKeeper: add a "
         "top-level 'zookeeper: embedded' (netbroker up runs one) or 'zookeeper: "
         "host:port,...'"),
        # Replication ports: required, integers, unique, not a client port.
        ("zookeeper: embedded\ngroups: {B: {brokers: {b: {port: 1, replication_port: 3}, "
         "c: {port: 2}}}}",
         "groups.B.brokers.c.replication_port: required: group B elects through ZooKeeper, "
         "and its slaves replicate from the master on this port"),
        ("zookeeper: embedded\ngroups: {B: {brokers: {b: {port: 1, replication_port: x}, "
         "c: {port: 2}}}}",
         "groups.B.brokers.b.replication_port: expected an integer 1-65535, got 'x'"),
        ("zookeeper: embedded\ngroups: {B: {brokers: {b: {port: 1, replication_port: 3}, "
         "c: {port: 2, replication_port: 3}}}}",
         "groups.B.brokers.c.replication_port: port 3 is already used by "
         "groups.B.brokers.b.replication_port"),
        ("zookeeper: embedded\ngroups: {B: {brokers: {b: {port: 1, replication_port: 2}, "
         "c: {port: 2, replication_port: 3}}}}",
         "groups.B.brokers.c.port: port 2 is already used by "
         "groups.B.brokers.b.replication_port"),
        ("zookeeper: embedded\nzookeeper_port: 3\ngroups: {B: {brokers: {b: {port: 1, "
         "replication_port: 4}, c: {port: 2, replication_port: 3}}}}",
         "groups.B.brokers.c.replication_port: port 3 is already used by zookeeper_port"),
        # The embedded ZooKeeper's own keys.
        ("zookeeper: 'zk:2181'\nzookeeper_port: 2181\ngroups: {A: {brokers: {a: {port: 1}}}}",
         "zookeeper_port: only for 'zookeeper: embedded' (an external ensemble's ports are "
         "in its connect string)"),
        ("zookeeper: embedded\nzookeeper_port: 0\ngroups: {A: {brokers: {a: {port: 1}}}}",
         "zookeeper_port: expected an integer 1-65535, got 0"),
        ("zookeeper: embedded\ngroups: {A: {brokers: {zookeeper: {port: 1}}}}",
         "groups.A.brokers.zookeeper: the name 'zookeeper' is taken: the embedded ZooKeeper "
         "keeps its data in DATA/zookeeper, beside each broker's DATA/<broker>"),
        # Sizes.
        (ZK_PAIR.replace("brokers:", "replicas: 1\n        brokers:"),
         "groups.B.replicas: 1 is fewer than the group's 2 brokers (b, c)"),
        (ZK_PAIR.replace("brokers:", "min_insync: 3\n        brokers:"),
         "groups.B.min_insync: 3 is more than replicas (2): no persistent send could ever "
         "be acknowledged"),
        (ZK_PAIR.replace("brokers:", "session_timeout: 0\n        brokers:"),
         "groups.B.session_timeout: expected a number of seconds > 0, got 0"),
        (ZK_PAIR.replace("brokers:", "session_timeout: fast\n        brokers:"),
         "groups.B.session_timeout: expected a number of seconds > 0, got 'fast'"),
        (ZK_PAIR.replace("7101}", "7101, weight: -1}"),
         "groups.B.brokers.b.weight: expected an integer >= 0, got -1"),
        # What only a ZooKeeper group acts on is not silently ignored elsewhere.
        ("groups: {A: {replicas: 2, brokers: {a: {port: 1}}}}",
         "groups.A.replicas: only for election: zookeeper (group A has one broker and no "
         "election)"),
        ("groups: {A: {brokers: {a: {port: 1, replication_port: 2}}}}",
         "groups.A.brokers.a.replication_port: only for election: zookeeper (group A has one "
         "broker and no election)"),
        ("groups: {A: {election: lockfile, brokers: {a: {port: 1, weight: 2}}}}",
         "groups.A.brokers.a.weight: only for election: zookeeper (group A uses election: "
         "lockfile)"),
        ("groups: {A: {election: lockfile, min_insync: 1, brokers: {a: {port: 1}}}}",
         "groups.A.min_insync: only for election: zookeeper (group A uses election: "
         "lockfile)"),
        ("groups: {A: {sync: quorum_mem, brokers: {a: {port: 1}}}}",
         "groups.A.sync: quorum_mem needs members that replicate: only for election: "
         "zookeeper (group A has one broker and no election); use local_disk or local_mem"),
        ("groups: {A: {election: lockfile, brokers: {a: {port: 1, sync: quorum_disk}}}}",
         "groups.A.brokers.a.sync: quorum_disk needs members that replicate: only for "
         "election: zookeeper (group A uses election: lockfile); use local_disk or local_mem"),
    ],
)
def test_group_refusals(text: str, expected: str) -> None:
    assert error(text) == f"{SRC}: {expected}"


@pytest.mark.parametrize(
    ("where", "value"),
    [("securityToken", "''"), ("securityToken", "5"), ("groups.A.securityToken", "[x]")],
)
def test_bad_security_token_is_not_echoed(where: str, value: str) -> None:
    if where == "securityToken":
        text = f"securityToken: {value}\ngroups: {{A: {{brokers: {{a: {{port: 1}}}}}}}}"
    else:
        text = f"groups: {{A: {{securityToken: {value}, brokers: {{a: {{port: 1}}}}}}}}"
    assert error(text) == f"{SRC}: {where}: expected a non-empty string (the shared secret)"


TOKENS = """
    groups:
      A:
        %s
        brokers: {a: {port: 1}}
        connectors: [%s]
      B:
        securityToken: b-secret
        brokers: {b: {port: 2}}
"""


@pytest.mark.parametrize(
    ("group_a", "connector", "ok"),
    [
        ("", '{uri: "static:(b)"}', False),
        ("securityToken: other", '{uri: "static:(b)"}', False),
        ("securityToken: b-secret", '{uri: "static:(b)"}', True),
        ("", '{uri: "static:(b)", securityToken: b-secret}', True),
        ("securityToken: mine", '{uri: "static:(b)?securityToken=b-secret"}', True),
        ("", '{uri: "static:(b)", securityToken: wrong}', False),
    ],
)
def test_connector_must_present_the_token_its_target_group_requires(
    group_a: str, connector: str, ok: bool
) -> None:
    text = TOKENS % (group_a, connector)
    if ok:
        check(text)
        return
    message = error(text)
    uri = connector.split('"')[1]
    assert message == (
        f"{SRC}: groups.A.connectors[0]: {uri}: group B requires a securityToken that this "
        "connector does not present: set the same securityToken on the connector, on this "
        "group, or at the top level"
    )
    assert "b-secret" not in message.replace(uri, "")


def test_a_file_wide_token_links_every_group() -> None:
    text = textwrap.dedent(TOKENS % ("", '{uri: "static:(b)"}'))
    t = check("securityToken: s\n" + text.replace("securityToken: b-secret", ""))
    assert [g.security_token for g in t.groups] == ["s", "s"]


# ------------------------------------------------------------------------ refused


@pytest.mark.parametrize(
    ("port", "shown"),
    [("abc", "'abc'"), ("0", "0"), ("65536", "65536"), ("true", "true"), ("", "nothing"),
     ("1.5", "1.5"), ("[1]", "a list")],
)
def test_bad_port(port: str, shown: str) -> None:
    assert error(f"groups: {{A: {{brokers: {{a: {{port: {port}}}}}}}}}") == (
        f"{SRC}: groups.A.brokers.a.port: expected an integer 1-65535, got {shown}"
    )


def test_missing_port() -> None:
    assert error("groups: {A: {brokers: {a: {host: 127.0.0.1}}}}") == (
        f"{SRC}: groups.A.brokers.a.port: required: the broker's client port"
    )


def test_broker_without_mapping() -> None:
    assert error("groups: {A: {brokers: {a: 61616}}}") == (
        f"{SRC}: groups.A.brokers.a: expected a mapping with 'port', got 61616"
    )


def test_unknown_key_with_suggestion() -> None:
    assert error("groups: {A: {brokers: {a: {prot: 1}}}}") == (
        f"{SRC}: groups.A.brokers.a.prot: unknown key; did you mean 'port'?"
    )


def test_unknown_key_lists_the_known_ones() -> None:
    assert error("groups: {A: {brokers: {a: {port: 1}}, zzz: 1}}") == (
        f"{SRC}: groups.A.zzz: unknown key; expected one of brokers, connectors, election, "
        "min_insync, replicas, securityToken, session_timeout, sync, zkPath"
    )


def test_unknown_top_level_key() -> None:
    assert error("group: {}") == f"{SRC}: group: unknown key; did you mean 'groups'?"


def test_duplicate_port_in_one_group() -> None:
    text = "groups: {A: {election: lockfile, brokers: {a: {port: 7000}, b: {port: 7000}}}}"
    assert error(text) == (
        f"{SRC}: groups.A.brokers.b.port: port 7000 is already used by groups.A.brokers.a.port"
    )


def test_duplicate_port_across_groups_and_kinds() -> None:
    text = """
        zookeeper: embedded
        groups:
          A: {brokers: {a: {port: 7000}}}
          B: {election: zookeeper, brokers: {b: {port: 7001, replication_port: 7000}}}
    """
    assert error(text) == (
        f"{SRC}: groups.B.brokers.b.replication_port: port 7000 is already used by "
        "groups.A.brokers.a.port"
    )


def test_wildcard_host_clashes_with_any_host() -> None:
    text = """
        groups:
          A: {election: lockfile, brokers: {a: {port: 7000, host: 0.0.0.0}, b: {port: 7000}}}
    """
    assert error(text) == (
        f"{SRC}: groups.A.brokers.b.port: port 7000 is already used by groups.A.brokers.a.port"
    )


def test_duplicate_broker_name_across_groups() -> None:
    text = """
        groups:
          A: {brokers: {a: {port: 7000}}}
          B: {brokers: {a: {port: 7001}}}
    """
    assert error(text) == f"{SRC}: groups.B.brokers.a: broker name 'a' is already used in group 'A'"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("'b/c'", "invalid broker name 'b/c'"),
        ("'-b'", "invalid broker name '-b'"),
        ("'b.c'", "invalid broker name 'b.c'"),
        ("'x' ", None),
    ],
)
def test_bad_broker_name(name: str, reason: str | None) -> None:
    text = f"groups: {{A: {{brokers: {{{name}: {{port: 7000}}}}}}}}"
    if reason is None:
        check(text)
        return
    key = name.strip("'")
    assert error(text) == (
        f"{SRC}: groups.A.brokers.{key}: {reason}: use letters, digits, '-' and '_', "
        "starting with a letter or digit, at most 64"
    )


def test_non_string_broker_name() -> None:
    assert error("groups: {A: {brokers: {7: {port: 7000}}}}") == (
        f"{SRC}: groups.A.brokers.7: broker name must be a string, got 7"
    )


def test_bad_group_name() -> None:
    assert error("groups: {'my group': {brokers: {a: {port: 7000}}}}") == (
        f"{SRC}: groups.my group: invalid group name 'my group': use letters, digits, '-' "
        "and '_', starting with a letter or digit, at most 64"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", f"{SRC}: the file is empty; expected a mapping with 'groups'"),
        ("- a\n- b", f"{SRC}: expected a mapping with 'groups' at the top level, got a list"),
        ("data: run/x", f"{SRC}: groups: required: the groups and their brokers"),
        ("groups: {}", f"{SRC}: groups: expected at least one group"),
        ("groups: [A]", f"{SRC}: groups: expected a mapping of group names, got a list"),
        ("groups: {A: {}}", f"{SRC}: groups.A.brokers: required: the group's brokers and "
         "their ports"),
        ("groups: {A: {brokers: {}}}", f"{SRC}: groups.A.brokers: expected at least one broker"),
        ("groups: {A: }", f"{SRC}: groups.A: expected a mapping with 'brokers', got nothing"),
        ("data: 5\ngroups: {A: {brokers: {a: {port: 1}}}}",
         f"{SRC}: data: expected a directory path, got 5"),
    ],
)
def test_missing_or_empty(text: str, expected: str) -> None:
    assert error(text) == expected


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ("election: raft", "groups.A.election: expected one of zookeeper, lockfile; got 'raft'"),
        ("sync: fast", "groups.A.sync: expected one of quorum_mem, quorum_disk, local_disk, "
         "local_mem; got 'fast'"),
        ("replicas: 0", "groups.A.replicas: expected an integer >= 1, got 0"),
        ("min_insync: two", "groups.A.min_insync: expected an integer >= 1, got 'two'"),
        ("zkPath: netbroker/A", "groups.A.zkPath: expected an absolute ZooKeeper path, got "
         "'netbroker/A'"),
    ],
)
def test_group_settings(group: str, expected: str) -> None:
    assert error(f"groups:\n  A:\n    {group}\n    brokers: {{a: {{port: 1}}}}") == (
        f"{SRC}: {expected}"
    )


@pytest.mark.parametrize(
    ("connectors", "expected"),
    [
        ('"static:(a)"', "groups.A.connectors: expected a list of connectors, got 'static:(a)'"),
        ('["static:(a)"]', "groups.A.connectors[0]: expected a mapping with a 'uri', got "
         "'static:(a)'"),
        ("[{uri: 'static:(a)'}, {networkTTL: 2}]",
         "groups.A.connectors[1].uri: required: the connector's URI"),
        ("[{uri: 7}]", "groups.A.connectors[0].uri: expected a connector URI string, got 7"),
    ],
)
def test_connector_shape(connectors: str, expected: str) -> None:
    text = f"groups: {{A: {{brokers: {{a: {{port: 1}}}}, connectors: {connectors}}}}}"
    assert error(text) == f"{SRC}: {expected}"


# -------------------------------------------------------------------------- connectors

LINKED = """\
zookeeper: embedded
groups:
  A:
    brokers:
      a: {port: 61616}
    connectors:
%s
  B:
    brokers:
      b: {port: 61617, host: 0.0.0.0, replication_port: 62621}
      c: {port: 61618, replication_port: 62622}
"""


def linked(*connectors: str) -> str:
    return LINKED % "\n".join(f"      - {c}" for c in connectors)


def test_connectors_are_parsed_and_broker_names_resolved() -> None:
    t = check(linked(
        '{uri: "static:(b)", networkTTL: 2}',
        '{uri: "masterslave://( b , c )?prefetchSize=10"}',
        '{uri: "static:c"}',
        '{uri: "static:(b,127.0.0.1:7000)", excludedDestinations: ["secret.>"]}',
        '{uri: "static:(tcp://127.0.0.1:7000)"}',
        '{uri: "multicast://default"}',
    ))
    cs = t.groups[0].connectors
    assert [c.resolved for c in cs] == [
        "static:(127.0.0.1:61617)",  # b listens on 0.0.0.0: reached over loopback
        "masterslave://(127.0.0.1:61617,127.0.0.1:61618)?prefetchSize=10",
        "static:127.0.0.1:61618",
        "static:(127.0.0.1:61617,127.0.0.1:7000)",
        "static:(tcp://127.0.0.1:7000)",
        "multicast://default",
    ]
    assert [c.uri for c in cs][:2] == ["static:(b)", "masterslave://( b , c )?prefetchSize=10"]
    specs = [spec_of(c) for c in cs]  # each one parsed
    assert specs[0].addresses == ("127.0.0.1:61617",) and specs[0].network_ttl == 2
    assert specs[1].kind == "masterslave" and specs[1].prefetch_size == 10
    assert specs[3].excluded == ("secret.>",)
    assert specs[4].addresses == ("127.0.0.1:7000",)
    assert specs[5].kind == "multicast"


def test_connectors_may_name_brokers_of_groups_further_down() -> None:
    t = check("""
        groups:
          A: {brokers: {a: {port: 1}}, connectors: [{uri: "static:(z)"}]}
          Z: {brokers: {z: {port: 2}}, connectors: [{uri: "static:(a)"}]}
    """)
    assert [g.connectors[0].resolved for g in t.groups] == [
        "static:(127.0.0.1:2)", "static:(127.0.0.1:1)"
    ]


@pytest.mark.parametrize(
    ("connector", "expected"),
    [
        ('{uri: "static:(x)"}',
         "groups.A.connectors[0]: static:(x): unknown broker 'x' (expected host:port or a "
         "broker of this file: a, b, c)"),
        ('{uri: "masterslave:(b,localhost)"}',
         "groups.A.connectors[0]: masterslave:(b,localhost): unknown broker 'localhost' "
         "(expected host:port or a broker of this file: a, b, c)"),
        ('{uri: "static:(b)", networkTtl: 2}',
         "groups.A.connectors[0]: static:(b): unknown option 'networkTtl' in the YAML "
         "options (did you mean 'networkTTL'? known: duplex, networkTTL,"),
        ('{uri: "static:(b)?bogus=1"}',
         "groups.A.connectors[0]: static:(b)?bogus=1: unknown option 'bogus' in the query "
         "string (known: duplex,"),
        ('{uri: "static:(b)?networkTTL=1", networkTTL: 2}',
         "groups.A.connectors[0]: static:(b)?networkTTL=1: option 'networkTTL' is 1 in the "
         "query string but 2 in the YAML options; give it in one place"),
        ('{uri: "static:(b)", networkTTL: 0}',
         "groups.A.connectors[0]: static:(b): option 'networkTTL': expected an integer >= 1, "
         "got 0"),
        ('{uri: "static:(b,b)"}',
         "groups.A.connectors[0]: static:(b,b): address 127.0.0.1:61617 is listed twice"),
        ('{uri: "static:(127.0.0.1:99999)"}',
         "groups.A.connectors[0]: static:(127.0.0.1:99999): port 99999 out of range 1-65535"),
        ('{uri: "tcp://127.0.0.1:61617"}',
         "groups.A.connectors[0]: tcp://127.0.0.1:61617: unknown connector scheme 'tcp'"),
        ('{uri: "static:(a)"}',
         "groups.A.connectors[0]: static:(a): 127.0.0.1:61616 is broker 'a' of this group "
         "(A); connectors link a group to other groups"),
        ('{uri: "static:(b,127.0.0.1:61616)"}',
         "groups.A.connectors[0]: static:(b,127.0.0.1:61616): 127.0.0.1:61616 is broker 'a' "
         "of this group (A); connectors link a group to other groups"),
    ],
)
def test_bad_connector(connector: str, expected: str) -> None:
    assert error(linked('{uri: "static:(b)"}', connector)).startswith(
        f"{SRC}: {expected.replace('connectors[0]', 'connectors[1]')}"
    )


def test_resolve_broker_names_is_textual_and_leaves_the_rest_alone() -> None:
    brokers = {"b": BrokerSpec("b", "B", 2), "c": BrokerSpec("c", "B", 3, host="::1")}
    assert resolve_broker_names("STATIC:(b, c)?name=b", brokers) == (
        "STATIC:(127.0.0.1:2,[::1]:3)?name=b"
    )
    assert resolve_broker_names("masterslave:b", brokers) == "masterslave:127.0.0.1:2"
    for untouched in ("multicast://b", "static:(h:1)", "bogus:(b)", "static:()"):
        assert resolve_broker_names(untouched, brokers) == untouched
    with pytest.raises(UnknownBroker) as info:
        resolve_broker_names("static:(b,x)", brokers)
    assert info.value.name == "x"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("zk1", "zookeeper: expected host:port with a port 1-65535, got 'zk1'"),
        ("'zk1:2181,zk2:99999'", "zookeeper: expected host:port with a port 1-65535, got "
         "'zk2:99999'"),
        ("[zk1:2181, 5]", "zookeeper[1]: expected host:port with a port 1-65535, got 5"),
        ("[]", "zookeeper: expected 'embedded' or a list of host:port, got a list"),
    ],
)
def test_bad_zookeeper(value: str, expected: str) -> None:
    text = f"zookeeper: {value}\ngroups: {{A: {{brokers: {{a: {{port: 1}}}}}}}}"
    assert error(text) == f"{SRC}: {expected}"


def test_first_error_in_document_order() -> None:
    text = """
        groups:
          A: {brokers: {a: {port: x}}}
          B: {brokers: {b: {port: y}}}
    """
    assert "groups.A.brokers.a.port" in error(text)


# ------------------------------------------------------------------------ YAML and files


def test_yaml_syntax_error_names_file_and_line() -> None:
    with pytest.raises(TopologyError) as info:
        parse("groups:\n  A: b: c\n", SRC)
    assert str(info.value) == (
        f"{SRC}: line 2, column 7: invalid YAML: mapping values are not allowed here"
    )
    assert info.value.line == 2


def test_duplicate_key_names_both_lines() -> None:
    with pytest.raises(TopologyError) as info:
        parse("groups:\n  A:\n    brokers:\n      a: {port: 1}\n      a: {port: 2}\n", SRC)
    assert str(info.value) == f"{SRC}: line 5, column 7: duplicate key 'a' (first at line 4)"


def test_merge_keys_may_be_overridden() -> None:
    # `<<: *anchor` then an explicit key is an override, not a duplicate.
    t = check("groups: {A: {election: lockfile, "
              "brokers: {a: &b {port: 1, sync: local_mem}, c: {<<: *b, port: 2}}}}")
    assert [(b.name, b.port, b.sync) for b in t.brokers] == [
        ("a", 1, "local_mem"), ("c", 2, "local_mem")
    ]


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(TopologyError) as info:
        load(path, parse_connector)
    assert str(info.value) == f"{path}: no such file"


def test_load_reports_the_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("t.yaml").write_text("groups: {A: {brokers: {a: {port: abc}}}}\n")
    with pytest.raises(TopologyError) as info:
        load("t.yaml", parse_connector)
    assert str(info.value) == (
        "t.yaml: groups.A.brokers.a.port: expected an integer 1-65535, got 'abc'"
    )


def test_check_name() -> None:
    assert check_name("broker-1_a") is None
    assert check_name("a" * 64) is None
    assert check_name("a" * 65) is not None
    assert check_name("") is not None
    assert check_name(3) == "a name must be a string, got 3"
