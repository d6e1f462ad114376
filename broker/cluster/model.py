"""The topology model: a cluster's groups, brokers, connectors and ZooKeeper, as plain
frozen data (built by `schema.validate`, read by planning and the commands)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Protocol

from broker.address import Address

# Names and the sync vocabulary are the broker config's (a topology's brokers become
# BrokerConfigs); NAME_RE and NAME_RULE are re-exported for the topology's checks.
from broker.config import NAME_RE as NAME_RE
from broker.config import NAME_RULE as NAME_RULE
from broker.config import Election, Sync


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

SYNC_POLICIES = tuple(s.value for s in Sync)
ELECTIONS = tuple(e.value for e in Election if e is not Election.NONE)
DEFAULT_HOST = "127.0.0.1"
# A port the file leaves to `up` (`metrics_port: auto`): a free one, picked at start.
AUTO_PORT = 0
# Hosts that bind every interface, so their ports clash with any other host's.
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})

QUORUM_SYNC = tuple(s.value for s in Sync if s.quorum)
LOCAL_SYNC = tuple(s.value for s in Sync if not s.quorum)
# The embedded ZooKeeper keeps its data in DATA/zookeeper, beside DATA/<broker>.
EMBEDDED_ZK_DIR = "zookeeper"
# The web console `up` serves when the file names no `console_port` (ActiveMQ's).
DEFAULT_CONSOLE_PORT = 8161


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
class TlsFiles:
    """A broker's TLS files as the topology names them (relative to the directory
    netbroker is run from); `certs` is the `netbroker certs` directory they are in, whose
    missing files `up` creates."""

    cert: str
    key: str
    ca: str
    certs: str | None = None


@dataclass(frozen=True)
class BrokerSpec:
    name: str
    group: str
    port: int
    host: str = DEFAULT_HOST
    replication_port: int | None = None
    # STOMP clients' port (None: no STOMP).
    stomp_port: int | None = None
    # Prometheus metrics over HTTP (None: none; AUTO_PORT: a free one `up` picks).
    metrics_port: int | None = None
    max_message_bytes: int | None = None
    sync: str | None = None
    weight: int | None = None
    # The broker's users, anonymous and authorization settings as a users file holds
    # them (its own keys over the file's; None: no users, every client let in), and the
    # file with the credential brokers present to each other.
    security: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    broker_credential: str | None = None
    # TLS on every port (None: plaintext), and the port bridges come to under TLS.
    tls: TlsFiles | None = None
    bridge_port: int | None = None

    @property
    def ports(self) -> dict[str, int]:
        """Every port the file gives the broker, by key (an `auto` one not yet picked is
        left out): the one list of what a broker binds, for the checks that no two
        things share one."""
        named = {
            "port": self.port,
            "replication_port": self.replication_port,
            "stomp_port": self.stomp_port,
            "metrics_port": self.metrics_port,
            "bridge_port": self.bridge_port,
        }
        return {key: port for key, port in named.items() if port}  # AUTO_PORT is 0

    @property
    def client_address(self) -> str:
        """Where a client on this machine reaches the broker (wildcards via loopback)."""
        host = "127.0.0.1" if self.host in WILDCARD_HOSTS else self.host
        return str(Address(host, self.port))  # an IPv6 literal in brackets

    @property
    def link_address(self) -> str:
        """Where other brokers' bridges reach it: the bridge port under TLS (mutual TLS),
        else the client port."""
        if self.tls is None or self.bridge_port is None:
            return self.client_address
        host = "127.0.0.1" if self.host in WILDCARD_HOSTS else self.host
        return str(Address(host, self.bridge_port))


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
    # The web console's port on 127.0.0.1 as the file gives it (0: none); None when the
    # file does not say, and `up` tries DEFAULT_CONSOLE_PORT.
    console_port: int | None = None

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
