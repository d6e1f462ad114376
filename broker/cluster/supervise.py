"""A foreground `up` watching its brokers until told to stop: each exit at once (with the
end of its log), each group member's role change at once (a failover shows as it
happens), and every broker's status line each interval."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TextIO

from broker.cluster.probe import AdminProbe, BrokerStatus
from broker.cluster.processes import BrokerProcess, with_tail
from broker.cluster.report import ARROW, print_line, role_change_line, status_line

# How often a running `up` looks at group members' roles, to report a failover at once.
ROLE_POLL = 0.5


def supervise(
    procs: list[BrokerProcess],
    stop_requested: threading.Event,
    probe: AdminProbe,
    interval: float,
    out: TextIO,
    err: TextIO,
    statuses: Mapping[str, BrokerStatus | None] | None = None,
    restarted: Callable[[str], BrokerProcess | None] | None = None,
) -> int:
    """Report every `interval` s, any broker that exits, and at once any role change in a
    master/slave group (a failover shows as it happens), until a stop is requested.

    `restarted(name)`: the process `netbroker restart` started for an exited broker, if
    any; it takes the exited one's place in `procs` (so the end of the run stops it)."""
    watch = _Watch(procs, probe, out, err, statuses, restarted)
    next_report = time.monotonic() + interval
    next_roles = time.monotonic() + ROLE_POLL
    try:
        while not stop_requested.wait(0.2):
            watch.note_exits()
            if len(watch.exited) == len(procs):
                print_line(err, "netbroker: every broker has exited")
                return 1
            if watch.members and time.monotonic() >= next_roles:
                next_roles = time.monotonic() + ROLE_POLL
                watch.note_role_changes()
            if interval > 0 and time.monotonic() >= next_report:
                next_report = time.monotonic() + interval
                watch.report()
    finally:
        watch.close()
    # A stop was asked for; a broker that died on its own still makes the run a failure.
    return 1 if watch.exited else 0


class _Watch:
    """What a running `up` has seen of its brokers: which exited, each member's role."""

    def __init__(
        self,
        procs: list[BrokerProcess],
        probe: AdminProbe,
        out: TextIO,
        err: TextIO,
        statuses: Mapping[str, BrokerStatus | None] | None,
        restarted: Callable[[str], BrokerProcess | None] | None = None,
    ) -> None:
        self.procs = procs
        self.restarted = restarted
        self.probe = probe
        self.out = out
        self.err = err
        self.exited: set[str] = set()
        self.members = [p for p in procs if p.plan.election]
        self.roles = {
            p.name: (st.role if (st := (statuses or {}).get(p.name)) is not None
                     else "not answering")
            for p in self.members
        }  # fmt: skip
        self.quick = AdminProbe(timeout=1.0, ca=probe.ca, metadata=probe.metadata)

    def note_exits(self) -> None:
        """A line, with the end of its log, for each broker that has exited since; and
        one for each exited broker that `netbroker restart` brought back."""
        for i, p in enumerate(self.procs):
            if p.name not in self.exited and not p.alive():
                self.exited.add(p.name)
                print_line(
                    self.err, "netbroker: " + with_tail(f"broker {p.name} {p.describe_exit()}", p)
                )
            elif p.name in self.exited and self.restarted is not None:
                back = self.restarted(p.name)
                if back is not None and back.pid != p.pid and back.alive():
                    self.procs[i] = back
                    self.members = [back if m is p else m for m in self.members]
                    self.exited.discard(p.name)
                    print_line(self.err, f"netbroker: broker {p.name} restarted (pid {back.pid})")

    def note_role_changes(self) -> None:
        """A line for each group member whose role is not the one last seen."""
        exited, roles = self.exited, self.roles
        for p in self.members:
            st = None if p.name in exited else self.quick.status(p.plan.address, queues=False)
            if st is not None and st.name != p.name:
                st = None
            if st is None and p.name not in exited and not p.alive():
                # It died since the last look at exits: an exit, not a silence.
                self.note_exits()
            role = "exited" if p.name in exited else (
                st.role if st is not None else "not answering"
            )  # fmt: skip
            if role != roles[p.name]:
                stamp = datetime.now().strftime("%H:%M:%S")
                line = role_change_line(p.name, p.plan.group, roles[p.name], st)
                if role == "exited":
                    line = f"{p.name} ({p.plan.group}): {roles[p.name]} {ARROW} exited"
                print_line(self.out, f"[{stamp}] {line}")
                roles[p.name] = role

    def report(self) -> None:
        """The periodic status line of every broker."""
        stamp = datetime.now().strftime("%H:%M:%S")
        for p in self.procs:
            if p.name in self.exited:
                line = f"{p.name} ({p.plan.group}): {p.describe_exit()}"
            else:
                line = status_line(
                    p.name, p.plan.group, self.probe.status(p.plan.address), p.plan.bridges
                )
            print_line(self.out, f"[{stamp}] {line}")

    def close(self) -> None:
        self.quick.close()
