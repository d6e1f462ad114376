"""Topic routes: which brokers of the network have subscribers for a topic, and which
neighbour leads to each, so that every such broker gets each published message once.

Queue demand (`demand.py`) needs only "how far to the nearest consumers": a queue's
message goes to one consumer. A topic's message must reach every broker with matching
subscriptions, exactly once, in a chain as in a full mesh. So topic demand is a *path
vector*: each entry names the broker whose subscriptions it stands for.

* `set_local(patterns, durable)` records this broker's subscription patterns (conduit:
  one entry per distinct pattern, however many subscriptions share it), and which of
  them a durable subscription holds (it counts while its subscriber is away).
* `set_remote(peer, entries)` records a neighbour's whole advertisement: `(pattern,
  broker) -> (hops from that neighbour, durable)`. Neighbours are known by their name in
  broker paths (a group's, for a member), so the member that serves a group now is the
  same neighbour as the one before it.
* `link_down(peer)`: no link to the neighbour is up. Its non-durable entries go (a
  non-durable subscriber that cannot be reached misses what is published meanwhile);
  its durable ones stay, so persistent messages for them are still routed to it, and
  wait, stored, for the link to come back (a durable subscription keeps receiving
  through a link drop or a failover of the group behind it).
* `advertisement(peer, ttl)` is what to tell a neighbour: this broker's own patterns at
  0 hops, and the best route to every other broker's patterns learned from *other*
  neighbours (split horizon), one hop farther, within the TTL, never the neighbour's own
  entries back to it.
* `route(topic, path, targets, persistent)` decides a published or forwarded message:
  whether it is delivered here, and which target brokers each neighbour carries it for.
  The publishing broker computes the targets (every broker with a matching pattern);
  each broker on the way delivers if it is a target and splits the rest by next hop.
  Each target is in exactly one branch, and no branch goes to a broker the message
  already passed, so no broker gets a message twice, whatever the links' shape and
  while the tables settle too (a target whose only route leads back is dropped).

Pure: no I/O, no clock. The network adapter feeds it subscription changes, links and
advertisements, and carries out its routes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from netconnector.filters import matches

#: (pattern, broker) -> (hops from the advertising broker to that broker's
#: subscriptions, whether a durable subscription holds the pattern there)
TopicAdvertisement = dict[tuple[str, str], tuple[int, bool]]


@dataclass(frozen=True)
class Route:
    """What to do with one topic message: deliver it here or not, and per neighbour the
    target brokers it carries the message for."""

    local: bool
    peers: Mapping[str, frozenset[str]]


class TopicRoutes:
    """One broker's view of where the network's topic subscriptions are."""

    def __init__(self, me: str) -> None:
        self.me = me
        # pattern -> whether a durable subscription holds it
        self._local: dict[str, bool] = {}
        self._remote: dict[str, TopicAdvertisement] = {}
        # Neighbours with no link up: only their durable entries are kept.
        self._down: set[str] = set()

    # ---- inputs -------------------------------------------------------------------------

    def set_local(self, patterns: Iterable[str], durable: Iterable[str] = ()) -> bool:
        """This broker's subscription patterns now; True if they changed."""
        held = set(durable)
        new = {pattern: pattern in held for pattern in patterns}
        if new == self._local:
            return False
        self._local = new
        return True

    def set_remote(self, peer: str, entries: Mapping[tuple[str, str], tuple[int, bool]]) -> bool:
        """The whole advertisement last heard from neighbour `peer` (its link is up)."""
        for (_, broker), (hops, _) in entries.items():
            if hops < 0:
                raise ValueError(f"hops must be >= 0, got {hops} for broker {broker!r}")
        new = dict(entries)
        if self._remote.get(peer) == new and peer not in self._down:
            return False
        self._remote[peer] = new
        self._down.discard(peer)
        return True

    def link_down(self, peer: str) -> bool:
        """No link to `peer` is up: keep only its durable entries, for persistent
        messages to wait for it."""
        entries = self._remote.get(peer)
        if entries is None or peer in self._down:
            return False
        kept = {key: value for key, value in entries.items() if value[1]}
        if kept:
            self._remote[peer] = kept
            self._down.add(peer)
        else:
            del self._remote[peer]
        return True

    def restore(self, peer: str, entries: Mapping[tuple[str, str], tuple[int, bool]]) -> None:
        """Durable entries kept from before this broker started serving (its store): the
        neighbour counts as down until its link advertises anew."""
        kept = {key: value for key, value in entries.items() if value[1]}
        if kept and peer not in self._remote:
            self._remote[peer] = kept
            self._down.add(peer)

    # ---- queries ------------------------------------------------------------------------

    def durable_entries(self) -> dict[str, TopicAdvertisement]:
        """Per neighbour, the durable entries last heard from it: what must outlive a
        restart or a failover of this broker, for messages to wait for them."""
        out: dict[str, TopicAdvertisement] = {}
        for peer, entries in self._remote.items():
            kept = {key: value for key, value in entries.items() if value[1]}
            if kept:
                out[peer] = kept
        return out

    def _best(self) -> dict[tuple[str, str], tuple[int, bool, str]]:
        """(pattern, broker) -> (hops from here, durable, neighbour), nearest first, then
        by neighbour name, so that the choice does not depend on arrival order."""
        best: dict[tuple[str, str], tuple[int, bool, str]] = {}
        for peer in sorted(self._remote):
            for key, (hops, durable) in self._remote[peer].items():
                if key[1] == self.me:
                    continue
                here = hops + 1
                known = best.get(key)
                if known is None or here < known[0]:
                    best[key] = (here, durable, peer)
        return best

    def advertisement(self, peer: str, ttl: int) -> TopicAdvertisement:
        """What this broker tells neighbour `peer`: entries it can reach within `ttl`
        hops of the neighbour (one hop farther); nothing learned from `peer` goes back."""
        if ttl < 1:
            raise ValueError(f"a TTL must be at least 1, got {ttl}")
        out: TopicAdvertisement = {
            (pattern, self.me): (0, durable) for pattern, durable in self._local.items()
        }
        for key, (hops, durable, via) in self._best().items():
            if via == peer or key[1] == peer or hops + 1 > ttl:
                continue
            out[key] = (hops, durable)
        return out

    def wanted(self, topic: str) -> bool:
        """Whether any broker, this one included, has subscriptions for `topic`."""
        if any(matches(p, topic) for p in self._local):
            return True
        return any(
            matches(pattern, topic) for entries in self._remote.values() for pattern, _ in entries
        )

    def route(
        self,
        topic: str,
        path: Collection[str] = (),
        targets: Collection[str] | None = None,
        persistent: bool = True,
    ) -> Route:
        """Where a message of `topic` goes from here.

        `targets`: the brokers a forwarded message was sent on for (None, or a message
        published here, its path holding this broker alone: every broker with a matching
        subscription; whatever targets a client wrote are not its to choose). `path`: the
        brokers it already passed, which it never reaches again. A neighbour whose link is
        down is routed to only for its durable subscriptions, and only persistent
        messages."""
        if len(path) <= 1:
            targets = None
        local = any(matches(p, topic) for p in self._local)
        # Per target broker, its nearest route among its matching patterns, through
        # neighbours the message has not passed (so it never goes back: at most one hop
        # per broker, whatever the tables say while they converge).
        # A live route wins over one that waits for its link, however much longer.
        nearest: dict[str, tuple[bool, int, str]] = {}
        for peer in sorted(self._remote):
            if peer in path:
                continue
            down = peer in self._down
            if down and not persistent:
                continue
            for (pattern, broker), (hops, _) in self._remote[peer].items():
                if broker == self.me or broker in path or not matches(pattern, topic):
                    continue
                rank = (down, hops + 1, peer)
                known = nearest.get(broker)
                if known is None or rank < known:
                    nearest[broker] = rank
        if targets is not None:
            local = local and self.me in targets
            wanted = set(targets)
        else:
            wanted = set(nearest)
        by_peer: dict[str, set[str]] = {}
        for broker in sorted(wanted - {self.me}):
            hop = nearest.get(broker)
            if hop is not None:
                by_peer.setdefault(hop[2], set()).add(broker)
        return Route(local, {p: frozenset(t) for p, t in by_peer.items()})
