"""/metrics of real broker processes, scraped over HTTP and parsed with
prometheus_client's own parser, after known traffic: the values are what was sent,
consumed and subscribed; a bridge to a frozen peer holds exactly its prefetch
unacknowledged, and a dropped link records when; a master/slave pair lags nothing when
idle and counts its elections across a kill -9; `up` serves /metrics on the free ports
it picks for `metrics_port: auto`."""

from __future__ import annotations

import asyncio
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from broker.client import Client
from tests.support.aio import run
from tests.support.groups import start_group, wait_in_sync, wait_master
from tests.support.procs import ROOT, BrokerProcess, free_port
from tests.support.scenario import demand_seen, send_many, take, wait_for
from tests.support.uptools import UP_TIMEOUT, Relocated, netbroker
from tests.support.zk import Ensemble

Start = Callable[..., BrokerProcess]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        assert answer.status == 200
        text = answer.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_after_known_traffic(brokers: Start) -> None:
    port = free_port()
    broker = brokers("m", "--metrics-port", str(port))

    async def traffic() -> None:
        async with await Client.connect(broker.url) as client:
            producer = client.producer()
            for i in range(100):
                await producer.send("orders", f"m{i}".encode())
            await producer.flush()
            consumer = await client.subscribe("orders", prefetch=10)
            for _ in range(40):
                delivery = await consumer.receive(timeout=10)
                assert delivery is not None
                delivery.ack()
            await consumer.close()
            durable = await client.subscribe(
                topic="prices.>", client_id="app", subscription="s", prefetch=10
            )
            await durable.close()
            for _ in range(5):
                await client.publish("prices.eu", b"p")
            await client.publish("nobody.listens", b"x")
            # Acks reach the broker asynchronously: wait until it counts them.
            for _ in range(200):
                if sum(q.depth for q in await client.queues() if q.name == "orders") == 60:
                    break
                await asyncio.sleep(0.02)

    run(traffic())
    m = scrape(port)
    q = (("queue", "orders"),)
    assert m[("netbroker_queue_ready_messages", q)] == 60
    assert m[("netbroker_queue_in_flight_messages", q)] == 0
    assert m[("netbroker_queue_enqueued_messages_total", q)] == 100
    assert m[("netbroker_queue_dequeued_messages_total", q)] == 40
    assert m[("netbroker_queue_consumers", q)] == 0
    sub = (("subscription", "app/s"), ("topic", "prices.>"))
    assert m[("netbroker_topic_ready_messages", sub)] == 5
    assert m[("netbroker_topic_subscriber_active", sub)] == 0
    assert m[("netbroker_topic_published_messages_total", ())] == 6
    assert m[("netbroker_topic_dropped_messages_total", ())] == 1
    assert m[("netbroker_broker_role", (("broker", "m"), ("role", "standalone")))] == 1
    assert m[("netbroker_store_fsync_seconds_count", ())] >= 1
    assert m[("netbroker_store_write_batch_operations_count", ())] >= 1
    # Every producer batch answered was timed (at least one, at most one per message).
    assert 1 <= m[("netbroker_produce_ack_seconds_count", ())] <= 106
    assert m[("netbroker_store_bytes", ())] > 0
    assert m[("process_resident_memory_bytes", ())] > 10_000_000


def test_a_metrics_port_in_use_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "broker", "broker", "--name", "x", "--port", "0",
             "--data", str(tmp_path / "x"), "--metrics-port", str(port)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
            text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"netbroker: broker x: cannot serve metrics on 127.0.0.1:{port}: port in use"
    )


def labelled(m: Samples, name: str, **labels: str) -> float | None:
    """The one sample of `name` whose labels include `labels` (None if there is none)."""
    found = [
        value
        for (sample, have), value in m.items()
        if sample == name and set(labels.items()) <= set(have)
    ]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


async def scraped(port: int) -> Samples:
    return await asyncio.to_thread(scrape, port)


def test_a_frozen_peer_holds_the_prefetch_unacknowledged_and_a_drop_is_timed(
    brokers: Start,
) -> None:
    b = brokers("b")
    port = free_port()
    a = brokers(
        "a", "--connector", f"static:({b.url})?prefetchSize=50", "--metrics-port", str(port)
    )
    bridge = f"static:{b.url}"
    n = 500

    async def bridge_value(name: str) -> float | None:
        return labelled(await scraped(port), name, bridge=bridge, direction="outbound")

    async def unacked(expect: int) -> bool:
        return await bridge_value("netbroker_bridge_unacknowledged_messages") == expect

    async def scenario() -> None:
        async def up() -> bool:
            return await bridge_value("netbroker_bridge_up") == 1

        await wait_for(up, 15, "a's bridge up")
        async with await Client.connect(a.url) as ca, await Client.connect(b.url) as cb:
            consumer = await cb.subscribe("held", prefetch=1000)
            await wait_for(lambda: demand_seen(ca, "held"), 10, "a to see b's demand")
            assert await bridge_value("netbroker_bridge_unacknowledged_messages") == 0
            assert await bridge_value("netbroker_bridge_last_error_timestamp_seconds") == 0
            assert b.proc is not None
            os.kill(b.proc.pid, signal.SIGSTOP)
            try:
                await send_many(ca, "held", [str(i).encode() for i in range(n)])
                # b answers nothing: a stops at prefetchSize, all sent and unanswered.
                await wait_for(lambda: unacked(50), 10, "50 unacknowledged")
            finally:
                os.kill(b.proc.pid, signal.SIGCONT)
            got = await take(consumer, n)
            assert len({d.id for d in got}) == n
            await wait_for(lambda: unacked(0), 10, "nothing unacknowledged")
            await consumer.close()
        before = time.time()
        b.kill()

        async def dropped() -> float | None:
            at = await bridge_value("netbroker_bridge_last_error_timestamp_seconds")
            return at if at is not None and at >= before else None

        at = await wait_for(dropped, 10, "the drop's time")
        assert before <= at <= time.time()
        assert await bridge_value("netbroker_bridge_up") == 0
        # Without a session nothing is on its way: no unacknowledged sample at all.
        assert await bridge_value("netbroker_bridge_unacknowledged_messages") is None

    run(scenario(), timeout=90)


def test_a_pair_lags_nothing_when_idle_and_counts_its_elections(
    brokers: Start, zookeeper: Ensemble
) -> None:
    ports = {"b": free_port(), "c": free_port()}
    procs = {
        name: start_group(
            brokers, zookeeper, [name], 2, "--session-timeout", "2", "--metrics-port", str(port)
        )[name]
        for name, port in ports.items()
    }

    async def scenario() -> None:
        master = await wait_in_sync(procs)
        slave = next(n for n in procs if n != master)
        async with await Client.connect(procs[master].url) as client:
            await send_many(client, "q", [b"x"] * 100)

        async def idle() -> Samples | None:
            m = await scraped(ports[master])
            entries = labelled(m, "netbroker_group_replication_lag_entries", follower=slave)
            return m if entries == 0 else None

        m = await wait_for(idle, 10, f"{slave} caught up")
        g = {"group": "B"}
        assert labelled(m, "netbroker_group_replication_lag_seconds", follower=slave) == 0
        assert labelled(m, "netbroker_group_role", role="master", **g) == 1
        assert labelled(m, "netbroker_group_in_sync_members", **g) == 2
        assert labelled(m, "netbroker_group_elections_total", **g) == 1
        assert labelled(m, "netbroker_group_became_master_total", **g) == 1
        s = await scraped(ports[slave])
        assert labelled(s, "netbroker_group_role", role="slave", **g) == 1
        assert labelled(s, "netbroker_group_elections_total", **g) == 1
        assert labelled(s, "netbroker_group_became_master_total", **g) == 0
        assert labelled(s, "netbroker_group_replication_lag_entries", **g) is None
        # Log entries (store writes), not messages: the 100 went in few batches.
        position = labelled(m, "netbroker_group_replication_position", **g)
        assert position is not None and position >= 1
        assert labelled(s, "netbroker_group_replication_position", **g) == position

        procs[master].kill()
        assert await wait_master({slave: procs[slave]}, timeout=20) == slave

        async def counted() -> Samples | None:
            m = await scraped(ports[slave])
            return m if labelled(m, "netbroker_group_role", role="master", **g) == 1 else None

        m = await wait_for(counted, 10, f"{slave} master on /metrics")
        assert labelled(m, "netbroker_group_elections_total", **g) == 2
        assert labelled(m, "netbroker_group_became_master_total", **g) == 1
        epoch = labelled(m, "netbroker_group_epoch", **g)
        assert epoch is not None and epoch >= 2
        # The dead master is no follower of the new one: no lag reported for it.
        assert labelled(m, "netbroker_group_replication_lag_entries", follower=master) is None

    run(scenario(), timeout=120)


def test_up_serves_metrics_on_the_free_ports_it_picks(
    relocated: Callable[..., Relocated], tmp_path: Path
) -> None:
    t = relocated("ab_c.yaml")
    raw = yaml.safe_load(t.path.read_text())
    for group in raw["groups"].values():
        for spec in group["brokers"].values():
            spec["metrics_port"] = "auto"
    t.path.write_text(yaml.safe_dump(raw, sort_keys=False))
    r = netbroker("up", str(t.path), "--detach", "--timeout", str(UP_TIMEOUT), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    [line] = [x for x in r.stdout.splitlines() if x.startswith("metrics: ")]
    found = re.findall(r"http://127\.0\.0\.1:(\d+)/metrics \((\w)\)", line)
    ports = {name: int(port) for port, name in found}
    assert sorted(ports) == ["a", "b", "c"] and len(set(ports.values())) == 3, line
    roles = {}
    for name, port in ports.items():
        m = scrape(port)
        [role] = [dict(k[1])["role"] for k, v in m.items()
                  if k[0] == "netbroker_broker_role" and v == 1]  # fmt: skip
        assert labelled(m, "netbroker_broker_role", broker=name, role=role) == 1
        roles[name] = role
    assert roles["a"] == "standalone" and sorted([roles["b"], roles["c"]]) == ["master", "slave"]
    status = netbroker("status", str(t.path), cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert line in status.stdout.splitlines()
    assert not math.isnan(scrape(ports["a"])[("process_cpu_seconds_total", ())])
