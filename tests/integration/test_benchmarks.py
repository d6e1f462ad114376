"""The benchmarks in their short form: each script runs as a user runs it, with tiny counts.

Each must exit 0, print its figures and end with `lost 0 unmarked 0` (the scripts count
every message of every run and exit 1 on a loss or an unmarked repeat). SIGTERM must stop
every broker and client process a benchmark started.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]

SHORT = {
    "bench.py": (
        ["--count", "300", "--sync-count", "200", "--repeats", "1", "--seconds", "1"],
        ["persistent produce", "non-persistent consume", "broker CPU per message, persistent",
         "one acked persistent send at a time", "RTT p50", "latency persistent at 500 msg/s",
         "latency non-persistent at 1,000 msg/s",
         "broker CPU per message, steady 1,000 msg/s persistent"],
    ),
    "bench_network.py": (
        ["--count", "300", "--repeats", "1", "--seconds", "1"],
        ["one broker's consume rate", "forwarded a -> b", "forwarding / one broker",
         "backlog on a drained to b", "latency a -> b"],
    ),
    "bench_failover.py": (
        ["--rounds", "1", "--load-seconds", "1", "--count", "300"],
        ["round 1:", "1 kills: median", "master changed", "quorum_mem is"],
    ),
    "bench_metrics.py": (
        ["--count", "3000", "--repeats", "1"],
        ["scraped every 1 s: produce", "median produce:"],
    ),
    "bench_backlog.py": (
        ["--count", "500", "--take", "200"],
        ["kill -9 and restart", "consumed 200 from the backlog",
         "next delivered: yes, yes"],
    ),
    "bench_stomp.py": (
        ["--count", "300", "--repeats", "1", "--seconds", "1", "--subscribers", "3",
         "--fan-count", "300"],
        ["persistent produce (300 SENDs", "topic fan-out, 1 publisher -> 3 subscribers",
         "persistent consume ack:auto",
         "persistent consume ack:client-individual", "non-persistent produce",
         "non-persistent consume ack:auto", "latency persistent at 1,000 msg/s",
         "latency non-persistent at 1,000 msg/s"],
    ),
}  # fmt: skip


def run(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.parametrize("script", sorted(SHORT))
def test_the_short_form_counts_no_loss_and_prints_its_figures(script: str) -> None:
    args, figures = SHORT[script]
    result = run(script, *args)
    out = result.stdout
    assert result.returncode == 0, f"{out}\n{result.stderr}"
    assert out.splitlines()[-1] == "lost 0 unmarked 0", out
    assert "counts (" in out, out
    for figure in figures:
        assert figure in out, f"{figure!r} missing from:\n{out}"


def test_sigterm_stops_every_process_the_benchmark_started() -> None:
    bench = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--count", "100000000"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        # The first run's broker and its producer process are up once there are two children.
        me = psutil.Process(bench.pid)
        deadline = time.monotonic() + 30
        while len(children := me.children(recursive=True)) < 2:
            assert time.monotonic() < deadline, "the benchmark started no broker and client"
            time.sleep(0.05)
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(30) == 143
        _, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, f"left running: {alive}"
    finally:
        bench.kill()
        bench.wait()
        assert bench.stdout is not None
        bench.stdout.close()


def test_the_stomp_client_floor_prints_what_stomp_py_can_do() -> None:
    """scripts/stomp_floor.py runs the benchmark's stomp.py clients against a server that
    does nothing (no broker, so nothing to count as lost): each figure is printed."""
    result = run("stomp_floor.py", "--count", "600", "--repeats", "1", "--subscribers", "3")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    for figure in ("produce:", "consume ack:auto:", "consume ack:client-individual:",
                   "3 consumers at once:"):  # fmt: skip
        assert figure in result.stdout, result.stdout
