"""One broker, real process, real gRPC on 127.0.0.1: every test counts sent against received."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import subprocess
import sys

import grpc
import pytest

from broker.client import BrokerError, Client, ConnectionLost
from tests.support.aio import run
from tests.support.procs import ROOT, BrokerProcess
from tests.support.scenario import known_queue, queue_info, receive_all, send_many, wait_for


def test_order_is_kept(broker: BrokerProcess) -> None:
    async def scenario() -> None:
        async with await Client.connect(broker.url) as client:
            bodies = [f"m{i}".encode() for i in range(2_000)]
            await send_many(client, "orders", bodies)
            got = await receive_all(client, "orders", 2_000, prefetch=100)
            assert [d.body for d in got] == bodies

    run(scenario())


def test_higher_priority_is_delivered_first(broker: BrokerProcess) -> None:
    async def scenario() -> None:
        async with await Client.connect(broker.url) as client:
            sent = [(f"p{p}-{i}".encode(), p) for i in range(5) for p in (0, 4, 9, 7)]
            for body, priority in sent:
                await client.send("prio", body, priority=priority)
            got = await receive_all(client, "prio", len(sent), prefetch=1)
            expected = [b for b, _ in sorted(sent, key=lambda s: (-s[1], int(s[0].split(b"-")[1])))]
            assert [d.body for d in got] == expected

    run(scenario())


def test_competing_consumers_share_a_queue(broker: BrokerProcess) -> None:
    async def scenario() -> None:
        async with await Client.connect(broker.url) as client:
            n = 4_000
            sent = await send_many(client, "work", [str(i).encode() for i in range(n)])
            consumers = [await client.subscribe("work", prefetch=50) for _ in range(3)]
            counts: collections.Counter[str] = collections.Counter()
            per_consumer = [0, 0, 0]

            async def drain(k: int) -> None:
                while True:
                    d = await consumers[k].receive(timeout=2.0)
                    if d is None:
                        return
                    counts[d.id] += 1
                    per_consumer[k] += 1
                    d.ack()
                    await asyncio.sleep(0)  # let the others take their share

            await asyncio.gather(*(drain(k) for k in range(3)))
            for c in consumers:
                await c.close()
            assert set(counts) == set(sent), f"lost {len(set(sent) - set(counts))}"
            assert sum(counts.values()) == n, "duplicates delivered"
            assert all(share > n // 10 for share in per_consumer), per_consumer

    run(scenario())


def test_prefetch_is_honoured(broker: BrokerProcess) -> None:
    async def scenario() -> None:
        async with await Client.connect(broker.url) as client:
            await send_many(client, "pf", [b"x"] * 100)
            consumer = await client.subscribe("pf", prefetch=7)
            held = [d for _ in range(7) if (d := await consumer.receive(timeout=5)) is not None]
            assert len(held) == 7
            # Nothing is acked: the broker must hold back the rest.
            assert await consumer.receive(timeout=0.5) is None
            info = await queue_info(client, "pf")
            assert info is not None and info.in_flight == 7 and info.pending == 93
            held[0].ack()
            assert await consumer.receive(timeout=5) is not None
            await consumer.close()

    run(scenario())


CONSUMER_SCRIPT = """
import asyncio, sys
from broker.client import Client
async def main():
    client = await Client.connect(sys.argv[1])
    consumer = await client.subscribe("crash", prefetch=50)
    for _ in range(50):
        assert await consumer.receive(timeout=10) is not None
    print("holding 50", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def test_killed_consumer_messages_are_redelivered_marked(broker: BrokerProcess) -> None:
    async def scenario() -> None:
        async with await Client.connect(broker.url) as client:
            sent = await send_many(client, "crash", [str(i).encode() for i in range(200)])
            proc = subprocess.Popen(
                [sys.executable, "-c", CONSUMER_SCRIPT, broker.url],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert proc.stdout is not None
            try:
                line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
                assert line.strip() == "holding 50"
                info = await queue_info(client, "crash")
                assert info is not None and info.in_flight == 50
            finally:
                proc.kill()  # SIGKILL: no goodbye on the stream
                proc.wait()
                proc.stdout.close()
            got = await receive_all(client, "crash", 200, prefetch=500)
            ids = [d.id for d in got]
            assert sorted(ids) == sorted(sent) and len(set(ids)) == 200
            redelivered = [d for d in got if d.redelivered]
            assert len(redelivered) == 50
            assert all(d.redelivery_count == 1 for d in redelivered)
            # The crashed consumer held the first 50; they come back first, in order.
            assert [d.id for d in got[:50]] == sent[:50]

    run(scenario())


def test_redelivery_limit_moves_to_dead_letter_queue(broker: BrokerProcess) -> None:
    async def scenario() -> None:
        async with await Client.connect(broker.url) as client:
            [poison] = await send_many(client, "jobs", [b"poison"])
            await client.send("jobs", b"fine")
            consumer = await client.subscribe("jobs", prefetch=1)
            deliveries = 0
            fine = 0
            while True:
                d = await consumer.receive(timeout=2)
                if d is None:
                    break
                if d.id == poison:
                    deliveries += 1
                    d.nack()
                else:
                    fine += 1
                    d.ack()
            await consumer.close()
            # The first delivery and six redeliveries (ActiveMQ's default limit).
            assert deliveries == 7 and fine == 1
            dead = await receive_all(client, "DLQ.jobs", 1, timeout=5)
            assert [d.id for d in dead] == [poison]
            assert dead[0].headers["dlq_reason"] == "redelivered more than 6 times"
            assert dead[0].headers["dlq_original_queue"] == "jobs"

    run(scenario())


def test_expired_messages_move_to_dead_letter_queue(broker: BrokerProcess) -> None:
    async def scenario() -> None:
        async with await Client.connect(broker.url) as client:
            short = await client.send("exp", b"short", ttl=0.2)
            keep = await client.send("exp", b"keep", ttl=3600)

            async def expired() -> bool:
                info = await queue_info(client, "DLQ.exp")
                return info is not None and info.pending == 1

            await wait_for(expired, timeout=10, what="the expired message in DLQ.exp")
            dead = await receive_all(client, "DLQ.exp", 1, timeout=5)
            assert [d.id for d in dead] == [short]
            assert dead[0].headers["dlq_reason"] == "expired"
            live = await receive_all(client, "exp", 1, timeout=5)
            assert [d.id for d in live] == [keep]

    run(scenario())


def test_duplicate_message_id_is_stored_once(broker: BrokerProcess) -> None:
    async def scenario() -> None:
        async with await Client.connect(broker.url) as client:
            first = await client.send("dup", b"one", message_id="order-42")
            again = await client.send("dup", b"one", message_id="order-42")
            assert first == again == "order-42"
            info = await queue_info(client, "dup")
            assert info is not None and info.depth == 1 and info.enqueued == 1
            got = await receive_all(client, "dup", 2, timeout=1)
            assert [d.id for d in got] == ["order-42"]
            # Still remembered after it was consumed: a late resend is not a new message.
            await client.send("dup", b"one", message_id="order-42")
            assert (await known_queue(client, "dup")).depth == 0

    run(scenario())


def test_kill_9_during_persistent_send_loses_no_acknowledged_message(brokers, tmp_path) -> None:
    broker = brokers("a")
    total = 20_000

    async def produce() -> tuple[list[str], int]:
        acked: list[str] = []
        failed = 0
        client = await Client.connect(broker.url)
        producer = client.producer(max_in_flight=2_000)
        futures = []
        killed = False
        try:
            for i in range(total):
                try:
                    futures.append(await producer.send("durable", f"m{i}".encode()))
                except (ConnectionLost, BrokerError):
                    break
                if not killed and i >= total // 3:
                    # Kill once a good share is acknowledged, while more are in flight.
                    done = sum(1 for f in futures if f.done() and not f.exception())
                    if done >= total // 4:
                        broker.kill()
                        killed = True
        finally:
            for f in futures:
                try:
                    acked.append(await f)
                except (ConnectionLost, BrokerError):
                    failed += 1
            with contextlib.suppress(ConnectionLost, BrokerError):
                await client.close()
        assert killed, "the broker was never killed mid-send"
        return acked, failed

    acked, failed = run(produce(), timeout=120)
    assert len(acked) >= total // 4
    broker.start()

    async def consume() -> list[str]:
        async with await Client.connect(broker.url) as client:
            got = await receive_all(client, "durable", total, timeout=5, prefetch=1000)
            return [d.id for d in got]

    received = run(consume(), timeout=120)
    counts = collections.Counter(received)
    duplicates = sum(n - 1 for n in counts.values())
    lost = set(acked) - set(counts)
    print(
        f"acked {len(acked)}, unacked {failed}, received {len(received)}, "
        f"duplicates {duplicates}, lost {len(lost)}"
    )
    assert not lost, f"{len(lost)} acknowledged messages lost"
    assert duplicates == 0


def test_acknowledged_consumption_survives_kill_9(brokers) -> None:
    broker = brokers("a")

    async def first() -> list[str]:
        async with await Client.connect(broker.url) as client:
            sent = await send_many(client, "half", [str(i).encode() for i in range(1_000)])
            got = await receive_all(client, "half", 400, prefetch=100)
            assert [d.id for d in got] == sent[:400]

            async def settled() -> bool:
                info = await queue_info(client, "half")
                return info is not None and info.depth == 600 and info.consumers == 0

            await wait_for(settled, what="the 400 acks to be applied")
            return sent

    sent = run(first())
    broker.kill()
    broker.start()

    async def second() -> None:
        async with await Client.connect(broker.url) as client:
            got = await receive_all(client, "half", 1_000, timeout=3)
            assert [d.id for d in got] == sent[400:]

    run(second())


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "queue name is empty"),
        ("q" * 256, "256 bytes, over the limit of 255"),
        ("bad\nname", "contains control character"),
        ("nul\x00", "contains control character"),
    ],
)
def test_bad_queue_names_are_refused_and_harm_nothing(
    broker: BrokerProcess, name: str, reason: str
) -> None:
    async def scenario() -> None:
        async with await Client.connect(broker.url) as client:
            with pytest.raises(BrokerError) as info:
                await client.send(name, b"x")
            assert info.value.code == "INVALID_ARGUMENT"
            assert reason in info.value.message
            # The same connection and the broker carry on.
            await client.send("good", b"x")
            with pytest.raises(BrokerError) as info:
                consumer = await client.subscribe(name)
                await consumer.receive(timeout=5)
            assert reason in info.value.message
            assert len(await receive_all(client, "good", 1)) == 1

    run(scenario())


def test_oversized_message_is_refused(brokers) -> None:
    broker = brokers("a", "--max-message-bytes", str(8 * 1024 * 1024))

    async def scenario() -> None:
        async with await Client.connect(broker.url) as client:
            # Above gRPC's default 4 MiB limit, within the broker's: accepted.
            big = b"b" * (6 * 1024 * 1024)
            await client.send("big", big)
            with pytest.raises(BrokerError) as info:
                await client.send("big", b"b" * (8 * 1024 * 1024 + 1))
            assert "over the broker's limit of 8388608 bytes" in info.value.message
            got = await receive_all(client, "big", 2, timeout=1)
            assert [len(d.body) for d in got] == [len(big)]

    run(scenario())


async def raw_consume(url: str, requests: list) -> grpc.aio.AioRpcError:
    """Speak the consume protocol directly, as a misbehaving client would."""
    from broker.pb import client_pb2, client_pb2_grpc

    async with grpc.aio.insecure_channel(url) as channel:
        stub = client_pb2_grpc.BrokerStub(channel)
        queue: asyncio.Queue = asyncio.Queue()
        for r in requests:
            queue.put_nowait(client_pb2.ConsumeRequest(**r))

        async def gen():
            while True:
                yield await queue.get()

        call = stub.Consume(gen())
        try:
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as exc:
            return exc
    raise AssertionError("the broker accepted a bad consume stream")


@pytest.mark.parametrize(
    ("requests", "reason"),
    [
        ([{"subscribe": {"queue": "q", "prefetch": 5}}, {"ack": [12345]}], "delivery tag 12345"),
        (
            [{"subscribe": {"queue": "q", "prefetch": 5}}, {"credit": -3}],
            "credit must not be negative",
        ),
        ([{"credit": 4}], "the first consume request must subscribe"),
    ],
)
def test_protocol_errors_get_a_status_and_harm_nothing(
    broker: BrokerProcess, requests: list, reason: str
) -> None:
    async def scenario() -> None:
        async with await Client.connect(broker.url) as client:
            await client.send("q", b"kept")
            error = await raw_consume(broker.url, requests)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert reason in (error.details() or "")
            got = await receive_all(client, "q", 1)
            assert [d.body for d in got] == [b"kept"]

    run(scenario())


def test_admin_purge_browse_and_unknown_queue(broker: BrokerProcess) -> None:
    async def scenario() -> None:
        async with await Client.connect(broker.url) as client:
            await send_many(client, "p", [str(i).encode() for i in range(30)])
            browsed = await client.browse("p", limit=5)
            assert [m.body for m in browsed] == [str(i).encode() for i in range(5)]
            assert await client.purge("p") == 30
            assert (await known_queue(client, "p")).depth == 0
            with pytest.raises(BrokerError) as info:
                await client.purge("nope")
            assert info.value.code == "NOT_FOUND"

    run(scenario())


def test_port_in_use_and_bad_data_dir_fail_with_one_line(brokers, tmp_path) -> None:
    running = brokers("a")
    clash = subprocess.run(
        [sys.executable, "-m", "broker", "broker", "--name", "b", "--port", str(running.port),
         "--data", str(tmp_path / "b")],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert clash.returncode != 0
    assert f"127.0.0.1:{running.port}" in clash.stderr and "Traceback" not in clash.stderr
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    bad = subprocess.run(
        [sys.executable, "-m", "broker", "broker", "--name", "c", "--port", "0",
         "--data", str(blocker / "sub")],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert bad.returncode != 0
    assert "data directory" in bad.stderr and "Traceback" not in bad.stderr
    # The running broker was not harmed.
    assert running.alive

    async def ping() -> None:
        async with await Client.connect(running.url) as client:
            await client.send("still", b"ok")

    run(ping())
