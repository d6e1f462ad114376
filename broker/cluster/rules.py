"""The topology's rules across keys: what each election allows and defaults, names and
ports used once, and connectors checked against the brokers they link.

Settings that only a ZooKeeper group acts on (replicas, min_insync, zkPath,
session_timeout, quorum sync, replication_port, weight) are refused elsewhere rather than
silently ignored, and so is a connector that would present the wrong securityToken to
the group it links to. Connectors are parsed with the parser the caller passes in, after
broker names in their address lists have been replaced by those brokers' client
addresses.

These are the validators behind schema.py's models: each raises a `refusal.refuse` (the
reason and the key path below the value validated) for the first problem it finds.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import replace

from broker.cluster.errors import key_path
from broker.cluster.model import (
    EMBEDDED_ZK_DIR,
    LOCAL_SYNC,
    NAME_RE,
    QUORUM_SYNC,
    WILDCARD_HOSTS,
    BrokerSpec,
    Connector,
    ConnectorParser,
    GroupSpec,
    ZooKeeper,
)
from broker.cluster.refusal import KeyPath, refuse

# Keys only a group with `election: zookeeper` acts on (group level, then broker level).
ZK_GROUP_KEYS = ("replicas", "min_insync", "zkPath", "session_timeout")
ZK_BROKER_KEYS = ("replication_port", "weight")


def group_semantics(
    group: GroupSpec,
    given: Collection[str],
    broker_given: Mapping[str, Collection[str]],
    zookeeper: ZooKeeper | None,
) -> GroupSpec:
    """Defaults that depend on the group's size, and what its election allows. `given`:
    the group's keys the file gives; `broker_given`: each broker's. Key paths are the
    group's own (`brokers.b.port`)."""
    n = len(group.brokers)
    election = group.election
    if election is None and n >= 2:
        election = "zookeeper"
    if election != "zookeeper":
        _refuse_zookeeper_keys(group, election, given, broker_given)
        return replace(group, election=election)
    return replace(group, election=election, replicas=_zookeeper_group(group, zookeeper))


def _refuse_zookeeper_keys(
    group: GroupSpec,
    election: str | None,
    given: Collection[str],
    broker_given: Mapping[str, Collection[str]],
) -> None:
    """A group that does not elect through ZooKeeper gives none of its keys."""
    # Keys that only a ZooKeeper group acts on would be silently ignored here.
    why = (
        f"group {group.name} uses election: lockfile"
        if election == "lockfile"
        else f"group {group.name} has one broker and no election"
    )
    for key in ZK_GROUP_KEYS:
        if key in given:
            raise refuse(f"only for election: zookeeper ({why})", (key,), in_group=True)
    for b in group.brokers:
        for key in ZK_BROKER_KEYS:
            if key in broker_given[b.name]:
                raise refuse(
                    f"only for election: zookeeper ({why})",
                    ("brokers", b.name, key),
                    in_group=True,
                )
    where: KeyPath
    for where, sync in [(("sync",), group.sync)] + [
        (("brokers", b.name, "sync"), b.sync) for b in group.brokers
    ]:
        if sync in QUORUM_SYNC:
            raise refuse(
                f"{sync} needs members that replicate: only for election: zookeeper "
                f"({why}); use {' or '.join(LOCAL_SYNC)}",
                where,
                in_group=True,
            )


def _zookeeper_group(group: GroupSpec, zookeeper: ZooKeeper | None) -> int:
    """What a ZooKeeper group needs (the ensemble, a replication port per member, a
    quorum that fits); its replicas."""
    n = len(group.brokers)
    if zookeeper is None:
        where: KeyPath
        if group.election is None:
            where, what = (), f"a group of {n} brokers elects its master through ZooKeeper"
        else:
            where, what = ("election",), "election: zookeeper"
        raise refuse(
            f"{what}, but the file names no ZooKeeper: add a top-level "
            "'zookeeper: embedded' (netbroker up runs one) or 'zookeeper: host:port,...'"
            + (", or set 'election: lockfile' for members on one machine"
               if group.election is None else ""),
            where,
        )  # fmt: skip
    if n >= 2:
        for b in group.brokers:
            if b.replication_port is None:
                raise refuse(
                    f"required: group {group.name} elects through ZooKeeper, and its "
                    "slaves replicate from the master on this port",
                    ("brokers", b.name, "replication_port"),
                    in_group=True,
                )
    replicas = group.replicas if group.replicas is not None else n
    if replicas < n:
        raise refuse(
            f"{replicas} is fewer than the group's {n} brokers "
            f"({', '.join(b.name for b in group.brokers)})",
            ("replicas",),
        )
    if group.min_insync is not None and group.min_insync > replicas:
        raise refuse(
            f"{group.min_insync} is more than replicas ({replicas}): "
            "no persistent send could ever be acknowledged",
            ("min_insync",),
        )
    return replicas


def no_duplicates(
    groups: list[GroupSpec], zookeeper: ZooKeeper | None, console_port: int | None = None
) -> None:
    """Broker names once across the file; every port (client, replication, an embedded
    ZooKeeper's, the web console's) once per host."""
    names: dict[str, str] = {}
    # (host, port) -> the key path that claimed it first
    ports: dict[tuple[str, int], str] = {}
    if zookeeper is not None and zookeeper.port is not None:
        ports[("127.0.0.1", zookeeper.port)] = "zookeeper_port"
    if console_port:
        ports[("127.0.0.1", console_port)] = "console_port"
    for g in groups:
        for b in g.brokers:
            path = ("groups", g.name, "brokers", b.name)
            if b.name in names:
                raise refuse(
                    f"broker name {b.name!r} is already used in group {names[b.name]!r}", path
                )
            if zookeeper is not None and zookeeper.embedded and b.name == EMBEDDED_ZK_DIR:
                raise refuse(
                    f"the name {b.name!r} is taken: the embedded ZooKeeper keeps its data "
                    f"in DATA/{EMBEDDED_ZK_DIR}, beside each broker's DATA/<broker>",
                    path,
                )
            names[b.name] = g.name
            for key, port in b.ports.items():
                for (host, used), first in ports.items():
                    clash = used == port and (host == b.host or {host, b.host} & WILDCARD_HOSTS)
                    if clash:
                        raise refuse(f"port {port} is already used by {first}", (*path, key))
                ports[(b.host, port)] = key_path((*path, key))


# -- connectors, once every broker is known


def resolve_connectors(
    group: GroupSpec, groups: list[GroupSpec], parse_connector: ConnectorParser
) -> GroupSpec:
    if not group.connectors:
        return group
    brokers = {b.name: b for g in groups for b in g.brokers}
    targets = {a: g for g in groups for b in g.brokers for a in (b.client_address, b.link_address)}
    resolved = tuple(
        _connector(
            c, group, brokers, targets, parse_connector, ("groups", group.name, "connectors", i)
        )
        for i, c in enumerate(group.connectors)
    )
    return replace(group, connectors=resolved)


def _connector(
    connector: Connector,
    group: GroupSpec,
    brokers: Mapping[str, BrokerSpec],
    targets: Mapping[str, GroupSpec],
    parse_connector: ConnectorParser,
    path: KeyPath,
) -> Connector:
    try:
        uri = resolve_broker_names(connector.uri, brokers)
    except NoBridgePort as e:
        raise refuse(
            f"{connector.uri}: broker {e.name!r} has TLS but no bridge_port: bridges "
            "connect to it there with mutual TLS",
            path,
        ) from None
    except UnknownBroker as e:
        known = ", ".join(brokers)
        raise refuse(
            f"{connector.uri}: unknown broker {e.name!r} (expected host:port or a "
            f"broker of this file: {known})",
            path,
        ) from None
    try:
        spec = parse_connector(uri, connector.options)
    except ValueError as e:
        # The URI as the operator wrote it, names and all, not the resolved one.
        reason = getattr(e, "reason", str(e))
        raise refuse(f"{connector.uri}: {reason}", path) from None
    own = {a: b.name for b in group.brokers for a in (b.client_address, b.link_address)}
    for address in spec.addresses:
        if address in own:
            # Its brokers would link to themselves (refused at runtime, so `up` would
            # wait for a bridge that never comes up) or to their own group's master.
            raise refuse(
                f"{connector.uri}: {address} is broker {own[address]!r} of this "
                f"group ({group.name}); connectors link a group to other groups",
                path,
            )
    # A bridge presents its connector's securityToken, else its own broker's; a broker
    # with a token refuses a link that presents another. Caught here, not as a bridge
    # that never comes up.
    presented = spec.security_token or group.security_token or ""
    for address in spec.addresses:
        target = targets.get(address)
        if target is not None and target.security_token and presented != target.security_token:
            raise refuse(
                f"{connector.uri}: group {target.name} requires a securityToken that this "
                "connector does not present: set the same securityToken on the connector, "
                "on this group, or at the top level",
                path,
            )
    return replace(connector, resolved=uri, spec=spec)


class UnknownBroker(Exception):
    """An address-list entry that is a bare name but no broker of the file."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class NoBridgePort(UnknownBroker):
    """A broker named in an address list that has TLS but no bridge port to link to."""


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
            if brokers[name].tls is not None and brokers[name].bridge_port is None:
                raise NoBridgePort(name)
            out.append(brokers[name].link_address)
        else:
            raise UnknownBroker(name)
    return m["head"] + m["open"] + ",".join(out) + m["tail"]
