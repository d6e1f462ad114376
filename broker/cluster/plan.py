"""What `up` starts: one BrokerPlan per broker of a topology, with its config, its command
line and the bridges it must bring up. Pure data, derived from the topology.

A broker gets its settings as a config file in its data directory (`CONFIG_FILE`, which
`up` writes from the plan's `config` before starting it), so its command line is only
`broker --config FILE`: no token shows in `ps`, and no topology is too large for it."""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from broker.cluster.errors import UpError
from broker.cluster.model import AUTO_PORT, BrokerSpec, Connector, GroupSpec, Topology
from broker.config import BrokerConfig, ConfigError, Election, Sync
from broker.ports import listen_ports

LOG_FILE = "broker.log"
CONFIG_FILE = "broker.json"
# The broker's users file, from the topology's security keys (readable by its owner only).
SECURITY_FILE = "users.json"
# Characters left readable when option values are folded into a query string: the
# destination wildcards and list commas operators write. '&', '=', '%', '?', '#' and
# spaces are escaped; the broker's parser unescapes them.
QUERY_SAFE = "*>,.:/@_-~"


@dataclass(frozen=True)
class BrokerPlan:
    """How one broker of a topology is started: pure data, derived from the topology."""

    spec: BrokerSpec
    data_dir: Path
    log_path: Path
    argv: tuple[str, ...]
    # Bridge names (Admin.Status component names) that must be up, in connector order.
    # In a master/slave group only the master runs them.
    bridges: tuple[str, ...] = ()
    # The group's election ("zookeeper", "lockfile"), None for a standalone broker.
    election: str | None = None
    # What the broker runs with; None where only its process is looked for (`plan`
    # without configs, or a plan read back from the state file).
    config: BrokerConfig | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def group(self) -> str:
        return self.spec.group

    @property
    def address(self) -> str:
        return self.spec.client_address

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_FILE

    @property
    def metrics_port(self) -> int | None:
        """Where the broker serves /metrics: the file's port, or the one picked for
        `metrics_port: auto` (known from the config); None if nowhere (or not known)."""
        if self.config is not None:
            return self.config.metrics_port or None
        return self.spec.metrics_port or None


def security_file(spec: BrokerSpec, cwd: Path | None = None) -> dict[str, Any] | None:
    """The users file `up` writes for a broker: its security keys, a users file path made
    absolute (relative paths are relative to where netbroker runs, like `data:`)."""
    if not spec.security:
        return None
    doc = dict(spec.security)
    users = doc.get("users")
    if isinstance(users, str):
        doc["users"] = str((cwd or Path.cwd()) / users)
    return doc


def broker_command() -> list[str]:
    """The command that runs one broker: this interpreter, this package."""
    return [sys.executable, "-m", "broker", "broker"]


def _option_text(value: object) -> str:
    """A YAML option value as the query string writes it (the parser reads it back)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(item).strip() for item in value)
    return str(value)


def connector_argument(connector: Connector) -> str:
    """The connector as one URI, as a broker's config lists it: names resolved, YAML
    options folded in.

    The broker parses this with the same `parse_connector` the topology was checked with,
    so it gets the very connector the file describes. An option in both the URI and the
    YAML keys is kept once (the topology check has made sure the two agree).
    """
    uri = (connector.resolved or connector.uri).strip()
    base, _, query = uri.partition("?")
    given = {unquote(piece.partition("=")[0]) for piece in query.split("&") if piece}
    extra = [
        f"{quote(name, safe='')}={quote(_option_text(value), safe=QUERY_SAFE)}"
        for name, value in connector.options.items()
        if name not in given
    ]
    if not extra:
        return uri
    pieces = [piece for piece in query.split("&") if piece] + extra
    return f"{base}?{'&'.join(pieces)}"


def runnable_connectors(group: GroupSpec) -> list[Connector]:
    """The group's connectors, every kind of which its brokers now run."""
    return list(group.connectors)


def bridge_labels(connector: Connector) -> list[str]:
    """The names of the bridges a connector opens, as its broker's Admin.Status lists them.

    Mirrors `netconnector.connector.Link.label`: a static connector opens one bridge per
    address, named `static:HOST:PORT`; a masterslave connector one bridge, named after the
    connector (`name` option, by default `masterslave:(HOST:PORT,...)`).
    """
    spec = connector.spec
    if spec is None or spec.kind == "multicast":
        return []
    if spec.kind == "static":
        return [f"static:{address}" for address in spec.addresses]
    if len(spec.addresses) == 1:
        return [f"{spec.kind}:{spec.addresses[0]}"]
    return [spec.name]


def discovered_labels(connector: Connector, group: GroupSpec, topology: Topology) -> list[str]:
    """The bridges a `multicast://NAME` connector opens: one to each other group with a
    connector of that discovery group (a broker advertises in the discovery groups of its
    own multicast connectors). Named as `netconnector.multicast.link_label` names them:
    `multicast://NAME/GROUP`."""
    spec = connector.spec
    if spec is None or spec.kind != "multicast":
        return []
    peers = [
        g.name
        for g in topology.groups
        if g.name != group.name
        and any(
            c.spec is not None
            and c.spec.kind == "multicast"
            and c.spec.discovery_group == spec.discovery_group
            for c in g.connectors
        )
    ]
    return [f"{spec.name}/{name}" for name in peers]


def expected_bridges(group: GroupSpec, topology: Topology | None = None) -> list[str]:
    """Every bridge each serving broker of `group` must report "up" before the cluster is up.
    Discovered bridges (multicast) are known only with the whole `topology`."""
    labels = []
    for c in runnable_connectors(group):
        labels += bridge_labels(c)
        if topology is not None:
            labels += discovered_labels(c, group, topology)
    return labels


def shared_store_dir(root: Path, group: GroupSpec) -> Path:
    """The store directory the members of a lock-file group share."""
    return root / f"shared-{group.name}"


def broker_argv(config_path: Path, command: Sequence[str]) -> list[str]:
    """The broker's command line: every setting is in its config file."""
    return [*command, "--config", str(config_path)]


def broker_config(
    group: GroupSpec,
    broker: BrokerSpec,
    data_dir: Path,
    *,
    zookeeper: str = "",
    replication_port: int | None = None,
    shared_dir: Path | None = None,
    metrics_port: int | None = None,
    cwd: Path | None = None,
    peers: tuple[str, ...] = (),
) -> BrokerConfig:
    """The broker's settings: its own, then its group's.

    `zookeeper` is the ensemble's connect string (a ZooKeeper group's members need it);
    `replication_port` stands in for a member without one in the file (a group of one);
    `metrics_port` for a `metrics_port: auto` (without it, no metrics);
    `shared_dir` is a lock-file group's store. What the topology leaves out is left to
    the config's defaults (and the config's rules check the result).
    """
    settings: dict[str, Any] = {
        "name": broker.name,
        "host": broker.host,
        "port": broker.port,
        "data_dir": data_dir,
        "group": group.name,
        "connectors": tuple(connector_argument(c) for c in runnable_connectors(group)),
    }
    if broker.max_message_bytes is not None:
        settings["max_message_bytes"] = broker.max_message_bytes
    if broker.stomp_port is not None:
        settings["stomp_port"] = broker.stomp_port
    if broker.metrics_port == AUTO_PORT:
        settings["metrics_port"] = metrics_port or 0
    elif broker.metrics_port is not None:
        settings["metrics_port"] = broker.metrics_port
    if group.security_token:
        settings["token"] = group.security_token
    if broker.security:
        # `up` writes the broker's users file there (`security_file`).
        settings["users_file"] = data_dir / SECURITY_FILE
    # Paths in the file are relative to where netbroker runs, like `data:`.
    base = (cwd or Path.cwd()).absolute()
    if broker.broker_credential:
        settings["broker_credential_file"] = base / broker.broker_credential
    if broker.tls is not None:
        settings.update(
            tls_cert=base / broker.tls.cert,
            tls_key=base / broker.tls.key,
            tls_ca=base / broker.tls.ca,
            # Followers must present a certificate naming a member of the group; bridges
            # one naming the broker they say they are, a broker of this topology (even
            # under a CA that signs others' certificates too).
            group_members=tuple(b.name for b in group.brokers),
            tls_peers=peers,
        )
        if broker.bridge_port is not None:
            settings["bridge_port"] = broker.bridge_port
    sync = group.effective_sync(broker)
    if sync:
        settings["sync"] = Sync(sync)
    if group.election == Election.ZOOKEEPER:
        settings.update(
            election=Election.ZOOKEEPER,
            zookeeper=zookeeper,
            replication_port=broker.replication_port or replication_port or 0,
            replicas=group.replicas or len(group.brokers),
        )
        if group.min_insync is not None:
            settings["min_insync"] = group.min_insync
        if group.zk_path:
            settings["zk_path"] = group.zk_path
        if group.session_timeout is not None:
            settings["session_timeout"] = group.session_timeout
        if broker.weight is not None:
            settings["weight"] = broker.weight
    elif group.election == Election.LOCKFILE:
        settings.update(election=Election.LOCKFILE, shared_dir=shared_dir)
    try:
        return BrokerConfig(**settings)
    except ConfigError as e:
        raise UpError(f"broker {broker.name}: {e}") from None


def plan(
    topology: Topology,
    *,
    cwd: Path | None = None,
    command: Sequence[str] | None = None,
    zookeeper: str | None = None,
    pick_port: Callable[[], int] | None = None,
    configs: bool = False,
) -> list[BrokerPlan]:
    """One BrokerPlan per broker, in file order; data dirs are absolute.

    With `configs`, each plan also has the broker's config, which starting it needs;
    finding it running (status, down) needs only its command line. `zookeeper`: the
    connect string ZooKeeper groups get (default: the file's external ensemble, or an
    embedded one's fixed port). `pick_port` gives a replication port to a ZooKeeper
    member the file gives none (a group of one), and a `metrics_port: auto` its port; by
    default a free port (for metrics, none of the file's).
    """
    root = topology.data_root(cwd).absolute()
    cmd = list(command) if command is not None else broker_command()
    if zookeeper is None:
        zookeeper = topology.zookeeper.connect_string if topology.zookeeper else ""
    metrics_ports = _auto_metrics_ports(topology, pick_port) if configs else {}
    plans = []
    for group in topology.groups:
        for spec in group.brokers:
            data_dir = root / spec.name
            config = None
            if configs:
                replication_port = None
                if group.election == Election.ZOOKEEPER and spec.replication_port is None:
                    replication_port = (
                        pick_port() if pick_port else _free_port(metrics_ports.values())
                    )
                lockfile = group.election == Election.LOCKFILE
                config = broker_config(
                    group, spec, data_dir, zookeeper=zookeeper,
                    replication_port=replication_port,
                    shared_dir=shared_store_dir(root, group) if lockfile else None,
                    metrics_port=metrics_ports.get(spec.name), cwd=cwd,
                    peers=tuple(b.name for b in topology.brokers),
                )  # fmt: skip
            plans.append(
                BrokerPlan(
                    spec=spec,
                    data_dir=data_dir,
                    log_path=data_dir / LOG_FILE,
                    argv=tuple(broker_argv(data_dir / CONFIG_FILE, cmd)),
                    bridges=tuple(expected_bridges(group, topology)),
                    election=group.election,
                    config=config,
                )
            )
    return plans


def _auto_metrics_ports(topology: Topology, pick_port: Callable[[], int] | None) -> dict[str, int]:
    """A free port for each broker with `metrics_port: auto`, by name: distinct, and
    none the file names (those brokers bind theirs only later)."""
    auto = [b.name for b in topology.brokers if b.metrics_port == AUTO_PORT]
    if not auto:
        return {}
    if pick_port is not None:
        return {name: pick_port() for name in auto}
    taken = {port for b in topology.brokers for port in b.ports.values()}
    if topology.zookeeper is not None and topology.zookeeper.port:
        taken.add(topology.zookeeper.port)
    try:
        return dict(zip(auto, listen_ports(len(auto), avoid=taken), strict=True))
    except OSError as e:
        raise UpError(f"{topology.source}: no free ports for metrics_port: auto: {e}") from None


def ensure_certificates(topology: Topology, cwd: Path | None = None) -> list[str]:
    """Create what is missing of each `tls: {certs: DIR}` directory (the CA, brokers'
    certificates and 0600 keys); the brokers issued a certificate."""
    from broker.security.certs import ensure_brokers

    by_dir: dict[str, list[tuple[str, list[str]]]] = {}
    for b in topology.brokers:
        if b.tls is not None and b.tls.certs is not None:
            by_dir.setdefault(b.tls.certs, []).append((b.name, [b.host]))
    issued: list[str] = []
    for directory, brokers in by_dir.items():
        try:
            issued += ensure_brokers((cwd or Path.cwd()).absolute() / directory, brokers)
        except (OSError, ValueError) as e:
            raise UpError(f"cannot create the certificates in {directory}: {e}") from None
    return issued


def topology_ca(topology: Topology, cwd: Path | None = None) -> bytes | None:
    """The CA `up` and `status` verify the brokers with (the first broker's with TLS)."""
    for b in topology.brokers:
        if b.tls is not None:
            try:
                return ((cwd or Path.cwd()) / b.tls.ca).read_bytes()
            except OSError as e:
                raise UpError(f"cannot read the CA {b.tls.ca}: {e.strerror or e}") from None
    return None


def _free_port(avoid: Collection[int] = ()) -> int:
    # Below the ephemeral range: the broker binds it only once it has started; `avoid`
    # are ports picked for others, not bound yet either.
    return listen_ports(1, avoid=avoid)[0]


def groups_of(plans: Sequence[BrokerPlan]) -> list[tuple[str, list[BrokerPlan]]]:
    """The plans by group, groups in file order."""
    out: dict[str, list[BrokerPlan]] = {}
    for p in plans:
        out.setdefault(p.group, []).append(p)
    return list(out.items())
