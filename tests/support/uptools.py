"""`netbroker up` helpers for tests: shipped topologies rewritten into tmp_path with free
ports (`relocated`, a fixture registered by conftest), running the CLI, reading its tables.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.cluster.processes import cmdline, pid_alive
from broker.cluster.zookeeper import free_ports
from tests.support.procs import ROOT

TOPOLOGIES = ROOT / "topologies"
# `netbroker up`'s own start deadline; bridges retry at most 1 s apart, so this is slack.
UP_TIMEOUT = 40.0


@dataclass(frozen=True)
class Relocated:
    """A shipped topology rewritten for a test: its file, data root and broker ports."""

    path: Path
    data: Path
    ports: dict[str, int]

    def url(self, broker: str) -> str:
        return f"127.0.0.1:{self.ports[broker]}"


def relocate(source: Path, into: Path, overrides: dict[str, Any] | None = None) -> Relocated:
    """Load a topology file and write a copy into `into` with fresh ports and data dir.

    Every `port` and `replication_port` gets a free port, and so does a fixed
    `zookeeper_port`; connector URIs that name a remapped port as `host:port` are rewritten
    to match (names need nothing: they resolve to the new ports). `overrides` maps group
    names to replacement connector lists, for tests that break a shipped file on purpose.
    """
    raw = yaml.safe_load(source.read_text())
    brokers = [
        (group, name, spec)
        for group, g in raw["groups"].items()
        for name, spec in g["brokers"].items()
    ]
    keys = [
        (spec, key)
        for _, _, spec in brokers
        for key in ("port", "replication_port", "stomp_port", "metrics_port", "bridge_port")
        if key in spec
    ]
    keys += [(raw, "zookeeper_port")] if "zookeeper_port" in raw else []
    fresh = free_ports(len(keys))
    remap = {}
    for (spec, key), port in zip(keys, fresh, strict=True):
        remap[spec[key]] = port
        spec[key] = port

    def rewrite(uri: str) -> str:
        return re.sub(r"(?<=:)(\d+)(?=[,)?]|$)", lambda m: str(remap.get(int(m[1]), m[1])), uri)

    for name, g in raw["groups"].items():
        if overrides and name in overrides:
            g["connectors"] = overrides[name]
        for c in g.get("connectors", []):
            c["uri"] = rewrite(c["uri"])
    data = into / "run" / source.stem
    raw["data"] = str(data)
    # No web console unless a test asks for one (--console-port): a test's `up` never
    # takes the default port 8161 of an operator's console.
    raw.setdefault("console_port", 0)
    path = into / source.name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return Relocated(path, data, {name: spec["port"] for _, name, spec in brokers})


def netbroker(*args: str, cwd: Path, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    """Run the netbroker command as an operator would, from `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "broker", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def broker_pids(data: Path) -> list[int]:
    """Live processes whose command line mentions `data` (our brokers, and only ours)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            argv = cmdline(int(entry.name)) or []
            if any(str(data) in a for a in argv) and pid_alive(int(entry.name)):
                pids.append(int(entry.name))
    return pids


@pytest.fixture
def relocated(tmp_path: Path) -> Iterator[Callable[..., Relocated]]:
    """Factory of relocated topologies; whatever they started is stopped afterwards."""
    made: list[Relocated] = []

    def make(name: str, overrides: dict[str, Any] | None = None) -> Relocated:
        r = relocate(TOPOLOGIES / name, tmp_path, overrides)
        made.append(r)
        return r

    yield make
    leftovers = []
    for r in made:
        netbroker("down", str(r.path), "--timeout", "5", cwd=tmp_path)
        for pid in broker_pids(r.data):
            leftovers.append(pid)
            os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes left running after `netbroker down`: {leftovers}"


def bridge_cells(table: str) -> list[str]:
    """The bridges column of a `netbroker up`/`status` table, one cell per bridge."""
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("broker "))
    start = header.index("bridges")
    return [
        line[start:]
        for line in lines[lines.index(header) + 1 :]
        if len(line) > start and not line.startswith("started ")
    ]


def columns(text: str, first: str) -> list[dict[str, str]]:
    """The rows of the table in `text` whose header starts with `first`, by column."""
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(first + " "))
    header = lines[i]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    rows = []
    for line in lines[i + 1 :]:
        if not line.strip():
            break
        bounds = [*starts[1:], None]
        rows.append({n: line[a:b].strip() for n, a, b in zip(names, starts, bounds, strict=True)})
    return rows


def assert_all_bridges_up(table: str, expected: int) -> list[str]:
    cells = bridge_cells(table)
    assert len(cells) == expected, table
    assert all(re.fullmatch(r"static:127\.0\.0\.1:\d+ \u2192 [a-z] up", c) for c in cells), table
    return cells


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


# ----------------------------------------------------------------------------- chain


class Lines:
    """A child's stdout read line by line in the background, for waits with deadlines."""

    def __init__(self, stream: object) -> None:
        self.q: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: object) -> None:
        for raw in stream:  # type: ignore[attr-defined]
            self.q.put(raw.decode(errors="replace").rstrip("\n"))
        self.q.put(None)

    def expect(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}; got {self.seen}") from None
            if line is None:
                raise AssertionError(f"output ended before {pattern!r}; got {self.seen}")
            self.seen.append(line)
            if m := re.search(pattern, line):
                return m
