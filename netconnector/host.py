"""What a link needs from this broker's network: who it is, the broker it serves, and the
sessions its links open and close.

`Network` is the one host; links (outbound, from connectors) and the Bridge service
(inbound) depend on this protocol rather than on the network, so that the network can
build them without an import loop.
"""

from __future__ import annotations

from typing import Protocol

from broker.config import BrokerConfig
from broker.core.broker import Broker
from broker.pb import bridge_pb2
from broker.security.tls import TlsMaterial
from netconnector.hello import LinkTerms
from netconnector.outbox import Outbox
from netconnector.session import BridgeSession
from netconnector.uri import ConnectorSpec


class LinkHost(Protocol):
    """This broker's side of its links."""

    @property
    def name(self) -> str:
        """This broker's name, said in hellos and checked against peers'."""
        ...

    @property
    def config(self) -> BrokerConfig:
        """The broker's configuration (a link sizes its gRPC messages from it)."""
        ...

    @property
    def tls(self) -> TlsMaterial | None:
        """The broker's TLS material: links dial with it (None: plaintext)."""
        ...

    @property
    def broker(self) -> Broker | None:
        """The broker core links serve, or None while it does not serve."""
        ...

    def hello(self, spec: ConnectorSpec | None = None) -> bridge_pb2.BridgeHello:
        """The hello this broker opens (with its connector's `spec`) or answers a link with."""
        ...

    def open_session(self, broker: Broker, terms: LinkTerms, outbox: Outbox) -> BridgeSession:
        """A bridge session for a link that is up, joined to the demand table."""
        ...

    def close_session(self, session: BridgeSession) -> None:
        """The session's link is down: its messages go back, its demand is forgotten."""
        ...
