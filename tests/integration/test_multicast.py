"""`multicast://` connectors on loopback: real broker processes discovering each other
by zeroconf on 127.0.0.1, routing demand as static connectors do, and following brokers
that crash, restart, stop and fail over.

Each test's brokers share a discovery token of their own, so that they never bridge to
brokers of another test (or of a `netbroker up topologies/multicast.yaml`) running on
the same host at the same time. The one exception is the test of `netbroker up` with
the shipped topology, which has no token (the topology file cannot give one).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from broker.client import Client, Delivery
from broker.server.admin import link_state_of
from broker.server.status import Role
from tests.support.aio import run
from tests.support.groups import role, start_group, status_at, wait_master
from tests.support.procs import BrokerProcess, free_port
from tests.support.scenario import (
    check_exactly_once,
    demand_seen,
    queue_info,
    send_many,
    take,
    wait_for,
)
from tests.support.uptools import Relocated, bridge_cells, netbroker
from tests.support.zk import Ensemble

Start = Callable[..., BrokerProcess]
PREFIX = "multicast://default/"


def discovery_args(token: str, *, group: str = "") -> list[str]:
    args = ["--connector", "multicast://default", "--discovery-token", token]
    return args + (["--group", group] if group else [])


async def components(url: str) -> dict[str, tuple[str, str, str]] | None:
    """name -> (kind, state, detail) from Admin.Status (raw gRPC: slaves answer it too);
    None when the broker did not answer (never taken for "nothing there")."""
    if (answer := await status_at(url)) is None:
        return None
    return {c.name: (c.kind, c.state, c.detail) for c in answer.components}


async def discovery(url: str) -> tuple[str, str, str] | None:
    """The `multicast://default` discovery component: (kind, state, detail), or None."""
    found = await components(url)
    return None if found is None else found.get("multicast://default")


async def discovered(url: str) -> dict[str, tuple[str, str]] | None:
    """The broker's discovered bridges: peer key -> (state, peer broker or ""); None
    when the broker did not answer."""
    if (answer := await status_at(url)) is None:
        return None
    out = {}
    for b in answer.bridges:
        state = link_state_of(b.state)
        if not b.inbound and b.label.startswith(PREFIX) and state is not None:
            out[b.label.removeprefix(PREFIX)] = (state.value, b.peer)
    return out


async def wait_mesh(procs: dict[str, BrokerProcess], keys: dict[str, str], timeout: float = 20):
    """Until every broker has an "up" bridge to every other one's key (its group)."""

    async def meshed() -> bool:
        for name, proc in procs.items():
            bridges = await discovered(proc.url)
            if bridges is None:
                return False
            wanted = {keys[other] for other in procs if other != name}
            if any(bridges.get(k, ("missing",))[0] != "up" for k in wanted):
                return False
        return True

    await wait_for(meshed, timeout, "every broker's discovered bridges to be up")


async def bridge_state(url: str, key: str) -> str | None:
    """The state of the bridge to `key` ("missing" if none); None if `url` did not answer."""
    bridges = await discovered(url)
    return None if bridges is None else bridges.get(key, ("missing", ""))[0]


def start_cluster(brokers: Start, names: list[str], token: str) -> dict[str, BrokerProcess]:
    """Brokers `names`, each alone in its group (the name upper-cased)."""
    return {n: brokers(n, *discovery_args(token, group=n.upper()), port=free_port()) for n in names}


def test_three_brokers_find_each_other_and_route_demand(brokers: Start) -> None:
    token = secrets.token_hex(8)
    started = time.monotonic()
    procs = start_cluster(brokers, ["a", "b", "c"], token)
    n = 2_000

    async def scenario() -> None:
        await wait_mesh(procs, {"a": "A", "b": "B", "c": "C"})
        print(f"three brokers meshed {time.monotonic() - started:.2f}s after the first started")
        async with (
            await Client.connect(procs["a"].url) as ca,
            await Client.connect(procs["c"].url) as cc,
        ):
            consumer = await cc.subscribe("orders", prefetch=200)
            await wait_for(lambda: demand_seen(ca, "orders"), 10, "a to see c's demand")
            sent = await send_many(ca, "orders", [str(i).encode() for i in range(n)])
            got = await take(consumer, n)
            assert await consumer.receive(timeout=1) is None  # no copy circling the mesh
            await consumer.close()
            check_exactly_once(sent, got)
            # Straight from a to c: the bridge a opened to c's group carried them.
            assert all(list(d.message.broker_path) == ["a", "c"] for d in got)
            info = await queue_info(ca, "orders")
            assert info is not None and info.depth == 0
            detail = await discovery(procs["a"].url)
            assert detail is not None, "a did not answer Admin.Status"
            assert detail[0] == "discovery" and detail[1] == "advertised", detail

    run(scenario())


def test_kill_9_drops_the_bridge_fast_and_nothing_is_lost_after_restart(brokers: Start) -> None:
    token = secrets.token_hex(8)
    procs = start_cluster(brokers, ["a", "b", "c"], token)
    a, b, c = procs["a"], procs["b"], procs["c"]
    total = 1_500

    async def scenario() -> None:
        await wait_mesh(procs, {"a": "A", "b": "B", "c": "C"})
        async with await Client.connect(b.url) as cb:
            sent = await send_many(cb, "work", [str(i).encode() for i in range(total)])
        got: list[Delivery] = []
        async with await Client.connect(c.url) as cc:
            # A slow consumer on c: b forwards its backlog over the bridge bit by bit.
            consumer = await cc.subscribe("work", prefetch=20)

            async def receive_until(count: int) -> None:
                while len(got) < count:
                    d = await consumer.receive(timeout=30)
                    assert d is not None, f"stalled at {len(got)}: {await where('work', b, c)}"
                    got.append(d)
                    d.ack()

            await receive_until(total // 3)
            b.kill()
            killed = time.monotonic()

            async def b_dropped() -> bool:
                # A real answer from each of a and c, with no "up" bridge to b in it.
                states = [await bridge_state(p.url, "B") for p in (a, c)]
                return all(s is not None and s != "up" for s in states)

            await wait_for(b_dropped, 10, "a's and c's bridges to b to leave 'up'")
            noticed = time.monotonic() - killed
            print(f"peers noticed b's kill -9 after {noticed:.3f}s")
            assert noticed < 5
            # The live peers keep working meanwhile: a to c still forwards.
            async with await Client.connect(a.url) as ca:
                live = await cc.subscribe("live", prefetch=50)
                await wait_for(lambda: demand_seen(ca, "live"), 10, "a to see c's demand")
                live_sent = await send_many(ca, "live", [b"x"] * 100)
                for _ in live_sent:
                    d = await live.receive(timeout=10)
                    assert d is not None, (
                        f"a to c stalled: a {await queue_info(ca, 'live')} "
                        f"c {await queue_info(cc, 'live')} {await components(a.url)}"
                    )
                    d.ack()
                await live.close()
            b.start()
            restarted = time.monotonic()
            await wait_mesh(procs, {"a": "A", "b": "B", "c": "C"})
            print(f"bridges to b up again {time.monotonic() - restarted:.2f}s after its restart")
            await receive_until(total)
            while (d := await consumer.receive(timeout=1)) is not None:
                got.append(d)
                d.ack()
            await consumer.close()
        print(f"redelivered (marked) {sum(1 for d in got if d.redelivered)}")
        check_exactly_once(sent, got, marked_ok=True)

    run(scenario(), timeout=120)


def test_clean_stop_withdraws_and_other_clusters_are_ignored(brokers: Start) -> None:
    token = secrets.token_hex(8)
    procs = start_cluster(brokers, ["a", "b"], token)
    stranger = brokers("x", *discovery_args(secrets.token_hex(8), group="X"), port=free_port())

    async def scenario() -> None:
        await wait_mesh(procs, {"a": "A", "b": "B"})

        async def ignores(url: str, *others: str) -> str:
            found = await discovery(url)
            detail = "" if found is None else found[2]
            return detail if all(f"{o}: another cluster" in detail for o in others) else ""

        detail = await wait_for(lambda: ignores(procs["a"].url, "x"), 10, "a to see and ignore x")
        print(f"a's discovery: {detail}")
        # Positive control for x: its discovery saw a and b, and refused them.
        seen = await wait_for(lambda: ignores(stranger.url, "a", "b"), 10, "x to ignore a, b")
        print(f"x's discovery: {seen}")
        assert seen.startswith("0 peers"), seen
        a_bridges, x_bridges = await discovered(procs["a"].url), await discovered(stranger.url)
        assert a_bridges is not None and set(a_bridges) == {"B"}, a_bridges
        assert x_bridges is not None and set(x_bridges) == set(), x_bridges
        procs["b"].stop()
        stopped = time.monotonic()

        async def withdrawn() -> bool:
            bridges = await discovered(procs["a"].url)
            return bridges is not None and "B" not in bridges

        await wait_for(withdrawn, 5, "a to drop b's bridge on b's goodbye")
        print(f"a closed its bridge to b {time.monotonic() - stopped:.3f}s after b's SIGTERM")

    run(scenario())


def test_only_the_master_advertises_and_bridges_follow_a_failover(
    brokers: Start, tmp_path: Path
) -> None:
    """Group B in lock-file mode: its slave is not advertised; when the master is killed
    the slave takes over and advertises, and a's bridge to group B moves to it."""
    token = secrets.token_hex(8)
    shared = tmp_path / "shared-B"
    group_b = ["--election", "lockfile", "--shared-dir", str(shared)]
    a = brokers("a", *discovery_args(token, group="A"), port=free_port())
    b1 = brokers("b1", *discovery_args(token, group="B"), *group_b, port=free_port())

    async def scenario() -> None:
        await wait_for(lambda: _is(bridge_peer(a.url, "B"), "b1"), 20, "a's bridge to b1")
        b2 = brokers("b2", *discovery_args(token, group="B"), *group_b, port=free_port())

        async def b2_unadvertised_slave() -> bool:
            found = await discovery(b2.url)
            unadvertised = found is not None and found[1] == "not advertised"
            return unadvertised and await role(b2) == Role.SLAVE

        await wait_for(b2_unadvertised_slave, 10, "b2 to be a slave, not advertised")
        # Positive control: a broker of another group, same token, started after b2 is
        # seen by a's discovery, so a was listening while b2 would have advertised.
        control = brokers("c", *discovery_args(token, group="C"), port=free_port())
        await wait_for(lambda: _is(bridge_peer(a.url, "C"), "c"), 20, "a's bridge to c")
        found = await discovery(a.url)
        assert found is not None, "a did not answer Admin.Status"
        detail = found[2]
        print(f"a's discovery, b2 a slave: {detail}")
        assert detail.startswith("2 peers: b1@"), detail
        assert f"c@127.0.0.1:{control.port}" in detail and "b2@" not in detail, detail
        assert await bridge_peer(a.url, "B") == "b1"
        found = await discovery(b2.url)
        assert found is not None and found[1] == "not advertised", found
        b1.kill()
        killed = time.monotonic()
        await wait_for(lambda: _is(bridge_peer(a.url, "B"), "b2"), 20, "a's bridge to move to b2")
        print(f"a's bridge to group B moved to b2 {time.monotonic() - killed:.2f}s after kill -9")
        await wait_for(lambda: _is(bridge_peer(b2.url, "A"), "a"), 10, "b2's bridge to a")
        async with await Client.connect(a.url) as ca, await Client.connect(b2.url) as cb:
            consumer = await cb.subscribe("failover", prefetch=50)
            await wait_for(lambda: demand_seen(ca, "failover"), 10, "a to see b2's demand")
            sent = await send_many(ca, "failover", [str(i).encode() for i in range(300)])
            got = await take(consumer, len(sent))
            await consumer.close()
            check_exactly_once(sent, got)

    run(scenario(), timeout=120)


def test_zookeeper_group_master_advertises_withdraws_on_demotion_and_fails_over(
    brokers: Start, zookeeper: Ensemble
) -> None:
    """Group B elected by ZooKeeper: only its master is advertised; a master that loses
    ZooKeeper withdraws its record at once (a's bridge to B closes on the goodbye); a
    master killed with kill -9 is replaced and a's bridge moves to the new master."""
    token = secrets.token_hex(8)
    a = brokers("a", *discovery_args(token, group="A"), port=free_port())
    group = start_group(
        brokers, zookeeper, ["b1", "b2"], 2, "--discovery-token", token,
        connectors=("multicast://default",),
    )  # fmt: skip

    async def scenario() -> None:
        master = await wait_master(group)
        await wait_for(lambda: _is(bridge_peer(a.url, "B"), master), 20, f"a's bridge to {master}")
        slave = next(n for n in group if n != master)
        found = await discovery(group[slave].url)
        assert found is not None and found[1] == "not advertised", found

        zookeeper.pause()
        try:

            async def demoted() -> bool:
                bridges = await discovered(a.url)
                gone = bridges is not None and "B" not in bridges
                # role() says None on an RPC error: only a real answer counts here.
                return gone and await role(group[master]) not in (Role.MASTER, None)

            paused = time.monotonic()
            await wait_for(demoted, 10, f"{master} to step down and a to drop its bridge")
            took = time.monotonic() - paused
            print(f"{master} stepped down and was withdrawn {took:.2f}s after ZooKeeper froze")
        finally:
            zookeeper.resume()

        master = await wait_master(group)
        await wait_for(lambda: _is(bridge_peer(a.url, "B"), master), 20, f"a's bridge to {master}")
        group[master].kill()
        killed = time.monotonic()
        survivor = next(n for n in group if n != master)
        await wait_for(
            lambda: _is(bridge_peer(a.url, "B"), survivor), 30, f"a's bridge to move to {survivor}"
        )
        print(f"a's bridge to B moved to {survivor} {time.monotonic() - killed:.2f}s after kill -9")
        await wait_for(
            lambda: _is(bridge_peer(group[survivor].url, "A"), "a"), 10, f"{survivor}'s bridge to a"
        )
        async with (
            await Client.connect(a.url) as ca,
            await Client.connect(group[survivor].url) as cs,
        ):
            consumer = await cs.subscribe("zk-failover", prefetch=50)
            await wait_for(
                lambda: demand_seen(ca, "zk-failover"), 10, f"a to see {survivor}'s demand"
            )
            sent = await send_many(ca, "zk-failover", [str(i).encode() for i in range(300)])
            got = await take(consumer, len(sent))
            await consumer.close()
            check_exactly_once(sent, got)
            # A group's members share its name in broker paths: a forward is the group's.
            assert all(list(d.message.broker_path) == ["a", "B"] for d in got)

    run(scenario(), timeout=120)


def test_up_starts_the_multicast_topology_and_waits_for_discovered_bridges(
    relocated: Callable[..., Relocated], tmp_path: Path
) -> None:
    """`netbroker up topologies/multicast.yaml` (on free ports): its table comes once each
    broker's bridges to the other two groups are up, and messages cross them."""
    t = relocated("multicast.yaml")
    r = netbroker("up", str(t.path), "--detach", "--timeout", "40", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cells = bridge_cells(r.stdout)
    assert sorted(cells) == sorted(
        f"multicast://default/{g} \u2192 {g.lower()} up" for g in "BCACAB"
    ), r.stdout

    async def a_to_c() -> None:
        async with (
            await Client.connect(t.url("a")) as ca,
            await Client.connect(t.url("c")) as cc,
        ):
            consumer = await cc.subscribe("up-orders", prefetch=100)
            await wait_for(lambda: demand_seen(ca, "up-orders"), 10, "a to see c's demand")
            sent = await send_many(ca, "up-orders", [str(i).encode() for i in range(200)])
            got = await take(consumer, len(sent))
            await consumer.close()
            check_exactly_once(sent, got)

    run(a_to_c())
    r = netbroker("down", str(t.path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr


async def where(queue: str, *procs: BrokerProcess) -> str:
    """Each broker's view of `queue` and its components, for a failure message."""
    out = []
    for proc in procs:
        async with await Client.connect(proc.url) as client:
            info = await queue_info(client, queue)
        out.append(f"{proc.name}: {info} {await components(proc.url)}")
    return "\n".join(out)


async def bridge_peer(url: str, key: str) -> str:
    state, peer = (await discovered(url) or {}).get(key, ("missing", ""))
    return peer if state == "up" else ""


async def _is(probe: Awaitable[str], value: str) -> bool:
    return await probe == value
