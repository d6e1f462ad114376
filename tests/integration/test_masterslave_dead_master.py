"""A master seen dead by its slave: kill -9 is acted on at once, a freeze is not.

Real ZooKeeper, real brokers, a numbered producer through `failover:(b,c)` during each
fault; nothing acknowledged may be lost, no repeat may be unmarked, and production must
resume by itself. The sessions are long (8 s), so that a takeover well before the dead
master's session could expire is explained only by the slave having seen the process
gone (masterslave/liveness.py), and a frozen master must still be waited out.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from broker.server.status import Role
from tests.integration.test_masterslave_faults import Numbered, through
from tests.support.aio import run
from tests.support.groups import (
    Start,
    drain,
    group_role,
    group_status,
    start_group,
    wait_in_sync,
    wait_master,
)
from tests.support.procs import BrokerProcess
from tests.support.scenario import check_exactly_once, wait_for
from tests.support.zk import Ensemble

# Long enough that only the new path explains a takeover within a few seconds.
SESSION = 8.0
# The heartbeat touches the session every fifth of it: a frozen master's session
# expires no sooner than this after the freeze.
EARLIEST_EXPIRY = SESSION * (1 - 1 / 5)

GONE = "refuses connections"


def log_text(proc: BrokerProcess) -> str:
    return proc.log_path.read_text(errors="replace") if proc.log_path.exists() else ""


async def current_master(procs: dict[str, BrokerProcess]) -> str:
    for name, proc in procs.items():
        if await group_role(proc) is Role.MASTER:
            return name
    raise AssertionError("no master")


@pytest.mark.parametrize("names", [["b", "c"], ["b", "c", "d"]], ids=["pair", "three"])
def test_killed_master_is_replaced_before_its_session_could_expire(
    brokers: Start, zookeeper: Ensemble, names: list[str]
) -> None:
    """A group of three also checks that the new master, alone in the set at first,
    acknowledges again once the third member has rejoined (`min_insync` 2)."""
    procs = start_group(brokers, zookeeper, names, len(names), "--session-timeout", str(SESSION))

    async def scenario() -> None:
        master = await wait_in_sync(procs)
        others = {n: p for n, p in procs.items() if n != master}
        producer = Numbered(f"failover:({','.join(p.url for p in procs.values())})")
        task = asyncio.create_task(producer.run())

        async def acked(count: int) -> bool:
            return len(producer.acked) >= count

        await wait_for(lambda: acked(500), 30, "500 acknowledgements")
        procs[master].kill()
        killed = time.monotonic()
        new = await wait_master(others, timeout=SESSION)
        elected = time.monotonic() - killed
        print(f"{new} master {elected:.2f}s after kill -9 of {master}")
        # Nothing but the refused port explains this: the dead master's session has
        # EARLIEST_EXPIRY seconds or more to run.
        assert elected < 2.0, elected
        assert GONE in log_text(procs[new]), procs[new].log(20)
        await wait_for(lambda: producer.resumed(killed), 5, "production to resume")
        more = len(producer.acked) + 500
        await wait_for(lambda: acked(more), 30, "500 more acknowledgements")
        producer.stop()
        await task
        got = await drain(procs[new].url, producer.queue, len(producer.acked))
        check_exactly_once(producer.acked, got, marked_ok=True)
        print(
            f"sent {producer.sent}, acked {len(producer.acked)}, "
            f"longest stall {producer.longest_stall:.2f}s"
        )
        assert producer.longest_stall < 2.0, producer.longest_stall

    run(scenario(), timeout=120)


def test_frozen_master_is_not_taken_for_dead(brokers: Start, zookeeper: Ensemble) -> None:
    """SIGSTOP: the slave's stream breaks (keepalive) and it probes the port, but the
    frozen master's kernel still accepts the connection: the slave waits for the session
    to expire, as before, and the resumed master steps down and follows."""
    procs = start_group(brokers, zookeeper, ["b", "c"], 2, "--session-timeout", str(SESSION))
    timings: dict[str, float] = {}

    async def scenario() -> None:
        async def fault() -> None:
            master = await current_master(procs)
            other = "c" if master == "b" else "b"
            proc = procs[master].proc
            assert proc is not None
            broke_before = log_text(procs[other]).count(f"replication from {master}:")
            os.killpg(proc.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            try:

                async def other_master() -> bool:
                    return await group_role(procs[other]) is Role.MASTER

                await wait_for(other_master, SESSION + 10, f"{other} to be elected")
                timings["elected"] = time.monotonic() - stopped
                print(f"{other} master {timings['elected']:.2f}s after SIGSTOP of {master}")
                # The stream to the frozen master did break, well before the election
                # (replication keepalive: 2 s + 2 s), so the port was probed.
                broke = log_text(procs[other]).count(f"replication from {master}:")
                assert broke > broke_before, procs[other].log(20)
                assert GONE not in log_text(procs[other]), procs[other].log(20)
            finally:
                os.killpg(proc.pid, signal.SIGCONT)

            async def follows() -> bool:
                group = await group_status(procs[master])
                return group is not None and group.master == other

            await wait_for(follows, 20, f"{master} to follow {other}")

        await through(procs, fault, settle=SESSION + 20)
        assert timings["elected"] >= EARLIEST_EXPIRY - 0.5, timings

    run(scenario(), timeout=180)
