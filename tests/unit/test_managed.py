"""Managed processes: a recorded process is ours only while its pid, start time and command
line match; stop is SIGTERM, then SIGKILL for what ignores it."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from broker.cluster.managed import ManagedProcess, pid_alive, stop_all

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)",
]


@pytest.fixture
def started() -> Iterator[list[ManagedProcess]]:
    procs: list[ManagedProcess] = []
    yield procs
    stop_all(procs, timeout=0.5)


def test_a_record_finds_the_same_process_again(started: list[ManagedProcess]) -> None:
    proc = ManagedProcess.start(SLEEPER)
    started.append(proc)
    assert proc.started is not None and proc.alive()
    again = ManagedProcess.adopt(proc.record())
    assert again.pid == proc.pid and again.popen is None
    assert again.alive()


def test_a_recycled_pid_is_not_ours(started: list[ManagedProcess]) -> None:
    proc = ManagedProcess.start(SLEEPER)
    started.append(proc)
    record = proc.record()
    assert record["create_time"] is not None
    # The same pid and command line, but a process that started at another time.
    impostor = ManagedProcess.adopt({**record, "create_time": record["create_time"] - 3600})
    assert not impostor.alive()
    impostor.signal(signal.SIGKILL)  # not ours: nothing is sent
    assert proc.alive()
    other_argv = ManagedProcess.adopt({**record, "argv": ["something", "else"]})
    assert not other_argv.alive()


def test_a_record_without_start_time_falls_back_to_the_command_line(
    started: list[ManagedProcess],
) -> None:
    proc = ManagedProcess.start(SLEEPER)
    started.append(proc)
    assert ManagedProcess.adopt({"pid": proc.pid, "argv": SLEEPER}).alive()


def test_stop_terms_then_kills_what_ignores_it(started: list[ManagedProcess]) -> None:
    polite = ManagedProcess.start(SLEEPER)
    stubborn = ManagedProcess.start(STUBBORN, stdout=subprocess.PIPE)
    started += [polite, stubborn]
    assert stubborn.popen is not None and stubborn.popen.stdout is not None
    assert stubborn.popen.stdout.readline() == b"ready\n"
    killed: list[int] = []
    stop_all([polite, stubborn], timeout=0.5, on_kill=lambda p: killed.append(p.pid))
    assert killed == [stubborn.pid]
    assert polite.returncode == -signal.SIGTERM
    assert stubborn.returncode == -signal.SIGKILL
    assert not pid_alive(polite.pid) and not pid_alive(stubborn.pid)


def test_an_adopted_process_is_stopped_too(started: list[ManagedProcess]) -> None:
    proc = ManagedProcess.start(SLEEPER)
    started.append(proc)
    adopted = ManagedProcess.adopt(proc.record())
    adopted.stop(timeout=5.0)
    assert proc.popen is not None
    assert proc.popen.wait(5) == -signal.SIGTERM
