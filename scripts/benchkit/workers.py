"""Starting the client worker processes from a benchmark, and stopping all it started.

A `Worker` is one `python -m scripts.benchkit.clients ROLE ...` process: its JSON lines are
read by a thread, so the benchmark waits for "ready", events or the result with deadlines.
Every worker and broker a benchmark starts is stopped when it ends, also on Ctrl-C and
SIGTERM (`exit_on_sigterm` turns that into SystemExit, so `finally` blocks run).
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[2]

_running: set[Worker] = set()


def exit_on_sigterm() -> None:
    """Turn SIGTERM (a timeout, a CI stop) into SystemExit, so `finally` stops the brokers
    and workers this benchmark started instead of leaving them running."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


class WorkerFailed(RuntimeError):
    """A worker exited without a result, or did not answer in time."""


class Worker:
    """One client process of a benchmark, by role (see scripts/benchkit/clients.py)."""

    def __init__(
        self, role: str, *args: str, log_dir: Path, name: str | None = None,
        module: str = "scripts.benchkit.clients",
    ) -> None:  # fmt: skip
        self.name = name or role
        self.log_path = log_dir / f"worker-{self.name}-{time.monotonic_ns()}.log"
        cmd = [sys.executable, "-m", module, role, *args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                text=True, start_new_session=True,  # Ctrl-C reaches the benchmark; it stops us
            )  # fmt: skip
        _running.add(self)
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        self.ready_line: dict[str, Any] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def _next(self, deadline: float, what: str) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise WorkerFailed(f"{self.name}: no {what} in time\n{self.log()}") from None
        if line is None:
            self.proc.wait()
            raise WorkerFailed(
                f"{self.name} exited with {self.proc.returncode} before its {what}\n{self.log()}"
            )
        return line

    def ready(self, timeout: float = 60.0) -> Self:
        """Once it is connected (a consumer: subscribed); its ready line in `ready_line`."""
        deadline = time.monotonic() + timeout
        while not (line := self._next(deadline, "ready line")).get("ready"):
            self.events.append(line)
        self.ready_line = line
        return self

    def event(self, timeout: float) -> dict[str, Any] | None:
        """The next event line within `timeout` seconds, or None."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if line is None or "result" in line:
            self.lines.put(line)  # for `result`
            return None
        self.events.append(line)
        return line

    def tell(self, **message: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def result(self, timeout: float = 300.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while "result" not in (line := self._next(deadline, "result")):
            if "ready" not in line:
                self.events.append(line)
        result: dict[str, Any] = line["result"]
        self.stop()
        return result

    def log(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Close its stdin (it exits at that) and wait; kill it if it does not go."""
        _running.discard(self)
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def stop_workers() -> None:
    """Stop every worker still running (for a benchmark's `finally`)."""
    for worker in list(_running):
        worker.proc.kill()
        worker.stop()
