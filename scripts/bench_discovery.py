"""Discovery benchmark on loopback: how fast `multicast://` bridges follow brokers.

    .venv/bin/python scripts/bench_discovery.py [--rounds 5]

Starts brokers a and b (groups A and B, `multicast://default`, a discovery token of
this run's own so that nothing else on the host interferes), then in each round:

* starts c: time from starting its process to its listening line, to a's and b's
  bridges to C being up (the peers found it), and to c's own bridges to A and B;
* kills c with kill -9: time until neither a's nor b's bridge to C is "up" any more;
* starts c again (its record is still in a's and b's caches): time until their bridges
  to C are up again;
* with --frozen, freezes c with SIGSTOP (its connections stay open, it answers
  nothing): time until gRPC keepalive takes a's and b's bridges to C down;
* stops c with SIGTERM: time until a and b have closed their bridges to C (goodbye).

Admin.Status is polled every 5 ms over open channels. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from broker.pb import admin_pb2, admin_pb2_grpc
from scripts.benchkit.workers import exit_on_sigterm
from tests.support.procs import BrokerProcess, free_port

PREFIX = "multicast://default/"
POLL = 0.005
LOG_LEVEL = "info"


class Watch:
    """Admin.Status of one broker over a channel kept open."""

    def __init__(self, url: str) -> None:
        self.channel = grpc.aio.insecure_channel(url)
        self.stub = admin_pb2_grpc.AdminStub(self.channel)

    async def bridges(self) -> dict[str, str]:
        try:
            answer = await self.stub.Status(admin_pb2.StatusRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            return {}
        return {
            c.name.removeprefix(PREFIX): c.state
            for c in answer.components
            if c.kind == "bridge" and c.name.startswith(PREFIX)
        }

    async def close(self) -> None:
        await self.channel.close()


async def until(check: Callable[[], object], timeout: float = 30.0) -> float:
    """Poll an async check until true; the monotonic time it first was."""
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[misc]
        if time.monotonic() > deadline:
            raise TimeoutError("discovery did not converge")
        await asyncio.sleep(POLL)
    return time.monotonic()


def stats(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):6.3f}s  min {min(values):6.3f}s  "
        f"max {max(values):6.3f}s"
    )


async def run(root: Path, rounds: int, frozen_too: bool) -> None:
    token = secrets.token_hex(8)

    def broker(name: str) -> BrokerProcess:
        args = (
            "--group", name.upper(), "--connector", "multicast://default",
            "--discovery-token", token, "--log-level", LOG_LEVEL,
        )  # fmt: skip
        return BrokerProcess(name, root / name, port=free_port(), args=args)

    a, b, c = broker("a"), broker("b"), broker("c")
    figures: dict[str, list[float]] = {}

    def note(what: str, seconds: float) -> None:
        figures.setdefault(what, []).append(seconds)

    started = time.monotonic()
    a.start()
    b.start()
    wa, wb = Watch(a.url), Watch(b.url)
    try:

        async def peers(state: Callable[[str | None], bool]) -> bool:
            return all([state((await w.bridges()).get("C")) for w in (wa, wb)])

        await until(partial(_both_up, wa, "B", wb, "A"))
        print(f"a and b bridged {time.monotonic() - started:.2f}s after a's start")
        for i in range(rounds):
            t0 = time.monotonic()
            await asyncio.to_thread(c.start)
            note("c: start -> listening", time.monotonic() - t0)
            wc = Watch(c.url)
            up, own = await asyncio.gather(
                until(lambda: peers(lambda s: s == "up")),
                until(partial(_both_up, wc, "A", wc, "B")),
            )
            note("c: start -> peers' bridges to c up", up - t0)
            note("c: start -> c's bridges to a and b up", own - t0)

            await asyncio.sleep(0.5)
            t1 = time.monotonic()
            c.kill()
            down = await until(lambda: peers(lambda s: s != "up"))
            note("kill -9 c -> peers' bridges to c not up", down - t1)

            t2 = time.monotonic()
            await asyncio.to_thread(c.start)
            assert c.proc is not None
            back = await until(lambda: peers(lambda s: s == "up"))
            note("restart c after kill -9 -> peers' bridges up", back - t2)
            await until(partial(_both_up, wc, "A", wc, "B"))

            if frozen_too:
                await asyncio.sleep(0.5)
                t_stop = time.monotonic()
                c.proc.send_signal(signal.SIGSTOP)  # alive to the kernel, silent to gRPC
                frozen = await until(lambda: peers(lambda s: s != "up"), timeout=180)
                note("SIGSTOP c -> peers' bridges to c not up (keepalive)", frozen - t_stop)
                c.proc.send_signal(signal.SIGCONT)
                await until(lambda: peers(lambda s: s == "up"))

            await asyncio.sleep(0.5)
            t3 = time.monotonic()
            c.proc.send_signal(signal.SIGTERM)  # not c.stop(): that waits for the exit
            gone = await until(lambda: peers(lambda s: s is None))
            note("SIGTERM c -> peers' bridges to c closed", gone - t3)
            await asyncio.to_thread(c.stop)
            await wc.close()
            print(f"round {i + 1}/{rounds} done", file=sys.stderr)
            # Let the goodbye leave every cache before c's next probe for the same name.
            await asyncio.sleep(1.5)
    except TimeoutError:
        for proc in (a, b, c):
            print(f"--- {proc.name}: {await Watch(proc.url).bridges()}\n{proc.log(12)}")
        raise SystemExit("timed out: discovery did not converge") from None
    finally:
        await wa.close()
        await wb.close()
        for proc in (c, b, a):
            proc.stop()

    print(f"netbroker discovery bench on loopback (127.0.0.1), {rounds} rounds")
    width = max(len(k) for k in figures)
    for what, values in figures.items():
        print(f"  {what:<{width}}  {stats(values)}")


async def _both_up(w1: Watch, k1: str, w2: Watch, k2: str) -> bool:
    return (await w1.bridges()).get(k1) == "up" and (await w2.bridges()).get(k2) == "up"


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--frozen", action="store_true", help="also time a frozen (SIGSTOP) peer's detection"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="netbroker-bench-discovery-") as tmp:
        asyncio.run(run(Path(tmp), args.rounds, args.frozen))


if __name__ == "__main__":
    main()
