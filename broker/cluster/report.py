"""How a cluster is shown: the broker table, each group's master, the embedded
ZooKeeper, a running `up`'s status lines and role changes, and status's problem lines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from broker.cluster.embedded import recorded_zookeeper
from broker.cluster.model import Topology
from broker.cluster.plan import BrokerPlan, groups_of
from broker.cluster.probe import Bridge, BrokerStatus, bridges_of
from broker.cluster.readiness import Problem, role_and_detail, serving
from broker.cluster.zookeeper import four_letter
from broker.pb import admin_pb2

# A bridge error in the table is cut here; the timeout message and `stat` show it whole.
DETAIL_WIDTH = 60
ARROW = "\u2192"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned.

    An empty string is a blank cell (a continuation row, e.g. a broker's second bridge):
    it does not stop a column of numbers from being right-aligned.
    """
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]

    def number(cell: object) -> bool:
        return isinstance(cell, int) and not isinstance(cell, bool)

    numeric = [
        any(number(r[i]) for r in rows) and all(number(r[i]) or r[i] == "" for r in rows)
        for i in range(len(headers))
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(row, widths, numeric, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def bridge_cell(b: Bridge) -> str:
    """A bridge for the table: `static:127.0.0.1:61617 → b up`, or its state and error."""
    if b.state == "up":
        return f"{b.label} {ARROW} {b.peer or '?'} up"
    error = b.error
    if len(error) > DETAIL_WIDTH:
        error = error[: DETAIL_WIDTH - 3] + "..."
    return f"{b.label} {b.state}" + (f" ({error})" if error else "")


def bridge_brief(b: Bridge) -> str:
    """A bridge for a status line: `→b up`, `→127.0.0.1:61618 backoff`."""
    target = b.peer or b.label.partition(":")[2] or b.label
    return f"{ARROW}{target} {b.state}"


def status_line(name: str, group: str, st: BrokerStatus | None, bridges: Sequence[str] = ()) -> str:
    """One short line about a broker for the running `up`'s periodic report.

    A group member adds what its group component says (a master its epoch, position and
    in-sync set; a slave its master and position; an electing member why it waits).
    `bridges` are the broker's expected bridge names; their states are listed compactly,
    except on a slave, which runs none.
    """
    if st is None:
        return f"{name} ({group}): not answering"
    parts = [f"{name} ({group}): {st.role}"]
    if st.detail:
        if st.role_kind in (admin_pb2.ROLE_MASTER, admin_pb2.ROLE_SLAVE):
            parts.append(st.detail)
        else:
            parts[0] += f" ({st.detail})"
    if st.queues is not None:
        parts.append(
            f"{st.queues} queue{'s' if st.queues != 1 else ''}, depth {st.depth}, "
            f"in flight {st.in_flight}, consumers {st.consumers}"
        )
    if bridges and st.role_kind not in (admin_pb2.ROLE_SLAVE, admin_pb2.ROLE_ELECTING):
        parts.append("bridges " + " ".join(bridge_brief(b) for b in bridges_of(bridges, st)))
    return ", ".join(parts)


def role_change_line(name: str, group: str, before: str, st: BrokerStatus | None) -> str:
    """A group member's role change, for the running `up`: `c (B): slave → master, epoch
    4, position 300, in-sync c`."""
    after = "not answering" if st is None else st.role
    line = f"{name} ({group}): {before} {ARROW} {after}"
    if st is not None and st.detail:
        line += f", {st.detail}"
    return line


TABLE_HEADERS = ("broker", "group", "role", "client", "pid", "state", "depth", "bridges")
# With master/slave groups in the file: each member's replication position after its role.
GROUP_TABLE_HEADERS = (
    "broker", "group", "role", "position", "client", "pid", "state", "depth", "bridges",
)  # fmt: skip


def table_headers(plans: Sequence[BrokerPlan]) -> tuple[str, ...]:
    """The table's columns: a position column only where there are groups to show it for."""
    return GROUP_TABLE_HEADERS if any(p.election for p in plans) else TABLE_HEADERS


def table_rows(
    plan: BrokerPlan,
    pid: int | None,
    state: str,
    st: BrokerStatus | None,
    *,
    position: bool = False,
) -> list[tuple[object, ...]]:
    """A broker's rows in the cluster table: one, plus one per further bridge.

    `position`: include the replication position column (GROUP_TABLE_HEADERS). A group
    member that is not master shows no bridges: only the master runs them.
    """
    answering = st is not None and st.name == plan.name
    serves = serving(plan, st)
    cells = [bridge_cell(b) for b in bridges_of(plan.bridges, st if serves else None)]
    if not cells:
        cells = ["-" if not plan.bridges or not serves else "none"]
    depth = st.depth if answering and st is not None and st.queues is not None else None
    role: object = st.role if answering and st is not None else "-"
    first: list[object] = [plan.name, plan.group, role]
    if position:
        first.append(st.position if answering and st is not None else None)
    first += [plan.address, pid, state, depth, cells[0]]
    blank = ("",) * (len(first) - 1)
    return [tuple(first), *((*blank, cell) for cell in cells[1:])]


def group_lines(
    plans: Sequence[BrokerPlan], statuses: Mapping[str, BrokerStatus | None]
) -> list[str]:
    """One line per master/slave group: its master and the master's client address, or
    why it has none. `group B: master c at 127.0.0.1:61618 (epoch 4, position 300,
    in-sync b,c)`."""
    lines = []
    for group, members in groups_of(plans):
        election = members[0].election
        if election is None:
            continue
        answering = {
            p.name: st
            for p in members
            if (st := statuses.get(p.name)) is not None and st.name == p.name
        }
        masters = [(p, answering[p.name]) for p in members
                   if p.name in answering and answering[p.name].master]  # fmt: skip
        head = f"group {group} ({election})"
        if len(masters) == 1:
            p, st = masters[0]
            detail = f" ({st.detail})" if st.detail else ""
            lines.append(f"{head}: master {p.name} at {st.address or p.address}{detail}")
        elif masters:
            lines.append(f"{head}: {len(masters)} masters: {', '.join(p.name for p, _ in masters)}")
        else:
            who = "; ".join(
                f"{p.name} " + (role_and_detail(answering[p.name]) if p.name in answering
                                else "not answering")
                for p in members
            )  # fmt: skip
            lines.append(f"{head}: no master: {who}")
    return lines


def zookeeper_line(topology: Topology, state: dict[str, Any] | None, *, probe: bool) -> str | None:
    """`zookeeper: embedded at 127.0.0.1:P, pid N, serving` (or where an external one is)."""
    zk = topology.zookeeper
    if zk is None or not topology.uses_zookeeper:
        return None
    if not zk.embedded:
        return f"zookeeper: {zk.connect_string} (external)"
    entry = (state or {}).get("zookeeper")
    if not entry:
        return "zookeeper: embedded, not running"
    where = entry.get("connect_string", "?")
    pid = recorded_zookeeper(state)
    if pid is None:
        return f"zookeeper: embedded at {where}, not running"
    health = ""
    if probe:
        _, _, port = str(where).rpartition(":")
        try:
            ok = port.isdigit() and four_letter(int(port), "ruok", timeout=1.0) == "imok"
        except OSError:
            ok = False
        health = ", serving" if ok else ", not answering"
    return f"zookeeper: embedded at {where}, pid {pid}{health}"


def waiting_for(plans: Sequence[BrokerPlan]) -> str:
    """What `up` waits for once the brokers are ready: elections, then bridges."""
    parts = []
    groups = [g for g, members in groups_of(plans) if members[0].election]
    if groups:
        parts.append(
            f"group{'s' if len(groups) != 1 else ''} {', '.join(groups)} to elect a master"
        )
    # A group's bridges are run by its master only: count them once per group.
    n = sum(
        len(members[0].bridges) if members[0].election else sum(len(p.bridges) for p in members)
        for _, members in groups_of(plans)
    )
    if n:
        parts.append(f"{n} bridge{'s' if n != 1 else ''}")
    return " and ".join(parts)


def cluster_table(
    plans: Sequence[BrokerPlan],
    pids: Mapping[str, int | None],
    statuses: Mapping[str, BrokerStatus | None],
    health: Mapping[str, str] | None = None,
) -> str:
    headers = table_headers(plans)
    position = "position" in headers
    rows = [
        row
        for p in plans
        for row in table_rows(
            p,
            pids.get(p.name),
            (health or {}).get(p.name, "up"),
            statuses.get(p.name),
            position=position,
        )
    ]
    return format_table(headers, rows)


def bridge_problem(p: Problem) -> str:
    """A bridge that is not up, as status says it: `a: static:h:1 backoff (why)`."""
    return f"{p.broker}: {p.subject} {p.state}" + (f" ({p.detail})" if p.detail else "")


def metrics_line(plans: Sequence[BrokerPlan], ports: Mapping[str, int | None]) -> str | None:
    """`metrics: http://127.0.0.1:9404/metrics (a), ...` for the brokers that serve it."""
    urls = [
        f"http://{p.spec.host}:{port}/metrics ({p.name})"
        for p in plans
        if (port := ports.get(p.name))
    ]
    return f"metrics: {', '.join(urls)}" if urls else None


def print_line(stream: TextIO, text: str) -> None:
    """One line to the operator, at once (the output may be a pipe)."""
    stream.write(text + "\n")
    stream.flush()
