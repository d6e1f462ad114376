"""One broker's demand table: where a queue's consumers are, and what to tell neighbours.

Every broker advertises over each of its bridges which queues have consumers and how far
away they are (docs/semantics.md, "Demand"). The table is a small distance-vector routing table
keyed by queue:

* `set_local(queue, n)` records the broker's own consumers: distance 0.
* `set_remote(bridge, queue, n, hops)` records what the neighbour behind `bridge`
  advertised: it is `hops` away from `n` consumers, so this broker is `hops + 1` away
  through that bridge.
* `advertisement(bridge, ttl)` is what this broker tells the neighbour behind `bridge`:
  for each queue, its own distance to the nearest consumers and how many are there.
* `wanted(bridge, queue, network_ttl)` says whether to register a network consumer on
  `queue` for the bridge, and at what distance (for ranking farther ones lower).

Three rules keep the advertisements honest:

* **Split horizon.** Demand learned over a bridge is never advertised back over that same
  bridge: the neighbour already knows it, and echoing it would let the neighbour believe
  in a route through us that leads straight back to itself.
* **TTL bound.** An entry is advertised only if the neighbour, one hop farther, would be
  within `ttl` of the consumers. The caller passes the smaller of this connector's
  `consumerTTL` and what the neighbour may use (its `networkTTL`), so demand travels no
  farther than anyone can act on it.
* **Nearest wins.** A queue's distance is the minimum over local consumers and every
  bridge except the one advertised to. Its count is the sum of the consumers at that
  minimum distance: those are the consumers the neighbour's messages would reach first,
  since network consumers rank below local ones and farther ones below nearer ones. (In
  a mesh the same consumers may be counted once per equally short path, so the count is
  an estimate for weighting and display, never a basis for correctness.)

Split horizon alone cannot stop stale demand circling a loop of three or more brokers
when consumers leave (each broker still hears it from the other side): that is
distance-vector routing's count-to-infinity. The TTL bound is what ends it: each round of
advertisements adds at least one hop to a stale entry, and entries past the TTL are not
advertised, so stale demand is gone everywhere after about `ttl` rounds (in a triangle,
exactly `ttl`), and with the default `networkTTL=1` learned demand is never re-advertised
at all. For the same reason demand can come back to the broker that has the consumers
only around a cycle no longer than the TTL: never with a TTL of 1 or 2 (a cycle has at
least three brokers), and otherwise at least three hops away, behind the broker's own
local consumers, which always rank first. Ruling that out entirely would need each entry
to carry the brokers it passed through (a path vector), which the bridge protocol's
Demand message does not.

Keeping neighbours current is incremental: an `Advertiser` per bridge session remembers
what it last sent and yields an `AdvertisementDelta` (upserts and removals) when the table
changes; `DemandTable.apply` is its receiving end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

BridgeId = str
#: queue -> (consumer count, hops from the advertising broker to those consumers)
Advertisement = dict[str, tuple[int, int]]


def _check_ttl(ttl: int) -> None:
    if ttl < 1:
        raise ValueError(f"a TTL must be at least 1, got {ttl}")


@dataclass(frozen=True)
class AdvertisementDelta:
    """The change from one advertisement to the next: entries to set and queues to drop."""

    upserts: Mapping[str, tuple[int, int]] = field(default_factory=lambda: MappingProxyType({}))
    removals: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        """True when there is anything to send."""
        return bool(self.upserts) or bool(self.removals)

    def apply(self, previous: Mapping[str, tuple[int, int]]) -> Advertisement:
        """The advertisement that results from applying this delta to `previous`."""
        out = {q: v for q, v in previous.items() if q not in self.removals}
        out.update(self.upserts)
        return out


def diff_advertisements(
    previous: Mapping[str, tuple[int, int]], current: Mapping[str, tuple[int, int]]
) -> AdvertisementDelta:
    """The delta that turns advertisement `previous` into `current`."""
    upserts = {q: v for q, v in current.items() if previous.get(q) != v}
    removals = frozenset(q for q in previous if q not in current)
    return AdvertisementDelta(MappingProxyType(upserts), removals)


class DemandTable:
    """Demand known to one broker: its local consumers and what each bridge advertised.

    Pure and synchronous; the adapter feeds it consumer and advertisement events and asks
    it what to advertise and where to register network consumers. `version` increases on
    every change that could alter an advertisement or a `wanted()` answer, so callers can
    skip recomputing when nothing happened.
    """

    def __init__(self) -> None:
        self._local: dict[str, int] = {}
        # queue -> bridge -> (consumers, advertised hops). Keyed by queue first because
        # every query (advertisement, wanted, nearest) is per queue.
        self._remote: dict[str, dict[BridgeId, tuple[int, int]]] = {}
        # bridge -> queues it advertised, so drop_bridge need not scan every queue.
        self._by_bridge: dict[BridgeId, set[str]] = {}
        self.version = 0

    # ---- inputs -------------------------------------------------------------------------

    def set_local(self, queue: str, consumers: int) -> bool:
        """Record `consumers` local consumers on `queue` (0 removes); True if it changed."""
        if consumers < 0:
            raise ValueError(f"consumer count must be >= 0, got {consumers} for {queue!r}")
        if consumers == 0:
            changed = self._local.pop(queue, None) is not None
        else:
            changed = self._local.get(queue) != consumers
            self._local[queue] = consumers
        if changed:
            self.version += 1
        return changed

    def set_remote(self, bridge_id: BridgeId, queue: str, consumers: int, hops: int) -> bool:
        """Record the neighbour's advertisement for `queue` over `bridge_id`.

        `hops` is the neighbour's own distance to the consumers (0: on the neighbour).
        `consumers == 0` withdraws the entry. Returns True if the table changed.
        """
        if consumers < 0:
            raise ValueError(f"consumer count must be >= 0, got {consumers} for {queue!r}")
        if hops < 0:
            raise ValueError(f"hops must be >= 0, got {hops} for {queue!r}")
        if consumers == 0:
            return self._forget(bridge_id, queue)
        entry = (consumers, hops)
        per_bridge = self._remote.setdefault(queue, {})
        if per_bridge.get(bridge_id) == entry:
            return False
        per_bridge[bridge_id] = entry
        self._by_bridge.setdefault(bridge_id, set()).add(queue)
        self.version += 1
        return True

    def apply(self, bridge_id: BridgeId, delta: AdvertisementDelta) -> bool:
        """Apply a delta received over `bridge_id`; True if the table changed."""
        changed = False
        for queue in delta.removals:
            changed |= self._forget(bridge_id, queue)
        for queue, (consumers, hops) in delta.upserts.items():
            changed |= self.set_remote(bridge_id, queue, consumers, hops)
        return changed

    def replace_remote(
        self, bridge_id: BridgeId, advertisement: Mapping[str, tuple[int, int]]
    ) -> bool:
        """Replace everything `bridge_id` advertised with a full `advertisement`.

        For a fresh bridge session, whose first message is the neighbour's whole
        advertisement: whatever the old session advertised and this one does not is gone.
        """
        old = self._by_bridge.get(bridge_id, set())
        changed = False
        for queue in old - advertisement.keys():
            changed |= self._forget(bridge_id, queue)
        for queue, (consumers, hops) in advertisement.items():
            changed |= self.set_remote(bridge_id, queue, consumers, hops)
        return changed

    def drop_bridge(self, bridge_id: BridgeId) -> frozenset[str]:
        """Forget everything `bridge_id` advertised (it went down); return those queues."""
        queues = self._by_bridge.pop(bridge_id, set())
        for queue in queues:
            per_bridge = self._remote[queue]
            del per_bridge[bridge_id]
            if not per_bridge:
                del self._remote[queue]
        if queues:
            self.version += 1
        return frozenset(queues)

    def _forget(self, bridge_id: BridgeId, queue: str) -> bool:
        per_bridge = self._remote.get(queue)
        if per_bridge is None or per_bridge.pop(bridge_id, None) is None:
            return False
        if not per_bridge:
            del self._remote[queue]
        queues = self._by_bridge[bridge_id]
        queues.discard(queue)
        if not queues:
            del self._by_bridge[bridge_id]
        self.version += 1
        return True

    # ---- queries ------------------------------------------------------------------------

    def has_local(self, queue: str) -> bool:
        """Whether this broker has local consumers on `queue`."""
        return queue in self._local

    def local_consumers(self, queue: str) -> int:
        """How many local consumers `queue` has."""
        return self._local.get(queue, 0)

    def remote(self, bridge_id: BridgeId, queue: str) -> tuple[int, int] | None:
        """What `bridge_id` advertised for `queue`: (consumers, hops), or None."""
        return self._remote.get(queue, {}).get(bridge_id)

    def bridges(self) -> frozenset[BridgeId]:
        """The bridges that currently advertise some demand."""
        return frozenset(self._by_bridge)

    def queues(self) -> frozenset[str]:
        """Every queue with local or advertised demand."""
        return frozenset(self._local.keys() | self._remote.keys())

    def nearest(self, queue: str, exclude: BridgeId | None = None) -> tuple[int, int] | None:
        """(consumers, distance) of the nearest consumers of `queue`, or None.

        Distance is 0 for local consumers and advertised hops + 1 through a bridge; demand
        learned over `exclude` is ignored (split horizon). The count sums the consumers
        at the minimum distance.
        """
        local = self._local.get(queue)
        if local:
            # Local consumers are the nearest; adding farther ones would overstate what a
            # neighbour's forwarded messages reach first.
            return (local, 0)
        best: int | None = None
        total = 0
        for bridge_id, (consumers, hops) in self._remote.get(queue, {}).items():
            if bridge_id == exclude:
                continue
            distance = hops + 1
            if best is None or distance < best:
                best, total = distance, consumers
            elif distance == best:
                total += consumers
        return None if best is None else (total, best)

    def advertisement(self, bridge_id: BridgeId, ttl: int) -> Advertisement:
        """What to advertise to the neighbour over `bridge_id`: queue -> (consumers, hops).

        `hops` is this broker's distance to the nearest consumers. Demand learned only from
        `bridge_id` is left out (split horizon), as is any entry the neighbour would be
        more than `ttl` hops from (hops + 1 > ttl).
        """
        _check_ttl(ttl)
        out: Advertisement = {}
        for queue in self._local.keys() | self._remote.keys():
            best = self.nearest(queue, exclude=bridge_id)
            if best is not None and best[1] + 1 <= ttl:
                out[queue] = best
        return out

    def delta(
        self, bridge_id: BridgeId, ttl: int, previous: Mapping[str, tuple[int, int]]
    ) -> AdvertisementDelta:
        """What to send over `bridge_id` after having sent `previous` (see Advertiser)."""
        return diff_advertisements(previous, self.advertisement(bridge_id, ttl))

    def wanted(self, bridge_id: BridgeId, queue: str, network_ttl: int) -> int | None:
        """Distance to `queue`'s consumers through `bridge_id`, if a network consumer is due.

        The neighbour behind `bridge_id` advertised consumers `hops` away from itself, so
        they are `hops + 1` from this broker. Returns that distance when it is within
        `network_ttl`, else None (no advertisement, or too far). Destination filters are
        the caller's to apply (`DestinationFilter.forwards_dynamically`).
        """
        _check_ttl(network_ttl)
        entry = self.remote(bridge_id, queue)
        if entry is None:
            return None
        distance = entry[1] + 1
        return distance if distance <= network_ttl else None

    def wanted_queues(self, bridge_id: BridgeId, network_ttl: int) -> dict[str, int]:
        """Every queue `wanted()` answers for over `bridge_id`: queue -> distance."""
        _check_ttl(network_ttl)
        out: dict[str, int] = {}
        for queue in self._by_bridge.get(bridge_id, ()):
            distance = self._remote[queue][bridge_id][1] + 1
            if distance <= network_ttl:
                out[queue] = distance
        return out


class Advertiser:
    """What one bridge session has told its neighbour, and what to tell it next.

    Make one per bridge session: the first `next_delta` is the full advertisement, later
    ones only what changed. After a reconnect, start a new Advertiser (the neighbour has
    dropped everything the old session told it, as `drop_bridge` does on our side).

    `ttl` is how far the neighbour may use demand: its networkTTL (sent in its hello),
    capped by this connector's consumerTTL. On the wire (bridge.proto `Demand`) each upsert
    is `Demand(queue, consumers, hops)` and each removal `Demand(queue, consumers=0)`.
    """

    __slots__ = ("_seen_version", "bridge_id", "sent", "ttl")

    def __init__(self, bridge_id: BridgeId, ttl: int) -> None:
        _check_ttl(ttl)
        self.bridge_id = bridge_id
        self.ttl = ttl
        #: The advertisement the neighbour holds, as far as this session has told it.
        self.sent: Advertisement = {}
        self._seen_version: int | None = None

    def next_delta(self, table: DemandTable) -> AdvertisementDelta:
        """The delta to send now (possibly empty); it is recorded as sent."""
        if self._seen_version == table.version:
            # Nothing in the table changed, so the advertisement cannot have either.
            return AdvertisementDelta()
        delta = table.delta(self.bridge_id, self.ttl, self.sent)
        self.sent = delta.apply(self.sent)
        self._seen_version = table.version
        return delta
