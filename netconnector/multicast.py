"""`multicast://NAME` connectors: a bridge to every broker discovered in group NAME.

`MulticastDiscovery` is the network's side of zeroconf: it runs the `DiscoveryService`
(browsing from start to shutdown, so that a slave promoted to master already knows its
peers), hands each sighting to the multicast connectors, and advertises this broker in
their discovery groups while it serves (standalone, or master of its group). Slaves do
not advertise; demotion and shutdown withdraw the records at once, with goodbyes.

`MulticastConnector` keeps one `Link` (the same link static connectors use, with the
connector's options) per peer its `PeerSelector` picks, and closes it when the peer goes.
A record says nothing about liveness: mDNS caches keep a `kill -9`ed broker's record for
19 to 75 minutes. A dead peer's link notices by itself (the kernel closes a killed
process's connections at once; a peer that hangs with its connections open is left to
gRPC keepalive), shows "backoff"/"connecting", and is retried on the usual capped
backoff until the peer returns, or its record expires or is replaced by a newer one of
the same group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Protocol

from broker.errors import StartupError
from broker.server.gate import ServiceGate
from broker.server.status import ComponentStatus, Report
from discovery.records import Advert, advertised_hosts, check_interfaces, token_digest
from discovery.selection import Me, PeerSelector, Sighting, Target
from discovery.service import DiscoveryService, Registration
from netconnector.hello import PROTOCOL
from netconnector.host import LinkHost
from netconnector.link import Link
from netconnector.session import BridgeSession
from netconnector.uri import ConnectorSpec

log = logging.getLogger("netbroker.multicast")

# How long `detach` waits for the goodbyes to go out before going on without them.
WITHDRAW_TIMEOUT = 1.0


class DiscoveryHost(LinkHost, Protocol):
    """A link host that also tells discovery its group and where clients reach it."""

    @property
    def group(self) -> str:
        """This broker's master/slave group ("" for none), advertised and compared."""
        ...

    @property
    def gate(self) -> ServiceGate:
        """Its client address is the port advertised."""
        ...


def link_label(spec: ConnectorSpec, key: str) -> str:
    """A discovered bridge's name in Admin.Status: `multicast://default/B` for a bridge to
    group B (or to broker B, if it is in no group)."""
    return f"{spec.name}/{key}"


class MulticastConnector:
    """One `multicast://NAME` connector: a link per selected peer, added and removed as
    discovery reports peers coming and going."""

    def __init__(
        self, network: LinkHost, spec: ConnectorSpec, me: Me, advertised: Callable[[], str]
    ) -> None:
        self.network = network
        self.spec = spec
        # Whether this broker's own record is out there (shown beside what it found).
        self.advertised = advertised
        self.selector = PeerSelector(me)
        self.links: dict[str, tuple[Target, Link]] = {}
        self.running = False
        self._stopping: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self.running = True
        self._reconcile()

    async def stop(self) -> None:
        self.running = False
        links = [link for _, link in self.links.values()]
        self.links.clear()
        for link in links:
            await link.stop()
        while self._stopping:
            await asyncio.gather(*list(self._stopping), return_exceptions=True)

    def seen(self, sighting: Sighting) -> None:
        self.selector.seen(sighting)
        self._reconcile()

    def gone(self, instance: str) -> None:
        self.selector.gone(instance)
        self._reconcile()

    def _reconcile(self) -> None:
        """Make the links match the selector's targets (only while serving)."""
        if not self.running:
            return
        targets = self.selector.targets()
        for key, (target, link) in list(self.links.items()):
            wanted = targets.get(key)
            if wanted is None or wanted.addresses != target.addresses:
                del self.links[key]
                why = "gone" if wanted is None else f"moved to {', '.join(wanted.addresses)}"
                log.info(
                    "%s: %s (%s) %s; closing its bridge", self.spec.name, key, target.broker, why
                )
                self._stop_later(link)
        for key, target in targets.items():
            if key in self.links:
                self.links[key] = (target, self.links[key][1])
                continue
            link = Link(self.network, self.spec, target.addresses)
            link.label = link_label(self.spec, key)
            log.info(
                "%s: discovered %s (%s) at %s; opening a bridge",
                self.spec.name,
                target.broker,
                target.group or "no group",
                ", ".join(target.addresses),
            )
            self.links[key] = (target, link)
            link.start()

    def _stop_later(self, link: Link) -> None:
        task = asyncio.get_running_loop().create_task(link.stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def statuses(self) -> list[Report]:
        links: list[Report] = [link.status() for _, (_, link) in sorted(self.links.items())]
        return [self.discovery_status(), *links]

    def discovery_status(self) -> ComponentStatus:
        """What this connector's discovery sees: peers, and records it ignores and why.
        Its state says whether this broker is advertised (so that peers bridge to it)."""
        targets = self.selector.targets()
        parts = [f"{len(targets)} peer{'s' if len(targets) != 1 else ''}"]
        if targets:
            parts[0] += ": " + ", ".join(f"{t.broker}@{t.addresses[0]}" for t in targets.values())
        if self.selector.refused:
            parts.append("ignored " + "; ".join(sorted(self.selector.refused.values())))
        return ComponentStatus("discovery", self.spec.name, self.advertised(), ", ".join(parts))

    @property
    def sessions(self) -> list[BridgeSession]:
        return [link.session for _, link in self.links.values() if link.session is not None]


class MulticastDiscovery:
    """Zeroconf for one broker process: browsing, advertising, and its connectors."""

    def __init__(self, network: DiscoveryHost) -> None:
        config = network.config
        self.network = network
        try:
            self.interfaces = check_interfaces(config.discovery_interfaces)
            # Checked now, so that a listener peers could not reach fails the start.
            self.hosts = advertised_hosts(config.host, self.interfaces)
        except ValueError as exc:
            raise StartupError(f"discovery: {exc}") from None
        self.token_digest = token_digest(config.discovery_token)
        self.connectors: list[MulticastConnector] = []
        self.service = DiscoveryService(self.interfaces)
        self.serving = False

    def connector(self, spec: ConnectorSpec) -> MulticastConnector:
        assert spec.discovery_group is not None
        me = Me(
            broker=self.network.name,
            group=self.network.group,
            discovery_group=spec.discovery_group,
            token_digest=self.token_digest,
            protocol=PROTOCOL,
        )
        connector = MulticastConnector(self.network, spec, me, self.advertised_state)
        self.connectors.append(connector)
        return connector

    def start(self) -> None:
        """Start zeroconf (its sockets and thread) and browse; call on the broker's loop."""
        try:
            self.service.start(asyncio.get_running_loop(), self._seen, self._gone)
        except OSError as exc:
            raise StartupError(
                f"discovery: cannot use interface(s) {', '.join(self.interfaces)}: {exc}"
            ) from None

    def _seen(self, sighting: Sighting) -> None:
        for connector in self.connectors:
            connector.seen(sighting)

    def _gone(self, instance: str) -> None:
        for connector in self.connectors:
            connector.gone(instance)

    def advertise(self, role: str) -> None:
        """Advertise this broker, serving as `role`, in each of its discovery groups."""
        network = self.network
        _, _, port = network.gate.client_address.rpartition(":")
        incarnation = secrets.token_hex(4)
        groups = dict.fromkeys(c.spec.discovery_group for c in self.connectors)
        registrations = [
            Registration(
                Advert(
                    broker=network.name,
                    group=network.group,
                    role=role,
                    discovery_group=group,
                    protocol=PROTOCOL,
                    token_digest=self.token_digest,
                    incarnation=incarnation,
                ),
                self.hosts,
                int(port),
            )
            for group in groups
            if group is not None
        ]
        self.serving = True
        self.service.advertise(registrations)

    def withdraw(self) -> asyncio.Future[None]:
        """Withdraw the records now; `wait_withdrawn` waits for the goodbyes."""
        self.serving = False
        return asyncio.wrap_future(self.service.withdraw())

    async def wait_withdrawn(self, withdrawal: asyncio.Future[None]) -> None:
        # asyncio.wait, not wait_for: a timeout must not cancel the goodbyes half-sent.
        done, _ = await asyncio.wait([withdrawal], timeout=WITHDRAW_TIMEOUT)
        if not done:
            log.warning("discovery: goodbyes not sent within %.1fs", WITHDRAW_TIMEOUT)
        elif withdrawal.exception() is not None:
            log.error("discovery: withdrawing failed", exc_info=withdrawal.exception())

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.service.close()

    def advertised_state(self) -> str:
        """One of "advertised", "probing", "conflict: ...", or "not advertised" (not serving)."""
        states = self.service.states()
        if not self.serving:
            return "not advertised"
        if states and all(s == "advertised" for s in states.values()):
            return "advertised"
        return "; ".join(sorted(set(states.values()))) or "probing"
