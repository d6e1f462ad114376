"""The fault suite: numbered traffic through `topologies/ab_c.yaml`'s shape while it fails.

A producer sends numbered persistent messages to group B through `failover:(b,c)`; a
consumer on a (group A) takes them over B's bridge. Each test injects one fault while
that runs, waits until production resumes by itself, stops, drains, and counts sent,
acknowledged, received, lost (acknowledged, never received), repeats and unmarked repeats.
The promise checked: 0 acknowledged lost, 0 unmarked repeats, producers resume on their own.

The soak (`scripts/chaos.py`) runs the same faults at random for as long as asked.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.support.aio import run
from tests.support.faults import (
    AbcCluster,
    Fault,
    Tally,
    Traffic,
    drop_bridge,
    expire_sessions,
    kill_master,
    kill_master_behind_a_stalled_follower,
    kill_receiver,
    pause_zookeeper,
    stop_master,
)
from tests.support.scenario import wait_for as until

RATE = 1500  # msg/s: the load, under what CI's 2 cores carry with 4 processes


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[AbcCluster]:
    started = AbcCluster(tmp_path)
    try:
        yield started.start()
    finally:
        started.stop()


@pytest.fixture
def cluster3(tmp_path: Path) -> Iterator[AbcCluster]:
    started = AbcCluster(tmp_path, replicas=3)
    try:
        yield started.start()
    finally:
        started.stop()


def through(
    cluster: AbcCluster,
    fault: Fault | Callable[[AbcCluster, Traffic], Awaitable[float]],
    rounds: int = 1,
    *,
    on_b: bool = False,
    with_traffic: bool = False,
) -> Tally:
    """Run traffic, inject `fault` `rounds` times, and check what came through.

    `on_b`: the consumer is on group B itself (through its failover URL), not on a.
    `with_traffic`: `fault` also takes the traffic (to hold its consumer back)."""

    async def scenario() -> Tally:
        tally = Tally()
        await cluster.ready()
        consume_url = cluster.b_url if on_b else cluster.a_url
        traffic = Traffic(cluster.b_url, consume_url, cluster.QUEUE, RATE, tally)
        await traffic.start()
        try:
            await cluster.demand_on_master()
            await until(lambda: _acked(tally, RATE), 20, "traffic to flow before the fault")
            began = time.monotonic()
            for _ in range(rounds):
                ended = await (fault(cluster, traffic) if with_traffic else fault(cluster))  # type: ignore[call-arg]
                # Resumed: acknowledgements flowing again after the fault, by themselves.

                async def resumed_since(moment: float = ended) -> bool:
                    return tally.acks_after(moment) >= RATE // 2

                await until(resumed_since, 30, "production to resume after the fault")
                print(f"first ack {tally.first_ack_after(ended) - ended:.2f}s after the fault")
            stall = tally.longest_stall(began, time.monotonic())
            await traffic.stop_producing()
            await traffic.drain(cluster.urls())
        finally:
            await traffic.close()
        print(f"{tally.line()}; longest producer stall {stall:.2f}s")
        if traffic.errors:
            print("client errors:", traffic.errors[:5])
        return tally

    try:
        tally = run(scenario(), timeout=240)
    except BaseException:
        print(cluster.logs())
        raise
    if tally.lost or tally.unmarked:
        print(cluster.logs())
    tally.check()
    return tally


async def _acked(tally: Tally, count: int) -> bool:
    return len(tally.acked) >= count


# --------------------------------------------------------------------------- tests


def test_kill_9_of_the_master(cluster: AbcCluster) -> None:
    through(cluster, kill_master)


def test_sigstop_of_the_master(cluster: AbcCluster) -> None:
    through(cluster, stop_master)


def test_kill_9_of_the_master_with_the_consumer_on_the_group(cluster: AbcCluster) -> None:
    """What the master handed its own consumer must be marked on the new master: a
    delivery leaves only once its dispatch mark is on the in-sync members."""
    through(cluster, kill_master, on_b=True)


def test_sigstop_of_the_master_with_the_consumer_on_the_group(cluster: AbcCluster) -> None:
    through(cluster, stop_master, on_b=True)


def test_kill_9_of_the_master_behind_a_stalled_follower(cluster: AbcCluster) -> None:
    """The window above made wide: the master hands out a backlog while its follower
    is stopped, then dies; the follower, elected, must not hand those out unmarked."""
    through(cluster, kill_master_behind_a_stalled_follower, on_b=True, with_traffic=True)


def test_short_zookeeper_pause(cluster: AbcCluster) -> None:
    """Under the session timeout: nobody should even notice, or recover at once."""
    through(cluster, pause_zookeeper(0.5), rounds=3)


def test_long_zookeeper_pause(cluster: AbcCluster) -> None:
    """Past the session timeout: masters stop serving, then the group elects again."""
    through(cluster, pause_zookeeper(4.0))


def test_forced_session_expiry(cluster: AbcCluster) -> None:
    through(cluster, expire_sessions)


def test_kill_9_of_the_receiving_end_of_a_bridge(cluster: AbcCluster) -> None:
    through(cluster, kill_receiver)


def test_bridge_dropped_mid_batch(cluster: AbcCluster) -> None:
    through(cluster, drop_bridge, rounds=4)


def test_kill_9_of_the_master_of_three(cluster3: AbcCluster) -> None:
    through(cluster3, kill_master)


def test_tally_counts_lost_and_unmarked_repeats() -> None:
    tally = Tally()
    for _ in range(4):
        tally.on_sent()
    for n in (0, 1, 2):
        tally.on_ack(n, float(n))
    tally.on_received(0, False)
    tally.on_received(0, True)  # a marked repeat: allowed
    tally.on_received(1, False)
    tally.on_received(1, False)  # an unmarked repeat
    tally.on_received(3, False)  # sent, never acked: fine to receive
    assert tally.lost == {2}
    assert tally.repeats == 2
    assert tally.unmarked == 1
    assert tally.longest_stall(0.0, 5.0) == 3.0
    with pytest.raises(AssertionError, match="1 acknowledged messages lost"):
        tally.check()
