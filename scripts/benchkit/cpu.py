"""CPU time a process has used, from /proc/<pid>/stat (user + system, all its threads)."""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` so far, in seconds (10 ms steps at the usual 100 Hz)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _TICKS


class CpuWindow:
    """CPU a process spends between `start()` and `stop()`."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self._start: float | None = None
        self.seconds: float | None = None

    def start(self) -> None:
        if self.pid is not None:
            self._start = cpu_seconds(self.pid)

    def stop(self) -> float | None:
        if self.pid is not None and self._start is not None:
            self.seconds = cpu_seconds(self.pid) - self._start
        return self.seconds
