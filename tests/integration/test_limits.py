"""Memory bounds and bad input against a real broker process.

* A consumer asking for prefetch 2^32-1 that never reads, under a non-persistent flood:
  the broker's RSS stays bounded (it levelled at ~740 MB against the 256 MiB limit).
* A message is measured whole: oversized headers, too many headers, an oversized id are
  refused with INVALID_ARGUMENT saying which.
* Undecodable requests get INVALID_ARGUMENT (not UNKNOWN: DecodeError), and the broker
  goes on serving.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from broker.client import BrokerError, Client
from broker.pb import admin_pb2, client_pb2, client_pb2_grpc
from broker.server.service import MAX_PREFETCH
from netconnector.outbox import LINK_METHOD
from tests.support.aio import run
from tests.support.procs import BrokerProcess
from tests.support.scenario import queue_info, receive_all, wait_for

MiB = 1024 * 1024
BROKER_SERVICE = client_pb2.DESCRIPTOR.services_by_name["Broker"].full_name
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name


def rss(proc: BrokerProcess) -> int:
    """The broker's resident set in bytes, from /proc."""
    assert proc.proc is not None
    for line in Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_huge_prefetch_consumer_that_never_reads_keeps_the_broker_bounded(
    broker: BrokerProcess,
) -> None:
    body = b"n" * 1024
    flood = 400_000  # 400 MiB of bodies: far past the 256 MiB non-persistent limit

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(broker.url) as channel:
            # Subscribes for (nearly) everything and never reads a delivery.
            idle = client_pb2_grpc.BrokerStub(channel).Consume()
            await idle.write(
                client_pb2.ConsumeRequest(
                    subscribe=client_pb2.Subscribe(queue="flood", prefetch=2**32 - 1)
                )
            )
            peak = rss(broker)
            start_rss = peak
            async with await Client.connect(broker.url) as client:
                producers = [client.producer(max_in_flight=4_000) for _ in range(2)]
                acked = 0
                last_ack = time.monotonic()

                def done(future: asyncio.Future[str]) -> None:
                    nonlocal acked, last_ack
                    if not future.cancelled() and future.exception() is None:
                        acked += 1
                        last_ack = time.monotonic()

                async def send(producer: object, count: int) -> None:
                    for _ in range(count):
                        future = await producer.send("flood", body, persistent=False)  # type: ignore[attr-defined]
                        future.add_done_callback(done)

                senders = [
                    asyncio.create_task(send(p, flood // len(producers))) for p in producers
                ]
                # Until the broker holds producers back (no ack for 3 s) or all is sent.
                while not all(s.done() for s in senders):
                    await asyncio.sleep(0.2)
                    peak = max(peak, rss(broker))
                    if time.monotonic() - last_ack > 3.0:
                        break
                for _ in range(10):  # let whatever was on its way land
                    await asyncio.sleep(0.2)
                    peak = max(peak, rss(broker))
                info = await queue_info(client, "flood")
                assert info is not None
                print(
                    f"acked {acked} of {flood} non-persistent 1 KiB sends; in flight to the "
                    f"idle consumer {info.in_flight}, pending {info.pending}; broker RSS "
                    f"{start_rss / MiB:.0f} MiB at start, peak {peak / MiB:.0f} MiB"
                )
                assert info.in_flight <= MAX_PREFETCH
                # Flow control must have held producers back rather than the broker grow.
                assert acked < flood, "the whole flood fitted: the test proves nothing"
                for s in senders:
                    s.cancel()
                await asyncio.gather(*senders, return_exceptions=True)
            idle.cancel()
        # Well under the ~740 MB measured before in-flight and prefetch were bounded.
        assert peak < 420 * MiB, f"broker RSS peaked at {peak / MiB:.0f} MiB"

    run(scenario(), timeout=240)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"headers": {"big": "v" * MiB}}, "header 'big': name of 3 and value of 1048576"),
        ({"headers": {f"h{i}": "x" for i in range(10_000)}}, "10000 headers, over the limit"),
        ({"headers": {"k" * 20_000: "x"}}, "over the limit of 10240 for each"),
        ({"message_id": "i" * 100 * 1024}, "message id is 102400 characters"),
    ],
)
def test_oversized_message_parts_are_refused(
    broker: BrokerProcess, kwargs: dict[str, object], reason: str
) -> None:
    async def scenario() -> None:
        async with await Client.connect(broker.url) as client:
            with pytest.raises(BrokerError) as info:
                await client.send("parts", b"x", **kwargs)  # type: ignore[arg-type]
            assert info.value.code == "INVALID_ARGUMENT", info.value
            assert reason in info.value.message, info.value.message
            # Nothing of it was stored; the broker serves the next send.
            await client.send("parts", b"fine", headers={"ok": "yes"})
            got = await receive_all(client, "parts", 1, timeout=2)
            assert [d.body for d in got] == [b"fine"]

    run(scenario())


def test_whole_message_counts_against_max_message_bytes(
    brokers: object,
) -> None:
    broker = brokers("a", "--max-message-bytes", str(64 * 1024))  # type: ignore[operator]

    async def scenario() -> None:
        async with await Client.connect(broker.url) as client:
            # The body is within the limit; with its headers the message is not.
            headers = {f"h{i}": "v" * 9_000 for i in range(8)}
            with pytest.raises(BrokerError) as info:
                await client.send("whole", b"b" * 1024, headers=headers)
            assert info.value.code == "INVALID_ARGUMENT"
            assert "bytes serialized" in info.value.message
            assert "over the broker's limit of 65536 bytes" in info.value.message

    run(scenario())


GARBAGE = b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"


def test_undecodable_requests_get_invalid_argument_and_harm_nothing(
    broker: BrokerProcess,
) -> None:
    async def scenario() -> None:
        async with grpc.aio.insecure_channel(broker.url) as channel:
            for method in ("Produce", "Consume"):
                call = channel.stream_stream(
                    f"/{BROKER_SERVICE}/{method}",
                    request_serializer=lambda b: b,
                    response_deserializer=lambda b: b,
                )()
                await call.write(GARBAGE)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await asyncio.wait_for(call.read(), 5)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
                details = info.value.details() or ""
                assert f"Broker/{method}: the request (11 bytes) is not a valid" in details
                print(f"{method}: {details}")
            # A good batch first, then garbage: the good one is answered, then the end.
            produce = channel.stream_stream(
                f"/{BROKER_SERVICE}/Produce",
                request_serializer=lambda b: b,
                response_deserializer=client_pb2.ProduceResponse.FromString,
            )()
            good = client_pb2.ProduceRequest(batch_id=7)
            good.messages.add(
                id="g1", destination="kept", body=b"kept", persistent=True, priority=4
            )
            await produce.write(good.SerializeToString())
            await produce.write(GARBAGE)
            answer = await produce.read()
            assert isinstance(answer, client_pb2.ProduceResponse) and answer.ok
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await produce.read()
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            for method in ("Status", "ListQueues", "Purge", "Browse"):
                unary = channel.unary_unary(
                    f"/{ADMIN_SERVICE}/{method}",
                    request_serializer=lambda b: b,
                    response_deserializer=lambda b: b,
                )
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await unary(GARBAGE, timeout=5)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
                assert f"Admin/{method}: the request" in (info.value.details() or "")
            # The bridge port is the same port: another broker's garbage is refused alike.
            link = channel.stream_stream(
                LINK_METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b
            )()
            await link.write(GARBAGE)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await asyncio.wait_for(link.read(), 5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
            assert "Bridge/Link: the request" in (info.value.details() or "")
        async with await Client.connect(broker.url) as client:
            assert (await client.status()).name == "a"
            await client.send("kept", b"after")
            got = await receive_all(client, "kept", 2, timeout=2)
            assert [d.body for d in got] == [b"kept", b"after"]

    run(scenario())


def test_prefetch_above_the_maximum_is_served_as_the_maximum(broker: BrokerProcess) -> None:
    async def scenario() -> None:
        async with await Client.connect(broker.url) as client:
            producer = client.producer(max_in_flight=10_000)
            for _ in range(MAX_PREFETCH + 100):
                await producer.send("capped", b"", persistent=False)
            await producer.flush()
            consumer = await client.subscribe("capped", prefetch=2**32 - 1)

            async def held() -> bool:
                info = await queue_info(client, "capped")
                return info is not None and info.in_flight == MAX_PREFETCH

            await wait_for(held, 20, f"{MAX_PREFETCH} in flight")
            await asyncio.sleep(0.3)
            info = await queue_info(client, "capped")
            assert info is not None and (info.in_flight, info.pending) == (MAX_PREFETCH, 100)
            await consumer.close()

    run(scenario(), timeout=120)
