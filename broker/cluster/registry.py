"""Where each topology's `up` keeps its state, by the topology file's identity.

A topology's data directory is relative to the directory `up` runs from (as every path
on a command line is), so the state file of `up topologies/ab_c.yaml` run from the
clone is not where `status` run from elsewhere looks. This registry, one small file per
topology file (keyed by its real path) in the user's state directory, says where the
state of that file's running cluster is and from which directory it was started, so
`status` and `down` find it from anywhere. A lock held by the `up` that is starting (or
supervising) the cluster makes a second `up` of the same file fail at once, naming the
first, instead of both starting brokers on the same ports and data.

The directory is `$NETBROKER_STATE_HOME`, else `$XDG_STATE_HOME/netbroker`, else
`~/.local/state/netbroker`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from broker import invocation
from broker.cluster.errors import UpError


def registry_dir() -> Path:
    explicit = os.environ.get("NETBROKER_STATE_HOME")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "netbroker"


def _key(source: str) -> str:
    real = os.path.realpath(source)
    return hashlib.sha256(real.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Entry:
    """Where a topology file's cluster keeps its state, and the directory it runs from."""

    topology: str
    state: Path
    cwd: Path


def record(source: str, state: Path, cwd: Path) -> None:
    """Note where the cluster of `source` keeps its state (atomically; best effort: a
    registry that cannot be written only costs finding it from another directory)."""
    directory = registry_dir()
    entry = {"topology": os.path.realpath(source), "state": str(state), "cwd": str(cwd)}
    with contextlib.suppress(OSError):
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{_key(source)}.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(entry) + "\n")
        os.replace(tmp, path)


def lookup(source: str) -> Entry | None:
    """The entry of `source`, if one was recorded and can be read."""
    try:
        raw = json.loads((registry_dir() / f"{_key(source)}.json").read_text())
        return Entry(str(raw["topology"]), Path(raw["state"]), Path(raw["cwd"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def forget(source: str, state: Path) -> None:
    """Drop the entry of `source` if it still names `state`."""
    entry = lookup(source)
    if entry is not None and entry.state == state:
        with contextlib.suppress(OSError):
            (registry_dir() / f"{_key(source)}.json").unlink()


@contextlib.contextmanager
def up_lock(source: str, cwd: Path) -> Iterator[None]:
    """Held while one `up` of `source` starts or supervises its cluster; a second one
    raises UpError at once, naming the holder (its pid and directory)."""
    directory = registry_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / f"{_key(source)}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield  # no registry: no lock (the state file check still applies)
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            raise UpError(
                f"{source}: another `netbroker up` of this file is running ({holder}); "
                f"stop it first, or see `{invocation.command('status', source)}`"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, started from {cwd}".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
