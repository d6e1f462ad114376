"""Real broker processes for tests: started on free ports, always stopped."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class BrokerProcess:
    """One `netbroker broker` process; keeps its port across restarts."""

    def __init__(self, name: str, data_dir: Path, port: int = 0, args: tuple[str, ...] = ()):
        self.name = name
        self.data_dir = data_dir
        self.port = port
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{name}.log"

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> BrokerProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps writing to it
        cmd = [
            sys.executable, "-m", "broker", "broker",
            "--name", self.name, "--port", str(self.port), "--data", str(self.data_dir),
            *self.args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, start_new_session=True
        )
        log.close()
        line = self._read_line(timeout)
        self.port = int(line.rsplit(":", 1)[1])
        return self

    def _read_line(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.kill()
                    raise TimeoutError(f"broker {self.name} not ready in {timeout}s:\n{self.log()}")
                if selector.select(left):
                    chunk = os.read(self.proc.stdout.fileno(), 4096)
                    if not chunk:
                        self.proc.wait()
                        raise RuntimeError(
                            f"broker {self.name} exited with {self.proc.returncode}:\n{self.log()}"
                        )
                    buffer += chunk
        return buffer.split(b"\n", 1)[0].decode()

    def log(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def kill(self) -> None:
        """kill -9: a crash, not a shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def free_port() -> int:
    """A port nothing listens on now, for brokers that must know each other's ports: below
    the ephemeral range, so no outgoing connection takes it before the broker binds it."""
    from broker.ports import listen_port

    return listen_port()
