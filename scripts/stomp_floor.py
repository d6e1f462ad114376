"""What stomp.py itself can do on this machine: the STOMP benchmark's clients against a
server that costs nothing (scripts/benchkit/stomp_null.py, in a process of its own).

    .venv/bin/python scripts/stomp_floor.py [--count 20000] [--subscribers 10]

Prints, for the same clients as scripts/bench_stomp.py: SENDs a second (a receipt on the
last), MESSAGEs a second consumed with `ack:auto` and with `ack:client-individual` (an
ACK each), and deliveries a second to `--subscribers` consumers at once. A broker's
figure with these clients cannot exceed these: they bound it from the client's side.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.benchkit.stats import each_and_median
from scripts.benchkit.workers import Worker, exit_on_sigterm, stop_workers
from tests.support.procs import ROOT, free_port

MODULE = "scripts.benchkit.stomp_clients"


def null_server(port: int, size: int, push: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.benchkit.stomp_null", "--port", str(port),
         "--size", str(size), "--push", str(push)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise SystemExit("the null STOMP server did not start")
    return proc


def main() -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--subscribers", type=int, default=10)
    args = parser.parse_args()
    print(f"stomp.py against a server that does nothing, {args.size}-byte bodies:", flush=True)
    rates: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="netbroker-stomp-floor-") as tmp:
        try:
            for _ in range(args.repeats):
                port = free_port()
                server = null_server(port, args.size, args.count)
                try:
                    common = ["--port", str(port), "--queue", "q", "--size", str(args.size)]
                    sent = Worker(
                        "produce", *common, "--count", str(args.count), log_dir=Path(tmp),
                        module=MODULE,
                    ).result()  # fmt: skip
                    rates.setdefault("produce", []).append(sent["rate"])
                    for ack in ("auto", "client-individual"):
                        got = Worker(
                            "consume", *common, "--count", str(args.count), "--ack", ack,
                            "--linger", "0", log_dir=Path(tmp), module=MODULE,
                        ).result()  # fmt: skip
                        rates.setdefault(f"consume ack:{ack}", []).append(got["rate"])
                finally:
                    server.kill()
                    server.wait()
                # Each of the subscribers gets its share, pushed by a server of its own.
                each = max(1, args.count // args.subscribers)
                port = free_port()
                server = null_server(port, args.size, each)
                try:
                    common = ["--port", str(port), "--queue", "q", "--size", str(args.size)]
                    more = ["--count", str(each), "--linger", "0"]
                    consumers = [
                        Worker("consume", *common, *more, log_dir=Path(tmp), module=MODULE)
                        for _ in range(args.subscribers)
                    ]
                    results = [c.result() for c in consumers]
                    first = min(r["last_s"] - r["seconds"] for r in results)
                    last = max(r["last_s"] for r in results)
                    total = sum(r["deliveries"] for r in results)
                    rates.setdefault(f"{args.subscribers} consumers at once", []).append(
                        total / (last - first) if last > first else 0.0
                    )
                finally:
                    server.kill()
                    server.wait()
        finally:
            stop_workers()
    for what, values in rates.items():
        unit = "deliveries/s" if "at once" in what else "msg/s"
        print(f"  {what}: {each_and_median(values)} {unit}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
