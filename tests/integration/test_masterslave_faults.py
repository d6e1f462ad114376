"""Group members under ZooKeeper faults and rogue followers: real ZooKeeper, real brokers.

A numbered producer runs through `failover:(b,c)` during each ZooKeeper fault, and the
test counts what was acknowledged against what the master serves afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from dataclasses import dataclass, field

import grpc
from kazoo.client import KazooClient

from broker.client import Client
from broker.pb import replication_pb2, replication_pb2_grpc
from broker.server.admin import role_of
from broker.server.status import Role
from tests.support.aio import run
from tests.support.groups import (
    Start,
    drain,
    group_role,
    group_status,
    in_sync,
    role,
    start_group,
    wait_in_sync,
    wait_master,
)
from tests.support.procs import BrokerProcess
from tests.support.scenario import check_exactly_once, send_many, wait_for
from tests.support.zk import Ensemble


def replication_address(proc: BrokerProcess) -> str:
    port = proc.args[proc.args.index("--replication-port") + 1]
    return f"127.0.0.1:{port}"


def stepped_down(proc: BrokerProcess) -> int:
    text = proc.log_path.read_text(errors="replace") if proc.log_path.exists() else ""
    return sum(
        1
        for line in text.splitlines()
        if "no longer master" in line and "shutting down" not in line
    )


@dataclass
class Numbered:
    """Sends numbered persistent messages until stopped; records what was acknowledged."""

    url: str
    queue: str = "faults"
    acked: list[str] = field(default_factory=list)
    sent: int = 0
    last_ack: float = field(default_factory=time.monotonic)
    longest_stall: float = 0.0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        async with await Client.connect(self.url) as client:
            producer = client.producer(max_in_flight=500)
            pending: list[asyncio.Future[str]] = []
            while not self._stop.is_set():
                future = await producer.send(self.queue, f"{self.sent}".encode())
                future.add_done_callback(self._done)
                pending.append(future)
                self.sent += 1
                await asyncio.sleep(0.002)  # ~500 msg/s: the fault, not the rate, is tested
            await asyncio.wait_for(producer.flush(), 30)
            await producer.close()

    def _done(self, future: asyncio.Future[str]) -> None:
        if not future.cancelled() and future.exception() is None:
            now = time.monotonic()
            self.longest_stall = max(self.longest_stall, now - self.last_ack)
            self.last_ack = now
            self.acked.append(future.result())

    def stop(self) -> None:
        self._stop.set()

    async def resumed(self, since: float) -> bool:
        return self.last_ack > since


async def through(
    procs: dict[str, BrokerProcess], fault: object, settle: float = 20.0
) -> tuple[Numbered, str]:
    """Run a numbered producer through `fault` (an async callable); then check counts."""
    await wait_in_sync(procs)
    url = f"failover:({procs['b'].url},{procs['c'].url})"
    producer = Numbered(url)
    task = asyncio.create_task(producer.run())
    await wait_for(lambda: producer.resumed(0), 10, "the first acknowledgements")
    await fault()  # type: ignore[operator]
    healed = time.monotonic()
    await wait_for(lambda: producer.resumed(healed), settle, "production to resume on its own")
    producer.stop()
    await task
    master = await wait_master(procs)
    got = await drain(procs[master].url, producer.queue, len(producer.acked))
    check_exactly_once(producer.acked, got, marked_ok=True)
    print(
        f"sent {producer.sent}, acked {len(producer.acked)}, longest stall "
        f"{producer.longest_stall:.2f}s, master after: {master}"
    )
    return producer, master


def test_short_zookeeper_pause_does_not_move_the_master(
    brokers: Start, zookeeper: Ensemble
) -> None:
    procs = start_group(brokers, zookeeper, ["b", "c"], replicas=2)

    async def scenario() -> None:
        before = await wait_in_sync(procs)

        def suspended() -> bool:
            log = procs[before].log_path.read_text(errors="replace")
            return "ZooKeeper connection suspended" in log

        async def fault() -> None:
            # Each pause is under the 1 s session (and its 0.9 s grace); kazoo drops its
            # connection after 1/6 to 2/5 of it, but not on every pause: at least four,
            # and more until the master's connection was suspended at least once.
            for rounds in range(1, 41):
                zookeeper.pause()
                await asyncio.sleep(0.5)  # the fault itself
                zookeeper.resume()
                await asyncio.sleep(0.5)
                if rounds >= 4 and suspended():
                    break
            print(f"{rounds} pauses of 0.5 s")
            assert suspended(), f"no pause suspended {before}'s ZooKeeper connection"

        _, after = await through(procs, fault)
        assert after == before
        assert stepped_down(procs[before]) == 0, procs[before].log(40)

    run(scenario(), timeout=120)


def test_long_zookeeper_pause_stops_the_master_and_the_group_recovers(
    brokers: Start, zookeeper: Ensemble
) -> None:
    procs = start_group(brokers, zookeeper, ["b", "c"], replicas=2)

    async def scenario() -> None:
        before = await wait_in_sync(procs)

        async def fault() -> None:
            zookeeper.pause()
            paused = time.monotonic()
            try:

                async def stopped() -> bool:
                    return stepped_down(procs[before]) > 0

                await wait_for(stopped, 5, f"{before} to stop serving")
                print(f"{before} stopped serving {time.monotonic() - paused:.2f}s into the pause")
                await asyncio.sleep(max(0.0, paused + 3 - time.monotonic()))  # past the session
            finally:
                zookeeper.resume()
            await wait_in_sync(procs, timeout=30)

        await through(procs, fault, settle=30)

    run(scenario(), timeout=180)


def test_session_expiry_of_a_paused_master(brokers: Start, zookeeper: Ensemble) -> None:
    """The master is frozen past its session: ZooKeeper expires it, the other member is
    elected, and the old master, resumed, stops serving and follows."""
    procs = start_group(brokers, zookeeper, ["b", "c"], replicas=2)

    async def scenario() -> None:
        before = await wait_in_sync(procs)
        other = "c" if before == "b" else "b"
        proc = procs[before].proc
        assert proc is not None
        pid = proc.pid

        async def fault() -> None:
            os.killpg(pid, signal.SIGSTOP)
            try:

                async def other_master() -> bool:
                    return await group_role(procs[other]) is Role.MASTER

                await wait_for(other_master, 10, f"{other} to be elected")
            finally:
                os.killpg(pid, signal.SIGCONT)

            async def follows() -> bool:
                group = await group_status(procs[before])
                return group is not None and role_of(group.role) is Role.SLAVE and (
                    group.master == other
                )

            await wait_for(follows, 10, f"{before} to follow {other}")

        _, after = await through(procs, fault, settle=30)
        assert after == other

    run(scenario(), timeout=180)


# ---- rogue followers --------------------------------------------------------------------


async def follow_raw(
    address: str, *requests: replication_pb2.FollowRequest
) -> grpc.StatusCode | None:
    """Play a follower by hand; the status the master ended the stream with (None if it
    did not end it within 10 s, or its status was lost to a write racing the end)."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = replication_pb2_grpc.ReplicationStub(channel).Follow()
        for request in requests:
            try:
                await call.write(request)
            except asyncio.InvalidStateError:
                break  # the master already ended the stream
            except grpc.aio.AioRpcError:
                # The master ended the stream while this write was under way: gRPC may
                # then fail the write locally (INTERNAL) and lose the master's status.
                return None

        async def drain_frames() -> None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                while await call.read() is not grpc.aio.EOF:
                    pass

        try:
            await asyncio.wait_for(drain_frames(), 10)
        except TimeoutError:
            call.cancel()
            return None
        code = await call.code()
        print(f"rogue follower ended: {code.name}: {await call.details()}")
        return code


async def insync_never_admits(proc: BrokerProcess, rogue: str, expected: str) -> None:
    deadline = time.monotonic() + 1.5  # several in-sync reviews (every 50 ms)
    while time.monotonic() < deadline:
        isr = await in_sync(proc)
        assert isr == expected.split(",") and rogue not in isr, isr
        await asyncio.sleep(0.05)


def test_unregistered_follower_is_refused(brokers: Start, zookeeper: Ensemble) -> None:
    procs = start_group(brokers, zookeeper, ["b", "c"], replicas=2)

    async def scenario() -> None:
        master = await wait_in_sync(procs)

        async def answer() -> grpc.StatusCode | None:
            return await follow_raw(
                replication_address(procs[master]),
                replication_pb2.FollowRequest(member="zz", epoch=1, position=0),
                replication_pb2.FollowRequest(received=2**62, synced=2**62),
            )

        code = await wait_for(answer, 30, "the master's answer to zz")
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "'zz' is not a registered member of group B" in procs[master].log(50)
        await insync_never_admits(procs[master], "zz", "b,c")

    run(scenario(), timeout=90)


def test_registered_follower_acking_beyond_what_was_sent_is_cut_off(
    brokers: Start, zookeeper: Ensemble, kazoo_client: object
) -> None:
    procs = start_group(brokers, zookeeper, ["b", "c"], replicas=2)

    async def scenario() -> None:
        master = await wait_in_sync(procs)
        # One acknowledged write first: with none, a follower at position 0 holds every
        # acknowledged write and is rightly admitted before its lie arrives; with one,
        # only the lie could make it look caught up.
        async with await Client.connect(procs[master].url) as client:
            await client.send("rogue.floor", b"x")
        # Registered under the group's path (as a member node would be), then lying.
        zk: KazooClient = kazoo_client(zookeeper.connect_string)  # type: ignore[operator]
        zk.create(
            "/netbroker/groups/B/members/m-",
            b'{"id":"zz","address":"127.0.0.1:1","client":"127.0.0.1:2","position":0}',
            ephemeral=True,
            sequence=True,
        )

        async def knows_zz() -> bool:
            code = await follow_raw(
                replication_address(procs[master]),
                replication_pb2.FollowRequest(member="zz", epoch=0, position=0),
                replication_pb2.FollowRequest(received=2**62, synced=0),
            )
            if code is None:
                return False  # no status seen this time: try again
            assert code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT)
            return code == grpc.StatusCode.INVALID_ARGUMENT

        await wait_for(knows_zz, 10, "the master to see zz registered and cut off its lie")
        assert "beyond the last sent" in procs[master].log(50)
        await insync_never_admits(procs[master], "zz", "b,c")

    run(scenario(), timeout=90)


def test_undecodable_follow_request_is_invalid_argument(
    brokers: Start, zookeeper: Ensemble
) -> None:
    procs = start_group(brokers, zookeeper, ["b", "c"], replicas=2)

    async def scenario() -> None:
        master = await wait_in_sync(procs)
        async with grpc.aio.insecure_channel(replication_address(procs[master])) as channel:
            follow: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
                "/netbroker.Replication/Follow",
                request_serializer=None,
                response_deserializer=None,
            )
            call = follow()
            await call.write(b"\xff\xff\xff")
            with contextlib.suppress(asyncio.InvalidStateError):
                await call.done_writing()
            try:
                await asyncio.wait_for(call.read(), 10)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc
                assert "undecodable FollowRequest" in (exc.details() or "")
            else:
                raise AssertionError("garbage was answered")

    run(scenario(), timeout=90)


def test_wiped_slave_takes_a_bulk_copy_and_holds_every_acked_message(
    brokers: Start, zookeeper: Ensemble
) -> None:
    """The bulk-copy path of Follow under the ack bound: a slave whose store was wiped
    rejoins a restarted master (whose log window is empty), is sent a bulk copy, acks
    it and enters the in-sync set; it then takes over with every acknowledged message."""
    procs = start_group(brokers, zookeeper, ["b", "c"], replicas=2)

    async def scenario() -> None:
        master = await wait_in_sync(procs)
        async with await Client.connect(procs[master].url) as client:
            acked = await send_many(client, "copied", [str(i).encode() for i in range(300)])
        slave = "c" if master == "b" else "b"
        procs[slave].stop()  # the slave first: the master stays master, and in sync
        procs[master].stop()
        shutil.rmtree(procs[slave].data_dir)
        # The master first: a wiped member is still listed in sync, and keeping it from
        # being elected is not what this test is about.
        procs[master].start()
        assert await wait_master({master: procs[master]}) == master
        procs[slave].start()
        assert await wait_in_sync(procs, timeout=30) == master

        async def copied() -> bool:
            return "bulk copy complete" in procs[slave].log(200)

        await wait_for(copied, 10, f"{slave} to take a bulk copy")
        procs[master].kill()
        assert await wait_master(procs) == slave
        got = await drain(procs[slave].url, "copied", len(acked))
        check_exactly_once(acked, got, marked_ok=True)

    run(scenario(), timeout=120)


def test_members_stop_promptly_when_zookeeper_is_gone(brokers: Start, zookeeper: Ensemble) -> None:
    """SIGTERM stops a member within a few seconds even with its ZooKeeper dead: a
    shutdown must not wait for ZooKeeper work that can no longer finish (it used to take
    the whole 10 s grace, then SIGKILL)."""
    procs = start_group(brokers, zookeeper, ["b", "c"], replicas=2)
    master = run(wait_in_sync(procs))
    zookeeper.kill(0)

    async def stepped_down() -> bool:
        return await role(procs[master]) == Role.ELECTING

    # Both now retry ZooKeeper in the background, as after any long outage.
    run(wait_for(stepped_down, 10, f"{master} to stop serving without ZooKeeper"))
    for name, proc in procs.items():
        started = time.monotonic()
        code = proc.stop(timeout=10)
        took = time.monotonic() - started
        print(f"{name} stopped in {took:.2f}s with {code}")
        assert code == 0, f"{name} exited with {code} after {took:.2f}s:\n{proc.log()}"
        assert took < 5, f"{name} took {took:.2f}s to stop without ZooKeeper"


def test_a_master_demoted_without_zookeeper_ends_its_bridges_at_once(
    brokers: Start, zookeeper: Ensemble
) -> None:
    """The core's teardown (its bridges closing) must not wait behind ZooKeeper work
    that cannot finish while ZooKeeper is unreachable, the very reason it stepped down."""
    a = brokers("a", "--group", "A")
    procs = start_group(
        brokers, zookeeper, ["b", "c"], replicas=2, connectors=(f"static:({a.url})",)
    )

    async def inbound() -> list[str]:
        async with await Client.connect(a.url) as client:
            return [b.label for b in (await client.status()).bridges if b.inbound]

    async def scenario() -> None:
        master = await wait_in_sync(procs)
        await wait_for(inbound, 20, "the master's bridge to a")
        zookeeper.kill(0)

        async def stepped_down() -> bool:
            return await role(procs[master]) == Role.ELECTING

        await wait_for(stepped_down, 10, f"{master} to stop serving without ZooKeeper")
        demoted = time.monotonic()

        async def gone() -> bool:
            return not await inbound()

        await wait_for(gone, 5, "the demoted master's bridge to a to end")
        print(f"bridge ended {time.monotonic() - demoted:.2f}s after the step-down")

    run(scenario())
