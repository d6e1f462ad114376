"""The hello exchange that opens a bridge: what each side says, and what follows from it.

Pure: the connector (opening side) and the Bridge service (accepting side) are adapters
that send and read the hellos; whether a hello is refused and the terms each side then
works under are decided here.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from broker.pb import bridge_pb2
from netconnector.filters import DestinationFilter
from netconnector.uri import ConnectorSpec, option_default

# Bumped on incompatible changes of the bridge protocol.
PROTOCOL = 1


@dataclass(frozen=True)
class LinkTerms:
    """What each side of a link does, settled by the hello exchange."""

    peer: str
    forwards: bool  # this side sends messages for the peer's demand
    advertises: bool  # this side tells the peer its demand
    network_ttl: int  # how far away demand may be for this side to forward
    message_ttl: int
    prefetch: int
    advertise_ttl: int  # how far away demand the peer may act on
    filter: DestinationFilter
    # decreaseNetworkConsumerPriority: rank bridges to farther consumers below nearer ones
    # (network consumers rank below local ones either way).
    decrease_priority: bool = True
    # conduitSubscriptions: the peer's consumers of a queue count as one consumer here;
    # when False the bridge takes as many round-robin turns as the peer has consumers.
    conduit: bool = True
    # The peer's name in broker paths (its group's, for a master/slave member): loop
    # suppression compares paths with this, never with the member's own name.
    peer_path: str = ""

    @property
    def peer_in_paths(self) -> str:
        return self.peer_path or self.peer


def make_hello(
    broker: str,
    group: str,
    token: str,
    spec: ConnectorSpec | None = None,
    path_name: str = "",
) -> bridge_pb2.BridgeHello:
    """This broker's hello: with `spec` the opener's (its connector's settings), without
    it the acceptor's answer. `token` is the broker's own securityToken; `path_name` its
    name in broker paths (BrokerConfig.path_name), when not `broker`."""
    hello = bridge_pb2.BridgeHello(
        broker=broker, group=group, protocol=PROTOCOL, token=token, path_name=path_name or broker
    )
    if spec is not None:
        hello.duplex = spec.duplex
        hello.network_ttl = spec.network_ttl
        hello.message_ttl = spec.message_ttl
        hello.prefetch = spec.prefetch_size
        if spec.duplex:
            # The acceptor forwards back under the opener's settings.
            hello.excluded.extend(spec.excluded)
            hello.statically_included.extend(spec.statically_included)
            hello.dynamically_included.extend(spec.dynamically_included)
            hello.decrease_priority = spec.decrease_network_consumer_priority
            hello.conduit = spec.conduit_subscriptions
        hello.token = spec.security_token or token
    return hello


def refusal(hello: bridge_pb2.BridgeHello, me: str, expected_token: str) -> str | None:
    """Why a peer's hello is refused, or None."""
    if hello.protocol != PROTOCOL:
        return (
            f"bridge protocol {hello.protocol} from {hello.broker!r}; "
            f"this broker speaks {PROTOCOL}"
        )
    if hello.broker == me:
        return f"broker {me!r} cannot bridge to itself"
    # Constant-time: the token is the broker principal's credential.
    if expected_token and not hmac.compare_digest(hello.token.encode(), expected_token.encode()):
        return f"wrong securityToken (broker credential) from broker {hello.broker!r}"
    return None


def path_name_of(hello: bridge_pb2.BridgeHello) -> str:
    """The sender's name in broker paths (an older broker's hello has none: its name)."""
    return hello.path_name or hello.broker


def opener_terms(spec: ConnectorSpec, peer: str, peer_path: str = "") -> LinkTerms:
    """The opening side's terms: its connector's settings."""
    return LinkTerms(
        peer=peer,
        peer_path=peer_path or peer,
        forwards=True,
        advertises=spec.duplex,
        network_ttl=spec.network_ttl,
        message_ttl=spec.message_ttl,
        prefetch=spec.prefetch_size,
        advertise_ttl=min(spec.consumer_ttl, spec.network_ttl),
        filter=spec.destination_filter,
        decrease_priority=spec.decrease_network_consumer_priority,
        conduit=spec.conduit_subscriptions,
    )


def acceptor_terms(hello: bridge_pb2.BridgeHello) -> LinkTerms:
    """The accepting side's terms, from the opener's hello: it forwards back only on a
    duplex link, under the opener's settings. Raises ValueError for a bad pattern."""
    try:
        patterns = DestinationFilter(
            excluded=hello.excluded,
            statically_included=hello.statically_included,
            dynamically_included=hello.dynamically_included,
        )
    except ValueError as exc:
        raise ValueError(f"bad destination pattern from broker {hello.broker!r}: {exc}") from None

    def flag(field: str, option: str) -> bool:
        # Absent from an older opener's hello: the option's default.
        value = getattr(hello, field) if hello.HasField(field) else option_default(option)
        return bool(value)

    ttl = max(1, hello.network_ttl)
    prefetch = hello.prefetch or option_default("prefetchSize")
    assert isinstance(prefetch, int)
    return LinkTerms(
        peer=hello.broker,
        peer_path=path_name_of(hello),
        forwards=hello.duplex,
        advertises=True,
        network_ttl=ttl,
        message_ttl=max(1, hello.message_ttl),
        prefetch=max(1, prefetch),
        advertise_ttl=ttl,
        filter=patterns,
        decrease_priority=flag("decrease_priority", "decreaseNetworkConsumerPriority"),
        conduit=flag("conduit", "conduitSubscriptions"),
    )
