"""Master/slave groups with a real ZooKeeper, real broker processes and kill -9.

Every scenario counts what was sent (acknowledged) against what was received.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc

from broker.client import BrokerError, Client
from broker.pb import admin_pb2, client_pb2_grpc
from broker.server.status import Role
from tests.support.aio import run
from tests.support.groups import (
    Start,
    drain,
    in_sync,
    position,
    role,
    roles,
    start_group,
    wait_in_sync,
    wait_master,
)
from tests.support.procs import free_port
from tests.support.scenario import check_exactly_once, known_queue, send_many, wait_for
from tests.support.zk import Ensemble


def test_killed_master_is_replaced_and_returns_as_a_caught_up_slave(
    brokers: Start, zookeeper: Ensemble
) -> None:
    procs = start_group(brokers, zookeeper, ["b", "c"], replicas=2)

    async def scenario() -> None:
        first = await wait_master(procs)
        other = "c" if first == "b" else "b"
        async with await Client.connect(procs[first].url) as client:
            sent = await send_many(client, "orders", [str(i).encode() for i in range(1_000)])

        async def same_position() -> bool:
            return await position(procs[first]) == await position(procs[other]) > 0

        await wait_for(same_position, 10, "the slave to reach the master's position")
        await wait_in_sync(procs)
        procs[first].kill()
        started = time.monotonic()
        assert await wait_master(procs) == other
        print(f"{other} took over {time.monotonic() - started:.2f}s after kill -9 of {first}")
        procs[first].start()
        await wait_in_sync(procs)
        assert await role(procs[first]) == Role.SLAVE
        async with await Client.connect(procs[other].url) as client:
            after = await send_many(client, "orders", [f"after {i}".encode() for i in range(10)])
        await wait_for(same_position, 10, "the returning member to catch up")
        got = await drain(procs[other].url, "orders", len(sent) + len(after))
        check_exactly_once(sent + after, got)

    run(scenario(), timeout=120)


def test_slave_refuses_clients_naming_the_master(brokers: Start, zookeeper: Ensemble) -> None:
    procs = start_group(brokers, zookeeper, ["b", "c"], replicas=2)

    async def scenario() -> None:
        master = await wait_master(procs)
        slave = "c" if master == "b" else "b"
        try:
            client = await Client.connect(procs[slave].url)
        except BrokerError as exc:
            refusal = exc
        else:
            await client.close()
            raise AssertionError("a slave accepted a client")
        assert refusal.code == "UNAVAILABLE"
        assert f"slave in group B; the master is {master}" in refusal.message
        assert procs[master].url in refusal.message
        # Below the client library too: the produce stream itself is refused.
        async with grpc.aio.insecure_channel(procs[slave].url) as channel:
            call = client_pb2_grpc.BrokerStub(channel).Produce(iter([]))
            try:
                await call.read()
                raise AssertionError("a slave opened a produce stream")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
                assert f"the master is {master}" in (exc.details() or "")

    run(scenario())


def test_failover_producer_loses_and_doubles_nothing(brokers: Start, zookeeper: Ensemble) -> None:
    procs = start_group(brokers, zookeeper, ["b", "c"], replicas=2)

    async def scenario() -> None:
        master = await wait_in_sync(procs)
        url = f"failover:({procs['b'].url},{procs['c'].url})"
        acked: list[str] = []
        async with await Client.connect(url) as client:
            producer = client.producer(max_in_flight=200)
            futures = []
            killed_at = None
            for i in range(6_000):
                futures.append(await producer.send("stream", str(i).encode()))
                if i == 2_000:
                    procs[master].kill()
                    killed_at = time.monotonic()
                await asyncio.sleep(0) if i % 50 else await asyncio.sleep(0.001)
            await producer.flush()
            acked = [f.result() for f in futures]
            assert killed_at is not None
            print(f"all sends acknowledged {time.monotonic() - killed_at:.2f}s after the kill")
            await producer.close()
        survivor = await wait_master(procs)
        got = await drain(procs[survivor].url, "stream", len(acked))
        # A message may come twice only if the consumer was told it was redelivered.
        check_exactly_once(acked, got, marked_ok=True)

    run(scenario(), timeout=120)


def test_three_replicas_with_two_down_acknowledge_nothing(
    brokers: Start, zookeeper: Ensemble
) -> None:
    procs = start_group(brokers, zookeeper, ["b", "c", "d"], 3, "--commit-timeout", "2")

    async def scenario() -> None:
        master = await wait_master(procs)
        async with await Client.connect(procs[master].url) as client:
            await client.send("q", b"with quorum")
            for name, proc in procs.items():
                if name != master:
                    proc.kill()
            failures = 0
            for i in range(3):
                try:
                    await asyncio.wait_for(client.send("q", f"alone {i}".encode()), 6)
                except BrokerError as exc:
                    assert exc.code == "UNAVAILABLE", exc
                    assert "below min_insync 2" in exc.message, exc.message
                    failures += 1
            assert failures == 3, "a send was acknowledged without a quorum"

    run(scenario(), timeout=120)


def test_master_cut_off_from_zookeeper_stops_serving_first(
    brokers: Start, zookeeper: Ensemble
) -> None:
    procs = start_group(brokers, zookeeper, ["b", "c"], replicas=2)

    async def scenario() -> None:
        master = await wait_master(procs)
        zookeeper.pause()
        try:
            paused = time.monotonic()

            async def master_stopped() -> bool:
                return await role(procs[master]) != Role.MASTER

            await wait_for(master_stopped, 5, f"{master} to stop serving")
            print(
                f"{master} stopped serving {time.monotonic() - paused:.2f}s after ZooKeeper froze"
            )
            # Nobody else was elected meanwhile: ZooKeeper is frozen.
            assert all(r is not Role.MASTER for r in (await roles(procs)).values())
            try:
                async with await Client.connect(procs[master].url) as client:
                    await client.send("q", b"x")
            except BrokerError as exc:
                assert exc.code == "UNAVAILABLE" and "lost contact with ZooKeeper" in exc.message
            else:
                raise AssertionError("a master without ZooKeeper acknowledged a send")
        finally:
            zookeeper.resume()
        await wait_master(procs)

    run(scenario(), timeout=120)


def test_wrong_security_token_is_refused(
    brokers: Start, zookeeper: Ensemble, tmp_path: Path
) -> None:
    right, wrong = tmp_path / "right", tmp_path / "wrong"
    for path in (right, wrong):
        path.write_text(path.name)
        path.chmod(0o600)
    procs = start_group(brokers, zookeeper, ["b"], 2, "--broker-credential", str(right))
    procs |= start_group(brokers, zookeeper, ["c"], 2, "--broker-credential", str(wrong))

    async def scenario() -> None:
        master = await wait_master(procs)
        other = "c" if master == "b" else "b"

        async def refused() -> bool:
            return f"refused replication from {other}" in procs[master].log(200)

        await wait_for(refused, 20, "the master to refuse the follower's token")
        # Refused, not merely slow: the master's in-sync set is itself alone.
        isr = await in_sync(procs[master])
        assert isr == [master] and other not in isr, isr

    run(scenario())


def test_lockfile_mode_fails_over(brokers: Start, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    args = ("--group", "L", "--election", "lockfile", "--shared-dir", str(shared))
    procs = {name: brokers(name, *args) for name in ("x", "y")}

    async def scenario() -> None:
        master = await wait_master(procs)
        other = "y" if master == "x" else "x"
        async with await Client.connect(procs[master].url) as client:
            sent = await send_many(client, "locked", [str(i).encode() for i in range(500)])
        procs[master].kill()
        started = time.monotonic()

        async def other_master() -> bool:
            return await role(procs[other]) == Role.MASTER

        await wait_for(other_master, 5, f"{other} to take the lock")
        print(f"{other} took over {time.monotonic() - started:.2f}s after kill -9")
        got = await drain(procs[other].url, "locked", len(sent))
        check_exactly_once(sent, got)

    run(scenario())


def test_ab_c_bridge_follows_the_new_master(brokers: Start, zookeeper: Ensemble) -> None:
    port_a = free_port()
    b_port, c_port = free_port(), free_port()
    group_b = {}
    for name, port in (("b", b_port), ("c", c_port)):
        group_b[name] = brokers(
            name, "--group", "B", "--election", "zookeeper", "--zookeeper",
            zookeeper.connect_string, "--replication-port", str(free_port()), "--replicas", "2",
            "--connector", f"static:(127.0.0.1:{port_a})", port=port,
        )  # fmt: skip
    a = brokers(
        "a", "--group", "A", "--connector",
        f"masterslave:(127.0.0.1:{b_port},127.0.0.1:{c_port})", port=port_a,
    )  # fmt: skip

    async def scenario() -> None:
        master = await wait_master(group_b)
        other = "c" if master == "b" else "b"
        async with await Client.connect(group_b[master].url) as client:
            sent = await send_many(client, "abc", [str(i).encode() for i in range(5_000)])
            assert (await known_queue(client, "abc")).depth == 5_000
        await wait_in_sync(group_b)
        group_b[master].kill()
        killed = time.monotonic()
        assert await wait_master(group_b) == other

        async def bridge_to(name: str) -> bool:
            async with await Client.connect(a.url) as client:
                return any(
                    b.state == admin_pb2.LINK_UP and not b.inbound and b.peer == name
                    for b in (await client.status()).bridges
                )

        await wait_for(lambda: bridge_to(other), 10, f"a's bridge to reach {other}")
        print(f"a's bridge reached {other} {time.monotonic() - killed:.2f}s after the kill")
        got = await drain(a.url, "abc", len(sent), timeout=15)
        check_exactly_once(sent, got)

    run(scenario(), timeout=180)
