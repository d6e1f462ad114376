"""Master/slave group helpers for tests: start members, read roles, wait for a master."""

from __future__ import annotations

import re
from collections.abc import Callable

import grpc

from broker.client import Client, Delivery
from broker.cluster.zookeeper import Ensemble
from broker.pb import admin_pb2, admin_pb2_grpc
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
    async with grpc.aio.insecure_channel(proc.url) as channel:
        try:
            return await admin_pb2_grpc.AdminStub(channel).Status(
                admin_pb2.StatusRequest(), timeout=2
            )
        except grpc.aio.AioRpcError:
            return None


async def role(proc: BrokerProcess) -> str:
    answer = await status(proc)
    return "down" if answer is None else answer.role


async def group_detail(proc: BrokerProcess) -> str:
    answer = await status(proc)
    for c in answer.components if answer else ():
        if c.kind == "group":
            return f"{c.state}: {c.detail}"
    return ""


async def position(proc: BrokerProcess) -> int:
    match = re.search(r"position (\d+)", await group_detail(proc))
    return int(match.group(1)) if match else -1


async def roles(procs: dict[str, BrokerProcess]) -> dict[str, str]:
    return {name: await role(p) for name, p in procs.items() if p.alive}


async def settled(procs: dict[str, BrokerProcess]) -> str | None:
    """The master's name once exactly one live member is master and the rest are slaves."""
    current = await roles(procs)
    masters = [n for n, r in current.items() if r == "master"]
    if len(masters) == 1 and all(r in ("master", "slave") for r in current.values()):
        return masters[0]
    return None


async def wait_master(procs: dict[str, BrokerProcess], timeout: float = 20.0) -> str:
    return await wait_for(lambda: settled(procs), timeout, f"one master among {list(procs)}")


async def wait_in_sync(procs: dict[str, BrokerProcess], timeout: float = 20.0) -> str:
    """The master's name once every live member is in its in-sync set: only then can any
    of them take over without losing an acknowledged write."""
    live = ",".join(sorted(n for n, p in procs.items() if p.alive))

    async def all_in_sync() -> str | None:
        master = await settled(procs)
        if master and f"in-sync {live}" in await group_detail(procs[master]):
            return master
        return None

    return await wait_for(all_in_sync, timeout, f"{live} to be in sync")


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
