"""What the stack itself costs for one message, with no broker in the way.

    .venv/bin/python scripts/stack_floor.py [--count 3000] [--dir DIR]

Two figures bound what a single acknowledged send can cost on this machine:

* one RocksDB write of 1 KiB followed by `flush_wal(sync=True)`, the fsync a
  `local_disk` send waits for (in DIR: put it on the disk the broker's data lives on);
* one round trip of 1 KiB over a grpc.aio bidirectional stream, one message in flight,
  to an echo server in a process of its own: its latency, and the CPU it costs each side.

A broker's acknowledged send is at least the two added up: that is the floor the
figures of `scripts/bench.py` compare with. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from rocksdict import Options, Rdict

METHOD = "/floor.Echo/Echo"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def fsync_floor(directory: Path, count: int) -> tuple[list[float], float]:
    """Milliseconds of each put + synced WAL flush, and CPU µs per one."""
    with tempfile.TemporaryDirectory(dir=directory, prefix="netbroker-floor-") as tmp:
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        db = Rdict(tmp, options)
        body = os.urandom(1024)
        samples: list[float] = []
        start_cpu = time.thread_time()
        for i in range(count):
            started = time.perf_counter_ns()
            db[i.to_bytes(8, "big")] = body
            db.flush_wal(True)
            samples.append((time.perf_counter_ns() - started) / 1e6)
        cpu = (time.thread_time() - start_cpu) / count * 1e6
        db.close()
    return samples, cpu


async def serve(port: int) -> None:
    async def echo(requests: AsyncIterator[bytes], _context: object) -> AsyncIterator[bytes]:
        async for request in requests:
            yield request[:16]

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "floor.Echo", {"Echo": grpc.stream_stream_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


async def echo_floor(port: int, server_pid: int, count: int) -> tuple[list[float], float, float]:
    """Milliseconds of each round trip; server and client CPU µs per round trip."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call: grpc.aio.StreamStreamCall[bytes, bytes] = channel.stream_stream(METHOD)()
        body = os.urandom(1024)
        for _ in range(200):  # warm up the connection and both loops
            await call.write(body)
            await call.read()
        samples: list[float] = []
        server_cpu, client_cpu = cpu_seconds(server_pid), time.process_time()
        for _ in range(count):
            started = time.perf_counter_ns()
            await call.write(body)
            await call.read()
            samples.append((time.perf_counter_ns() - started) / 1e6)
        server_us = (cpu_seconds(server_pid) - server_cpu) / count * 1e6
        client_us = (time.process_time() - client_cpu) / count * 1e6
        await call.done_writing()
    return samples, server_us, client_us


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="where to fsync")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    samples, cpu = fsync_floor(args.dir, args.count)
    fsync_p50 = statistics.median(samples)
    print(
        f"RocksDB put + synced WAL flush, 1 KiB ({args.count}): p50 {fsync_p50:.3f} ms"
        f"  p99 {pct(samples, 0.99):.3f} ms  CPU {cpu:.0f} µs each"
    )
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != b"ready":
            raise SystemExit("the echo server did not start")
        samples, server_us, client_us = asyncio.run(echo_floor(port, server.pid, args.count))
    finally:
        server.kill()
        server.wait()
    echo_p50 = statistics.median(samples)
    print(
        f"grpc.aio stream round trip, 1 KiB, one in flight ({args.count}): p50 {echo_p50:.3f} ms"
        f"  p99 {pct(samples, 0.99):.3f} ms"
        f"  CPU server {server_us:.0f} µs, client {client_us:.0f} µs"
    )
    print(
        f"floor of one acknowledged local_disk send: ~{fsync_p50 + echo_p50:.2f} ms "
        f"(~{1000 / (fsync_p50 + echo_p50):,.0f} msg/s one at a time)"
    )


if __name__ == "__main__":
    main()
