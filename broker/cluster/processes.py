"""Broker processes: started in sessions of their own with their output in their logs,
recognised again by pid and command line, stopped with SIGTERM then SIGKILL.

In the foreground a broker gets SIGTERM if its supervisor dies (Linux parent-death
signal), so a killed `up` leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from broker.cluster.errors import UpError
from broker.cluster.paths import display_path
from broker.cluster.plan import BrokerPlan

READY_RE = re.compile(
    r"^netbroker: broker (?P<name>\S+) listening on (?P<address>\S+)\s*$", re.MULTILINE
)
DEFAULT_STOP_TIMEOUT = 10.0


TAIL_LINES = 15


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


def with_tail(message: str, proc: BrokerProcess) -> str:
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


def signal_leader(pid: int, sig: int) -> None:
    """Signal the process group `pid` leads (its children too), else `pid` alone; nothing
    if it is gone or not ours to signal."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
