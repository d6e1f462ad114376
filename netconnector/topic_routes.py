"""Topic routes: which brokers of the network have subscribers for a topic, and which
bridge leads to each, so that every such broker gets each published message once.

Queue demand (`demand.py`) needs only "how far to the nearest consumers": a queue's
message goes to one consumer. A topic's message must reach every broker with matching
subscriptions, exactly once, in a chain as in a full mesh. So topic demand is a *path
vector*: each entry names the broker whose subscriptions it stands for.

* `set_local(patterns)` records this broker's subscription patterns (conduit: one entry
  per distinct pattern, however many subscriptions share it; a durable subscription
  counts while its subscriber is away, since its messages are stored for it).
* `set_remote(bridge, entries)` records a neighbour's advertisement: `(pattern, broker)
  -> hops` from that neighbour.
* `advertisement(bridge, ttl)` is what to tell the neighbour behind `bridge`: this
  broker's own patterns at 0 hops, and the best route to every other broker's patterns
  learned over *other* bridges (split horizon), one hop farther, within the TTL and never
  the neighbour's own entries back to it.
* `route(topic, path, targets)` decides a published or forwarded message: whether it is
  delivered here, and which target brokers each bridge carries it for. The publishing
  broker computes the targets (every broker with a matching pattern); each broker on the
  way delivers if it is a target and splits the rest by next hop. Each target is in
  exactly one branch, so no broker gets a message twice, whatever the links' shape;
  a target whose route is gone, or behind a broker the message already passed, is
  dropped (a topic's non-durable semantics: a subscriber that is not reachable now
  misses the message).

Pure: no I/O, no clock. The network adapter feeds it subscription changes and
advertisements and carries out its routes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from netconnector.filters import matches

BridgeId = str
#: (pattern, broker) -> hops from the advertising broker to that broker's subscriptions
TopicAdvertisement = dict[tuple[str, str], int]


@dataclass(frozen=True)
class Route:
    """What to do with one topic message: deliver it here or not, and per bridge the
    target brokers it carries the message for."""

    local: bool
    bridges: Mapping[BridgeId, frozenset[str]]


class TopicRoutes:
    """One broker's view of where the network's topic subscriptions are."""

    def __init__(self, me: str) -> None:
        self.me = me
        self._local: frozenset[str] = frozenset()
        self._remote: dict[BridgeId, TopicAdvertisement] = {}
        # The broker behind each bridge, once known: its own entries are never sent back.
        self._peers: dict[BridgeId, str] = {}
        self.version = 0

    # ---- inputs -------------------------------------------------------------------------

    def set_local(self, patterns: Iterable[str]) -> bool:
        """This broker's subscription patterns now; True if they changed."""
        new = frozenset(patterns)
        if new == self._local:
            return False
        self._local = new
        self.version += 1
        return True

    def set_remote(
        self, bridge: BridgeId, peer: str, entries: Mapping[tuple[str, str], int]
    ) -> bool:
        """The whole advertisement last heard over `bridge` from broker `peer`."""
        for (_, broker), hops in entries.items():
            if hops < 0:
                raise ValueError(f"hops must be >= 0, got {hops} for broker {broker!r}")
        new = dict(entries)
        if self._remote.get(bridge) == new and self._peers.get(bridge) == peer:
            return False
        self._remote[bridge] = new
        self._peers[bridge] = peer
        self.version += 1
        return True

    def drop_bridge(self, bridge: BridgeId) -> bool:
        """The bridge went down: nothing is routed over it until it advertises again."""
        self._peers.pop(bridge, None)
        if self._remote.pop(bridge, None) is None:
            return False
        self.version += 1
        return True

    # ---- queries ------------------------------------------------------------------------

    @property
    def local_patterns(self) -> frozenset[str]:
        return self._local

    def _best(self) -> dict[tuple[str, str], tuple[int, BridgeId]]:
        """(pattern, broker) -> (hops from here, bridge), nearest first, then by bridge
        id, so that every broker breaks ties the same way."""
        best: dict[tuple[str, str], tuple[int, BridgeId]] = {}
        for bridge in sorted(self._remote):
            for key, hops in self._remote[bridge].items():
                if key[1] == self.me:
                    continue
                here = hops + 1
                known = best.get(key)
                if known is None or here < known[0]:
                    best[key] = (here, bridge)
        return best

    def advertisement(
        self, bridge: BridgeId, ttl: int, peer: str | None = None
    ) -> TopicAdvertisement:
        """What this broker tells the neighbour behind `bridge` (broker `peer` in paths,
        when the bridge has not said): entries it can reach within `ttl` hops of the
        neighbour (one hop farther). Nothing learned from that neighbour, over any
        bridge (two may join the same pair, one each way), goes back to it."""
        if ttl < 1:
            raise ValueError(f"a TTL must be at least 1, got {ttl}")
        out: TopicAdvertisement = {(pattern, self.me): 0 for pattern in self._local}
        peer = self._peers.get(bridge, peer)
        for key, (hops, via) in self._best().items():
            if via == bridge or key[1] == peer or hops + 1 > ttl:
                continue
            if peer is not None and self._peers.get(via) == peer:
                continue
            out[key] = hops
        return out

    def wanted(self, topic: str) -> bool:
        """Whether any broker, this one included, has subscriptions for `topic`."""
        if any(matches(p, topic) for p in self._local):
            return True
        return any(
            matches(pattern, topic) for entries in self._remote.values() for pattern, _ in entries
        )

    def route(
        self, topic: str, path: Collection[str] = (), targets: Collection[str] | None = None
    ) -> Route:
        """Where a message of `topic` goes from here.

        `targets`: the brokers a forwarded message was sent on for (None: published here,
        so every broker with a matching subscription). `path`: the brokers it already
        passed, which it never reaches again."""
        local = any(matches(p, topic) for p in self._local)
        # Per target broker, its nearest route among its matching patterns, over bridges
        # to brokers the message has not passed (so it never goes back: at most one hop
        # per broker, whatever the tables say while they converge).
        nearest: dict[str, tuple[int, BridgeId]] = {}
        for bridge in sorted(self._remote):
            if self._peers.get(bridge) in path:
                continue
            for (pattern, broker), hops in self._remote[bridge].items():
                if broker == self.me or broker in path or not matches(pattern, topic):
                    continue
                known = nearest.get(broker)
                if known is None or hops + 1 < known[0]:
                    nearest[broker] = (hops + 1, bridge)
        if targets is not None:
            local = local and self.me in targets
            wanted = set(targets)
        else:
            wanted = set(nearest)
        by_bridge: dict[BridgeId, set[str]] = {}
        for broker in sorted(wanted - {self.me}):
            hop = nearest.get(broker)
            if hop is not None:
                by_bridge.setdefault(hop[1], set()).add(broker)
        return Route(local, {b: frozenset(t) for b, t in by_bridge.items()})
