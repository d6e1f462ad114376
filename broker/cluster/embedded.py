"""A topology's embedded ZooKeeper: started for `up`, recorded in the state file, found
and stopped again by `status` and `down`."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from broker.cluster.errors import UpError
from broker.cluster.model import Topology
from broker.cluster.processes import (
    DEFAULT_STOP_TIMEOUT,
    cmdline,
    pid_alive,
    pid_matches,
    signal_leader,
)
from broker.cluster.zookeeper import Ensemble, ZooKeeperError


def start_zookeeper(
    topology: Topology, *, cwd: Path | None, detach: bool, timeout: float
) -> Ensemble:
    """Start the embedded ZooKeeper: one server in DATA/zookeeper, on `zookeeper_port` or a
    free port of 127.0.0.1, serving when this returns.

    In the foreground it dies with this process (parent-death signal); detached it
    outlives it, recorded in the state file for `down`.
    """
    assert topology.zookeeper is not None and topology.zookeeper.embedded
    ensemble = Ensemble(
        topology.zookeeper_dir(cwd).absolute(),
        size=1,
        client_port=topology.zookeeper.port or 0,
        die_with_parent=not detach,
        # ZooKeeper starts before the brokers: it must not take a port one of them needs.
        avoid_ports={
            port for b in topology.brokers for port in (b.port, b.replication_port) if port
        },
    )
    try:
        ensemble.start(timeout=max(timeout, 1.0))
    except ZooKeeperError as e:
        raise UpError(f"embedded ZooKeeper: {e}") from None
    return ensemble


def zookeeper_entry(ensemble: Ensemble) -> dict[str, Any]:
    """What the state file records of an embedded ZooKeeper."""
    server = ensemble[0]
    pid = server.pid
    assert pid is not None
    return {
        "pid": pid,
        "argv": cmdline(pid),
        "connect_string": ensemble.connect_string,
        "dir": str(server.node_dir),
        "log": str(server.log_path),
    }


def recorded_zookeeper(state: dict[str, Any] | None) -> int | None:
    """The pid of the embedded ZooKeeper a state file records, if it still runs."""
    entry = state.get("zookeeper") if state else None
    if not entry:
        return None
    pid = entry["pid"]
    return pid if pid_matches(pid, entry.get("argv")) else None


def stop_recorded_zookeeper(
    state: dict[str, Any], *, timeout: float = DEFAULT_STOP_TIMEOUT
) -> int | None:
    """Stop the state file's embedded ZooKeeper (SIGTERM, then SIGKILL); its pid or None."""
    pid = recorded_zookeeper(state)
    if pid is None:
        return None

    def send(sig: int) -> None:
        if pid_matches(pid, state["zookeeper"].get("argv")):
            signal_leader(pid, sig)

    send(signal.SIGTERM)
    send(signal.SIGCONT)  # a stopped JVM would never act on the SIGTERM
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        send(signal.SIGKILL)
        end = time.monotonic() + 5.0
        while pid_alive(pid) and time.monotonic() < end:
            time.sleep(0.05)
    return pid
