"""The state file, DATA/netbroker-up.json: what `up` started (brokers, embedded
ZooKeeper, the supervising `up` itself), read back by `status`, `down` and the next `up`.

Written atomically and private to its owner (command lines may carry a securityToken).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from broker.cluster.errors import UpError
from broker.cluster.managed import ManagedProcess, pid_matches, recorded_start
from broker.cluster.model import BrokerSpec, Topology
from broker.cluster.paths import display_path
from broker.cluster.plan import LOG_FILE, BrokerPlan
from broker.cluster.processes import BrokerProcess

STATE_FILE = "netbroker-up.json"


def state_path(topology: Topology, cwd: Path | None = None) -> Path:
    return topology.data_root(cwd).absolute() / STATE_FILE


def write_state(
    path: Path,
    topology: Topology,
    procs: Sequence[BrokerProcess],
    *,
    detached: bool,
    cwd: Path,
    zookeeper: dict[str, Any] | None = None,
) -> None:
    """Record what runs, atomically (a reader never sees half a file).

    `cwd`: where `up` ran, which the file's relative paths (certificates, users) are
    relative to, for `status`, `restart` and `down` run from elsewhere.
    `zookeeper`: the embedded ZooKeeper `up` started (`zookeeper_entry`), stopped last.
    The file is private to its owner: command lines may carry a securityToken.
    """
    state = {
        "topology": str(Path(topology.source).absolute()),
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "detached": detached,
        "cwd": str(cwd),
        "supervisor": None if detached else ManagedProcess.of(os.getpid()).record(),
        "brokers": [
            {
                "name": p.name,
                "group": p.plan.group,
                "pid": p.pid,
                "create_time": p.process.started,
                "address": p.address or p.plan.address,
                "argv": list(p.plan.argv),
                "log": str(p.plan.log_path),
            }
            for p in procs
        ],
        "zookeeper": zookeeper,
    }
    _write(path, state)


def _write(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise UpError(f"cannot read {display_path(path)}: {e.strerror or e}") from None
    try:
        state = json.loads(text)
        if not isinstance(state, dict) or not isinstance(state.get("brokers"), list):
            raise ValueError("not a netbroker state file")
        for b in state["brokers"]:
            if not isinstance(b.get("name"), str) or not isinstance(b.get("pid"), int):
                raise ValueError("broker entry without name or pid")
        zk = state.get("zookeeper")
        if zk is not None and not (isinstance(zk, dict) and isinstance(zk.get("pid"), int)):
            raise ValueError("zookeeper entry without pid")
    except (ValueError, AttributeError) as e:
        raise UpError(
            f"{display_path(path)} is damaged ({e}); stop its brokers (and ZooKeeper) by "
            "hand and remove it"
        ) from None
    return state


def recorded(plans: Sequence[BrokerPlan], b: dict[str, Any]) -> BrokerProcess:
    """The BrokerProcess a state file's broker entry names (alive or not): its recorded
    command line, pid and start time, with the topology's plan where it still has one."""
    by_name = {p.name: p for p in plans}
    argv = tuple(str(a) for a in b.get("argv") or ())
    known = by_name.get(b["name"])
    if known is not None:
        spec, data_dir, log_path = known.spec, known.data_dir, known.log_path
    else:
        _, _, port = str(b.get("address", "")).rpartition(":")
        spec = BrokerSpec(
            name=b["name"],
            group=str(b.get("group", "?")),
            port=int(port) if port.isdigit() else 0,
        )
        log_path = Path(str(b.get("log", LOG_FILE)))
        data_dir = log_path.parent
    return BrokerProcess(
        plan=BrokerPlan(
            spec, data_dir, log_path, argv or (known.argv if known else ()),
            election=known.election if known else None,
        ),
        process=ManagedProcess(b["pid"], argv or (known.argv if known else ()),
                               recorded_start(b)),
    )  # fmt: skip


def adopted(plans: Sequence[BrokerPlan], state: dict[str, Any]) -> list[BrokerProcess]:
    """BrokerProcesses for the state file's brokers that are still running.

    The start time and command line recorded at start must match, so a reused pid is never
    signalled.
    A broker since removed from the topology is still found: what was started is stopped.
    """
    return [proc for b in state["brokers"] if (proc := recorded(plans, b)).alive()]


def record_restart(path: Path, name: str, proc: BrokerProcess) -> None:
    """A broker of a running cluster was started again: its new pid in the state file."""
    state = read_state(path)
    if state is None:
        return
    for b in state["brokers"]:
        if b["name"] == name:
            b["pid"] = proc.pid
            b["create_time"] = proc.process.started
    _write(path, state)


def supervisor_alive(state: dict[str, Any]) -> int | None:
    sup = state.get("supervisor")
    if not isinstance(sup, dict) or not isinstance(sup.get("pid"), int):
        return None
    pid = sup["pid"]
    if pid == os.getpid():
        return None
    return pid if pid_matches(pid, sup.get("argv"), recorded_start(sup)) else None

