"""Outbound network connectors: keep a link open to a static peer or a group's master.

`static:(a,b)` runs one link per address; `masterslave:(a,b)` runs one link to whichever
address accepts, moving to the next on loss (see `netconnector.link`).
"""

from __future__ import annotations

from broker.server.status import BridgeStatus
from netconnector.host import LinkHost
from netconnector.link import Link
from netconnector.session import BridgeSession
from netconnector.uri import ConnectorSpec


class Connector:
    """A configured connector: one link per static address, or one masterslave link."""

    def __init__(self, network: LinkHost, spec: ConnectorSpec) -> None:
        self.spec = spec
        if spec.kind == "static":
            self.links = [Link(network, spec, (address,)) for address in spec.addresses]
        else:
            self.links = [Link(network, spec, spec.addresses)]

    def start(self) -> None:
        for link in self.links:
            link.start()

    async def stop(self) -> None:
        for link in self.links:
            await link.stop()

    def statuses(self) -> list[BridgeStatus]:
        return [link.status() for link in self.links]

    @property
    def sessions(self) -> list[BridgeSession]:
        return [link.session for link in self.links if link.session is not None]
