"""Cycle guard: every module of the packages imports on its own, in a fresh interpreter.

An import cycle can pass unnoticed while some other module happens to be imported first
(the test suite, the CLI); it breaks for whoever imports the modules in another order.
Importing each module first, alone, in its own interpreter catches that. The
interpreters run side by side so that the guard stays quick.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("broker", "netconnector", "discovery", "masterslave")
# Running it is its whole point: importing it would run the CLI (it imports broker.cli,
# which is checked on its own).
SKIP = {"broker.__main__"}


def modules() -> list[str]:
    """Every module and package of PACKAGES, found on disk (nothing is imported here)."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join(parts)
            if name not in SKIP:
                found.append(name)
    return found


def import_alone(module: str) -> str | None:
    """None if `module` imports in a fresh interpreter, else what went wrong."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", f"import {module}"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        return f"{module}: import did not finish within 60 s"
    if done.returncode == 0:
        return None
    tail = "\n".join(done.stderr.strip().splitlines()[-6:])
    return f"{module}: exit {done.returncode}\n{tail}"


def test_the_module_list_covers_the_packages() -> None:
    found = modules()
    wanted = {"broker.core.broker", "netconnector.network", "discovery.service"}
    wanted.add("masterslave.group")
    assert wanted <= set(found)
    assert "broker.pb.client_pb2_grpc" in found


def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    found = modules()
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        failures = [f for f in pool.map(import_alone, found) if f is not None]
    assert not failures, "\n\n".join(failures)
