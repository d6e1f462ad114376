"""Broker processes: started in sessions of their own with their output in their logs,
recognised again by pid, start time and command line, stopped with SIGTERM then SIGKILL
(broker.cluster.managed does the process work for brokers and ZooKeeper alike).

In the foreground a broker gets SIGTERM if its supervisor dies (Linux parent-death
signal), so a killed `up` leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from broker.cluster.errors import UpError
from broker.cluster.managed import (
    DEFAULT_STOP_TIMEOUT,
    ManagedProcess,
    cmdline,
    pid_alive,
    stop_all,
)
from broker.cluster.paths import display_path
from broker.cluster.plan import BrokerPlan

# cmdline and pid_alive are re-exported: tests find them here, beside the broker processes.
__all__ = [
    "READY_RE",
    "BrokerProcess",
    "cmdline",
    "pid_alive",
    "spawn",
    "start",
    "stop",
    "with_tail",
]

READY_RE = re.compile(
    r"^netbroker: broker (?P<name>\S+) listening on (?P<address>\S+)\s*$", re.MULTILINE
)


TAIL_LINES = 15


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
    """A started broker: ours (a child) or adopted from a state file (pid only)."""

    plan: BrokerPlan
    process: ManagedProcess
    log_offset: int = 0
    address: str | None = None
    _scan_pos: int = field(default=-1, repr=False)
    _partial: bytes = field(default=b"", repr=False)

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.alive()

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

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
        self.process.signal(sig)

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
            process = ManagedProcess.start(
                plan.argv,
                stdout=log,
                stderr=log,
                env=_child_env(),
                # Detached brokers survive logout and their `up`.
                die_with_parent=None if detach else signal.SIGTERM,
            )
        except OSError as e:
            raise UpError(
                f"broker {plan.name}: cannot start {plan.argv[0]}: {e.strerror or e}"
            ) from None
    return BrokerProcess(plan=plan, process=process, log_offset=offset)


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
    by_process = {id(p.process): p for p in procs}

    def killing(process: ManagedProcess) -> None:
        if report:
            p = by_process[id(process)]
            report(f"broker {p.name} (pid {p.pid}) did not stop within {timeout:g} s; killing it")

    stop_all([p.process for p in procs], timeout=timeout, kill_now=kill_now, on_kill=killing)
