"""Topology files: which groups and brokers a cluster has, parsed and validated.

`load(path, ...)` is the only function that touches the file system; `validate(raw, ...)`
is a pure function from the parsed YAML to a `Topology`. Every problem is reported as a
`TopologyError` whose text is `FILE: KEY.PATH: reason`, one line an operator can act on,
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
the group it links to.

Connectors are checked in full here, with the connector parser the caller passes in (the
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
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import Any, Protocol

import yaml


class ParsedConnector(Protocol):
    """What validation and `up` read of a parsed connector (netconnector's ConnectorSpec)."""

    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def addresses(self) -> tuple[str, ...]: ...
    @property
    def discovery_group(self) -> str | None: ...
    @property
    def security_token(self) -> str: ...


# Parses a connector URI with its YAML options; raises ValueError whose `reason` (or text)
# says what is wrong. Passed in: the broker layer does not import the network layer.
ConnectorParser = Callable[[str, Mapping[str, Any]], ParsedConnector]

# Broker and group names become directory names (DATA/<broker>), ZooKeeper path
# segments and log prefixes, so they are kept to a portable, unambiguous alphabet:
# no dots (they would make KEY.PATHs ambiguous), no slashes, no spaces.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
NAME_RULE = "use letters, digits, '-' and '_', starting with a letter or digit, at most 64"

SYNC_POLICIES = ("quorum_mem", "quorum_disk", "local_disk", "local_mem")
ELECTIONS = ("zookeeper", "lockfile")
DEFAULT_HOST = "127.0.0.1"
# Hosts that bind every interface, so their ports clash with any other host's.
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})

QUORUM_SYNC = ("quorum_mem", "quorum_disk")
# The embedded ZooKeeper keeps its data in DATA/zookeeper, beside DATA/<broker>.
EMBEDDED_ZK_DIR = "zookeeper"

TOP_KEYS = ("zookeeper", "zookeeper_port", "securityToken", "data", "groups")
GROUP_KEYS = (
    "brokers", "election", "replicas", "sync", "min_insync", "zkPath", "session_timeout",
    "securityToken", "connectors",
)  # fmt: skip
BROKER_KEYS = ("port", "host", "replication_port", "max_message_bytes", "sync", "weight")
# Keys only a group with `election: zookeeper` acts on (group level, then broker level).
ZK_GROUP_KEYS = ("replicas", "min_insync", "zkPath", "session_timeout")
ZK_BROKER_KEYS = ("replication_port", "weight")


class TopologyError(Exception):
    """One problem in a topology file, located by key path or by line."""

    def __init__(
        self,
        source: str,
        key: str | None,
        reason: str,
        *,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        self.line = line
        self.column = column
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [self.source]
        if self.line is not None:
            where.append(f"line {self.line}" + (f", column {self.column}" if self.column else ""))
        if self.key:
            where.append(self.key)
        return ": ".join([*where, self.reason])


@dataclass(frozen=True)
class ZooKeeper:
    """Where the master/slave groups find ZooKeeper."""

    embedded: bool
    # "host:port" entries of an external ensemble; empty when embedded.
    servers: tuple[str, ...] = ()
    # Embedded only: the client port to run it on (None: a free one at start).
    port: int | None = None

    @property
    def connect_string(self) -> str:
        """The ensemble's connect string; for an embedded one only if its port is fixed."""
        if self.embedded:
            return f"127.0.0.1:{self.port}" if self.port else ""
        return ",".join(self.servers)


@dataclass(frozen=True)
class Connector:
    """A network connector: its URI and YAML options as written, and what they resolve to.

    Two connectors are equal when they are written the same; `resolved` and `spec` follow
    from that and the file's brokers.
    """

    uri: str
    options: dict[str, Any] = field(default_factory=dict)
    # `uri` with broker names in its address list replaced by their client addresses
    # ("" until the file's brokers are known).
    resolved: str = field(default="", compare=False)
    # The parsed, checked connector (None until resolved).
    spec: ParsedConnector | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class BrokerSpec:
    name: str
    group: str
    port: int
    host: str = DEFAULT_HOST
    replication_port: int | None = None
    max_message_bytes: int | None = None
    sync: str | None = None
    weight: int | None = None

    @property
    def client_address(self) -> str:
        """Where a client on this machine reaches the broker (wildcards via loopback)."""
        host = "127.0.0.1" if self.host in WILDCARD_HOSTS else self.host
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class GroupSpec:
    name: str
    brokers: tuple[BrokerSpec, ...]
    # "zookeeper", "lockfile", or None for a standalone broker. Defaulted by `validate`:
    # zookeeper for a group of two or more brokers.
    election: str | None = None
    # ZooKeeper groups: defaulted by `validate` to the number of brokers listed.
    replicas: int | None = None
    sync: str | None = None
    min_insync: int | None = None
    zk_path: str | None = None
    session_timeout: float | None = None
    # The group's own securityToken, else the file's (None: none).
    security_token: str | None = field(default=None, repr=False)
    connectors: tuple[Connector, ...] = ()

    def effective_sync(self, broker: BrokerSpec) -> str | None:
        """A broker's own `sync` overrides its group's."""
        return broker.sync or self.sync

    @property
    def is_group(self) -> bool:
        """Whether its brokers elect a master (ZooKeeper or lock file)."""
        return self.election is not None


@dataclass(frozen=True)
class Topology:
    source: str
    # As written in the file. Relative paths are relative to the directory netbroker is
    # run from (resolved by the caller, see `data_root`), not to the file's directory.
    data: PurePath
    groups: tuple[GroupSpec, ...]
    zookeeper: ZooKeeper | None = None
    security_token: str | None = field(default=None, repr=False)

    @property
    def brokers(self) -> tuple[BrokerSpec, ...]:
        return tuple(b for g in self.groups for b in g.brokers)

    def data_root(self, cwd: Path | None = None) -> Path:
        """The data directory as an absolute path.

        Relative to the current working directory, deliberately: an operator types
        `netbroker up topologies/ab_c.yaml` from the project root and expects
        `data: run/ab_c` to mean ./run/ab_c, like every other path given on a command
        line (and the project's .gitignore already ignores run/).
        """
        base = cwd if cwd is not None else Path.cwd()
        return base / Path(self.data)

    def broker_data_dir(self, broker: BrokerSpec, cwd: Path | None = None) -> Path:
        return self.data_root(cwd) / broker.name

    def zookeeper_dir(self, cwd: Path | None = None) -> Path:
        """Where an embedded ZooKeeper keeps its config, data and log."""
        return self.data_root(cwd) / EMBEDDED_ZK_DIR

    @property
    def uses_zookeeper(self) -> bool:
        return any(g.election == "zookeeper" for g in self.groups)


def check_name(name: object) -> str | None:
    """Why `name` is not a valid broker or group name, or None when it is."""
    if not isinstance(name, str):
        return f"a name must be a string, got {_describe(name)}"
    if not NAME_RE.fullmatch(name):
        return f"invalid name {name!r}: {NAME_RULE}"
    return None


# ---------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys.

    Plain YAML loaders keep the last of two equal keys silently, which would make a
    second broker `b:` in a group quietly replace the first.
    """


class _DuplicateKey(yaml.constructor.ConstructorError):
    """Valid YAML, but a key given twice in one mapping."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` merges; explicit keys may override merged ones
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.setdefault(key, key_node.start_mark.line)
        except TypeError:
            continue  # unhashable key: construct_mapping reports it
        if first != key_node.start_mark.line:
            raise _DuplicateKey(
                None,
                None,
                f"duplicate key {key!r} (first at line {first + 1})",
                key_node.start_mark,
            )
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

# A topology is a few hundred nodes; aliases (`*defaults`, merges) may repeat some of
# them, but a document that expands past this is an alias bomb, refused before anything
# walks it (one of nine nested lists of nine took 55 s to exhaust memory).
MAX_EXPANDED_NODES = 100_000
# A topology file is a few KiB; this bounds what the parser is ever handed.
MAX_FILE_BYTES = 1024 * 1024


class _AliasBomb(Exception):
    def __init__(self, key: str, size: int) -> None:
        super().__init__(key)
        self.key = key
        self.size = size


def _children(node: yaml.Node) -> list[tuple[str | int | None, yaml.Node]]:
    if isinstance(node, yaml.MappingNode):
        out: list[tuple[str | int | None, yaml.Node]] = []
        for k, v in node.value:
            name = k.value if isinstance(k, yaml.ScalarNode) else None
            out += [(None, k), (name, v)]
        return out
    if isinstance(node, yaml.SequenceNode):
        return list(enumerate(node.value))
    return []


def _expanded_sizes(root: yaml.Node) -> dict[int, int]:
    """Nodes each node stands for once every alias is expanded, by id(node).

    The composer hands an alias the very node its anchor names, so memoising by identity
    makes this linear in the document, whatever the expansion. (A recursive alias
    cannot occur: PyYAML refuses it while composing.)
    """
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        kids = [child for _, child in _children(node)]
        if children_done:
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in kids)
        else:
            stack.append((node, True))
            stack.extend((child, False) for child in kids if id(child) not in sizes)
    return sizes


def _check_expansion(root: yaml.Node) -> None:
    sizes = _expanded_sizes(root)
    total = sizes[id(root)]
    if total <= MAX_EXPANDED_NODES:
        return
    # Name the innermost key whose value alone is too large: where the bomb is.
    path: list[str | int] = []
    node = root
    while True:
        worst = max(
            ((name, child) for name, child in _children(node) if name is not None),
            key=lambda item: sizes[id(item[1])],
            default=None,
        )
        if worst is None or sizes[id(worst[1])] <= MAX_EXPANDED_NODES:
            break
        path.append(worst[0])
        node = worst[1]
    while path and isinstance(path[-1], int):
        path.pop()  # the key names the bomb; list indices inside it say nothing more
    raise _AliasBomb(_key_path(tuple(path)), total)


class _CheckedLoader(_Loader):
    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return self.construct_document(node)


def parse(text: str, source: str) -> Any:
    """Parse YAML text; syntax errors become TopologyErrors naming file and line."""
    try:
        # A SafeLoader subclass: no arbitrary objects, no duplicate keys, no alias bombs.
        return yaml.load(text, Loader=_CheckedLoader)
    except _AliasBomb as e:
        raise TopologyError(
            source,
            e.key or None,
            f"aliases expand to more than {MAX_EXPANDED_NODES:,} YAML nodes "
            f"({e.size:,}): refusing an alias bomb",
        ) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        reason = e.problem or e.context or "not valid"
        if not isinstance(e, _DuplicateKey):
            reason = f"invalid YAML: {reason}"
        if mark is None:
            raise TopologyError(source, None, reason) from None
        raise TopologyError(
            source, None, reason, line=mark.line + 1, column=mark.column + 1
        ) from None
    except yaml.YAMLError as e:
        raise TopologyError(source, None, f"invalid YAML: {e}") from None


def load(path: str | Path, parse_connector: ConnectorParser) -> Topology:
    """Read, parse and validate a topology file. Raises TopologyError."""
    source = str(path)
    try:
        size = Path(path).stat().st_size
        if size > MAX_FILE_BYTES and Path(path).is_file():
            raise TopologyError(
                source,
                None,
                f"is {size:,} bytes; a topology file may be at most {MAX_FILE_BYTES:,}",
            )
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopologyError(source, None, "no such file") from None
    except IsADirectoryError:
        raise TopologyError(source, None, "is a directory, not a topology file") from None
    except UnicodeDecodeError:
        raise TopologyError(source, None, "not UTF-8 text") from None
    except OSError as e:
        raise TopologyError(source, None, e.strerror or str(e)) from None
    return validate(parse(text, source), source, parse_connector)


# ------------------------------------------------------------------------- validation


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


def _key_path(parts: tuple[str | int, ...]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else p
    return out


class _Validator:
    def __init__(self, source: str, parse_connector: ConnectorParser) -> None:
        self.source = source
        self.parse_connector = parse_connector

    def fail(self, path: tuple[str | int, ...], reason: str) -> TopologyError:
        return TopologyError(self.source, _key_path(path) or None, reason)

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
        self.no_duplicates(groups, zookeeper)
        # Connectors last: they may name brokers of any group, also ones further down.
        groups = [self.resolve_connectors(g, groups) for g in groups]
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
        return self.group_semantics(group, spec, brokers_raw, zookeeper)

    def group_semantics(
        self,
        group: GroupSpec,
        spec: Mapping[Any, Any],
        brokers_raw: Mapping[Any, Any],
        zookeeper: ZooKeeper | None,
    ) -> GroupSpec:
        """Defaults that depend on the group's size, and what its election allows."""
        path: tuple[str | int, ...] = ("groups", group.name)
        n = len(group.brokers)
        election = group.election
        if election is None and n >= 2:
            election = "zookeeper"
        if election != "zookeeper":
            # Keys that only a ZooKeeper group acts on would be silently ignored here.
            why = (
                f"group {group.name} uses election: lockfile"
                if election == "lockfile"
                else f"group {group.name} has one broker and no election"
            )
            for key in ZK_GROUP_KEYS:
                if key in spec:
                    raise self.fail((*path, key), f"only for election: zookeeper ({why})")
            for b in group.brokers:
                braw = brokers_raw[b.name]
                for key in ZK_BROKER_KEYS:
                    if key in braw:
                        raise self.fail(
                            (*path, "brokers", b.name, key),
                            f"only for election: zookeeper ({why})",
                        )
            for where, sync in [((*path, "sync"), group.sync)] + [
                ((*path, "brokers", b.name, "sync"), b.sync) for b in group.brokers
            ]:
                if sync in QUORUM_SYNC:
                    raise self.fail(
                        where,
                        f"{sync} needs members that replicate: only for election: zookeeper "
                        f"({why}); use local_disk or local_mem",
                    )
            return replace(group, election=election)

        # A ZooKeeper group.
        if zookeeper is None:
            if group.election is None:
                where, what = path, f"a group of {n} brokers elects its master through ZooKeeper"
            else:
                where, what = (*path, "election"), "election: zookeeper"
            raise self.fail(
                where,
                f"{what}, but the file names no ZooKeeper: add a top-level "
                "'zookeeper: embedded' (netbroker up runs one) or 'zookeeper: host:port,...'"
                + (", or set 'election: lockfile' for members on one machine"
                   if group.election is None else ""),
            )  # fmt: skip
        if n >= 2:
            for b in group.brokers:
                if b.replication_port is None:
                    raise self.fail(
                        (*path, "brokers", b.name, "replication_port"),
                        f"required: group {group.name} elects through ZooKeeper, and its "
                        "slaves replicate from the master on this port",
                    )
        replicas = group.replicas if group.replicas is not None else n
        if replicas < n:
            raise self.fail(
                (*path, "replicas"),
                f"{replicas} is fewer than the group's {n} brokers "
                f"({', '.join(b.name for b in group.brokers)})",
            )
        if group.min_insync is not None and group.min_insync > replicas:
            raise self.fail(
                (*path, "min_insync"),
                f"{group.min_insync} is more than replicas ({replicas}): "
                "no persistent send could ever be acknowledged",
            )
        return replace(group, election=election, replicas=replicas)

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

    def no_duplicates(self, groups: list[GroupSpec], zookeeper: ZooKeeper | None) -> None:
        """Broker names once across the file; every port (client, replication, an embedded
        ZooKeeper's) once per host."""
        names: dict[str, str] = {}
        # (host, port) -> the key path that claimed it first
        ports: dict[tuple[str, int], str] = {}
        if zookeeper is not None and zookeeper.port is not None:
            ports[("127.0.0.1", zookeeper.port)] = "zookeeper_port"
        for g in groups:
            for b in g.brokers:
                path = ("groups", g.name, "brokers", b.name)
                if b.name in names:
                    raise self.fail(
                        path, f"broker name {b.name!r} is already used in group {names[b.name]!r}"
                    )
                if zookeeper is not None and zookeeper.embedded and b.name == EMBEDDED_ZK_DIR:
                    raise self.fail(
                        path,
                        f"the name {b.name!r} is taken: the embedded ZooKeeper keeps its data "
                        f"in DATA/{EMBEDDED_ZK_DIR}, beside each broker's DATA/<broker>",
                    )
                names[b.name] = g.name
                for key in ("port", "replication_port"):
                    port = getattr(b, key)
                    if port is None:
                        continue
                    for (host, used), first in ports.items():
                        clash = used == port and (host == b.host or {host, b.host} & WILDCARD_HOSTS)
                        if clash:
                            raise self.fail((*path, key), f"port {port} is already used by {first}")
                    ports[(b.host, port)] = _key_path((*path, key))

    # -- connectors, once every broker is known

    def resolve_connectors(self, group: GroupSpec, groups: list[GroupSpec]) -> GroupSpec:
        if not group.connectors:
            return group
        brokers = {b.name: b for g in groups for b in g.brokers}
        targets = {b.client_address: g for g in groups for b in g.brokers}
        resolved = tuple(
            self.connector(c, group, brokers, targets, ("groups", group.name, "connectors", i))
            for i, c in enumerate(group.connectors)
        )
        return replace(group, connectors=resolved)

    def connector(
        self,
        connector: Connector,
        group: GroupSpec,
        brokers: Mapping[str, BrokerSpec],
        targets: Mapping[str, GroupSpec],
        path: tuple[str | int, ...],
    ) -> Connector:
        try:
            uri = resolve_broker_names(connector.uri, brokers)
        except UnknownBroker as e:
            known = ", ".join(brokers)
            raise self.fail(
                path,
                f"{connector.uri}: unknown broker {e.name!r} (expected host:port or a "
                f"broker of this file: {known})",
            ) from None
        try:
            spec = self.parse_connector(uri, connector.options)
        except ValueError as e:
            # The URI as the operator wrote it, names and all, not the resolved one.
            reason = getattr(e, "reason", str(e))
            raise self.fail(path, f"{connector.uri}: {reason}") from None
        own = {b.client_address: b.name for b in group.brokers}
        for address in spec.addresses:
            if address in own:
                # Its brokers would link to themselves (refused at runtime, so `up` would
                # wait for a bridge that never comes up) or to their own group's master.
                raise self.fail(
                    path,
                    f"{connector.uri}: {address} is broker {own[address]!r} of this "
                    f"group ({group.name}); connectors link a group to other groups",
                )
        # A bridge presents its connector's securityToken, else its own broker's; a broker
        # with a token refuses a link that presents another. Caught here, not as a bridge
        # that never comes up.
        presented = spec.security_token or group.security_token or ""
        for address in spec.addresses:
            target = targets.get(address)
            if target is not None and target.security_token and presented != target.security_token:
                raise self.fail(
                    path,
                    f"{connector.uri}: group {target.name} requires a securityToken that this "
                    "connector does not present: set the same securityToken on the connector, "
                    "on this group, or at the top level",
                )
        return replace(connector, resolved=uri, spec=spec)


class UnknownBroker(Exception):
    """An address-list entry that is a bare name but no broker of the file."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


# `static:(...)`, `masterslave://(...)`, `static:a?...`: the scheme, the address list and
# what follows it. Anything else (multicast, malformed) is left for parse_connector.
_ADDRESS_LIST_RE = re.compile(
    r"(?P<head>\s*(?:static|masterslave):(?://)?)(?P<open>\(?)(?P<list>[^()?]*)(?P<tail>.*)",
    re.IGNORECASE | re.DOTALL,
)


def resolve_broker_names(uri: str, brokers: Mapping[str, BrokerSpec]) -> str:
    """`uri` with each bare broker name in its address list replaced by `host:port`.

    `static:(b,c)?networkTTL=2` becomes `static:(127.0.0.1:61617,127.0.0.1:61618)?...`.
    An entry is a name when it has no ':' (a host:port or tcp:// address always has one)
    and is spelled like one; such an entry that names no broker raises UnknownBroker.
    Pure: resolves no host names.
    """
    m = _ADDRESS_LIST_RE.fullmatch(uri)
    if m is None:
        return uri
    out = []
    for item in m["list"].split(","):
        name = item.strip()
        if ":" in name or not NAME_RE.fullmatch(name):
            out.append(item)  # host:port, or something parse_connector will explain
        elif name in brokers:
            out.append(brokers[name].client_address)
        else:
            raise UnknownBroker(name)
    return m["head"] + m["open"] + ",".join(out) + m["tail"]
