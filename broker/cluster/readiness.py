"""Is the cluster up, and if not, what is wrong: every broker answers Admin.Status, each
master/slave group has exactly one master and its other members are slaves, and every
bridge of each standalone broker and of each group's master reports "up".
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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
        problems = [problem_line(p) for p in cluster_problems(plans, statuses)]
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


class ProblemKind(enum.Enum):
    NOT_ANSWERING = "not answering"
    WRONG_BROKER = "wrong broker"
    BRIDGE_DOWN = "bridge down"
    MANY_MASTERS = "many masters"
    NO_MASTER = "no master"
    NOT_A_SLAVE = "not a slave"


@dataclass(frozen=True)
class Problem:
    """One thing that keeps the cluster from being ready. `broker` names the broker it is
    about, or is "" for a group's problem; the words are rendered by `problem_line`."""

    kind: ProblemKind
    broker: str = ""
    group: str = ""
    # NOT_ANSWERING: the address asked; WRONG_BROKER: the name that answered;
    # BRIDGE_DOWN: the bridge's label; NOT_A_SLAVE: the master it should follow.
    subject: str = ""
    # BRIDGE_DOWN: its state and error; NO_MASTER: who is what; MANY_MASTERS: their
    # names; NOT_A_SLAVE: the member's role and detail.
    state: str = ""
    detail: str = ""


def cluster_problems(
    plans: Sequence[BrokerPlan], statuses: Mapping[str, BrokerStatus | None]
) -> list[Problem]:
    """What keeps the cluster from being ready; empty when it is.

    Pure: from the plans and each broker's Admin.Status (None: not answering).
    """
    problems: list[Problem] = []
    for group, members in groups_of(plans):
        grouped = members[0].election is not None
        answering: dict[str, BrokerStatus] = {}
        for p in members:
            st = statuses.get(p.name)
            if st is None:
                problems.append(Problem(ProblemKind.NOT_ANSWERING, p.name, subject=p.address))
            elif st.name != p.name:
                problems.append(
                    Problem(ProblemKind.WRONG_BROKER, p.name, subject=st.name, detail=p.address)
                )
            else:
                answering[p.name] = st
        if grouped:
            problems += _group_problems(group, answering)
        for p in members:
            st = answering.get(p.name)
            if st is None or not serving(p, st):
                continue
            for b in bridges_of(p.bridges, st):
                if b.state != "up":
                    problems.append(
                        Problem(
                            ProblemKind.BRIDGE_DOWN, p.name, subject=b.label, state=b.state,
                            detail=b.error,
                        )
                    )  # fmt: skip
    return problems


def _group_problems(group: str, answering: Mapping[str, BrokerStatus]) -> list[Problem]:
    masters = [name for name, st in answering.items() if st.master]
    if len(masters) > 1:
        return [Problem(ProblemKind.MANY_MASTERS, group=group, detail=", ".join(masters))]
    if not masters:
        if not answering:
            return []  # each member is already named as not answering
        who = "; ".join(f"{name} {role_and_detail(st)}" for name, st in answering.items())
        return [Problem(ProblemKind.NO_MASTER, group=group, detail=who)]
    return [
        Problem(
            ProblemKind.NOT_A_SLAVE, name, group, subject=masters[0], detail=role_and_detail(st)
        )
        for name, st in answering.items()
        if st.role_kind not in (admin_pb2.ROLE_MASTER, admin_pb2.ROLE_SLAVE)
    ]


def problem_line(problem: Problem) -> str:
    """A problem in the words `up` and `status` print."""
    p = problem
    match p.kind:
        case ProblemKind.NOT_ANSWERING:
            return f"{p.broker}: not answering Admin.Status at {p.subject}"
        case ProblemKind.WRONG_BROKER:
            return f"{p.broker}: {p.detail} answers as broker {p.subject!r}"
        case ProblemKind.BRIDGE_DOWN:
            return f"{p.broker}: bridge {p.subject} {p.state}" + (
                f": {p.detail}" if p.detail else ""
            )
        case ProblemKind.MANY_MASTERS:
            count = len(p.detail.split(", "))
            return f"group {p.group}: {count} members say they are master: {p.detail}"
        case ProblemKind.NO_MASTER:
            return f"group {p.group}: no master yet: {p.detail}"
        case ProblemKind.NOT_A_SLAVE:
            return f"{p.broker}: {p.detail}, not yet a slave of {p.subject}"


def role_and_detail(st: BrokerStatus) -> str:
    return st.role + (f" ({st.detail})" if st.detail else "")
