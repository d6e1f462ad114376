"""The cluster as the console shows it, from successive broker snapshots (pure: each
poll's result and the time come in; the view, and the change events to push, go out).

`ClusterView.observe` takes one broker's snapshot (None: it did not answer, so it is
"down") and returns what changed: the broker's view (role, bridges as arrows with their
forwarding rates, queues and topics with their rates), its group's view (master, epoch,
in-sync set, each member's position), and entries of the bounded log of role changes and
bridge errors. The web page applies the same events to the state `state()` gave it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from broker.console.layout import BrokerPlace, Layout
from broker.console.rates import Rate
from broker.console.snapshot import BrokerSnapshot, GroupSnap

DOWN = "down"
# Before the first poll has come back.
UNKNOWN = "unknown"
# Log entries kept (role changes and bridge errors together), newest last.
HISTORY = 100

Json = dict[str, Any]


@dataclass(frozen=True)
class Event:
    """A change to push: `kind` is "broker", "group" or "log"."""

    kind: str
    data: Json


def _rounded(rate: float | None) -> float | None:
    # A tenth of a message per second: finer would push an event for every poll.
    return None if rate is None else round(max(rate, 0.0), 1)


@dataclass
class _Broker:
    place: BrokerPlace
    role: str = UNKNOWN
    detail: str = ""
    snap: BrokerSnapshot | None = None
    since: float | None = None
    bridge_rates: dict[str, Rate] = field(default_factory=dict)
    # queue name -> (enqueued rate, dequeued rate)
    queue_rates: dict[str, tuple[Rate, Rate]] = field(default_factory=dict)
    topic_rates: dict[str, Rate] = field(default_factory=dict)
    # bridge label -> the last error logged for it ("" once it came up again)
    errors: dict[str, str] = field(default_factory=dict)
    shown: Json | None = None


class ClusterView:
    def __init__(self, layout: Layout, history: int = HISTORY) -> None:
        self.layout = layout
        self._brokers = {b.name: _Broker(b) for b in layout.brokers}
        self._groups: dict[str, Json] = {}
        self.log: deque[Json] = deque(maxlen=history)

    # ------------------------------------------------------------------ in

    def observe(self, name: str, snap: BrokerSnapshot | None, now: float) -> list[Event]:
        """One poll of broker `name` at time `now` (seconds); the events it causes."""
        b = self._brokers.get(name)
        if b is None:
            return []
        events: list[Event] = []
        role, detail = self._role_of(name, snap)
        if snap is not None and snap.name != name:
            snap = None
        if role != b.role:
            if b.role != UNKNOWN:
                events.append(self._note(self._role_entry(b, role, snap, now)))
            b.role, b.since = role, now
        b.detail, b.snap = detail, snap
        if snap is not None:
            events.extend(self._note(e) for e in self._bridge_errors(b, snap, now))
        shown = self._broker_json(b, snap, now)
        if shown != b.shown:
            b.shown = shown
            events.append(Event("broker", shown))
        group = self._group_json(b.place.group)
        if group != self._groups.get(b.place.group):
            self._groups[b.place.group] = group
            events.append(Event("group", group))
        return events

    # ------------------------------------------------------------------ out

    def state(self) -> Json:
        """Everything the page draws, as one JSON-able object."""
        return {
            "layout": self.layout.as_json(),
            "brokers": {
                n: b.shown if b.shown is not None else self._broker_json(b, None, None)
                for n, b in self._brokers.items()
            },
            "groups": {
                g.name: self._groups.get(g.name) or self._group_json(g.name)
                for g in self.layout.groups
            },
            "log": list(self.log),
        }

    def role(self, name: str) -> str:
        return self._brokers[name].role

    def unreachable(self, name: str) -> tuple[int, str] | None:
        """Why a call the page asks of broker `name` (browse, purge) is not worth making,
        as an HTTP status and words; None when it answers."""
        b = self._brokers.get(name)
        if b is None:
            return 404, f"no broker {name!r} in this cluster"
        if b.role in (DOWN, UNKNOWN):
            return 503, f"broker {name} is down ({b.detail or 'not answering yet'})"
        return None

    # ------------------------------------------------------------------ rules

    @staticmethod
    def _role_of(name: str, snap: BrokerSnapshot | None) -> tuple[str, str]:
        if snap is None:
            return DOWN, "not answering"
        if snap.name != name:
            return DOWN, f"its port answers as broker {snap.name!r}"
        return snap.role, snap.refusal

    def _note(self, entry: Json) -> Event:
        self.log.append(entry)
        return Event("log", entry)

    @staticmethod
    def _role_entry(b: _Broker, role: str, snap: BrokerSnapshot | None, now: float) -> Json:
        words = []
        g = snap.group if snap is not None else None
        if g is not None:
            if g.epoch is not None:
                words.append(f"epoch {g.epoch}")
            if g.position is not None:
                words.append(f"position {g.position}")
            if g.in_sync:
                words.append(f"in-sync {','.join(g.in_sync)}")
            if role == "slave" and g.master:
                words.append(f"master {g.master}")
        return {
            "time": now,
            "kind": "role",
            "broker": b.place.name,
            "group": b.place.group,
            "from": b.role,
            "to": role,
            "detail": ", ".join(words),
        }

    @staticmethod
    def _bridge_errors(b: _Broker, snap: BrokerSnapshot, now: float) -> Iterable[Json]:
        for br in snap.bridges:
            if br.state == "up":
                b.errors[br.label] = ""
                continue
            if br.last_error and br.last_error != b.errors.get(br.label, ""):
                b.errors[br.label] = br.last_error
                yield {
                    "time": now,
                    "kind": "bridge",
                    "broker": b.place.name,
                    "group": b.place.group,
                    "bridge": br.label,
                    "state": br.state,
                    "error": br.last_error,
                }

    def _target(self, peer: str, address: str) -> str | None:
        """The broker of the file at a bridge's other end: its peer once linked, else
        the one at the address it tries."""
        if peer and peer in self._brokers:
            return peer
        return self.layout.at_address(address) if address else None

    def _broker_json(self, b: _Broker, snap: BrokerSnapshot | None, now: float | None) -> Json:
        out: Json = {
            "name": b.place.name,
            "group": b.place.group,
            "address": b.place.address,
            "role": b.role,
            "detail": b.detail,
            "since": b.since,
            "group_status": None,
            "bridges": [],
            "queues": None,
            "topics": None,
            "queues_error": "",
        }
        if snap is None:
            return out
        out["queues_error"] = snap.queues_error
        if snap.group is not None:
            out["group_status"] = _group_snap_json(snap.group)
        live = set()
        for br in snap.bridges:
            key = ("in " if br.inbound else "out ") + br.label
            live.add(key)
            rate = b.bridge_rates.setdefault(key, Rate())
            count = br.received if br.inbound else br.forwarded
            r = rate.add(now, count) if now is not None else rate.rate
            target = self._target(br.peer, br.address)
            out["bridges"].append(
                {
                    "label": br.label,
                    "state": br.state,
                    "peer": br.peer,
                    "target": target,
                    "target_group": self._brokers[target].place.group if target else None,
                    "inbound": br.inbound,
                    "forwarded": br.forwarded,
                    "received": br.received,
                    "rate": _rounded(r),
                    "error": "" if br.state == "up" else br.last_error,
                }
            )
        for gone in set(b.bridge_rates) - live:
            del b.bridge_rates[gone]
        if snap.queues is not None:
            out["queues"] = []
            for q in snap.queues:
                rin, rout = b.queue_rates.setdefault(q.name, (Rate(), Rate()))
                if now is not None:
                    rin.add(now, q.enqueued)
                    rout.add(now, q.dequeued)
                out["queues"].append(
                    {
                        "name": q.name,
                        "depth": q.depth,
                        "pending": q.pending,
                        "in_flight": q.in_flight,
                        "consumers": q.consumers,
                        "enqueued": q.enqueued,
                        "dequeued": q.dequeued,
                        "in_rate": _rounded(rin.rate),
                        "out_rate": _rounded(rout.rate),
                    }
                )
            for gone in set(b.queue_rates) - {q.name for q in snap.queues}:
                del b.queue_rates[gone]
        if snap.topics is not None:
            out["topics"] = []
            for t in snap.topics:
                rate = b.topic_rates.setdefault(t.name, Rate())
                if now is not None:
                    rate.add(now, t.enqueued)
                out["topics"].append(
                    {
                        "name": t.name,
                        "subscriptions": t.subscriptions,
                        "active": t.active,
                        "depth": t.depth,
                        "in_flight": t.in_flight,
                        "in_rate": _rounded(rate.rate),
                    }
                )
            for gone in set(b.topic_rates) - {t.name for t in snap.topics}:
                del b.topic_rates[gone]
        return out

    def _group_json(self, group: str) -> Json:
        """A group from its members' reports: the master (the one member that says so),
        its epoch and in-sync set, and each member's role and position."""
        members = [b for b in self._brokers.values() if b.place.group == group]
        masters = [b for b in members if b.role in ("master", "standalone")]
        master = masters[0] if len(masters) == 1 else None
        g = master.snap.group if master is not None and master.snap is not None else None
        return {
            "name": group,
            "master": master.place.name if master is not None else None,
            "masters": [b.place.name for b in masters],
            "epoch": g.epoch if g is not None else None,
            "in_sync": list(g.in_sync) if g is not None else [],
            "members": [
                {
                    "name": b.place.name,
                    "role": b.role,
                    "position": (
                        b.snap.group.position
                        if b.snap is not None and b.snap.group is not None
                        else None
                    ),
                }
                for b in members
            ],
        }


def _group_snap_json(g: GroupSnap) -> Json:
    return {
        "name": g.name,
        "epoch": g.epoch,
        "position": g.position,
        "in_sync": list(g.in_sync),
        "master": g.master,
        "waiting": g.waiting,
        "replication_error": g.replication_error,
    }
