"""`netbroker up`, `status` and `down` as the command line runs them: a topology's brokers
(and its embedded ZooKeeper) as supervised processes.

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

The pieces are modules of their own over plain data (plan, processes, probe, readiness,
report, state, embedded) so that tests can drive them with a stand-in broker command;
this module only runs them in order.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from broker import invocation
from broker.cluster import registry
from broker.cluster.configs import metrics_port, write_configs
from broker.cluster.embedded import (
    recorded_zookeeper,
    start_zookeeper,
    stop_recorded_zookeeper,
    zookeeper_entry,
)
from broker.cluster.errors import Interrupted, UpError
from broker.cluster.managed import DEFAULT_STOP_TIMEOUT, pid_alive, pid_matches, recorded_start
from broker.cluster.model import Topology
from broker.cluster.paths import display_path
from broker.cluster.plan import LOG_FILE, BrokerPlan, ensure_certificates, plan, topology_ca
from broker.cluster.probe import AdminProbe, BrokerStatus
from broker.cluster.processes import BrokerProcess, spawn, start, stop
from broker.cluster.readiness import (
    DEFAULT_READY_TIMEOUT,
    ProblemKind,
    cluster_problems,
    problem_line,
    wait_cluster,
    wait_ready,
)
from broker.cluster.report import (
    bridge_problem,
    cluster_table,
    group_lines,
    metrics_line,
    print_line,
    status_line,
    waiting_for,
    zookeeper_line,
)
from broker.cluster.state import (
    adopted,
    read_state,
    record_restart,
    recorded,
    state_path,
    supervisor_alive,
    write_state,
)
from broker.cluster.supervise import supervise
from broker.cluster.zookeeper import Ensemble
from broker.credentials import environment_metadata

DEFAULT_INTERVAL = 5.0


class Sidecar(Protocol):
    """Something a foreground `up` runs beside its brokers (the web console): started
    before anything else, so a port it cannot have stops `up` early; closed first."""

    @property
    def url(self) -> str: ...
    def close(self) -> None: ...


# Starts a sidecar for the topology, or returns None when there is none to run. Passed in
# by the CLI: cluster operations do not import what the sidecar is made of (the client).
SidecarStarter = Callable[[Topology], Sidecar | None]


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
    sidecar: SidecarStarter | None = None,
) -> int:
    """Start a topology: its embedded ZooKeeper if it has one, then its brokers; in the
    foreground, supervise them until told to stop, then stop brokers, then ZooKeeper.
    `sidecar` (the web console) runs beside a foreground run."""
    spath = state_path(topology, cwd)
    with registry.up_lock(topology.source, _here(cwd)):
        _refuse_if_running(topology, spath, cwd=cwd, command=command)
        return _up(topology, spath, detach, timeout, interval, out, err, command, cwd, sidecar)


def _here(cwd: Path | None) -> Path:
    return (cwd if cwd is not None else Path.cwd()).absolute()


def _up(
    topology: Topology,
    spath: Path,
    detach: bool,
    timeout: float,
    interval: float,
    out: TextIO,
    err: TextIO,
    command: Sequence[str] | None,
    cwd: Path | None,
    sidecar: SidecarStarter | None = None,
) -> int:
    issued = ensure_certificates(topology, cwd)
    if issued:
        print_line(err, f"netbroker: created TLS certificates for {', '.join(issued)}")
    run = _UpRun(topology, spath, detach=detach, timeout=timeout, out=out, err=err,
                 command=command, cwd=cwd, sidecar=sidecar)  # fmt: skip
    with _stop_signals(run.stop_requested, run.kill_now):
        try:
            statuses = run.start()
            run.show(statuses)
            if detach:
                run.leave_running()
                return 0
            print_line(err, "netbroker: running; Ctrl-C stops every broker")
            return supervise(
                run.procs, run.stop_requested, run.probe, interval, out, err, statuses,
                run.restarted,
            )  # fmt: skip
        except Interrupted:
            print_line(err, "netbroker: interrupted while starting")
            return 130
        finally:
            run.close()


def _refuse_if_running(
    topology: Topology, spath: Path, *, cwd: Path | None, command: Sequence[str] | None
) -> None:
    """Raise UpError if what an earlier `up` recorded still runs (here, or from another
    directory); else drop its stale file."""
    elsewhere = registry.lookup(topology.source)
    if elsewhere is not None and elsewhere.state != spath.absolute():
        other = read_state(elsewhere.state)
        if other is not None and _still_running(topology, other, elsewhere.cwd):
            see, stop = (invocation.command(w, topology.source) for w in ("status", "down"))
            raise UpError(
                f"{topology.source}: already running, started from {elsewhere.cwd} (its "
                f"state is in {elsewhere.state}); see `{see}`, stop with `{stop}`"
            )
    state = read_state(spath)
    if state is None:
        return
    running = adopted(plan(topology, cwd=cwd, command=command, pick_port=lambda: 0), state)
    sup = supervisor_alive(state)
    zk_pid = recorded_zookeeper(state)
    if running or sup or zk_pid:
        who = ", ".join(f"{p.name} (pid {p.pid})" for p in running)
        if zk_pid:
            who = ", ".join(filter(None, [who, f"zookeeper (pid {zk_pid})"]))
        raise UpError(
            f"{topology.source}: already running: {who or f'pid {sup}'}; "
            f"see `{invocation.command('status', topology.source)}`, stop with "
            f"`{invocation.command('down', topology.source)}`"
        )
    spath.unlink(missing_ok=True)  # stale: everything it names has gone
    registry.forget(topology.source, spath.absolute())


def _still_running(topology: Topology, state: dict[str, Any], cwd: Path) -> bool:
    plans = plan(topology, cwd=cwd, pick_port=lambda: 0)
    return bool(adopted(plans, state) or supervisor_alive(state) or recorded_zookeeper(state))


def _locate(topology: Topology, cwd: Path | None, err: TextIO) -> tuple[Path, Path | None]:
    """The state file of the topology's cluster and the directory it runs from: here,
    or where the registry says an `up` from another directory keeps it."""
    spath = state_path(topology, cwd)
    if spath.exists():
        # An absolute `data:` finds the state from anywhere: the file's other relative
        # paths are still where `up` ran.
        state = read_state(spath)
        ran = state.get("cwd") if state else None
        return spath, Path(ran) if isinstance(ran, str) else cwd
    entry = registry.lookup(topology.source)
    if entry is None or not entry.state.exists():
        return spath, cwd
    print_line(err, f"netbroker: {topology.source} was started from {entry.cwd}")
    return entry.state, entry.cwd


class _UpRun:
    """One `up`: what it has started so far, each step of the start, and the stop of
    whatever is still ours at the end (`close`)."""

    def __init__(
        self,
        topology: Topology,
        spath: Path,
        *,
        detach: bool,
        timeout: float,
        out: TextIO,
        err: TextIO,
        command: Sequence[str] | None,
        cwd: Path | None,
        sidecar: SidecarStarter | None = None,
    ) -> None:
        self.topology = topology
        self.start_sidecar = None if detach else sidecar
        self.sidecar: Sidecar | None = None
        self.spath = spath
        self.detach = detach
        self.timeout = timeout
        self.out = out
        self.err = err
        self.command = command
        self.cwd = cwd
        self.stop_requested = threading.Event()
        self.kill_now = threading.Event()
        self.probe = AdminProbe(
            timeout=3.0, ca=topology_ca(topology, cwd), metadata=environment_metadata()
        )
        self.plans: list[BrokerPlan] = []
        self.procs: list[BrokerProcess] = []
        self.ensemble: Ensemble | None = None
        self.wrote_state = False

    def start(self) -> dict[str, BrokerStatus | None]:
        """The sidecar, ZooKeeper, then the brokers, then the wait for the cluster; every
        status."""
        if self.start_sidecar is not None:
            self.sidecar = self.start_sidecar(self.topology)
        zk_connect = self.start_zookeeper()
        # One deadline for the brokers' start: ready, groups elected, every bridge up.
        deadline = time.monotonic() + self.timeout
        self.start_brokers(zk_connect)
        wait_ready(
            self.procs, timeout=self.timeout, stop_requested=self.stop_requested, probe=self.probe
        )
        waits = waiting_for(self.plans)
        if waits:
            print_line(self.err, f"netbroker: brokers ready; waiting for {waits}")
        return wait_cluster(
            self.procs,
            self.probe,
            deadline=deadline,
            timeout=self.timeout,
            stop_requested=self.stop_requested,
        )

    def start_zookeeper(self) -> str | None:
        """The embedded ZooKeeper's connect string once it serves; None without one."""
        topology, cwd, err = self.topology, self.cwd, self.err
        zk = topology.zookeeper
        if not (topology.uses_zookeeper and zk is not None and zk.embedded):
            return None
        zk_dir = display_path(topology.zookeeper_dir(cwd).absolute(), cwd)
        print_line(err, f"netbroker: starting ZooKeeper (embedded) in {zk_dir}")
        self.ensemble = start_zookeeper(topology, cwd=cwd, detach=self.detach, timeout=self.timeout)
        zk_connect = self.ensemble.connect_string
        print_line(err, f"netbroker: ZooKeeper serving at {zk_connect}")
        if self.stop_requested.is_set():
            raise Interrupted()
        return zk_connect

    def start_brokers(self, zk_connect: str | None) -> None:
        topology, cwd = self.topology, self.cwd
        self.plans = plan(
            topology, cwd=cwd, command=self.command, zookeeper=zk_connect, configs=True
        )
        data = display_path(topology.data_root(cwd).absolute(), cwd)
        n = len(topology.brokers)
        print_line(
            self.err,
            f"netbroker: starting {n} broker{'s' if n != 1 else ''} from "
            f"{topology.source}; logs in {data}/<broker>/{LOG_FILE}",
        )
        write_configs(self.plans, cwd)
        self.procs = start(self.plans, detach=self.detach)

    def show(self, statuses: Mapping[str, BrokerStatus | None]) -> None:
        """Record the run in the state file, then print the table, groups and ZooKeeper."""
        ensemble, out = self.ensemble, self.out
        zk_state = zookeeper_entry(ensemble) if ensemble is not None else None
        # Recorded before the table appears, so `status` works once it has.
        write_state(self.spath, self.topology, self.procs, detached=self.detach,
                    cwd=_here(self.cwd), zookeeper=zk_state)  # fmt: skip
        self.wrote_state = True
        registry.record(self.topology.source, self.spath.absolute(), _here(self.cwd))
        print_line(out, cluster_table(self.plans, {p.name: p.pid for p in self.procs}, statuses))
        for line in group_lines(self.plans, statuses):
            print_line(out, line)
        stomp = [
            f"{p.spec.name} at {p.spec.host}:{p.spec.stomp_port}"
            for p in self.plans
            if p.spec.stomp_port
        ]
        if stomp:
            print_line(out, f"stomp: {', '.join(stomp)}")
        metrics = metrics_line(self.plans, {p.name: p.metrics_port for p in self.plans})
        if metrics:
            print_line(out, metrics)
        if self.sidecar is not None:
            print_line(out, f"console: {self.sidecar.url}")
        if ensemble is not None and zk_state is not None:
            print_line(
                out, f"zookeeper: embedded at {ensemble.connect_string}, pid {zk_state['pid']}"
            )
        elif external := zookeeper_line(self.topology, None, probe=False):
            print_line(out, external)

    def restarted(self, name: str) -> BrokerProcess | None:
        """The process `netbroker restart` recorded for broker `name`, if it runs."""
        try:
            state = read_state(self.spath)
        except UpError:
            return None
        for b in state["brokers"] if state else ():
            if b["name"] == name:
                proc = recorded(self.plans, b)
                return proc if proc.alive() else None
        return None

    def leave_running(self) -> None:
        """Detached: the brokers and ZooKeeper outlive this command."""
        source = self.topology.source
        print_line(
            self.err,
            f"netbroker: running detached; `{invocation.command('status', source)}`"
            f" shows them, `{invocation.command('down', source)}` stops them",
        )
        self.procs = []  # leave them running
        if self.ensemble is not None:
            for server in self.ensemble:
                server.release()  # not stopped at this interpreter's exit
            self.ensemble = None

    def close(self) -> None:
        """Stop the brokers still ours, then ZooKeeper; a foreground run's state file goes."""
        err = self.err
        if self.sidecar is not None:
            self.sidecar.close()
            self.sidecar = None
        self.probe.close()
        if self.procs:
            live = [p for p in self.procs if p.alive()]
            if live:
                print_line(err, "netbroker: stopping " + ", ".join(p.name for p in live))
            stop(
                self.procs,
                kill_now=self.kill_now,
                report=lambda m: print_line(err, "netbroker: " + m),
            )
            if live:
                print_line(err, "netbroker: stopped")
        if self.ensemble is not None:
            # Last: members close their ZooKeeper sessions as they stop.
            if any(server.alive for server in self.ensemble):
                print_line(err, "netbroker: stopping ZooKeeper")
            self.ensemble.stop(timeout=2.0 if self.kill_now.is_set() else 5.0)
        if self.wrote_state and not self.detach:
            self.spath.unlink(missing_ok=True)
            registry.forget(self.topology.source, self.spath.absolute())


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
    spath, cwd = _locate(topology, cwd, err)
    state = read_state(spath)
    zk_connect = None
    if state and state.get("zookeeper"):
        zk_connect = str(state["zookeeper"].get("connect_string", ""))
    plans = plan(topology, cwd=cwd, zookeeper=zk_connect, pick_port=lambda: 0)
    seen = _look(plans, state, timeout, _status_ca(topology, cwd))
    print_line(out, cluster_table(plans, seen.pids, seen.statuses, seen.health))
    for line in group_lines(plans, seen.statuses):
        print_line(out, line)
    metrics = metrics_line(plans, {p.name: metrics_port(p) for p in plans})
    if metrics:
        print_line(out, metrics)
    zk_line = zookeeper_line(topology, state, probe=True)
    if zk_line:
        print_line(out, zk_line)
    if state:
        print_line(out, _started_line(state, seen.any_running))
    return 1 if _tell_problems(err, plans, seen) else 0


@dataclass
class _Seen:
    """What `status` found of each broker: its status, its recorded pid if that still
    runs, and its state cell ("up" or what is wrong)."""

    statuses: dict[str, BrokerStatus | None] = field(default_factory=dict)
    pids: dict[str, int | None] = field(default_factory=dict)
    health: dict[str, str] = field(default_factory=dict)
    any_running: bool = False

    @property
    def missing(self) -> list[str]:
        """The brokers not answering under their own name, in plan order."""
        return [name for name, health in self.health.items() if health != "up"]


def _status_ca(topology: Topology, cwd: Path | None) -> bytes | None:
    # Not created by `status`: a cluster without its certificates is not running.
    try:
        return topology_ca(topology, cwd)
    except UpError:
        return None


def _look(
    plans: Sequence[BrokerPlan], state: dict[str, Any] | None, timeout: float, ca: bytes | None
) -> _Seen:
    """Ask every broker for its status and check the pids the state file records."""
    recorded = {b["name"]: b for b in state["brokers"]} if state else {}
    probe = AdminProbe(timeout=timeout, ca=ca, metadata=environment_metadata())
    seen = _Seen()
    try:
        for p in plans:
            st = probe.status(p.address)
            seen.statuses[p.name] = st
            entry = recorded.get(p.name)
            pid = entry["pid"] if entry else None
            running = (
                entry is not None
                and pid is not None
                and pid_matches(pid, entry.get("argv"), recorded_start(entry))
            )
            seen.any_running = seen.any_running or running
            seen.pids[p.name] = pid if running else None
            seen.health[p.name] = _health(p, st, running)
    finally:
        probe.close()
    return seen


def _health(p: BrokerPlan, st: BrokerStatus | None, running: bool) -> str:
    """A broker's state cell in `status`'s table."""
    if st is not None and st.name == p.name:
        return "up"
    if st is not None:
        return f"port answers as broker {st.name!r}"
    return "running, not answering" if running else "down"


def _started_line(state: dict[str, Any], any_running: bool) -> str:
    """When and how the recorded run was started, and whether any of it still runs."""
    how = invocation.command("up", *(["--detach"] if state.get("detached") else []))
    stale = (
        not any_running and supervisor_alive(state) is None and recorded_zookeeper(state) is None
    )
    return f"started {state.get('started', '?')} by {how}" + (
        "; none of what it started is running" if stale else ""
    )


def _tell_problems(err: TextIO, plans: Sequence[BrokerPlan], seen: _Seen) -> bool:
    """Name on `err` the brokers not answering, then group and bridge problems; whether
    there were any."""
    missing = seen.missing
    if missing:
        print_line(
            err,
            f"netbroker: {len(missing)} of {len(plans)} brokers not answering: "
            + ", ".join(missing),
        )
    problems = [p for p in cluster_problems(plans, seen.statuses) if p.broker not in missing]
    bridges_down = [p for p in problems if p.kind is ProblemKind.BRIDGE_DOWN]
    others = [problem_line(p) for p in problems if p.kind is not ProblemKind.BRIDGE_DOWN]
    if others:
        print_line(err, "netbroker: " + "; ".join(others))
    if bridges_down:
        print_line(
            err,
            f"netbroker: {len(bridges_down)} bridge{'s' if len(bridges_down) != 1 else ''}"
            " not up: " + "; ".join(bridge_problem(p) for p in bridges_down),
        )
    return bool(missing or problems)


def restart(
    topology: Topology,
    name: str,
    *,
    timeout: float = DEFAULT_READY_TIMEOUT,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    cwd: Path | None = None,
) -> int:
    """Start one broker of a running cluster again (after a crash, a `kill -9`), with the
    command line `up` started it with; a foreground `up` adopts it. Waits until it is
    ready and prints its status line."""
    spath, cwd = _locate(topology, cwd, err)
    state = read_state(spath)
    if state is None:
        raise UpError(
            f"{topology.source}: not running (no {display_path(spath, cwd)}); start it "
            f"with `{invocation.command('up', topology.source)}`"
        )
    entries = {b["name"]: b for b in state["brokers"]}
    if name not in entries:
        raise UpError(
            f"{topology.source}: no broker {name!r} was started by `up` (brokers: "
            f"{', '.join(entries)})"
        )
    plans = plan(topology, cwd=cwd, pick_port=lambda: 0)
    old = recorded(plans, entries[name])
    if old.alive():
        see = invocation.command("status", topology.source)
        raise UpError(f"broker {name} is running (pid {old.pid}); `{see}` shows it")
    # Detached: it must outlive this command (a foreground `up` adopts it).
    proc = spawn(old.plan, detach=True)
    try:
        wait_ready([proc], timeout=timeout)
    except BaseException:
        stop([proc])
        raise
    record_restart(spath, name, proc)
    probe = AdminProbe(
        timeout=2.0, ca=topology_ca(topology, cwd), metadata=environment_metadata()
    )
    try:
        st = probe.status(proc.ready_address() or old.plan.address, expect_up=True)
    finally:
        probe.close()
    print_line(out, f"restarted {name} (pid {proc.pid})")
    print_line(out, status_line(name, old.plan.group, st))
    return 0


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
    spath, cwd = _locate(topology, cwd, err)
    state = read_state(spath)
    if state is None:
        print_line(
            err,
            f"netbroker: nothing to stop: no {display_path(spath, cwd)} "
            f"(brokers started by `{invocation.command('up')}` are recorded there)",
        )
        return 0
    plans = plan(topology, cwd=cwd, pick_port=lambda: 0)
    sup = supervisor_alive(state)
    if sup is not None:
        # A foreground `up` is running elsewhere: let it stop its brokers in order.
        with contextlib.suppress(ProcessLookupError):
            os.kill(sup, signal.SIGTERM)
        deadline = time.monotonic() + timeout + 10.0
        while pid_alive(sup) and time.monotonic() < deadline:
            time.sleep(0.05)
        print_line(out, f"stopped netbroker up (pid {sup})")
    procs = adopted(plans, state)
    stop(procs, timeout=timeout, report=lambda m: print_line(err, "netbroker: " + m))
    left = [p for p in procs if p.alive()]
    if left:
        raise UpError("could not stop " + ", ".join(f"{p.name} (pid {p.pid})" for p in left))
    for p in procs:
        print_line(out, f"stopped {p.name} (pid {p.pid})")
    zk_pid = stop_recorded_zookeeper(state, timeout=timeout)
    if zk_pid is not None:
        if pid_alive(zk_pid):
            raise UpError(f"could not stop zookeeper (pid {zk_pid})")
        print_line(out, f"stopped zookeeper (pid {zk_pid})")
    if not procs and sup is None and zk_pid is None:
        print_line(out, "nothing was running")
    spath.unlink(missing_ok=True)
    registry.forget(topology.source, spath.absolute())
    return 0
