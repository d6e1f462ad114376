"""What the topology file says the console draws: groups, their brokers and where each
takes clients (pure: the topology model in, plain data out)."""

from __future__ import annotations

from dataclasses import dataclass

from broker.cluster.model import Topology


@dataclass(frozen=True)
class BrokerPlace:
    name: str
    group: str
    address: str
    # Whether it is a member of a master/slave group (else standalone).
    member: bool


@dataclass(frozen=True)
class GroupPlace:
    name: str
    brokers: tuple[str, ...]
    election: str | None


@dataclass(frozen=True)
class Layout:
    source: str
    groups: tuple[GroupPlace, ...]
    brokers: tuple[BrokerPlace, ...]

    @classmethod
    def of(cls, topology: Topology) -> Layout:
        return cls(
            source=topology.source,
            groups=tuple(
                GroupPlace(g.name, tuple(b.name for b in g.brokers), g.election)
                for g in topology.groups
            ),
            brokers=tuple(
                BrokerPlace(b.name, g.name, b.client_address, g.is_group)
                for g in topology.groups
                for b in g.brokers
            ),
        )

    def broker(self, name: str) -> BrokerPlace | None:
        return next((b for b in self.brokers if b.name == name), None)

    def at_address(self, address: str) -> str | None:
        """The broker of the file that takes clients at `address`, if one does."""
        return next((b.name for b in self.brokers if b.address == address), None)

    def as_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "groups": [
                {"name": g.name, "brokers": list(g.brokers), "election": g.election}
                for g in self.groups
            ],
            "brokers": [
                {"name": b.name, "group": b.group, "address": b.address, "member": b.member}
                for b in self.brokers
            ],
        }
