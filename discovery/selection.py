"""Which discovered brokers a multicast connector bridges to: a plain class, no I/O.

A record is *eligible* when it is in the connector's discovery group, is not this broker,
is not a member of this broker's own group, carries the same discovery token (or both
none) and speaks this broker's bridge protocol.

Eligible records become *targets*, one per peer: the peer's group when it has one (a
master/slave group is one logical broker: only its master advertises), else the broker's
name. When a group has several records, the one seen last wins: a crashed master's record
lingers in caches for a long time, and its successor's arrives after it (a process that
starts later never sees the stale one at all: mDNS responders answer only for records
they own). Two records at the same address are one broker, renamed or restarted: again
the later one wins. Liveness is not judged here: the bridge to a target finds out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from discovery.records import SERVING_ROLES, Advert


@dataclass(frozen=True)
class Sighting:
    """A resolved record: the service instance, what it says, where it listens."""

    instance: str
    advert: Advert
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class Target:
    """A peer to keep one bridge to."""

    key: str
    broker: str
    group: str
    addresses: tuple[str, ...]
    instance: str


@dataclass(frozen=True)
class Me:
    """The choosing broker, as the selector needs to know it."""

    broker: str
    group: str
    discovery_group: str
    token_digest: str
    protocol: int


@dataclass
class _Seen:
    sighting: Sighting
    seq: int


@dataclass
class PeerSelector:
    me: Me
    _records: dict[str, _Seen] = field(default_factory=dict)
    _seq: int = 0
    # Records of this discovery group not bridged to, with why (shown in the status).
    refused: dict[str, str] = field(default_factory=dict)

    def refusal(self, advert: Advert, addresses: tuple[str, ...] = ("-",)) -> str | None:
        """Why a record is not eligible, or None if it is."""
        me = self.me
        if advert.discovery_group != me.discovery_group:
            return f"discovery group {advert.discovery_group!r}"
        if advert.broker == me.broker:
            return "this broker"
        if me.group and advert.group == me.group:
            return f"a member of this broker's group {me.group!r}"
        if advert.token_digest != me.token_digest:
            return "another cluster (its discovery token differs)"
        if advert.protocol != me.protocol:
            return f"bridge protocol {advert.protocol}; this broker speaks {me.protocol}"
        if advert.role not in SERVING_ROLES:
            return f"role {advert.role!r} serves no bridges"
        if not addresses:
            return "no address in its record"
        return None

    def seen(self, sighting: Sighting) -> None:
        """A record appeared or changed. Every call counts as the latest sighting."""
        self._seq += 1
        instance = sighting.instance
        reason = self.refusal(sighting.advert, sighting.addresses)
        self.refused.pop(instance, None)
        if reason is None:
            self._records[instance] = _Seen(sighting, self._seq)
            return
        self._records.pop(instance, None)
        # Records of other discovery groups are none of this connector's business; its
        # own record is not worth mentioning either.
        if sighting.advert.discovery_group == self.me.discovery_group and (
            sighting.advert.broker != self.me.broker
        ):
            self.refused[instance] = f"{sighting.advert.broker}: {reason}"

    def gone(self, instance: str) -> None:
        """A record was withdrawn (goodbye) or expired."""
        self._records.pop(instance, None)
        self.refused.pop(instance, None)

    def targets(self) -> dict[str, Target]:
        """The peers to bridge to now, by key (the peer's group, else its name)."""
        best: dict[str, _Seen] = {}
        for seen in self._records.values():
            key = _key(seen.sighting.advert)
            held = best.get(key)
            if held is None or seen.seq > held.seq:
                best[key] = seen
        # One broker behind two records (renamed, or its group's key changed): the
        # record seen last is the one that is current.
        by_address: dict[str, tuple[str, int]] = {}
        for key, seen in sorted(best.items(), key=lambda kv: kv[1].seq):
            for address in seen.sighting.addresses:
                previous = by_address.get(address)
                if previous is not None and previous[0] in best and previous[0] != key:
                    del best[previous[0]]
                by_address[address] = (key, seen.seq)
        return {
            key: Target(
                key=key,
                broker=seen.sighting.advert.broker,
                group=seen.sighting.advert.group,
                addresses=seen.sighting.addresses,
                instance=seen.sighting.instance,
            )
            for key, seen in sorted(best.items())
        }


def _key(advert: Advert) -> str:
    return advert.group or advert.broker
