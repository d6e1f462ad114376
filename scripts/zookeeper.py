"""Run Apache ZooKeeper (Debian's `zookeeper` package) by hand, for development.

    .venv/bin/python scripts/zookeeper.py start                   # standalone, foreground
    .venv/bin/python scripts/zookeeper.py start --ensemble 3      # three nodes
    .venv/bin/python scripts/zookeeper.py start --port 2181 --data /tmp/zk
    .venv/bin/python scripts/zookeeper.py start --data /tmp/zk --detach
    .venv/bin/python scripts/zookeeper.py stop --data /tmp/zk
    .venv/bin/python scripts/zookeeper.py bench [--runs 5]        # startup and failover times

`start` prints the connect string (`127.0.0.1:P1,...`) on stdout once every server serves;
in the foreground it then runs until Ctrl-C, SIGTERM or SIGHUP and stops the servers.
Without `--data` the servers run in a temporary directory (removed afterwards in the
foreground; printed with `--detach`, since `stop` needs it). `--detach` leaves them running,
recorded in DIR/zookeeper.json, which `stop --data DIR` reads. Logs: DIR/zookeeper.log for
a standalone server, DIR/zkN/zookeeper.log for ensemble node N.

Errors are one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.cluster.zookeeper import Ensemble, ZooKeeperError, read_state, stop_detached


class Stop(Exception):
    """SIGTERM or SIGHUP: leave the wait loop and stop the servers like Ctrl-C does."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def info(message: str) -> None:
    print(f"zookeeper: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def data_dir(given: Path | None, keep: bool) -> Iterator[Path]:
    """`given`, or a fresh temporary directory, removed afterwards unless `keep` or on an
    error (the error names a log file in it)."""
    if given is not None:
        yield given
        return
    path = Path(tempfile.mkdtemp(prefix="netbroker-zk-"))
    failed = False
    try:
        yield path
    except ZooKeeperError:
        failed = True
        raise
    finally:
        if not (keep or failed):
            shutil.rmtree(path, ignore_errors=True)


def start(args: argparse.Namespace) -> int:
    with data_dir(args.data, keep=args.detach) as path:
        zk = Ensemble(
            path, size=args.ensemble, client_port=args.port, die_with_parent=not args.detach
        )
        began = time.monotonic()
        zk.start(timeout=args.timeout)
        kind = "standalone server" if args.ensemble == 1 else f"ensemble of {args.ensemble}"
        info(f"{kind} ready in {time.monotonic() - began:.2f} s, data in {path}")
        if args.detach:
            state = zk.detach()
            info(f"detached (pids {' '.join(map(str, zk.pids))}, state in {state})")
            info(f"stop with: {sys.argv[0]} stop --data {path}")
            print(zk.connect_string, flush=True)
            return 0
        print(zk.connect_string, flush=True)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _raise_stop)
        reported: set[int] = set()
        try:
            while True:
                time.sleep(0.5)
                for server in zk:
                    if not server.alive and server.myid not in reported:
                        reported.add(server.myid)
                        info(f"server {server.myid} exited; see {server.log_path}")
                if len(reported) == len(zk.servers):
                    return 1
        except (KeyboardInterrupt, Stop):
            info("stopping")
            return 0
        finally:
            zk.stop()


def stop(args: argparse.Namespace) -> int:
    connect = read_state(args.data).get("connect_string", "?")
    pids = stop_detached(args.data, timeout=args.timeout)
    info(f"stopped {connect} (pids {' '.join(map(str, pids)) or 'none left running'})")
    return 0


def bench(args: argparse.Namespace) -> int:
    """Median startup and re-election times over `runs` fresh servers."""
    standalone: list[float] = []
    ensemble: list[float] = []
    reelect: list[float] = []
    with tempfile.TemporaryDirectory(prefix="netbroker-zk-bench-") as tmp:
        for run in range(args.runs):
            began = time.monotonic()
            with Ensemble(Path(tmp) / f"standalone{run}").start(timeout=args.timeout):
                standalone.append(time.monotonic() - began)
            began = time.monotonic()
            with Ensemble(Path(tmp) / f"ensemble{run}", size=3).start(timeout=args.timeout) as zk:
                ensemble.append(time.monotonic() - began)
                old = zk.wait_leader()
                began = time.monotonic()
                zk.kill(old)
                zk.wait_leader(timeout=args.timeout, exclude=old)
                reelect.append(time.monotonic() - began)

    def show(name: str, values: list[float]) -> None:
        print(
            f"{name:34} median {statistics.median(values):5.2f} s"
            f"  (min {min(values):.2f}, max {max(values):.2f}, {len(values)} runs)"
        )

    show("standalone start to serving", standalone)
    show("3-node ensemble start to serving", ensemble)
    show("kill -9 of leader to new leader", reelect)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("start", help="start a standalone server or an ensemble")
    p.add_argument("--ensemble", type=int, default=1, metavar="N", help="servers (default 1)")
    p.add_argument("--data", type=Path, help="data directory (default: a temporary one)")
    p.add_argument("--port", type=int, default=0, help="first client port (default: free)")
    p.add_argument("--detach", action="store_true", help="leave running; stop with `stop`")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to become ready")
    p.set_defaults(run=start)
    p = commands.add_parser("stop", help="stop servers started with --detach")
    p.add_argument("--data", type=Path, required=True, help="the data directory of `start`")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds before SIGKILL")
    p.set_defaults(run=stop)
    p = commands.add_parser("bench", help="measure startup and leader re-election times")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(run=bench)
    args = parser.parse_args(argv)
    if getattr(args, "ensemble", 1) < 1:
        parser.error("--ensemble must be at least 1")
    try:
        return int(args.run(args))
    except ZooKeeperError as exc:
        # The first line says what and where; the log tails below it are for the log file.
        print(f"zookeeper: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"zookeeper: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
