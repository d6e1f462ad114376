"""STOMP against real broker processes with the real stomp.py client: every ack mode and
version, NACK to redelivery to DLQ, transactions, receipts after durability (kill -9),
heart-beat timeouts, binary bodies, header escaping, topics (fan-out, wildcards,
durable), and malformed frames over a raw socket (ERROR, then close, and the broker
serves others)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import ROOT, BrokerProcess
from tests.support.stomp_peer import Collector, RawStomp, connect, stomp_broker


@pytest.fixture
def stomp_brokers(tmp_path: Path) -> Iterator[Callable[..., BrokerProcess]]:
    started: list[BrokerProcess] = []

    def start(name: str = "a", *args: str) -> BrokerProcess:
        broker = stomp_broker(name, tmp_path / name, *args)
        started.append(broker)
        return broker.start()

    yield start
    for broker in started:
        broker.stop()


@pytest.fixture
def sb(stomp_brokers: Callable[..., BrokerProcess]) -> BrokerProcess:
    return stomp_brokers("a", "--max-redeliveries", "2")


def _port(broker: BrokerProcess) -> int:
    return broker.stomp_port  # type: ignore[attr-defined]


def _send_all(conn: Any, listener: Collector, queue: str, n: int, **headers: str) -> None:
    for i in range(n):
        extra = {"receipt": "last"} if i == n - 1 else {}
        conn.send(f"/queue/{queue}", f"m{i}".encode(), headers={**headers, **extra})
    listener.wait_receipt("last")


def _ack(conn: Any, version: str, frame: Any, sub: str) -> None:
    """ACK as each version names a delivery (stomp.py's 1.1 also takes the subscription)."""
    if version == "1.0":
        conn.ack(frame.headers["message-id"])
    elif version == "1.1":
        conn.ack(frame.headers["message-id"], sub)
    else:
        conn.ack(frame.headers["ack"])


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
@pytest.mark.parametrize("mode", ["auto", "client", "client-individual"])
def test_send_and_receive_in_each_ack_mode_and_version(
    sb: BrokerProcess, version: str, mode: str
) -> None:
    port = _port(sb)
    queue = f"modes-{version}-{mode}"
    producer, plist = connect(port, version)
    _send_all(producer, plist, queue, 50, persistent="true")
    consumer, clist = connect(port, version)
    consumer.subscribe(f"/queue/{queue}", id="s", ack=mode, headers={"activemq.prefetchSize": "10"})
    # The prefetch of 10 holds back the 11th until acks come (client modes) or the
    # deliveries are written (auto).
    got: list[Any] = []
    for upto in range(10, 51, 10):
        got = clist.wait_messages(upto)
        if mode != "auto":
            assert clist.quiet(0.2) == 0 and len(clist.messages) == upto
        if mode == "client":
            _ack(consumer, version, got[-1], "s")  # cumulative: all so far
        elif mode == "client-individual":
            for frame in got[upto - 10 : upto]:
                _ack(consumer, version, frame, "s")
    assert [f.body for f in got] == [f"m{i}".encode() for i in range(50)]
    assert all(f.headers["redelivered"] == "false" for f in got)
    consumer.disconnect(receipt="bye")
    # Nothing left: a new consumer gets nothing within a quiet second.
    again, alist = connect(port, version)
    again.subscribe(f"/queue/{queue}", id="s2", ack="client-individual")
    assert alist.quiet(1.0) == 0
    again.disconnect()
    producer.disconnect()


def test_client_mode_unacked_come_back_marked(sb: BrokerProcess) -> None:
    port = _port(sb)
    producer, plist = connect(port)
    _send_all(producer, plist, "unacked", 10, persistent="true")
    consumer, clist = connect(port)
    consumer.subscribe("/queue/unacked", id="s", ack="client")
    got = clist.wait_messages(10)
    consumer.ack(got[3].headers["ack"])  # acks m0..m3, cumulatively
    consumer.disconnect(receipt="bye")
    again, alist = connect(port)
    again.subscribe("/queue/unacked", id="s", ack="client-individual")
    back = alist.wait_messages(6)
    assert [f.body for f in back] == [f"m{i}".encode() for i in range(4, 10)]
    assert all(f.headers["redelivered"] == "true" for f in back)
    assert alist.quiet(0.5) == 0
    again.disconnect()
    producer.disconnect()


def test_nack_redelivers_marked_then_dead_letters(sb: BrokerProcess) -> None:
    port = _port(sb)
    producer, plist = connect(port)
    _send_all(producer, plist, "poison", 1, persistent="true")
    consumer, clist = connect(port)
    consumer.subscribe("/queue/poison", id="s", ack="client-individual")
    # --max-redeliveries 2: delivered, NACKed, redelivered twice, then DLQ.poison.
    for n in range(3):
        frame = clist.wait_messages(n + 1)[n]
        assert frame.headers["redelivered"] == ("true" if n else "false")
        consumer.nack(frame.headers["ack"])
    assert clist.quiet(0.5) == 0
    dlq, dlist = connect(port)
    dlq.subscribe("/queue/DLQ.poison", id="d", ack="auto")
    (dead,) = dlist.wait_messages(1)
    assert dead.body == b"m0"
    assert "redelivered more than 2" in dead.headers["dlq_reason"]
    assert dead.headers["dlq_original_queue"] == "poison"
    for conn in (dlq, consumer, producer):
        conn.disconnect()


def test_transaction_commit_and_abort(sb: BrokerProcess) -> None:
    port = _port(sb)
    producer, plist = connect(port)
    _send_all(producer, plist, "tx-in", 4, persistent="true")
    conn, listener = connect(port)
    conn.subscribe("/queue/tx-in", id="s", ack="client-individual")
    got = listener.wait_messages(4)
    # Aborted: its send never happens and its ack is undone.
    tx = conn.begin()
    conn.send("/queue/tx-out", b"aborted", transaction=tx, headers={"persistent": "true"})
    conn.ack(got[0].headers["ack"], transaction=tx)
    conn.abort(tx, receipt="aborted")
    listener.wait_receipt("aborted")
    # Committed: m1 and m2 acked and two messages sent, together.
    tx = conn.begin()
    for body in (b"c1", b"c2"):
        conn.send("/queue/tx-out", body, transaction=tx, headers={"persistent": "true"})
    conn.ack(got[1].headers["ack"], transaction=tx)
    conn.ack(got[2].headers["ack"], transaction=tx)
    conn.commit(tx, receipt="committed")
    listener.wait_receipt("committed")
    conn.disconnect(receipt="bye")  # m0 and m3 unacked: back, marked
    reader, rlist = connect(port)
    reader.subscribe("/queue/tx-out", id="o", ack="auto")
    reader.subscribe("/queue/tx-in", id="i", ack="auto")
    frames = rlist.wait_messages(4)
    assert rlist.quiet(0.5) == 0
    by_queue = sorted((f.headers["destination"], f.body, f.headers["redelivered"]) for f in frames)
    assert by_queue == [
        ("/queue/tx-in", b"m0", "true"),
        ("/queue/tx-in", b"m3", "true"),
        ("/queue/tx-out", b"c1", "false"),
        ("/queue/tx-out", b"c2", "false"),
    ]
    reader.disconnect()
    producer.disconnect()


def test_dropped_connection_inside_a_transaction_changes_nothing(sb: BrokerProcess) -> None:
    port = _port(sb)
    producer, plist = connect(port)
    _send_all(producer, plist, "drop-in", 2, persistent="true")
    raw = RawStomp(port)
    raw.write(b"CONNECT\naccept-version:1.2\nhost:x\n\n\0")
    assert raw.read_frame().startswith(b"CONNECTED")
    raw.write(b"SUBSCRIBE\nid:s\ndestination:/queue/drop-in\nack:client-individual\n\n\0")
    acks = []
    for _ in range(2):
        frame = raw.read_frame()
        acks.append(next(h for h in frame.split(b"\n") if h.startswith(b"ack:"))[4:])
    raw.write(b"BEGIN\ntransaction:t\n\n\0")
    raw.write(b"SEND\ndestination:/queue/drop-out\ntransaction:t\npersistent:true\n\nlost\0")
    for ack in acks:
        raw.write(b"ACK\nid:" + ack + b"\ntransaction:t\n\n\0")
    raw.write(b"SUBSCRIBE\nid:r\ndestination:/queue/other\nreceipt:sync\n\n\0")
    assert b"receipt-id:sync" in raw.read_frame()  # every frame before it was read
    raw.close()  # no COMMIT
    reader, rlist = connect(port)
    reader.subscribe("/queue/drop-in", id="i", ack="auto")
    reader.subscribe("/queue/drop-out", id="o", ack="auto")
    frames = rlist.wait_messages(2)
    assert rlist.quiet(0.5) == 0
    assert sorted((f.headers["destination"], f.body) for f in frames) == [
        ("/queue/drop-in", b"m0"),
        ("/queue/drop-in", b"m1"),
    ]
    assert all(f.headers["redelivered"] == "true" for f in frames)
    reader.disconnect()
    producer.disconnect()


def test_a_receipted_send_survives_kill_9(stomp_brokers: Callable[..., BrokerProcess]) -> None:
    broker = stomp_brokers("k")
    port = _port(broker)
    conn, listener = connect(port)
    for i in range(200):
        conn.send("/queue/durable", f"d{i}".encode(), headers={"persistent": "true"})
    conn.send("/queue/durable", b"last", headers={"persistent": "true", "receipt": "r"})
    listener.wait_receipt("r")
    broker.kill()  # right after the RECEIPT
    broker.start()
    reader, rlist = connect(port)
    reader.subscribe("/queue/durable", id="s", ack="auto")
    frames = rlist.wait_messages(201)
    assert [f.body for f in frames] == [f"d{i}".encode() for i in range(200)] + [b"last"]
    reader.disconnect()


def test_missed_heartbeats_close_the_connection(sb: BrokerProcess) -> None:
    raw = RawStomp(_port(sb))
    raw.write(b"CONNECT\naccept-version:1.2\nhost:x\nheart-beat:200,0\n\n\0")
    connected = raw.read_frame()
    assert b"heart-beat:" in connected
    started = time.monotonic()
    data = raw.read_until_closed(timeout=10)  # silent from here on
    took = time.monotonic() - started
    assert b"ERROR" in data and b"no heart-beat from the client" in data
    # Expected every max(200 ms, the broker's 1 s): dead after twice that, not before.
    assert 1.9 < took < 6, took
    raw.close()


def test_heartbeats_keep_a_quiet_connection_open(sb: BrokerProcess) -> None:
    # stomp.py gives up on a broker silent for 1.5 times the negotiated 1 s: only the
    # broker's heart-beats keep the connection through 3 s of quiet.
    conn, listener = connect(_port(sb), heartbeats=(100, 100))
    time.sleep(3.0)
    assert conn.is_connected() and not listener.errors
    conn.send("/queue/hb", b"still here", headers={"receipt": "r"})
    listener.wait_receipt("r")
    conn.disconnect()


def test_binary_bodies_and_header_escaping_round_trip(sb: BrokerProcess) -> None:
    port = _port(sb)
    conn, listener = connect(port)
    body = bytes(range(256)) * 16 + b"\0\0end\0"
    # (stomp.py escapes header values only, so the names here are plain.)
    odd = {"colon": "a:b", "newline": "line1\nline2", "backslash": "c:\\dir\\", "cr": "x\ry"}
    conn.send("/queue/binary", body, headers={**odd, "receipt": "r", "persistent": "true"})
    listener.wait_receipt("r")
    conn.subscribe("/queue/binary", id="s", ack="auto")
    (frame,) = listener.wait_messages(1)
    assert frame.body == body
    for key, value in odd.items():
        assert frame.headers[key] == value, key
    conn.disconnect()


MALFORMED = [
    (b"FROB\n\n\0", b"unknown command"),
    (b"SEND\ndestination:a\n\n\0", b"expected CONNECT or STOMP"),
    (b"CONNECT\naccept-version:9.9\n\n\0", b"no common version"),
    (b"CONNECT\naccept-version:1.2\n\n\0SEND\nbroken header\n\n\0", b"without a colon"),
    (b"CONNECT\naccept-version:1.2\n\n\0SEND\ndestination:a\nx:\\t\n\n\0", b"escape"),
    (b"CONNECT\naccept-version:1.2\n\n\0SEND\ncontent-length:3\ndestination:a\n\nabcd\0", b"NUL"),
    (b"CONNECT\naccept-version:1.2\n\n\0SUBSCRIBE\nid:1\ndestination:a\n\nbody\0", b"body"),
    (b"CONNECT\naccept-version:1.2\n\n\0ACK\nid:7-7\nreceipt:r1\n\n\0", b"receipt-id:r1"),
    (b"CONNECT\naccept-version:1.2\n\n\0SEND\ndestination:/topic/a.*\n\nx\0", b"wildcard"),
    (b"CONNECT\naccept-version:1.2\n\n\0" + b"SEND\n" + b"h:v\n" * 5000 + b"\n\0", b"over"),
    (
        b"CONNECT\naccept-version:1.2\n\n\0SEND\ndestination:a\nx:" + b"y" * 20000 + b"\n\n\0",
        b"over",
    ),
    (
        b"CONNECT\naccept-version:1.2\n\n\0SEND\ndestination:a\ncontent-length:999999999\n\n",
        b"over",
    ),
    (b"\xff\xfe\xfd\n\n\0", b"not valid UTF-8"),
    (b"G" * 100_000, b"frame headers over"),
]


@pytest.mark.parametrize(("data", "expected"), MALFORMED)
def test_malformed_frames_get_an_error_then_close(
    sb: BrokerProcess, data: bytes, expected: bytes
) -> None:
    port = _port(sb)
    raw = RawStomp(port)
    raw.write(data)
    out = raw.read_until_closed()
    assert b"ERROR" in out and b"message:" in out, out
    assert expected in out, out
    raw.close()
    # The broker is unharmed: another client is served.
    conn, listener = connect(port)
    conn.send("/queue/after-bad", b"fine", headers={"receipt": "ok"})
    listener.wait_receipt("ok")
    conn.disconnect()
    assert sb.alive


def test_a_receipt_for_subscribe_and_disconnect(sb: BrokerProcess) -> None:
    raw = RawStomp(_port(sb))
    raw.write(b"STOMP\naccept-version:1.1,1.2\nhost:x\n\n\0")
    assert b"version:1.2" in raw.read_frame()
    raw.write(b"SUBSCRIBE\nid:1\ndestination:q\nreceipt:a\n\n\0DISCONNECT\nreceipt:b\n\n\0")
    assert b"receipt-id:a" in raw.read_frame()
    assert b"receipt-id:b" in raw.read_frame()
    raw.read_until_closed()
    raw.close()


def test_a_stopping_broker_ends_its_stomp_connections_with_an_error(
    stomp_brokers: Callable[..., BrokerProcess],
) -> None:
    broker = stomp_brokers("s")
    raw = RawStomp(_port(broker))
    raw.write(b"CONNECT\naccept-version:1.2\nhost:x\n\n\0")
    assert raw.read_frame().startswith(b"CONNECTED")
    assert broker.proc is not None
    broker.proc.terminate()  # SIGTERM: the gate closes, open connections are told
    out = raw.read_until_closed()
    assert out.startswith(b"ERROR") and b"message:broker s is shutting down" in out, out
    raw.close()
    assert broker.proc.wait(10) == 0


def test_a_send_the_core_refuses_is_an_error_naming_its_receipt(
    stomp_brokers: Callable[..., BrokerProcess],
) -> None:
    broker = stomp_brokers("m", "--max-message-bytes", "1000")
    raw = RawStomp(_port(broker))
    raw.write(b"CONNECT\naccept-version:1.2\nhost:x\n\n\0")
    assert raw.read_frame().startswith(b"CONNECTED")
    # The body passes the frame's bound; with its header the message is over the core's.
    raw.write(
        b"SEND\ndestination:big\nreceipt:r-big\nx-pad:" + b"p" * 300
        + b"\ncontent-length:900\n\n" + b"x" * 900 + b"\0"
    )  # fmt: skip
    out = raw.read_until_closed()
    assert out.startswith(b"ERROR") and b"receipt-id:r-big" in out, out
    assert b"over the broker's limit of 1000 bytes" in out, out
    raw.close()


def test_a_stomp_port_in_use_stops_the_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "broker", "broker", "--name", "x", "--port", "0",
             "--stomp-port", str(port), "--data", str(tmp_path / "x")],
            cwd=ROOT, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert result.returncode != 0
    assert f"cannot listen for STOMP on 127.0.0.1:{port}: port in use" in result.stderr


def test_a_client_that_does_not_read_is_not_read_from(sb: BrokerProcess) -> None:
    port = _port(sb)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"CONNECT\naccept-version:1.2\nhost:x\n\n\0")
    assert sock.recv(4096).startswith(b"CONNECTED")
    # Each pair of frames asks for two receipts of about 1 KiB: answers that pile up at
    # the broker while this client reads nothing.
    pad = b"r" * 1000
    pair = (
        b"SUBSCRIBE\nid:1\ndestination:q\nreceipt:" + pad + b"\n\n\0"
        b"UNSUBSCRIBE\nid:1\nreceipt:" + pad + b"\n\n\0"
    )
    chunk = pair * 64
    sock.settimeout(5)
    sent = 0
    with pytest.raises(TimeoutError):
        while sent < 512 * 1024 * 1024:
            sock.sendall(chunk)
            sent += len(chunk)
    # The broker stopped reading once its write buffer (4 MiB) was full, not after 512.
    assert sent < 64 * 1024 * 1024, sent
    sock.close()
    conn, listener = connect(port)
    conn.send("/queue/still-served", b"x", headers={"receipt": "ok"})
    listener.wait_receipt("ok")
    conn.disconnect()


def test_topics_fan_out_to_every_subscriber_and_wildcard(sb: BrokerProcess) -> None:
    port = _port(sb)
    subs = [connect(port) for _ in range(3)]
    patterns = ["/topic/orders.eu", "/topic/orders.*", "/topic/orders.>"]
    for (conn, listener), pattern in zip(subs, patterns, strict=True):
        conn.subscribe(pattern, id="t", ack="client-individual", headers={"receipt": "in"})
        listener.wait_receipt("in")
    producer, plist = connect(port)
    producer.send("/topic/orders.eu", b"eu", headers={"persistent": "true"})
    producer.send("/topic/orders.eu.fr", b"fr", headers={"receipt": "sent"})
    plist.wait_receipt("sent")
    expected = [[b"eu"], [b"eu"], [b"eu", b"fr"]]
    for (conn, listener), want in zip(subs, expected, strict=True):
        frames = listener.wait_messages(len(want))
        assert [f.body for f in frames] == want
        assert frames[0].headers["destination"] == "/topic/orders.eu"
        for frame in frames:
            conn.ack(frame.headers["ack"])
        assert listener.quiet(0.3) == 0
        conn.disconnect()
    producer.disconnect()


def test_a_durable_topic_subscription_keeps_messages_while_away_and_over_a_restart(
    stomp_brokers: Callable[..., BrokerProcess],
) -> None:
    broker = stomp_brokers("d")
    port = _port(broker)
    who = {"client-id": "app-1"}
    durable = {"activemq.subscriptionName": "news-feed", "receipt": "in"}
    conn, listener = connect(port, headers=who)
    conn.subscribe("/topic/news", id="d", ack="client-individual", headers=durable)
    listener.wait_receipt("in")
    conn.disconnect()  # away: the subscription keeps what is published
    producer, plist = connect(port)
    for i in range(5):
        producer.send("/topic/news", f"n{i}".encode(), headers={"persistent": "true"})
    producer.send("/topic/news", b"last", headers={"persistent": "true", "receipt": "r"})
    plist.wait_receipt("r")
    producer.disconnect()
    broker.stop()
    broker.start()
    conn, listener = connect(port, headers=who)
    conn.subscribe("/topic/news", id="d", ack="client-individual", headers=durable)
    frames = listener.wait_messages(6)
    assert [f.body for f in frames] == [b"n0", b"n1", b"n2", b"n3", b"n4", b"last"]
    for frame in frames:
        conn.ack(frame.headers["ack"])
    # UNSUBSCRIBE naming it removes it: what is published next is kept for nobody.
    conn.unsubscribe("d", headers={"activemq.subscriptionName": "news-feed", "receipt": "gone"})
    listener.wait_receipt("gone")
    conn.disconnect()
    producer, plist = connect(port)
    producer.send("/topic/news", b"after", headers={"persistent": "true", "receipt": "r2"})
    plist.wait_receipt("r2")
    producer.disconnect()
    conn, listener = connect(port, headers=who)
    conn.subscribe("/topic/news", id="d", ack="auto", headers=durable)
    listener.wait_receipt("in")
    assert listener.quiet(0.5) == 0
    conn.disconnect()
