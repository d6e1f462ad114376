"""`netbroker up`, `status` and `down`: a topology's brokers (and its embedded ZooKeeper)
as supervised processes.

With `zookeeper: embedded` and a group that elects through ZooKeeper, `up` first starts
one ZooKeeper server (`broker.cluster.zookeeper.Ensemble`, data and log in DATA/zookeeper, on
`zookeeper_port` or a free port of 127.0.0.1) and hands its connect string to every
group member; it is stopped last. Each broker then runs as `python -m broker broker
--name N --port P --data DATA/N --group G [group flags] --connector URI ...`, in a
session of its own, with its stdout and stderr appended to `DATA/N/broker.log`. A
broker is ready when that log shows its `netbroker: broker N listening on HOST:PORT`
line (or its Admin.Status answers under its name). The cluster is up (`cluster_problems`
is empty) when every broker answers Admin.Status, each master/slave group has exactly
one master and its other members are slaves, and every bridge of each standalone broker
and of each group's master reports "up" (slaves run no bridges); `up` waits for that
within one deadline and prints the table only then: each broker's role, replication
position, client address, pid and bridges, and each group's master.

* Foreground (`up FILE`): the brokers also get SIGTERM, and ZooKeeper SIGKILL, if the
  supervisor dies (Linux parent-death signal), so a killed `up` leaves nothing behind.
  Ctrl-C, SIGTERM or SIGHUP stop every broker (SIGTERM, up to 10 s, then SIGKILL), then
  ZooKeeper. A second Ctrl-C kills at once. While running, a status line per broker
  every `--interval` s, and a line at once whenever a group member's role changes, so a
  failover shows as it happens.
* Detached (`up FILE --detach`): brokers and ZooKeeper outlive the command. Their pids
  and command lines go to `DATA/netbroker-up.json`, which `status` and `down` read; a
  foreground `up` writes the same file (with its own pid) so `status` works beside it.

The pieces (planning, starting, waiting, stopping, the state file) are separate functions
over plain data so that tests can drive them with a stand-in broker command.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, unquote

from broker.cluster.topology import BrokerSpec, Connector, GroupSpec, Topology
from broker.cluster.zookeeper import Ensemble, ZooKeeperError, four_letter

STATE_FILE = "netbroker-up.json"
LOG_FILE = "broker.log"
READY_RE = re.compile(
    r"^netbroker: broker (?P<name>\S+) listening on (?P<address>\S+)\s*$", re.MULTILINE
)
DEFAULT_READY_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 10.0
DEFAULT_INTERVAL = 5.0
TAIL_LINES = 15
# Broker sync policies the standalone broker process understands today; quorum policies
# belong to master/slave groups.
LOCAL_SYNC = ("local_disk", "local_mem")
# Characters left readable when option values are folded into a query string: the
# destination wildcards and list commas operators write. '&', '=', '%', '?', '#' and
# spaces are escaped; the broker's parser unescapes them.
QUERY_SAFE = "*>,.:/@_-~"
# A bridge error in the table is cut here; the timeout message and `stat` show it whole.
DETAIL_WIDTH = 60
ARROW = "\u2192"
POSITION_RE = re.compile(r"\bposition (\d+)")
# How often a running `up` looks at group members' roles, to report a failover at once.
ROLE_POLL = 0.5


class UpError(Exception):
    """A failure of up/status/down. The first line says what; later lines may quote a log."""


class Interrupted(Exception):
    """A stop was requested (Ctrl-C, SIGTERM) while brokers were still starting."""


# ----------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class BrokerPlan:
    """How one broker of a topology is started: pure data, derived from the topology."""

    spec: BrokerSpec
    data_dir: Path
    log_path: Path
    argv: tuple[str, ...]
    # Bridge names (Admin.Status component names) that must be up, in connector order.
    # In a master/slave group only the master runs them.
    bridges: tuple[str, ...] = ()
    # The group's election ("zookeeper", "lockfile"), None for a standalone broker.
    election: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def group(self) -> str:
        return self.spec.group

    @property
    def address(self) -> str:
        return self.spec.client_address


def broker_command() -> list[str]:
    """The command that runs one broker: this interpreter, this package."""
    return [sys.executable, "-m", "broker", "broker"]


def _option_text(value: object) -> str:
    """A YAML option value as the query string writes it (the parser reads it back)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(item).strip() for item in value)
    return str(value)


def connector_argument(connector: Connector) -> str:
    """The connector as one `--connector` URI: names resolved, YAML options folded in.

    The broker parses this with the same `parse_connector` the topology was checked with,
    so it gets the very connector the file describes. An option in both the URI and the
    YAML keys is kept once (the topology check has made sure the two agree).
    """
    uri = (connector.resolved or connector.uri).strip()
    base, _, query = uri.partition("?")
    given = {unquote(piece.partition("=")[0]) for piece in query.split("&") if piece}
    extra = [
        f"{quote(name, safe='')}={quote(_option_text(value), safe=QUERY_SAFE)}"
        for name, value in connector.options.items()
        if name not in given
    ]
    if not extra:
        return uri
    pieces = [piece for piece in query.split("&") if piece] + extra
    return f"{base}?{'&'.join(pieces)}"


def runnable_connectors(group: GroupSpec) -> list[Connector]:
    """The group's connectors, every kind of which its brokers now run."""
    return list(group.connectors)


def bridge_labels(connector: Connector) -> list[str]:
    """The names of the bridges a connector opens, as its broker's Admin.Status lists them.

    Mirrors `netconnector.connector.Link.label`: a static connector opens one bridge per
    address, named `static:HOST:PORT`; a masterslave connector one bridge, named after the
    connector (`name` option, by default `masterslave:(HOST:PORT,...)`).
    """
    spec = connector.spec
    if spec is None or spec.kind == "multicast":
        return []
    if spec.kind == "static":
        return [f"static:{address}" for address in spec.addresses]
    if len(spec.addresses) == 1:
        return [f"{spec.kind}:{spec.addresses[0]}"]
    return [spec.name]


def discovered_labels(connector: Connector, group: GroupSpec, topology: Topology) -> list[str]:
    """The bridges a `multicast://NAME` connector opens: one to each other group with a
    connector of that discovery group (a broker advertises in the discovery groups of its
    own multicast connectors). Named as `netconnector.multicast.link_label` names them:
    `multicast://NAME/GROUP`."""
    spec = connector.spec
    if spec is None or spec.kind != "multicast":
        return []
    peers = [
        g.name
        for g in topology.groups
        if g.name != group.name
        and any(
            c.spec is not None
            and c.spec.kind == "multicast"
            and c.spec.discovery_group == spec.discovery_group
            for c in g.connectors
        )
    ]
    return [f"{spec.name}/{name}" for name in peers]


def expected_bridges(group: GroupSpec, topology: Topology | None = None) -> list[str]:
    """Every bridge each serving broker of `group` must report "up" before the cluster is up.
    Discovered bridges (multicast) are known only with the whole `topology`."""
    labels = []
    for c in runnable_connectors(group):
        labels += bridge_labels(c)
        if topology is not None:
            labels += discovered_labels(c, group, topology)
    return labels


def shared_store_dir(root: Path, group: GroupSpec) -> Path:
    """The store directory the members of a lock-file group share."""
    return root / f"shared-{group.name}"


def broker_argv(
    group: GroupSpec,
    broker: BrokerSpec,
    data_dir: Path,
    command: Sequence[str],
    *,
    zookeeper: str = "",
    replication_port: int | None = None,
    shared_dir: Path | None = None,
) -> list[str]:
    """The broker's command line: its own flags, then its group's.

    `zookeeper` is the ensemble's connect string (a ZooKeeper group's members need it);
    `replication_port` stands in for a member without one in the file (a group of one);
    `shared_dir` is a lock-file group's store.
    """
    argv = [
        *command,
        "--name",
        broker.name,
        "--host",
        broker.host,
        "--port",
        str(broker.port),
        "--data",
        str(data_dir),
        "--group",
        group.name,
    ]
    if broker.max_message_bytes is not None:
        argv += ["--max-message-bytes", str(broker.max_message_bytes)]
    sync = group.effective_sync(broker)
    if group.election == "zookeeper":
        port = broker.replication_port or replication_port
        argv += ["--election", "zookeeper", "--zookeeper", zookeeper]
        argv += ["--replication-port", str(port or 0)]
        argv += ["--replicas", str(group.replicas or len(group.brokers))]
        if group.min_insync is not None:
            argv += ["--min-insync", str(group.min_insync)]
        if group.zk_path:
            argv += ["--zk-path", group.zk_path]
        if group.session_timeout is not None:
            argv += ["--session-timeout", f"{group.session_timeout:g}"]
        if broker.weight is not None:
            argv += ["--weight", str(broker.weight)]
        if sync:
            argv += ["--sync", sync]
    elif group.election == "lockfile":
        argv += ["--election", "lockfile"]
        if shared_dir is not None:
            argv += ["--shared-dir", str(shared_dir)]
        if sync in LOCAL_SYNC:
            argv += ["--sync", sync]
    elif sync in LOCAL_SYNC:
        argv += ["--sync", sync]
    if group.security_token:
        argv += ["--token", group.security_token]
    for connector in runnable_connectors(group):
        argv += ["--connector", connector_argument(connector)]
    return argv


def plan(
    topology: Topology,
    *,
    cwd: Path | None = None,
    command: Sequence[str] | None = None,
    zookeeper: str | None = None,
    pick_port: Callable[[], int] | None = None,
) -> list[BrokerPlan]:
    """One BrokerPlan per broker, in file order; data dirs are absolute.

    `zookeeper`: the connect string ZooKeeper groups get (default: the file's external
    ensemble, or an embedded one's fixed port). `pick_port` gives a replication port to a
    ZooKeeper member the file gives none (a group of one); by default a free port.
    """
    root = topology.data_root(cwd).absolute()
    cmd = list(command) if command is not None else broker_command()
    if zookeeper is None:
        zookeeper = topology.zookeeper.connect_string if topology.zookeeper else ""
    plans = []
    for group in topology.groups:
        for spec in group.brokers:
            data_dir = root / spec.name
            replication_port = None
            if group.election == "zookeeper" and spec.replication_port is None:
                replication_port = (pick_port or _free_port)()
            argv = broker_argv(
                group, spec, data_dir, cmd, zookeeper=zookeeper,
                replication_port=replication_port,
                shared_dir=shared_store_dir(root, group) if group.election == "lockfile" else None,
            )  # fmt: skip
            plans.append(
                BrokerPlan(
                    spec=spec,
                    data_dir=data_dir,
                    log_path=data_dir / LOG_FILE,
                    argv=tuple(argv),
                    bridges=tuple(expected_bridges(group, topology)),
                    election=group.election,
                )
            )
    return plans


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def display_path(path: Path, cwd: Path | None = None) -> str:
    """A path as the operator would type it: relative to the working directory if inside."""
    base = cwd if cwd is not None else Path.cwd()
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


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


# ------------------------------------------------------------------------ processes


def _read_proc(pid: int, name: str) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return None


def cmdline(pid: int) -> list[str] | None:
    """A process's argv (Linux /proc), or None where it cannot be read."""
    raw = _read_proc(pid, "cmdline")
    if not raw:
        return None
    return [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")]


def pid_alive(pid: int) -> bool:
    """Whether pid is a running process (a zombie is not: it has exited, unreaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _read_proc(pid, "stat")
    if stat is not None:
        # Field 3, after the parenthesised command name (which may hold spaces).
        state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
        return state not in (b"Z", b"X")
    return True


def pid_matches(pid: int, argv: Sequence[str] | None) -> bool:
    """Whether pid is alive and still the process we started (pids get reused)."""
    if not pid_alive(pid):
        return False
    if not argv:
        return True
    current = cmdline(pid)
    return current is None or current == list(argv)


def _parent_death_preexec() -> Callable[[], None] | None:
    """A preexec_fn giving the child SIGTERM when this process dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    sigterm = int(signal.SIGTERM)
    parent = os.getpid()

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigterm)
        if os.getppid() != parent:  # the supervisor died between fork and prctl
            os.kill(os.getpid(), sigterm)

    return preexec


def _child_env() -> dict[str, str]:
    # Children run `python -m broker`: make this very package importable whatever the
    # working directory, also when netbroker runs from a source tree without install.
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = package_root + (os.pathsep + existing if existing else "")
    return env


@dataclass
class BrokerProcess:
    """A started broker: ours (popen) or adopted from a state file (pid only)."""

    plan: BrokerPlan
    pid: int
    popen: subprocess.Popen[bytes] | None = None
    log_offset: int = 0
    address: str | None = None
    _scan_pos: int = field(default=-1, repr=False)
    _partial: bytes = field(default=b"", repr=False)

    @property
    def name(self) -> str:
        return self.plan.name

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return pid_matches(self.pid, self.plan.argv)

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode if self.popen is not None else None

    def describe_exit(self) -> str:
        rc = self.returncode
        if rc is None:
            return "exited"
        if rc < 0:
            try:
                return f"was killed by {signal.Signals(-rc).name}"
            except ValueError:
                return f"was killed by signal {-rc}"
        return f"exited with code {rc}"

    def signal(self, sig: int) -> None:
        """Signal the broker's process group (it leads its own session), else the pid."""
        if self.popen is not None:
            if self.popen.poll() is not None:
                return  # exited and reaped: its pid may belong to someone else now
        elif not pid_matches(self.pid, self.plan.argv):
            return
        signal_leader(self.pid, sig)

    def ready_address(self) -> str | None:
        """The address from the broker's listening line, if it has appeared since start."""
        if self.address is not None:
            return self.address
        if self._scan_pos < 0:
            self._scan_pos = self.log_offset
        try:
            with open(self.plan.log_path, "rb") as f:
                f.seek(self._scan_pos)
                chunk = f.read()
        except OSError:
            return None
        self._scan_pos += len(chunk)
        data = self._partial + chunk
        complete, _, self._partial = data.rpartition(b"\n")
        for m in READY_RE.finditer(complete.decode(errors="replace")):
            if m["name"] == self.name:
                self.address = m["address"]
        return self.address

    def log_tail(self, lines: int = TAIL_LINES) -> list[str]:
        """The last lines this run wrote to the broker's log."""
        try:
            with open(self.plan.log_path, "rb") as f:
                f.seek(self.log_offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if line.strip()][-lines:]


def _with_tail(message: str, proc: BrokerProcess) -> str:
    tail = proc.log_tail()
    where = display_path(proc.plan.log_path)
    if not tail:
        return f"{message} (its log {where} is empty)"
    return "\n".join([f"{message}; last lines of {where}:", *("    " + t for t in tail)])


def spawn(plan: BrokerPlan, *, detach: bool) -> BrokerProcess:
    """Start one broker with its output appended to its log."""
    try:
        plan.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(plan.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    except OSError as e:
        raise UpError(
            f"broker {plan.name}: cannot write {display_path(plan.log_path)}: {e.strerror or e}"
        ) from None
    with log:
        stamp = datetime.now().astimezone().isoformat(timespec="seconds")
        log.write(f"--- netbroker up: starting broker {plan.name} at {stamp} ---\n".encode())
        log.flush()
        offset = log.tell()
        try:
            popen = subprocess.Popen(
                plan.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=_child_env(),
                # Own session: the terminal's Ctrl-C reaches only the supervisor, which
                # then stops brokers in order; detached brokers survive logout.
                start_new_session=True,
                preexec_fn=None if detach else _parent_death_preexec(),
            )
        except OSError as e:
            raise UpError(
                f"broker {plan.name}: cannot start {plan.argv[0]}: {e.strerror or e}"
            ) from None
    return BrokerProcess(plan=plan, pid=popen.pid, popen=popen, log_offset=offset)


def start(plans: Sequence[BrokerPlan], *, detach: bool) -> list[BrokerProcess]:
    """Start every broker; if one cannot be started, stop those already running."""
    procs: list[BrokerProcess] = []
    try:
        for p in plans:
            procs.append(spawn(p, detach=detach))
    except BaseException:
        stop(procs)
        raise
    return procs


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
                    _with_tail(f"broker {p.name} {p.describe_exit()} before it was ready", p)
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
            raise UpError(_with_tail(f"broker {p.name} was not ready within {timeout:g} s", p))
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
                    _with_tail(
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


def groups_of(plans: Sequence[BrokerPlan]) -> list[tuple[str, list[BrokerPlan]]]:
    """The plans by group, groups in file order."""
    out: dict[str, list[BrokerPlan]] = {}
    for p in plans:
        out.setdefault(p.group, []).append(p)
    return list(out.items())


def serving(plan: BrokerPlan, st: BrokerStatus | None) -> bool:
    """Whether the broker answers under its name and serves clients and bridges: a
    standalone broker, or its group's master."""
    if st is None or st.name != plan.name:
        return False
    return plan.election is None or st.role == "master"


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
    masters = [name for name, st in answering.items() if st.role == "master"]
    if len(masters) > 1:
        return [f"group {group}: {len(masters)} members say they are master: {', '.join(masters)}"]
    if not masters:
        if not answering:
            return []  # each member is already named as not answering
        who = "; ".join(f"{name} {_role_and_detail(st)}" for name, st in answering.items())
        return [f"group {group}: no master yet: {who}"]
    return [
        f"{name}: {_role_and_detail(st)}, not yet a slave of {masters[0]}"
        for name, st in answering.items()
        if st.role not in ("master", "slave")
    ]


def _role_and_detail(st: BrokerStatus) -> str:
    group = st.group
    detail = group[1] if group is not None else ""
    return st.role + (f" ({detail})" if detail else "")


def stop(
    procs: Sequence[BrokerProcess],
    *,
    timeout: float = DEFAULT_STOP_TIMEOUT,
    kill_now: threading.Event | None = None,
    report: Callable[[str], None] | None = None,
) -> None:
    """SIGTERM every live broker, wait up to `timeout`, then SIGKILL what is left."""
    alive = [p for p in procs if p.alive()]
    for p in alive:
        p.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive:
        alive = [p for p in alive if p.alive()]
        if not alive or time.monotonic() >= deadline or (kill_now and kill_now.is_set()):
            break
        time.sleep(0.05)
    for p in alive:
        if report:
            report(f"broker {p.name} (pid {p.pid}) did not stop within {timeout:g} s; killing it")
        p.signal(signal.SIGKILL)
    # Reap our children and make sure adopted ones are gone before returning.
    end = time.monotonic() + 5.0
    for p in alive:
        if p.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(max(0.0, end - time.monotonic()))
        else:
            while p.alive() and time.monotonic() < end:
                time.sleep(0.05)
    for p in procs:
        if p.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(0)


# ------------------------------------------------------------------------ admin probe


@dataclass(frozen=True)
class BrokerStatus:
    name: str
    role: str
    address: str
    components: list[tuple[str, str, str, str]]
    queues: int | None = None
    depth: int = 0
    in_flight: int = 0
    consumers: int = 0
    # Why the broker refuses clients (a slave names its master), if it does.
    refusal: str = ""

    @property
    def group(self) -> tuple[str, str] | None:
        """(state, detail) of the broker's group component, if it is a group member.

        A master says "epoch 3, position 1042, in-sync b,c"; a slave "master b at
        127.0.0.1:61617, position 1042"; an electing member why it waits.
        """
        for kind, _, state, detail in self.components:
            if kind == "group":
                return state, detail
        return None

    @property
    def position(self) -> int | None:
        """The replication position the group component reports, if any."""
        group = self.group
        m = POSITION_RE.search(group[1]) if group is not None else None
        return int(m[1]) if m else None


@dataclass(frozen=True)
class Bridge:
    """One outbound bridge as its broker reports it."""

    label: str
    # "connecting", "up", "backoff" as the broker says; "missing" if it does not list it.
    state: str
    # The broker at the other end, once linked.
    peer: str = ""
    # The broker's own words: "b@127.0.0.1:61617, forwarded 12", or the last error.
    detail: str = ""

    @property
    def error(self) -> str:
        """The detail without the address it starts with: what went wrong, if anything."""
        if self.state == "up":
            return ""
        # A link's detail starts with where it is, then the error:
        # "127.0.0.1:61617, UNAVAILABLE: failed to connect ..." (or "-" before any try).
        first, _, rest = self.detail.partition(", ")
        if first == "-" or (first and " " not in first and ":" in first):
            return rest
        return self.detail


def bridges_of(labels: Sequence[str], st: BrokerStatus | None) -> list[Bridge]:
    """The expected bridges `labels`, in order, with their state from the broker's status.

    Other bridge components (links other brokers opened to this one) are not listed: each
    is the peer's outbound bridge, shown on the peer's line.
    """
    if st is None:
        return []
    reported = {
        name: (state, detail) for kind, name, state, detail in st.components if kind == "bridge"
    }
    out = []
    for label in labels:
        if label not in reported:
            others = ", ".join(reported) or "none"
            out.append(
                Bridge(
                    label, "missing", detail=f"the broker does not report it (it reports: {others})"
                )
            )
            continue
        state, detail = reported[label]
        where = detail.partition(", ")[0]
        peer = where.partition("@")[0] if "@" in where else ""
        out.append(Bridge(label, state, peer, detail))
    return out


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


class AdminProbe:
    """Admin.Status and ListQueues over cached synchronous channels, with short deadlines."""

    def __init__(self, timeout: float = 1.0) -> None:
        self.timeout = timeout
        self._channels: dict[str, Any] = {}

    def _stub(self, address: str) -> Any:
        import grpc

        from broker.pb import admin_pb2_grpc

        channel = self._channels.get(address)
        if channel is None:
            # Short reconnect backoff: brokers come and go; gRPC's default backoff grows to
            # two minutes and would hide a broker that has come back.
            channel = grpc.insecure_channel(
                address,
                options=[
                    ("grpc.initial_reconnect_backoff_ms", 200),
                    ("grpc.min_reconnect_backoff_ms", 200),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                    ("grpc.enable_retries", 0),
                ],
            )
            self._channels[address] = channel
        return admin_pb2_grpc.AdminStub(channel)

    def status(
        self, address: str, *, expect_up: bool = False, queues: bool = True
    ) -> BrokerStatus | None:
        """The broker's status, or None if it does not answer in time.

        `expect_up`: the broker is known to listen, so wait out a reconnect backoff left
        from earlier failed probes instead of failing fast. `queues`: also count its
        queues (a serving broker only; a slave refuses ListQueues).
        """
        import grpc

        from broker.pb import admin_pb2

        stub = self._stub(address)
        try:
            st = stub.Status(
                admin_pb2.StatusRequest(), timeout=self.timeout, wait_for_ready=expect_up
            )
        except grpc.RpcError:
            return None
        components = [(c.kind, c.name, c.state, c.detail) for c in st.components]
        base = BrokerStatus(
            name=st.name,
            role=st.role or "?",
            address=st.client_address,
            components=components,
            refusal=st.refusal,
        )
        if not queues or st.refusal or base.role in ("slave", "electing"):
            return base
        try:
            qs = stub.ListQueues(admin_pb2.ListQueuesRequest(), timeout=self.timeout).queues
        except grpc.RpcError:
            return base  # e.g. a slave refusing; the role still says what it is
        return dataclasses.replace(
            base,
            queues=len(qs),
            depth=sum(q.depth for q in qs),
            in_flight=sum(q.in_flight for q in qs),
            consumers=sum(q.consumers for q in qs),
        )

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()


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
    component = st.group
    if component is not None and component[1]:
        if st.role in ("master", "slave"):
            parts.append(component[1])
        else:
            parts[0] += f" ({component[1]})"
    if st.queues is not None:
        parts.append(
            f"{st.queues} queue{'s' if st.queues != 1 else ''}, depth {st.depth}, "
            f"in flight {st.in_flight}, consumers {st.consumers}"
        )
    if bridges and st.role not in ("slave", "electing"):
        parts.append("bridges " + " ".join(bridge_brief(b) for b in bridges_of(bridges, st)))
    return ", ".join(parts)


def role_change_line(name: str, group: str, before: str, st: BrokerStatus | None) -> str:
    """A group member's role change, for the running `up`: `c (B): slave → master, epoch
    4, position 300, in-sync c`."""
    after = "not answering" if st is None else st.role
    line = f"{name} ({group}): {before} {ARROW} {after}"
    component = st.group if st is not None else None
    if component is not None and component[1]:
        line += f", {component[1]}"
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
                   if p.name in answering and answering[p.name].role == "master"]  # fmt: skip
        head = f"group {group} ({election})"
        if len(masters) == 1:
            p, st = masters[0]
            component = st.group
            detail = f" ({component[1]})" if component is not None and component[1] else ""
            lines.append(f"{head}: master {p.name} at {st.address or p.address}{detail}")
        elif masters:
            lines.append(f"{head}: {len(masters)} masters: {', '.join(p.name for p, _ in masters)}")
        else:
            who = "; ".join(
                f"{p.name} " + (_role_and_detail(answering[p.name]) if p.name in answering
                                else "not answering")
                for p in members
            )  # fmt: skip
            lines.append(f"{head}: no master: {who}")
    return lines


# ---------------------------------------------------------------------------- zookeeper


def start_zookeeper(
    topology: Topology, *, cwd: Path | None, detach: bool, timeout: float
) -> Ensemble:
    """Start the embedded ZooKeeper: one server in DATA/zookeeper, on `zookeeper_port` or a
    free port of 127.0.0.1, serving when this returns.

    In the foreground it dies with this process (parent-death signal); detached it
    outlives it, recorded in the state file for `down`.
    """
    assert topology.zookeeper is not None and topology.zookeeper.embedded
    ensemble = Ensemble(
        topology.zookeeper_dir(cwd).absolute(),
        size=1,
        client_port=topology.zookeeper.port or 0,
        die_with_parent=not detach,
        # ZooKeeper starts before the brokers: it must not take a port one of them needs.
        avoid_ports={
            port for b in topology.brokers for port in (b.port, b.replication_port) if port
        },
    )
    try:
        ensemble.start(timeout=max(timeout, 1.0))
    except ZooKeeperError as e:
        raise UpError(f"embedded ZooKeeper: {e}") from None
    return ensemble


def zookeeper_entry(ensemble: Ensemble) -> dict[str, Any]:
    """What the state file records of an embedded ZooKeeper."""
    server = ensemble[0]
    pid = server.pid
    assert pid is not None
    return {
        "pid": pid,
        "argv": cmdline(pid),
        "connect_string": ensemble.connect_string,
        "dir": str(server.node_dir),
        "log": str(server.log_path),
    }


def recorded_zookeeper(state: dict[str, Any] | None) -> int | None:
    """The pid of the embedded ZooKeeper a state file records, if it still runs."""
    entry = state.get("zookeeper") if state else None
    if not entry:
        return None
    pid = entry["pid"]
    return pid if pid_matches(pid, entry.get("argv")) else None


def signal_leader(pid: int, sig: int) -> None:
    """Signal the process group `pid` leads (its children too), else `pid` alone; nothing
    if it is gone or not ours to signal."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def stop_recorded_zookeeper(
    state: dict[str, Any], *, timeout: float = DEFAULT_STOP_TIMEOUT
) -> int | None:
    """Stop the state file's embedded ZooKeeper (SIGTERM, then SIGKILL); its pid or None."""
    pid = recorded_zookeeper(state)
    if pid is None:
        return None

    def send(sig: int) -> None:
        if pid_matches(pid, state["zookeeper"].get("argv")):
            signal_leader(pid, sig)

    send(signal.SIGTERM)
    send(signal.SIGCONT)  # a stopped JVM would never act on the SIGTERM
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        send(signal.SIGKILL)
        end = time.monotonic() + 5.0
        while pid_alive(pid) and time.monotonic() < end:
            time.sleep(0.05)
    return pid


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


# ------------------------------------------------------------------------- state file


def state_path(topology: Topology, cwd: Path | None = None) -> Path:
    return topology.data_root(cwd).absolute() / STATE_FILE


def write_state(
    path: Path,
    topology: Topology,
    procs: Sequence[BrokerProcess],
    *,
    detached: bool,
    zookeeper: dict[str, Any] | None = None,
) -> None:
    """Record what runs, atomically (a reader never sees half a file).

    `zookeeper`: the embedded ZooKeeper `up` started (`zookeeper_entry`), stopped last.
    The file is private to its owner: command lines may carry a securityToken.
    """
    state = {
        "topology": str(Path(topology.source).absolute()),
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "detached": detached,
        "supervisor": None if detached else {"pid": os.getpid(), "argv": cmdline(os.getpid())},
        "brokers": [
            {
                "name": p.name,
                "group": p.plan.group,
                "pid": p.pid,
                "address": p.address or p.plan.address,
                "argv": list(p.plan.argv),
                "log": str(p.plan.log_path),
            }
            for p in procs
        ],
        "zookeeper": zookeeper,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise UpError(f"cannot read {display_path(path)}: {e.strerror or e}") from None
    try:
        state = json.loads(text)
        if not isinstance(state, dict) or not isinstance(state.get("brokers"), list):
            raise ValueError("not a netbroker state file")
        for b in state["brokers"]:
            if not isinstance(b.get("name"), str) or not isinstance(b.get("pid"), int):
                raise ValueError("broker entry without name or pid")
        zk = state.get("zookeeper")
        if zk is not None and not (isinstance(zk, dict) and isinstance(zk.get("pid"), int)):
            raise ValueError("zookeeper entry without pid")
    except (ValueError, AttributeError) as e:
        raise UpError(
            f"{display_path(path)} is damaged ({e}); stop its brokers (and ZooKeeper) by "
            "hand and remove it"
        ) from None
    return state


def adopted(plans: Sequence[BrokerPlan], state: dict[str, Any]) -> list[BrokerProcess]:
    """BrokerProcesses for the state file's brokers that are still running.

    The command line recorded at start must match, so a reused pid is never signalled.
    A broker since removed from the topology is still found: what was started is stopped.
    """
    by_name = {p.name: p for p in plans}
    out = []
    for b in state["brokers"]:
        argv = tuple(str(a) for a in b.get("argv") or ())
        known = by_name.get(b["name"])
        if known is not None:
            spec, data_dir, log_path = known.spec, known.data_dir, known.log_path
        else:
            _, _, port = str(b.get("address", "")).rpartition(":")
            spec = BrokerSpec(
                name=b["name"],
                group=str(b.get("group", "?")),
                port=int(port) if port.isdigit() else 0,
            )
            log_path = Path(str(b.get("log", LOG_FILE)))
            data_dir = log_path.parent
        proc = BrokerProcess(
            plan=BrokerPlan(
                spec, data_dir, log_path, argv or (known.argv if known else ()),
                election=known.election if known else None,
            ),
            pid=b["pid"],
        )  # fmt: skip
        if pid_matches(proc.pid, proc.plan.argv):
            out.append(proc)
    return out


def _supervisor_alive(state: dict[str, Any]) -> int | None:
    sup = state.get("supervisor")
    if not isinstance(sup, dict) or not isinstance(sup.get("pid"), int):
        return None
    pid = sup["pid"]
    if pid == os.getpid():
        return None
    return pid if pid_matches(pid, sup.get("argv")) else None


# ------------------------------------------------------------------------ commands


@contextlib.contextmanager
def _stop_signals(stop_requested: threading.Event, kill_now: threading.Event) -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP ask for an orderly stop; a second one for a kill."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if stop_requested.is_set():
            kill_now.set()
        stop_requested.set()

    sigs = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    previous = {s: signal.signal(s, handler) for s in sigs}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _print(stream: TextIO, text: str) -> None:
    stream.write(text + "\n")
    stream.flush()


def up(
    topology: Topology,
    *,
    detach: bool = False,
    timeout: float = DEFAULT_READY_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    command: Sequence[str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start a topology: its embedded ZooKeeper if it has one, then its brokers; in the
    foreground, supervise them until told to stop, then stop brokers, then ZooKeeper."""
    spath = state_path(topology, cwd)
    state = read_state(spath)
    if state is not None:
        running = adopted(plan(topology, cwd=cwd, command=command, pick_port=lambda: 0), state)
        sup = _supervisor_alive(state)
        zk_pid = recorded_zookeeper(state)
        if running or sup or zk_pid:
            who = ", ".join(f"{p.name} (pid {p.pid})" for p in running)
            if zk_pid:
                who = ", ".join(filter(None, [who, f"zookeeper (pid {zk_pid})"]))
            raise UpError(
                f"{topology.source}: already running: {who or f'pid {sup}'}; "
                f"see `netbroker status {topology.source}`, stop with "
                f"`netbroker down {topology.source}`"
            )
        spath.unlink(missing_ok=True)  # stale: everything it names has gone

    data = display_path(topology.data_root(cwd).absolute(), cwd)
    n = len(topology.brokers)
    embedded = topology.uses_zookeeper and bool(topology.zookeeper and topology.zookeeper.embedded)

    stop_requested = threading.Event()
    kill_now = threading.Event()
    probe = AdminProbe(timeout=3.0)
    procs: list[BrokerProcess] = []
    ensemble: Ensemble | None = None
    wrote_state = False
    with _stop_signals(stop_requested, kill_now):
        try:
            zk_connect = None
            if embedded:
                zk_dir = display_path(topology.zookeeper_dir(cwd).absolute(), cwd)
                _print(err, f"netbroker: starting ZooKeeper (embedded) in {zk_dir}")
                ensemble = start_zookeeper(topology, cwd=cwd, detach=detach, timeout=timeout)
                zk_connect = ensemble.connect_string
                _print(err, f"netbroker: ZooKeeper serving at {zk_connect}")
                if stop_requested.is_set():
                    raise Interrupted()
            # One deadline for the brokers' start: ready, groups elected, every bridge up.
            deadline = time.monotonic() + timeout
            plans = plan(topology, cwd=cwd, command=command, zookeeper=zk_connect)
            _print(
                err,
                f"netbroker: starting {n} broker{'s' if n != 1 else ''} from "
                f"{topology.source}; logs in {data}/<broker>/{LOG_FILE}",
            )
            procs = start(plans, detach=detach)
            wait_ready(procs, timeout=timeout, stop_requested=stop_requested, probe=probe)
            waits = _waiting_for(plans)
            if waits:
                _print(err, f"netbroker: brokers ready; waiting for {waits}")
            statuses = wait_cluster(
                procs, probe, deadline=deadline, timeout=timeout, stop_requested=stop_requested
            )
            zk_state = zookeeper_entry(ensemble) if ensemble is not None else None
            # Recorded before the table appears, so `status` works once it has.
            write_state(spath, topology, procs, detached=detach, zookeeper=zk_state)
            wrote_state = True
            _print(out, _cluster_table(plans, {p.name: p.pid for p in procs}, statuses))
            for line in group_lines(plans, statuses):
                _print(out, line)
            if zk_state is not None:
                _print(out, f"zookeeper: embedded at {zk_connect}, pid {zk_state['pid']}")
            elif external := zookeeper_line(topology, None, probe=False):
                _print(out, external)
            if detach:
                _print(
                    err,
                    f"netbroker: running detached; `netbroker status {topology.source}`"
                    f" shows them, `netbroker down {topology.source}` stops them",
                )
                procs = []  # leave them running
                if ensemble is not None:
                    for server in ensemble:
                        server.release()  # not stopped at this interpreter's exit
                    ensemble = None
                return 0
            _print(err, "netbroker: running; Ctrl-C stops every broker")
            return _supervise(procs, stop_requested, probe, interval, out, err, statuses)
        except Interrupted:
            _print(err, "netbroker: interrupted while starting")
            return 130
        finally:
            probe.close()
            if procs:
                live = [p for p in procs if p.alive()]
                if live:
                    _print(err, "netbroker: stopping " + ", ".join(p.name for p in live))
                stop(procs, kill_now=kill_now, report=lambda m: _print(err, "netbroker: " + m))
                if live:
                    _print(err, "netbroker: stopped")
            if ensemble is not None:
                # Last: members close their ZooKeeper sessions as they stop.
                if any(server.alive for server in ensemble):
                    _print(err, "netbroker: stopping ZooKeeper")
                ensemble.stop(timeout=2.0 if kill_now.is_set() else 5.0)
            if wrote_state and not detach:
                spath.unlink(missing_ok=True)


def _waiting_for(plans: Sequence[BrokerPlan]) -> str:
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


def _cluster_table(
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


def _supervise(
    procs: Sequence[BrokerProcess],
    stop_requested: threading.Event,
    probe: AdminProbe,
    interval: float,
    out: TextIO,
    err: TextIO,
    statuses: Mapping[str, BrokerStatus | None] | None = None,
) -> int:
    """Report every `interval` s, any broker that exits, and at once any role change in a
    master/slave group (a failover shows as it happens), until a stop is requested."""
    exited: set[str] = set()
    next_report = time.monotonic() + interval
    members = [p for p in procs if p.plan.election]
    roles = {
        p.name: (st.role if (st := (statuses or {}).get(p.name)) is not None else "not answering")
        for p in members
    }
    quick = AdminProbe(timeout=1.0)
    next_roles = time.monotonic() + ROLE_POLL
    try:
        while not stop_requested.wait(0.2):
            for p in procs:
                if p.name not in exited and not p.alive():
                    exited.add(p.name)
                    _print(
                        err, "netbroker: " + _with_tail(f"broker {p.name} {p.describe_exit()}", p)
                    )
            if len(exited) == len(procs):
                _print(err, "netbroker: every broker has exited")
                return 1
            if members and time.monotonic() >= next_roles:
                next_roles = time.monotonic() + ROLE_POLL
                for p in members:
                    st = None if p.name in exited else quick.status(p.plan.address, queues=False)
                    if st is not None and st.name != p.name:
                        st = None
                    role = "exited" if p.name in exited else (
                        st.role if st is not None else "not answering"
                    )  # fmt: skip
                    if role != roles[p.name]:
                        stamp = datetime.now().strftime("%H:%M:%S")
                        line = role_change_line(p.name, p.plan.group, roles[p.name], st)
                        if role == "exited":
                            line = f"{p.name} ({p.plan.group}): {roles[p.name]} {ARROW} exited"
                        _print(out, f"[{stamp}] {line}")
                        roles[p.name] = role
            if interval > 0 and time.monotonic() >= next_report:
                next_report = time.monotonic() + interval
                stamp = datetime.now().strftime("%H:%M:%S")
                for p in procs:
                    if p.name in exited:
                        line = f"{p.name} ({p.plan.group}): {p.describe_exit()}"
                    else:
                        line = status_line(
                            p.name, p.plan.group, probe.status(p.plan.address), p.plan.bridges
                        )
                    _print(out, f"[{stamp}] {line}")
    finally:
        quick.close()
    # A stop was asked for; a broker that died on its own still makes the run a failure.
    return 1 if exited else 0


def status(
    topology: Topology,
    *,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    cwd: Path | None = None,
    timeout: float = 2.0,
) -> int:
    """Show each broker of the topology from live Admin.Status calls: the table `up`
    prints (role, replication position, client address, pid, queue depth, bridges), each
    group's master and its address, and the embedded ZooKeeper. Exits 1 if a broker does
    not answer, a group has no single master, or a bridge is not up, naming them on
    stderr."""
    state = read_state(state_path(topology, cwd))
    zk_connect = None
    if state and state.get("zookeeper"):
        zk_connect = str(state["zookeeper"].get("connect_string", ""))
    plans = plan(topology, cwd=cwd, zookeeper=zk_connect, pick_port=lambda: 0)
    recorded = {b["name"]: b for b in state["brokers"]} if state else {}
    probe = AdminProbe(timeout=timeout)
    statuses: dict[str, BrokerStatus | None] = {}
    pids: dict[str, int | None] = {}
    health: dict[str, str] = {}
    missing = []
    any_running = False
    try:
        for p in plans:
            st = probe.status(p.address)
            statuses[p.name] = st
            entry = recorded.get(p.name)
            pid = entry["pid"] if entry else None
            running = entry is not None and pid is not None and pid_matches(pid, entry.get("argv"))
            any_running = any_running or running
            pids[p.name] = pid if running else None
            if st is not None and st.name == p.name:
                health[p.name] = "up"
            elif st is not None:
                health[p.name] = f"port answers as broker {st.name!r}"
                missing.append(p.name)
            elif running:
                health[p.name] = "running, not answering"
                missing.append(p.name)
            else:
                health[p.name] = "down"
                missing.append(p.name)
    finally:
        probe.close()
    _print(out, _cluster_table(plans, pids, statuses, health))
    for line in group_lines(plans, statuses):
        _print(out, line)
    zk_line = zookeeper_line(topology, state, probe=True)
    if zk_line:
        _print(out, zk_line)
    if state:
        how = "netbroker up --detach" if state.get("detached") else "netbroker up"
        stale = (
            not any_running
            and _supervisor_alive(state) is None
            and recorded_zookeeper(state) is None
        )
        _print(
            out,
            f"started {state.get('started', '?')} by {how}"
            + ("; none of what it started is running" if stale else ""),
        )
    if missing:
        _print(
            err,
            f"netbroker: {len(missing)} of {len(plans)} brokers not answering: "
            + ", ".join(missing),
        )
    problems = [
        line
        for line in cluster_problems(plans, statuses)
        if not any(line.startswith(f"{name}: ") for name in missing)
    ]
    bridges_down = [line for line in problems if ": bridge " in line]
    others = [line for line in problems if ": bridge " not in line]
    if others:
        _print(err, "netbroker: " + "; ".join(others))
    if bridges_down:
        _print(
            err,
            f"netbroker: {len(bridges_down)} bridge{'s' if len(bridges_down) != 1 else ''}"
            " not up: " + "; ".join(_bridge_problem(line) for line in bridges_down),
        )
    return 1 if missing or problems else 0


def _bridge_problem(line: str) -> str:
    """`a: bridge static:h:1 backoff: why` as status says it: `a: static:h:1 backoff (why)`."""
    name, _, rest = line.partition(": bridge ")
    label_state, sep, why = rest.partition(": ")
    return f"{name}: {label_state}" + (f" ({why})" if sep else "")


def down(
    topology: Topology,
    *,
    timeout: float = DEFAULT_STOP_TIMEOUT,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    cwd: Path | None = None,
) -> int:
    """Stop what a previous `up` recorded: its brokers, then its embedded ZooKeeper; remove
    its state file."""
    spath = state_path(topology, cwd)
    state = read_state(spath)
    if state is None:
        _print(
            err,
            f"netbroker: nothing to stop: no {display_path(spath, cwd)} "
            "(brokers started by `netbroker up` are recorded there)",
        )
        return 0
    plans = plan(topology, cwd=cwd, pick_port=lambda: 0)
    sup = _supervisor_alive(state)
    if sup is not None:
        # A foreground `up` is running elsewhere: let it stop its brokers in order.
        with contextlib.suppress(ProcessLookupError):
            os.kill(sup, signal.SIGTERM)
        deadline = time.monotonic() + timeout + 10.0
        while pid_alive(sup) and time.monotonic() < deadline:
            time.sleep(0.05)
        _print(out, f"stopped netbroker up (pid {sup})")
    procs = adopted(plans, state)
    stop(procs, timeout=timeout, report=lambda m: _print(err, "netbroker: " + m))
    left = [p for p in procs if p.alive()]
    if left:
        raise UpError("could not stop " + ", ".join(f"{p.name} (pid {p.pid})" for p in left))
    for p in procs:
        _print(out, f"stopped {p.name} (pid {p.pid})")
    zk_pid = stop_recorded_zookeeper(state, timeout=timeout)
    if zk_pid is not None:
        if pid_alive(zk_pid):
            raise UpError(f"could not stop zookeeper (pid {zk_pid})")
        _print(out, f"stopped zookeeper (pid {zk_pid})")
    if not procs and sup is None and zk_pid is None:
        _print(out, "nothing was running")
    spath.unlink(missing_ok=True)
    return 0
