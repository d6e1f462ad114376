"""A process we supervise (a broker, a ZooKeeper server): started in a session of its own,
known again by pid *and* start time, stopped with SIGTERM then SIGKILL to its group.

A pid alone names a process only until it exits: the kernel hands it out again. A state
file therefore records the start time (psutil's create_time) beside the pid and the
command line, and a process is "ours" only while all three still match; one that has
since exited is never signalled, whoever holds its pid now.

In the foreground a child gets a signal if its supervisor dies (the Linux parent-death
signal, set between fork and exec), so a killed supervisor leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

DEFAULT_STOP_TIMEOUT = 10.0
# How long after SIGKILL a process is waited for (it cannot refuse; it may be slow to go).
KILL_WAIT = 5.0
# create_time is the boot time plus the process's start in clock ticks; the boot time is
# derived from the wall clock, so two readings may differ by a clock adjustment. A reused
# pid would also need the same command line within this window to pass as ours.
CREATE_TIME_SLACK = 1.0
_POLL = 0.05


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def cmdline(pid: int) -> list[str] | None:
    """A process's argv, or None where it cannot be read (gone, a zombie, not ours)."""
    proc = _process(pid)
    if proc is None:
        return None
    try:
        return proc.cmdline() or None
    except psutil.Error:
        return None


def create_time(pid: int) -> float | None:
    """When `pid` started (seconds since the epoch), or None if it is gone."""
    proc = _process(pid)
    if proc is None:
        return None
    try:
        return proc.create_time()
    except psutil.Error:
        return None


def pid_alive(pid: int) -> bool:
    """Whether pid is a running process (a zombie is not: it has exited, unreaped)."""
    if pid <= 0:
        return False
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def pid_matches(pid: int, argv: Sequence[str] | None, started: float | None = None) -> bool:
    """Whether pid is alive and still the process we started (pids get reused): its start
    time (when known) and its command line (when given and readable) are those recorded."""
    if not pid_alive(pid):
        return False
    if started is not None:
        now = create_time(pid)
        if now is not None and abs(now - started) > CREATE_TIME_SLACK:
            return False
    if not argv:
        return True
    current = cmdline(pid)
    return current is None or current == list(argv)


def signal_leader(pid: int, sig: int) -> None:
    """Signal the process group `pid` leads (its children too), else `pid` alone; nothing
    if it is gone or not ours to signal."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def parent_death_preexec(sig: int) -> Callable[[], None] | None:
    """A preexec_fn giving the child `sig` when this process dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    parent = os.getpid()

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sig)
        if os.getppid() != parent:  # the supervisor died between fork and prctl
            os.kill(os.getpid(), sig)

    return preexec


def recorded_start(record: Mapping[str, Any]) -> float | None:
    """A record's create_time; None in state files written before it was kept."""
    started = record.get("create_time")
    return float(started) if isinstance(started, int | float) else None


def _wait_exec(popen: subprocess.Popen[bytes], timeout: float = 1.0) -> None:
    """Until the child's command line reads as its own. Popen returns as the exec closes
    the child's descriptors, a moment before the kernel shows the new argv: read then,
    it is empty, and an empty command line cannot tell this process from another."""
    deadline = time.monotonic() + timeout
    while popen.poll() is None and not cmdline(popen.pid) and time.monotonic() < deadline:
        time.sleep(0.001)


@dataclass
class ManagedProcess:
    """One supervised process: our child (`popen`) or adopted from a record (pid only)."""

    pid: int
    argv: tuple[str, ...] = ()
    started: float | None = None  # create_time; None in records written before it was kept
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        *,
        stdout: IO[bytes] | int | None = None,
        stderr: IO[bytes] | int | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        die_with_parent: int | None = None,
    ) -> ManagedProcess:
        """Start `argv` in a session of its own (the terminal's Ctrl-C reaches only the
        supervisor, which then stops its children in order), no stdin; with
        `die_with_parent` the child gets that signal when this process dies.

        Raises OSError if it cannot be started."""
        popen = subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=None if env is None else dict(env),
            start_new_session=True,
            preexec_fn=None if die_with_parent is None else parent_death_preexec(die_with_parent),
        )
        _wait_exec(popen)
        return cls(popen.pid, tuple(argv), create_time(popen.pid), popen)

    @classmethod
    def of(cls, pid: int) -> ManagedProcess:
        """The process running as `pid` now (e.g. this one, for a state file)."""
        return cls(pid, tuple(cmdline(pid) or ()), create_time(pid))

    @classmethod
    def adopt(cls, record: Mapping[str, Any]) -> ManagedProcess:
        """The process a `record()` describes (`pid`, optional `argv` and `create_time`)."""
        return cls(
            pid=int(record["pid"]),
            argv=tuple(str(a) for a in record.get("argv") or ()),
            started=recorded_start(record),
        )

    def record(self) -> dict[str, Any]:
        """What a state file keeps to find this process again: pid, start time and the
        command line as the system shows it now (what a later `alive()` compares)."""
        argv = cmdline(self.pid) if self.alive() else None
        return {"pid": self.pid, "create_time": self.started, "argv": argv or list(self.argv)}

    def alive(self) -> bool:
        """Running and ours: our child not yet exited, or an adopted one whose start time
        and command line still match."""
        if self.popen is not None:
            return self.popen.poll() is None
        return pid_matches(self.pid, self.argv, self.started)

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode if self.popen is not None else None

    def signal(self, sig: int) -> None:
        """Signal the process group (it leads its own session); nothing once it has exited,
        for then its pid may belong to someone else."""
        if self.alive():
            signal_leader(self.pid, sig)

    def wait_gone(self, timeout: float | None) -> bool:
        """Wait up to `timeout` s (None: as long as it takes) for the process to exit,
        reaping our child; True if it is gone."""
        if self.popen is not None:
            try:
                self.popen.wait(None if timeout is None else max(timeout, 0.0))
            except subprocess.TimeoutExpired:
                return False
            return True
        end = None if timeout is None else time.monotonic() + timeout
        while self.alive():
            if end is not None and time.monotonic() >= end:
                return False
            time.sleep(_POLL)
        return True

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` s; the exit code (our child) or None."""
        stop_all([self], timeout=timeout)
        return self.returncode


def stop_all(
    procs: Sequence[ManagedProcess],
    *,
    timeout: float = DEFAULT_STOP_TIMEOUT,
    kill_now: threading.Event | None = None,
    on_kill: Callable[[ManagedProcess], None] | None = None,
) -> None:
    """SIGTERM every live process at once, wait up to `timeout` (or until `kill_now`),
    then SIGKILL what is left (`on_kill` first says which) and wait until it is gone."""
    alive = [p for p in procs if p.alive()]
    for p in alive:
        p.signal(signal.SIGTERM)
        p.signal(signal.SIGCONT)  # a stopped process would never act on the SIGTERM
    deadline = time.monotonic() + timeout
    while alive:
        alive = [p for p in alive if p.alive()]
        if not alive or time.monotonic() >= deadline or (kill_now and kill_now.is_set()):
            break
        time.sleep(_POLL)
    for p in alive:
        if on_kill:
            on_kill(p)
        p.signal(signal.SIGKILL)
    end = time.monotonic() + KILL_WAIT
    for p in alive:
        p.wait_gone(end - time.monotonic())
    for p in procs:  # reap children that exited on their own
        p.wait_gone(0)
