"""A topology's embedded ZooKeeper: started for `up`, recorded in the state file, found
and stopped again by `status` and `down`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from broker.cluster.errors import UpError
from broker.cluster.managed import DEFAULT_STOP_TIMEOUT, ManagedProcess
from broker.cluster.model import Topology
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
        avoid_ports={port for b in topology.brokers for port in b.ports.values()},
    )
    try:
        ensemble.start(timeout=max(timeout, 1.0))
    except ZooKeeperError as e:
        raise UpError(f"embedded ZooKeeper: {e}") from None
    return ensemble


def zookeeper_entry(ensemble: Ensemble) -> dict[str, Any]:
    """What the state file records of an embedded ZooKeeper: the process (pid, start time,
    command line) as the brokers' entries record theirs, and where it serves and logs."""
    server = ensemble[0]
    assert server.process is not None
    return {
        **server.process.record(),
        "connect_string": ensemble.connect_string,
        "dir": str(server.node_dir),
        "log": str(server.log_path),
    }


def recorded_zookeeper(state: dict[str, Any] | None) -> int | None:
    """The pid of the embedded ZooKeeper a state file records, if it still runs."""
    entry = state.get("zookeeper") if state else None
    if not entry:
        return None
    process = ManagedProcess.adopt(entry)
    return process.pid if process.alive() else None


def stop_recorded_zookeeper(
    state: dict[str, Any], *, timeout: float = DEFAULT_STOP_TIMEOUT
) -> int | None:
    """Stop the state file's embedded ZooKeeper (SIGTERM, then SIGKILL); its pid or None."""
    if recorded_zookeeper(state) is None:
        return None
    process = ManagedProcess.adopt(state["zookeeper"])
    process.stop(timeout)
    return process.pid
