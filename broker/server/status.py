"""What a broker reports about itself, typed: its role, its group, its bridges.

The plugged-in layers (masterslave, netconnector) report these values; the Admin service
sends them as typed fields, and also in words (`ComponentStatus`, the `components` of
Admin.Status) for operators and for readers that still parse the words. The words each
report renders here are exactly those the layers wrote before the fields existed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.Enum):
    """What a broker is now; the value is how StatusResponse.role spells it."""

    STANDALONE = "standalone"
    MASTER = "master"
    SLAVE = "slave"
    ELECTING = "electing"
    STOPPED = "stopped"


class LinkState(enum.Enum):
    """Where one bridge's link is; the value is how its component's state spells it."""

    CONNECTING = "connecting"
    UP = "up"
    BACKOFF = "backoff"


@dataclass(frozen=True)
class ComponentStatus:
    """One plugged-in component in words: kind ("group", "bridge", "discovery"), name,
    state and detail."""

    kind: str
    name: str
    state: str
    detail: str = ""

    def component(self) -> ComponentStatus:
        return self


@dataclass(frozen=True)
class ReplicaLag:
    """How far one follower is behind its master, as the master sees it.

    `entries`: the master's log position minus the follower's acknowledged one (the one
    commits wait for); `seconds`: how long the oldest entry the follower lacks has waited
    for it (0 when it holds everything, infinite when unknown: it never acknowledged in
    this epoch, its stream ended, or it lacks entries older than the master remembers).
    """

    follower: str
    entries: int
    seconds: float


@dataclass(frozen=True)
class GroupStatus:
    """A group member's view of its group.

    A master reports its epoch, position, in-sync set and each follower's lag; a slave
    its master, where that takes clients, its position and last replication error; an
    electing member why it waits. A lock-file member reports its lock file instead.
    Every member counts the elections it saw end (`elections`: each new epoch it
    entered, as master or slave) and how many of them it won (`became_master`).
    """

    name: str
    role: Role
    epoch: int | None = None
    position: int | None = None
    in_sync: tuple[str, ...] = ()
    master: str = ""
    master_address: str = ""
    waiting: str = ""
    replication_error: str = ""
    lock: str = ""
    lags: tuple[ReplicaLag, ...] = ()
    elections: int = 0
    became_master: int = 0

    def component(self) -> ComponentStatus:
        return ComponentStatus("group", self.name, self.role.value, self.detail())

    def detail(self) -> str:
        """For operators: "epoch 3, position 1042, in-sync b,c" (a master), "master b at
        127.0.0.1:61617, position 1042" (a slave), why it waits (electing)."""
        if self.lock:
            return f"lock {self.lock}"
        if self.role is Role.MASTER:
            return f"epoch {self.epoch}, position {self.position}, in-sync {','.join(self.in_sync)}"
        if self.role is Role.SLAVE:
            detail = f"master {self.master} at {self.master_address}, position {self.position}"
            if self.replication_error:
                detail += f", last replication error: {self.replication_error}"
            return detail
        return self.waiting


@dataclass(frozen=True)
class BridgeStatus:
    """One bridge: one this broker opens (a link, `inbound` False) or one a peer opened.

    `peer` is the broker at the other end once it has linked (it stays after the link
    drops); `forwarded` counts over the current session (None without one); `last_error`
    says why the link is not up. `unacknowledged`: messages sent to the peer that it has
    not answered yet (None without a session); `last_error_at`: when the link last failed
    or dropped, in Unix seconds (0 if it never has); it stays after the link is back.
    """

    label: str
    state: LinkState
    peer: str = ""
    address: str = ""
    forwarded: int | None = None
    last_error: str = ""
    inbound: bool = False
    received: int = 0
    unacknowledged: int | None = None
    last_error_at: float = 0.0

    def component(self) -> ComponentStatus:
        return ComponentStatus("bridge", self.label, self.state.value, self.detail())

    def detail(self) -> str:
        """For operators: "b@127.0.0.1:61617, forwarded 12", "127.0.0.1:61617, UNAVAILABLE:
        ..." (where, then the error), "received 7" (inbound)."""
        if self.inbound:
            return f"received {self.received}"
        detail = f"{self.peer}@{self.address}" if self.peer else self.address or "-"
        if self.forwarded is not None:
            detail += f", forwarded {self.forwarded}"
        if self.last_error:
            detail += f", {self.last_error}"
        return detail


# What a plugged-in component reports: typed where the status has fields for it, in
# words otherwise (a multicast connector's discovery).
Report = GroupStatus | BridgeStatus | ComponentStatus
