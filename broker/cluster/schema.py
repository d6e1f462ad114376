"""The topology schema: keys, types and ranges of a topology file, with did-you-mean hints.

`validate(raw, ...)` is a pure function from the parsed YAML to a `Topology` (reading the
file is `loader.load`; the rules across keys are `rules.Rules`). Every problem is reported
as a `TopologyError` whose text is `FILE: KEY.PATH: reason`, one line an operator can act on,
e.g. `topologies/x.yaml: groups.A.brokers.a.port: expected an integer 1-65535, got 'abc'`.

The shape (see docs/topology.md):

    zookeeper: embedded          # or "host:port,host:port" (or a list); required when a
                                 # group elects through ZooKeeper
    zookeeper_port: 2181         # optional, embedded only: fixed client port (default free)
    securityToken: s3cret        # optional; a group's own securityToken overrides it
    data: run/ab_c               # optional; default run/<file name without .yaml>
    groups:
      A:
        brokers:
          a: {port: 61616}       # host, replication_port, max_message_bytes, sync, weight
        connectors:
          - uri: "masterslave:(b,c)"
      B:
        election: zookeeper      # or lockfile; default zookeeper for 2+ brokers
        replicas: 2              # default: the number of brokers listed
        sync: quorum_mem         # default for zookeeper groups
        min_insync: 1            # default replicas/2+1 for 3 or more, 1 for a pair
        zkPath: /netbroker/groups/B
        session_timeout: 1.0
        brokers:
          b: {port: 61617, replication_port: 62621, weight: 2}
          c: {port: 61618, replication_port: 62622}
        connectors:
          - uri: "static:(a)"    # a broker of this file by name, or host:port
            networkTTL: 1        # options as YAML keys, or in the URI's query string

A group of one broker without `election` is a standalone broker. A group of two or more
brokers is a master/slave group: by ZooKeeper election unless it says `election:
lockfile`. Settings that only a ZooKeeper group acts on (replicas, min_insync, zkPath,
session_timeout, quorum sync, replication_port, weight) are refused elsewhere rather than
silently ignored, and so is a connector that would present the wrong securityToken to
the group it links to (those rules are `rules.Rules`).

Connectors are checked in full while validating, with the connector parser the caller passes in (the
CLI passes `netconnector.uri.parse_connector`, the one every broker runs on its
`--connector` arguments, so a file that loads is one every broker accepts), after broker
names in their address lists have been replaced by those
brokers' client addresses. So a typo in an option or a broker name stops `netbroker up`
before any process starts, with the file, the key and the reason. The master/slave keys
are checked as far as a file can be: a ZooKeeper group needs `zookeeper:` and a
replication port per member, `replicas` covers the brokers listed, `min_insync` fits in
`replicas`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import PurePath
from typing import Any

from broker.cluster.errors import TopologyError, key_path
from broker.cluster.model import (
    DEFAULT_HOST,
    ELECTIONS,
    NAME_RE,
    NAME_RULE,
    SYNC_POLICIES,
    BrokerSpec,
    Connector,
    ConnectorParser,
    GroupSpec,
    Topology,
    ZooKeeper,
)
from broker.cluster.rules import Rules

TOP_KEYS = ("zookeeper", "zookeeper_port", "securityToken", "data", "groups")
GROUP_KEYS = (
    "brokers", "election", "replicas", "sync", "min_insync", "zkPath", "session_timeout",
    "securityToken", "connectors",
)  # fmt: skip
BROKER_KEYS = ("port", "host", "replication_port", "max_message_bytes", "sync", "weight")


def check_name(name: object) -> str | None:
    """Why `name` is not a valid broker or group name, or None when it is."""
    if not isinstance(name, str):
        return f"a name must be a string, got {_describe(name)}"
    if not NAME_RE.fullmatch(name):
        return f"invalid name {name!r}: {NAME_RULE}"
    return None


def validate(raw: Any, source: str, parse_connector: ConnectorParser) -> Topology:
    """Check parsed YAML against the topology shape. Pure; raises the first TopologyError.

    Problems are found in document order, so the error an operator sees is the first one
    in the file.
    """
    return _Validator(source, parse_connector).topology(raw)


def _describe(value: object) -> str:
    """A value as the error text shows it: in YAML's words where Python's would confuse."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _is_int(value: object) -> bool:
    # YAML's `true` is a Python bool, which is an int; a port of `true` is a mistake.
    return isinstance(value, int) and not isinstance(value, bool)


class _Validator:
    def __init__(self, source: str, parse_connector: ConnectorParser) -> None:
        self.source = source
        self.rules = Rules(source, parse_connector)

    def fail(self, path: tuple[str | int, ...], reason: str) -> TopologyError:
        return TopologyError(self.source, key_path(path) or None, reason)

    def optional(
        self,
        spec: Mapping[Any, Any],
        key: str,
        path: tuple[str | int, ...],
        check: Callable[..., Any],
        *args: Any,
        default: Any = None,
        **kwargs: Any,
    ) -> Any:
        """`check(spec[key], *args, path + key)` when the file gives `key`, else `default`."""
        if key not in spec:
            return default
        return check(spec[key], *args, (*path, key), **kwargs)

    # -- helpers

    def mapping(self, value: Any, path: tuple[str | int, ...], what: str) -> Mapping[Any, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"expected {what}, got {_describe(value)}")
        return value

    def known_keys(
        self, value: Mapping[Any, Any], allowed: tuple[str, ...], path: tuple[str | int, ...]
    ) -> None:
        for key in value:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                why = (
                    f"did you mean {hint[0]!r}?"
                    if hint
                    else "expected one of " + ", ".join(sorted(allowed))
                )
                raise self.fail((*path, str(key)), f"unknown key; {why}")

    def port(self, value: Any, path: tuple[str | int, ...]) -> int:
        if not _is_int(value) or not 1 <= value <= 65535:
            raise self.fail(path, f"expected an integer 1-65535, got {_describe(value)}")
        return int(value)

    def positive_int(self, value: Any, path: tuple[str | int, ...], minimum: int = 1) -> int:
        if not _is_int(value) or value < minimum:
            raise self.fail(path, f"expected an integer >= {minimum}, got {_describe(value)}")
        return int(value)

    def choice(self, value: Any, choices: tuple[str, ...], path: tuple[str | int, ...]) -> str:
        if value not in choices:
            raise self.fail(path, f"expected one of {', '.join(choices)}; got {_describe(value)}")
        return str(value)

    def string(self, value: Any, path: tuple[str | int, ...], what: str = "a string") -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"expected {what}, got {_describe(value)}")
        return value

    def name(self, value: Any, path: tuple[str | int, ...], kind: str) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"{kind} name must be a string, got {_describe(value)}")
        if not NAME_RE.fullmatch(value):
            raise self.fail(path, f"invalid {kind} name {value!r}: {NAME_RULE}")
        return value

    # -- the shape

    def topology(self, raw: Any) -> Topology:
        if raw is None:
            raise self.fail((), "the file is empty; expected a mapping with 'groups'")
        top = self.mapping(raw, (), "a mapping with 'groups' at the top level")
        self.known_keys(top, TOP_KEYS, ())

        zookeeper = self.zookeeper(top["zookeeper"]) if "zookeeper" in top else None
        if "zookeeper_port" in top:
            port = self.port(top["zookeeper_port"], ("zookeeper_port",))
            if zookeeper is None or not zookeeper.embedded:
                raise self.fail(
                    ("zookeeper_port",),
                    "only for 'zookeeper: embedded' (an external ensemble's ports are in "
                    "its connect string)",
                )
            zookeeper = replace(zookeeper, port=port)
        token = (
            self.token(top["securityToken"], ("securityToken",)) if "securityToken" in top else None
        )
        if "data" in top:
            data = PurePath(self.string(top["data"], ("data",), "a directory path"))
        else:
            data = PurePath("run") / PurePath(self.source).stem

        if "groups" not in top:
            raise self.fail(("groups",), "required: the groups and their brokers")
        groups_raw = self.mapping(top["groups"], ("groups",), "a mapping of group names")
        if not groups_raw:
            raise self.fail(("groups",), "expected at least one group")

        groups = [self.group(name, spec, zookeeper, token) for name, spec in groups_raw.items()]
        self.rules.no_duplicates(groups, zookeeper)
        # Connectors last: they may name brokers of any group, also ones further down.
        groups = [self.rules.resolve_connectors(g, groups) for g in groups]
        return Topology(
            source=self.source, data=data, groups=tuple(groups), zookeeper=zookeeper,
            security_token=token,
        )  # fmt: skip

    def token(self, value: Any, path: tuple[str | int, ...]) -> str:
        # Not echoed back in the error: it is a secret, even when mistyped.
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, "expected a non-empty string (the shared secret)")
        return value

    def zookeeper(self, value: Any) -> ZooKeeper:
        path: tuple[str | int, ...] = ("zookeeper",)
        if value == "embedded":
            return ZooKeeper(embedded=True)
        if isinstance(value, str):
            entries: list[tuple[tuple[str | int, ...], Any]] = [
                (path, s.strip()) for s in value.split(",")
            ]
        elif isinstance(value, list) and value:
            entries = [((*path, i), s) for i, s in enumerate(value)]
        else:
            raise self.fail(
                path, f"expected 'embedded' or a list of host:port, got {_describe(value)}"
            )
        servers = []
        for where, entry in entries:
            host, sep, port = entry.rpartition(":") if isinstance(entry, str) else ("", "", "")
            if not (sep and host and port.isdigit() and 1 <= int(port) <= 65535):
                raise self.fail(
                    where, f"expected host:port with a port 1-65535, got {_describe(entry)}"
                )
            servers.append(entry)
        return ZooKeeper(embedded=False, servers=tuple(servers))

    def group(
        self, name: Any, raw: Any, zookeeper: ZooKeeper | None, file_token: str | None
    ) -> GroupSpec:
        path: tuple[str | int, ...] = ("groups", str(name))
        self.name(name, path, "group")
        spec = self.mapping(raw, path, "a mapping with 'brokers'")
        self.known_keys(spec, GROUP_KEYS, path)
        if "brokers" not in spec:
            raise self.fail((*path, "brokers"), "required: the group's brokers and their ports")
        brokers_raw = self.mapping(spec["brokers"], (*path, "brokers"), "a mapping of broker names")
        if not brokers_raw:
            raise self.fail((*path, "brokers"), "expected at least one broker")
        brokers = tuple(
            self.broker(name, bname, braw, (*path, "brokers", str(bname)))
            for bname, braw in brokers_raw.items()
        )
        connectors: tuple[Connector, ...] = ()
        if "connectors" in spec:
            connectors = self.connectors(spec["connectors"], (*path, "connectors"))
        group = GroupSpec(
            name=name,
            brokers=brokers,
            election=self.optional(spec, "election", path, self.choice, ELECTIONS),
            replicas=self.optional(spec, "replicas", path, self.positive_int),
            sync=self.optional(spec, "sync", path, self.choice, SYNC_POLICIES),
            min_insync=self.optional(spec, "min_insync", path, self.positive_int),
            zk_path=self.optional(spec, "zkPath", path, self.zk_path),
            session_timeout=self.optional(spec, "session_timeout", path, self.seconds),
            security_token=self.optional(
                spec, "securityToken", path, self.token, default=file_token
            ),
            connectors=connectors,
        )
        return self.rules.group_semantics(group, spec, brokers_raw, zookeeper)

    def seconds(self, value: Any, path: tuple[str | int, ...]) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
            raise self.fail(path, f"expected a number of seconds > 0, got {_describe(value)}")
        if value == float("inf"):
            raise self.fail(path, "expected a finite number of seconds")
        return float(value)

    def zk_path(self, value: Any, path: tuple[str | int, ...]) -> str:
        text = self.string(value, path, "an absolute ZooKeeper path")
        if not text.startswith("/") or text.endswith("/") or "//" in text:
            raise self.fail(path, f"expected an absolute ZooKeeper path, got {text!r}")
        return text

    def broker(self, group: str, name: Any, raw: Any, path: tuple[str | int, ...]) -> BrokerSpec:
        self.name(name, path, "broker")
        spec = self.mapping(raw, path, "a mapping with 'port'")
        self.known_keys(spec, BROKER_KEYS, path)
        if "port" not in spec:
            raise self.fail((*path, "port"), "required: the broker's client port")
        return BrokerSpec(
            name=name,
            group=group,
            port=self.port(spec["port"], (*path, "port")),
            host=(
                self.string(spec["host"], (*path, "host"), "a host name or address")
                if "host" in spec
                else DEFAULT_HOST
            ),
            replication_port=self.optional(spec, "replication_port", path, self.port),
            max_message_bytes=self.optional(spec, "max_message_bytes", path, self.positive_int),
            sync=self.optional(spec, "sync", path, self.choice, SYNC_POLICIES),
            weight=self.optional(spec, "weight", path, self.positive_int, minimum=0),
        )

    def connectors(self, value: Any, path: tuple[str | int, ...]) -> tuple[Connector, ...]:
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list of connectors, got {_describe(value)}")
        out = []
        for i, item in enumerate(value):
            where = (*path, i)
            spec = self.mapping(item, where, "a mapping with a 'uri'")
            if "uri" not in spec:
                raise self.fail((*where, "uri"), "required: the connector's URI")
            uri = self.string(spec["uri"], (*where, "uri"), "a connector URI string")
            options: dict[str, Any] = {}
            for key, option in spec.items():
                if not isinstance(key, str):
                    raise self.fail(where, f"option names must be strings, got {_describe(key)}")
                if key != "uri":
                    options[key] = option
            out.append(Connector(uri=uri, options=options))
        return tuple(out)
