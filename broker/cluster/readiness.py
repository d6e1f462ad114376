"""Is the cluster up, and if not, what is wrong: every broker answers Admin.Status, each
master/slave group has exactly one master and its other members are slaves, and every
bridge of each standalone broker and of each group's master reports "up".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence

from broker.cluster.errors import Interrupted, UpError
from broker.cluster.plan import BrokerPlan, groups_of
from broker.cluster.probe import AdminProbe, BrokerStatus, bridges_of
from broker.cluster.processes import BrokerProcess, with_tail
from broker.pb import admin_pb2

DEFAULT_READY_TIMEOUT = 30.0


def wait_ready(
    procs: Sequence[BrokerProcess],
    *,
    timeout: float = DEFAULT_READY_TIMEOUT,
    stop_requested: threading.Event | None = None,
    probe: AdminProbe | None = None,
    poll_interval: float = 0.05,
) -> None:
    """Return once every broker is ready; raise UpError naming the first that is not.

    A broker that exits, or is not ready by the deadline, fails the whole start: the
    caller stops the others.
    """
    stop_requested = stop_requested or threading.Event()
    deadline = time.monotonic() + timeout
    next_probe = time.monotonic() + 1.0
    pending = list(procs)
    while True:
        for p in list(pending):
            if p.ready_address() is not None:
                pending.remove(p)
            elif not p.alive():
                raise UpError(
                    with_tail(f"broker {p.name} {p.describe_exit()} before it was ready", p)
                )
        if not pending:
            return
        # Fallback: a broker whose Admin.Status answers under its own name is up even if
        # its listening line was lost.
        if probe is not None and time.monotonic() >= next_probe:
            next_probe = time.monotonic() + 1.0
            for p in list(pending):
                st = probe.status(p.plan.address)
                if st is not None and st.name == p.name:
                    p.address = st.address or p.plan.address
                    pending.remove(p)
            if not pending:
                return
        if time.monotonic() >= deadline:
            p = pending[0]
            raise UpError(with_tail(f"broker {p.name} was not ready within {timeout:g} s", p))
        if stop_requested.wait(poll_interval):
            raise Interrupted()


def wait_cluster(
    procs: Sequence[BrokerProcess],
    probe: AdminProbe,
    *,
    deadline: float,
    timeout: float,
    stop_requested: threading.Event | None = None,
    poll_interval: float = 0.1,
) -> dict[str, BrokerStatus | None]:
    """Return every broker's status once the cluster is ready (see `cluster_problems`):
    every broker answers, each master/slave group has exactly one master and the rest of
    it are slaves, and every bridge of each standalone broker and group master is up.

    Brokers must already be ready (`wait_ready`). By `deadline` (monotonic time; `timeout`
    is only for the message) raise UpError naming each broker, group or bridge not ready,
    with the reason the broker gives. A broker that exits meanwhile fails at once, with
    its log.
    """
    stop_requested = stop_requested or threading.Event()
    plans = [p.plan for p in procs]
    while True:
        for p in procs:
            if not p.alive():
                raise UpError(
                    with_tail(
                        f"broker {p.name} {p.describe_exit()} while the cluster was coming up", p
                    )
                )
        statuses = {
            p.name: probe.status(p.address or p.plan.address, expect_up=True) for p in procs
        }
        problems = cluster_problems(plans, statuses)
        if not problems:
            return statuses
        if time.monotonic() >= deadline:
            raise UpError(
                "\n".join(
                    [
                        f"the cluster was not ready within {timeout:g} s:",
                        *("    " + line for line in problems),
                    ]
                )
            )
        if stop_requested.wait(poll_interval):
            raise Interrupted()


def serving(plan: BrokerPlan, st: BrokerStatus | None) -> bool:
    """Whether the broker answers under its name and serves clients and bridges: a
    standalone broker, or its group's master."""
    if st is None or st.name != plan.name:
        return False
    return plan.election is None or st.master


def cluster_problems(
    plans: Sequence[BrokerPlan], statuses: Mapping[str, BrokerStatus | None]
) -> list[str]:
    """What keeps the cluster from being ready, one line each; empty when it is.

    Pure: from the plans and each broker's Admin.Status (None: not answering).
    """
    lines: list[str] = []
    for group, members in groups_of(plans):
        grouped = members[0].election is not None
        answering: dict[str, BrokerStatus] = {}
        for p in members:
            st = statuses.get(p.name)
            if st is None:
                lines.append(f"{p.name}: not answering Admin.Status at {p.address}")
            elif st.name != p.name:
                lines.append(f"{p.name}: {p.address} answers as broker {st.name!r}")
            else:
                answering[p.name] = st
        if grouped:
            lines += _group_problems(group, answering)
        for p in members:
            st = answering.get(p.name)
            if st is None or not serving(p, st):
                continue
            for b in bridges_of(p.bridges, st):
                if b.state != "up":
                    lines.append(
                        f"{p.name}: bridge {b.label} {b.state}"
                        + (f": {b.error}" if b.error else "")
                    )
    return lines


def _group_problems(group: str, answering: Mapping[str, BrokerStatus]) -> list[str]:
    masters = [name for name, st in answering.items() if st.master]
    if len(masters) > 1:
        return [f"group {group}: {len(masters)} members say they are master: {', '.join(masters)}"]
    if not masters:
        if not answering:
            return []  # each member is already named as not answering
        who = "; ".join(f"{name} {role_and_detail(st)}" for name, st in answering.items())
        return [f"group {group}: no master yet: {who}"]
    return [
        f"{name}: {role_and_detail(st)}, not yet a slave of {masters[0]}"
        for name, st in answering.items()
        if st.role_kind not in (admin_pb2.ROLE_MASTER, admin_pb2.ROLE_SLAVE)
    ]


def role_and_detail(st: BrokerStatus) -> str:
    detail = st.group.detail if st.group is not None else ""
    return st.role + (f" ({detail})" if detail else "")
