"""Master/slave group helpers for tests: start members, read roles, wait for a master."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from broker.client import Client, Delivery
from broker.cluster.zookeeper import Ensemble
from broker.pb import admin_pb2, admin_pb2_grpc
from broker.server.admin import role_of
from broker.server.status import Role
from tests.support.procs import BrokerProcess, free_port
from tests.support.scenario import wait_for

Start = Callable[..., BrokerProcess]


def start_group(
    brokers: Start, zk: Ensemble, names: list[str], replicas: int, *extra: str,
    group: str = "B", connectors: tuple[str, ...] = (),
) -> dict[str, BrokerProcess]:  # fmt: skip
    started = {}
    for name in names:
        args = [
            "--group", group, "--election", "zookeeper", "--zookeeper", zk.connect_string,
            "--replication-port", str(free_port()), "--replicas", str(replicas), *extra,
        ]  # fmt: skip
        for uri in connectors:
            args += ["--connector", uri]
        started[name] = brokers(name, *args, port=free_port())
    return started


async def status(proc: BrokerProcess) -> admin_pb2.StatusResponse | None:
    """Admin.Status straight over gRPC: the client library refuses to talk to slaves."""
    return await status_at(proc.url)


async def status_at(url: str) -> admin_pb2.StatusResponse | None:
    """Admin.Status of the broker at `url`; None when it does not answer."""
    async with grpc.aio.insecure_channel(url) as channel:
        try:
            return await admin_pb2_grpc.AdminStub(channel).Status(
                admin_pb2.StatusRequest(), timeout=2
            )
        except grpc.aio.AioRpcError:
            return None


async def role(proc: BrokerProcess) -> Role | None:
    """The broker's role; None if it does not answer."""
    answer = await status(proc)
    return None if answer is None else role_of(answer.role_kind)


async def group_status(proc: BrokerProcess) -> admin_pb2.GroupStatus | None:
    """What the broker reports about its group; None if it does not answer or is in none."""
    answer = await status(proc)
    return answer.group if answer is not None and answer.HasField("group") else None


async def group_role(proc: BrokerProcess) -> Role | None:
    """The broker's role in its group (its group component's state)."""
    group = await group_status(proc)
    return None if group is None else role_of(group.role)


async def in_sync(proc: BrokerProcess) -> list[str] | None:
    """A master's in-sync set (sorted); None if it does not report itself master."""
    group = await group_status(proc)
    if group is None or group.role != admin_pb2.ROLE_MASTER:
        return None
    return list(group.in_sync)


async def position(proc: BrokerProcess) -> int:
    """The replication position a master or slave reports; -1 if it reports none."""
    group = await group_status(proc)
    return group.position if group is not None and group.HasField("position") else -1


async def roles(procs: dict[str, BrokerProcess]) -> dict[str, Role | None]:
    return {name: await role(p) for name, p in procs.items() if p.alive}


async def settled(procs: dict[str, BrokerProcess]) -> str | None:
    """The master's name once exactly one live member is master and the rest are slaves."""
    current = await roles(procs)
    masters = [n for n, r in current.items() if r is Role.MASTER]
    if len(masters) == 1 and all(r in (Role.MASTER, Role.SLAVE) for r in current.values()):
        return masters[0]
    return None


async def wait_master(procs: dict[str, BrokerProcess], timeout: float = 20.0) -> str:
    return await wait_for(lambda: settled(procs), timeout, f"one master among {list(procs)}")


async def wait_in_sync(procs: dict[str, BrokerProcess], timeout: float = 20.0) -> str:
    """The master's name once every live member is in its in-sync set: only then can any
    of them take over without losing an acknowledged write."""
    live = sorted(n for n, p in procs.items() if p.alive)

    async def all_in_sync() -> str | None:
        master = await settled(procs)
        if master and set(live) <= set(await in_sync(procs[master]) or ()):
            return master
        return None

    return await wait_for(all_in_sync, timeout, f"{','.join(live)} to be in sync")


async def drain(url: str, queue: str, expect: int, timeout: float = 10.0) -> list[Delivery]:
    got: list[Delivery] = []
    async with await Client.connect(url) as client:
        consumer = await client.subscribe(queue, prefetch=500)
        while len(got) < expect:
            d = await consumer.receive(timeout=timeout)
            if d is None:
                break
            got.append(d)
            d.ack()
        while (d := await consumer.receive(timeout=0.5)) is not None:
            got.append(d)  # anything more is a duplicate: counted below
            d.ack()
        await consumer.close()
    return got
