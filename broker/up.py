"""`netbroker up`, `status` and `down`: every broker of a topology as a supervised process.

Each broker runs as `python -m broker broker --name N --port P --data DATA/N --group G
--connector URI ...`, in a session of its own, with its stdout and stderr appended to
`DATA/N/broker.log`. It is ready when that log shows its `netbroker: broker N listening on
HOST:PORT` line (or its Admin.Status answers under its name). The cluster is up when every
broker is ready and every bridge its connectors open reports "up" in Admin.Status; `up`
waits for both within one deadline and prints the table only then.

* Foreground (`up FILE`): the brokers also get SIGTERM if the supervisor dies (Linux
  parent-death signal), so a killed `up` leaves nothing behind. Ctrl-C, SIGTERM or SIGHUP
  stop every broker: SIGTERM, up to 10 s, then SIGKILL. A second Ctrl-C kills at once.
* Detached (`up FILE --detach`): the brokers outlive the command. Their pids and
  command lines go to `DATA/netbroker-up.json`, which `status` and `down` read; a
  foreground `up` writes the same file (with its own pid) so `status` works beside it.

The pieces (planning, starting, waiting, stopping, the state file) are separate functions
over plain data so that tests can drive them with a stand-in broker command.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, unquote

from broker.topology import BrokerSpec, Connector, GroupSpec, Topology

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
    bridges: tuple[str, ...] = ()

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
    """The group's connectors that brokers run today (multicast waits for discovery)."""
    return [c for c in group.connectors if c.spec is None or c.spec.kind != "multicast"]


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


def expected_bridges(group: GroupSpec) -> list[str]:
    """Every bridge each broker of `group` must report "up" before the cluster is up."""
    return [label for c in runnable_connectors(group) for label in bridge_labels(c)]


def broker_argv(
    group: GroupSpec, broker: BrokerSpec, data_dir: Path, command: Sequence[str]
) -> list[str]:
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
    if sync in LOCAL_SYNC:
        argv += ["--sync", sync]
    for connector in runnable_connectors(group):
        argv += ["--connector", connector_argument(connector)]
    return argv


def plan(
    topology: Topology, *, cwd: Path | None = None, command: Sequence[str] | None = None
) -> list[BrokerPlan]:
    """One BrokerPlan per broker, in file order; data dirs are absolute."""
    root = topology.data_root(cwd).absolute()
    cmd = list(command) if command is not None else broker_command()
    plans = []
    for group in topology.groups:
        for spec in group.brokers:
            data_dir = root / spec.name
            plans.append(
                BrokerPlan(
                    spec=spec,
                    data_dir=data_dir,
                    log_path=data_dir / LOG_FILE,
                    argv=tuple(broker_argv(group, spec, data_dir, cmd)),
                    bridges=tuple(expected_bridges(group)),
                )
            )
    return plans


def not_yet_supported(topology: Topology) -> list[str]:
    """Settings the file has that `up` does not act on yet (they arrive with later work).

    Said out loud at start, so nobody takes two standalone brokers for a master/slave pair.
    """
    notes = []
    if topology.zookeeper is not None:
        notes.append("zookeeper")
    for g in topology.groups:
        where = f"groups.{g.name}"
        if len(g.brokers) > 1:
            notes.append(f"{where} as a master/slave group (its brokers run standalone)")
        for key in ("election", "replicas", "min_insync", "zk_path"):
            if getattr(g, key) is not None:
                notes.append(f"{where}.{'zkPath' if key == 'zk_path' else key}")
        if g.sync is not None and g.sync not in LOCAL_SYNC:
            notes.append(f"{where}.sync={g.sync}")
        for i, c in enumerate(g.connectors):
            if c.spec is not None and c.spec.kind == "multicast":
                notes.append(f"{where}.connectors[{i}] ({c.uri}: discovery is not wired yet)")
        for b in g.brokers:
            if b.replication_port is not None:
                notes.append(f"{where}.brokers.{b.name}.replication_port")
            if b.weight is not None:
                notes.append(f"{where}.brokers.{b.name}.weight")
    return notes


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
    package_root = str(Path(__file__).resolve().parent.parent)
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
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(self.pid) == self.pid:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)

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


def wait_bridges(
    procs: Sequence[BrokerProcess],
    probe: AdminProbe,
    *,
    deadline: float,
    timeout: float,
    stop_requested: threading.Event | None = None,
    poll_interval: float = 0.1,
) -> dict[str, BrokerStatus | None]:
    """Return every broker's status once all answer and all their bridges are up.

    Brokers must already be ready (`wait_ready`). By `deadline` (monotonic time; `timeout`
    is only for the message) raise UpError naming each broker or bridge not up, with the
    bridge's last error. A broker that exits meanwhile fails at once, with its log.
    """
    stop_requested = stop_requested or threading.Event()
    while True:
        for p in procs:
            if not p.alive():
                raise UpError(
                    _with_tail(
                        f"broker {p.name} {p.describe_exit()} while its bridges were coming up", p
                    )
                )
        statuses = {
            p.name: probe.status(p.address or p.plan.address, expect_up=True) for p in procs
        }
        problems = _not_up(procs, statuses)
        if not problems:
            return statuses
        if time.monotonic() >= deadline:
            raise UpError(
                "\n".join(
                    [
                        f"not every bridge was up within {timeout:g} s:",
                        *("    " + line for line in problems),
                    ]
                )
            )
        if stop_requested.wait(poll_interval):
            raise Interrupted()


def _not_up(procs: Sequence[BrokerProcess], statuses: dict[str, BrokerStatus | None]) -> list[str]:
    """One line per broker not answering and per bridge not up, with its last error."""
    lines = []
    for p in procs:
        st = statuses.get(p.name)
        if st is None:
            lines.append(f"{p.name}: not answering Admin.Status at {p.address or p.plan.address}")
            continue
        for b in bridges_of(p.plan.bridges, st):
            if b.state != "up":
                lines.append(
                    f"{p.name}: bridge {b.label} {b.state}" + (f": {b.error}" if b.error else "")
                )
    return lines


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

    def status(self, address: str, *, expect_up: bool = False) -> BrokerStatus | None:
        """The broker's status, or None if it does not answer in time.

        `expect_up`: the broker is known to listen, so wait out a reconnect backoff left
        from earlier failed probes instead of failing fast.
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
        )
        try:
            qs = stub.ListQueues(admin_pb2.ListQueuesRequest(), timeout=self.timeout).queues
        except grpc.RpcError:
            return base  # e.g. a slave refusing; the role still says what it is
        return BrokerStatus(
            name=base.name,
            role=base.role,
            address=base.address,
            components=components,
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

    `bridges` are the broker's expected bridge names; their states are listed compactly.
    """
    if st is None:
        return f"{name} ({group}): not answering"
    parts = [f"{name} ({group}): {st.role}"]
    if st.queues is not None:
        parts.append(
            f"{st.queues} queue{'s' if st.queues != 1 else ''}, depth {st.depth}, "
            f"in flight {st.in_flight}, consumers {st.consumers}"
        )
    if bridges:
        parts.append("bridges " + " ".join(bridge_brief(b) for b in bridges_of(bridges, st)))
    return ", ".join(parts)


TABLE_HEADERS = ("broker", "group", "role", "client", "pid", "state", "depth", "bridges")


def table_rows(
    plan: BrokerPlan, pid: int | None, state: str, st: BrokerStatus | None
) -> list[tuple[object, ...]]:
    """A broker's rows in the cluster table: one, plus one per further bridge."""
    answering = st is not None and st.name == plan.name
    cells = [bridge_cell(b) for b in bridges_of(plan.bridges, st if answering else None)]
    if not cells:
        cells = ["-" if not plan.bridges or not answering else "none"]
    depth = st.depth if answering and st is not None and st.queues is not None else None
    first: tuple[object, ...] = (
        plan.name,
        plan.group,
        st.role if answering and st is not None else "-",
        plan.address,
        pid,
        state,
        depth,
        cells[0],
    )
    blank = ("",) * (len(TABLE_HEADERS) - 1)
    return [first, *((*blank, cell) for cell in cells[1:])]


# ------------------------------------------------------------------------- state file


def state_path(topology: Topology, cwd: Path | None = None) -> Path:
    return topology.data_root(cwd).absolute() / STATE_FILE


def write_state(
    path: Path, topology: Topology, procs: Sequence[BrokerProcess], *, detached: bool
) -> None:
    """Record what runs, atomically (a reader never sees half a file)."""
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
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
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
    except (ValueError, AttributeError) as e:
        raise UpError(
            f"{display_path(path)} is damaged ({e}); stop its brokers by hand and remove it"
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
            plan=BrokerPlan(spec, data_dir, log_path, argv or (known.argv if known else ())),
            pid=b["pid"],
        )
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
    """Start a topology's brokers; in the foreground, supervise them until told to stop."""
    plans = plan(topology, cwd=cwd, command=command)
    spath = state_path(topology, cwd)
    state = read_state(spath)
    if state is not None:
        running = adopted(plans, state)
        sup = _supervisor_alive(state)
        if running or sup:
            who = ", ".join(f"{p.name} (pid {p.pid})" for p in running) or f"pid {sup}"
            raise UpError(
                f"{topology.source}: already running: {who}; "
                f"see `netbroker status {topology.source}`, stop with "
                f"`netbroker down {topology.source}`"
            )
        spath.unlink(missing_ok=True)  # stale: everything it names has gone

    notes = not_yet_supported(topology)
    if notes:
        _print(
            err,
            "netbroker: note: not acted on yet, each broker runs standalone: " + ", ".join(notes),
        )
    data = display_path(topology.data_root(cwd).absolute(), cwd)
    n = len(plans)
    _print(
        err,
        f"netbroker: starting {n} broker{'s' if n != 1 else ''} from "
        f"{topology.source}; logs in {data}/<broker>/{LOG_FILE}",
    )

    stop_requested = threading.Event()
    kill_now = threading.Event()
    probe = AdminProbe(timeout=3.0)
    procs: list[BrokerProcess] = []
    wrote_state = False
    with _stop_signals(stop_requested, kill_now):
        try:
            # One deadline for the whole start: brokers ready, then every bridge up.
            deadline = time.monotonic() + timeout
            procs = start(plans, detach=detach)
            wait_ready(procs, timeout=timeout, stop_requested=stop_requested, probe=probe)
            n_bridges = sum(len(p.bridges) for p in plans)
            if n_bridges:
                _print(
                    err,
                    f"netbroker: brokers ready; waiting for {n_bridges} "
                    f"bridge{'s' if n_bridges != 1 else ''}",
                )
            statuses = wait_bridges(
                procs, probe, deadline=deadline, timeout=timeout, stop_requested=stop_requested
            )
            rows = [row for p in procs for row in table_rows(p.plan, p.pid, "up", statuses[p.name])]
            _print(out, format_table(TABLE_HEADERS, rows))
            write_state(spath, topology, procs, detached=detach)
            wrote_state = True
            if detach:
                _print(
                    err,
                    f"netbroker: running detached; `netbroker status {topology.source}`"
                    f" shows them, `netbroker down {topology.source}` stops them",
                )
                procs = []  # leave them running
                return 0
            _print(err, "netbroker: running; Ctrl-C stops every broker")
            return _supervise(procs, stop_requested, probe, interval, out, err)
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
            if wrote_state and not detach:
                spath.unlink(missing_ok=True)


def _supervise(
    procs: Sequence[BrokerProcess],
    stop_requested: threading.Event,
    probe: AdminProbe,
    interval: float,
    out: TextIO,
    err: TextIO,
) -> int:
    """Report every `interval` s and any broker that exits, until a stop is requested."""
    exited: set[str] = set()
    next_report = time.monotonic() + interval
    while not stop_requested.wait(0.2):
        for p in procs:
            if p.name not in exited and not p.alive():
                exited.add(p.name)
                _print(err, "netbroker: " + _with_tail(f"broker {p.name} {p.describe_exit()}", p))
        if len(exited) == len(procs):
            _print(err, "netbroker: every broker has exited")
            return 1
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
    prints (role, client address, pid, queue depth, bridges). Exits 1 if a broker does not
    answer or a bridge is not up, naming them on stderr."""
    plans = plan(topology, cwd=cwd)
    state = read_state(state_path(topology, cwd))
    recorded = {b["name"]: b for b in state["brokers"]} if state else {}
    probe = AdminProbe(timeout=timeout)
    rows: list[tuple[object, ...]] = []
    missing = []
    bridges_down = []
    any_running = False
    try:
        for p in plans:
            st = probe.status(p.address)
            entry = recorded.get(p.name)
            pid = entry["pid"] if entry else None
            running = pid is not None and pid_matches(pid, entry.get("argv"))
            any_running = any_running or running
            if st is not None and st.name == p.name:
                health = "up"
                bridges_down += [
                    f"{p.name}: {b.label} {b.state}" + (f" ({b.error})" if b.error else "")
                    for b in bridges_of(p.bridges, st)
                    if b.state != "up"
                ]
            elif st is not None:
                health = f"port answers as broker {st.name!r}"
                missing.append(p.name)
            elif running:
                health = "running, not answering"
                missing.append(p.name)
            else:
                health = "down"
                missing.append(p.name)
            rows += table_rows(p, pid if running else None, health, st)
    finally:
        probe.close()
    _print(out, format_table(TABLE_HEADERS, rows))
    if state:
        how = "netbroker up --detach" if state.get("detached") else "netbroker up"
        stale = not any_running and _supervisor_alive(state) is None
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
    if bridges_down:
        _print(
            err,
            f"netbroker: {len(bridges_down)} bridge{'s' if len(bridges_down) != 1 else ''}"
            " not up: " + "; ".join(bridges_down),
        )
    return 1 if missing or bridges_down else 0


def down(
    topology: Topology,
    *,
    timeout: float = DEFAULT_STOP_TIMEOUT,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    cwd: Path | None = None,
) -> int:
    """Stop the brokers a previous `up` recorded; remove its state file."""
    plans = plan(topology, cwd=cwd)
    spath = state_path(topology, cwd)
    state = read_state(spath)
    if state is None:
        _print(
            err,
            f"netbroker: nothing to stop: no {display_path(spath, cwd)} "
            "(brokers started by `netbroker up` are recorded there)",
        )
        return 0
    sup = _supervisor_alive(state)
    if sup is not None:
        # A foreground `up` is running elsewhere: let it stop its brokers in order.
        with contextlib.suppress(ProcessLookupError):
            os.kill(sup, signal.SIGTERM)
        deadline = time.monotonic() + timeout + 5.0
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
    if not procs and sup is None:
        _print(out, "nothing was running")
    spath.unlink(missing_ok=True)
    return 0
