"""/metrics of a real broker process, scraped over HTTP and parsed with
prometheus_client's own parser, after known traffic: the values are what was sent,
consumed and subscribed."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from broker.client import Client
from tests.support.aio import run
from tests.support.procs import ROOT, BrokerProcess, free_port

Start = Callable[..., BrokerProcess]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
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
