"""The CLI against real broker processes: send/recv/stat, and `up`/`status`/`down`."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.cluster.processes import pid_alive
from broker.config import BrokerConfig
from netconnector.uri import parse_connector
from tests.support.procs import BrokerProcess, free_port
from tests.support.uptools import Lines, wait_until

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def netbroker(
    *args: str, cwd: Path = ROOT, input: bytes | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "broker", *args],
        cwd=cwd, env=ENV, input=input, capture_output=True, timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def ok(result: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[bytes]:
    assert result.returncode == 0, result.stderr.decode()
    assert b"Traceback" not in result.stderr
    return result


# --------------------------------------------------------------- send, recv, stat


def test_send_recv_one(broker: BrokerProcess) -> None:
    sent = ok(netbroker("send", "--url", broker.url, "greetings", "hello"))
    assert re.fullmatch(rb"sent 1 message to greetings in [0-9.]+ s \(id \w+\)\n", sent.stdout)
    got = ok(netbroker("recv", "--url", broker.url, "greetings"))
    assert got.stdout == b"hello\n"
    assert got.stderr == b""


def test_send_many_then_recv_to_file(broker: BrokerProcess, tmp_path: Path) -> None:
    body = "x" * 100
    sent = ok(netbroker("send", "--url", broker.url, "bulk", "--count", "500", body,
                        "--priority", "6", "--header", "k=v", "--non-persistent"))
    assert sent.stdout.startswith(b"sent 500 messages to bulk in ")
    out = tmp_path / "out.bin"
    got = ok(netbroker("recv", "--url", broker.url, "bulk", "--count", "500",
                       "--output", str(out)))
    assert out.read_bytes() == body.encode() * 500
    assert b"received 500 messages from bulk" in got.stderr

    stat = ok(netbroker("stat", "--url", broker.url)).stdout.decode()
    assert stat.startswith("broker a  role standalone  address ")
    row = next(line.split() for line in stat.splitlines() if line.startswith("bulk "))
    # queue, depth, pending, in-flight, enqueued, dequeued, consumers
    assert row == ["bulk", "0", "0", "0", "500", "500", "0"]


def test_binary_file_round_trip(broker: BrokerProcess, tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    src, dst = tmp_path / "in.bin", tmp_path / "out.bin"
    src.write_bytes(data)
    ok(netbroker("send", "--url", broker.url, "files", "--file", str(src), "--ttl", "60"))
    ok(netbroker("recv", "--url", broker.url, "files", "--output", str(dst)))
    assert dst.read_bytes() == data


def test_send_body_from_stdin(broker: BrokerProcess) -> None:
    ok(netbroker("send", "--url", broker.url, "piped", "--file", "-", input=b"from stdin"))
    assert ok(netbroker("recv", "--url", broker.url, "piped")).stdout == b"from stdin\n"


def test_recv_short_of_count_exits_1_with_one_line(broker: BrokerProcess) -> None:
    ok(netbroker("send", "--url", broker.url, "few", "--count", "2", "m"))
    result = netbroker("recv", "--url", broker.url, "few", "--count", "3", "--timeout", "0.5")
    assert result.returncode == 1
    assert result.stdout == b"m\nm\n"
    assert result.stderr.decode().splitlines() == [
        "netbroker: received 2 of 3 messages from few: no message arrived within 0.5 s"
    ]


def test_rejected_message_is_one_line(
    brokers: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    small = brokers("small", "--max-message-bytes", "10")
    big = tmp_path / "big"
    big.write_bytes(b"y" * 100)
    result = netbroker("send", "--url", small.url, "q", "--file", str(big))
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"netbroker: {small.url}: "), lines


def test_broker_from_a_config_file_serves(tmp_path: Path) -> None:
    path = tmp_path / "a" / "broker.json"
    path.parent.mkdir()
    BrokerConfig(name="a", port=0, data_dir=tmp_path / "a", max_message_bytes=1000).to_file(path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker", "broker", "--config", str(path)],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert re.fullmatch(r"netbroker: broker a listening on 127\.0\.0\.1:\d+\n", line), line
        url = line.split()[-1]
        ok(netbroker("send", "--url", url, "q", "from a file"))
        assert ok(netbroker("recv", "--url", url, "q")).stdout == b"from a file\n"
        # The file's settings are the broker's: its limit refuses a larger message.
        assert netbroker("send", "--url", url, "q", "x" * 2000).returncode == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


# ------------------------------------------------------------------- up / status / down


@pytest.fixture
def topology(tmp_path: Path) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(f"data: run/t\ngroups:\n  A:\n    brokers:\n      a: {{port: {free_port()}}}\n")
    return path


@pytest.fixture
def up_process(tmp_path: Path, topology: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            [sys.executable, "-m", "broker", "up", topology.name, *args],
            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    # Whatever happened, no broker of this test survives it.
    netbroker("down", topology.name, cwd=tmp_path)


def test_up_foreground_runs_and_stops_on_sigterm(
    tmp_path: Path, topology: Path, up_process: Callable[..., subprocess.Popen[bytes]]
) -> None:
    proc = up_process("--interval", "0.5")
    lines = Lines(proc.stdout)
    lines.expect(r"^broker\s+group\s+role\s+client\s+pid\s+state\s+depth\s+bridges$", 60)
    row = lines.expect(r"^a\s+A\s+standalone\s+(127\.0\.0\.1:\d+)\s+(\d+)\s+up\s+0\s+-$", 5)
    address, pid = row.group(1), int(row.group(2))
    lines.expect(r"^\[\d\d:\d\d:\d\d\] a \(A\): standalone, 0 queues", 10)

    status = ok(netbroker("status", topology.name, cwd=tmp_path)).stdout.decode()
    assert re.search(rf"^a\s+A\s+standalone\s+{re.escape(address)}\s+{pid}\s+up\s+0\s+-$",
                     status, re.MULTILINE), status
    ok(netbroker("send", "--url", address, "q", "via up"))
    lines.expect(r"a \(A\): standalone, 1 queue, depth 1", 10)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert not pid_alive(pid)
    assert not (tmp_path / "run" / "t" / "netbroker-up.json").exists()
    log = (tmp_path / "run" / "t" / "a" / "broker.log").read_text()
    assert "listening on" in log


def test_up_detach_status_down(tmp_path: Path, topology: Path) -> None:
    started = ok(netbroker("up", topology.name, "--detach", cwd=tmp_path))
    assert re.search(rb"^a\s+A\s+standalone\s+", started.stdout, re.MULTILINE)
    state = json.loads((tmp_path / "run" / "t" / "netbroker-up.json").read_text())
    pid = state["brokers"][0]["pid"]
    try:
        assert pid_alive(pid)
        assert b" up " in ok(netbroker("status", topology.name, cwd=tmp_path)).stdout
        # A second `up` refuses instead of starting a second set.
        again = netbroker("up", topology.name, cwd=tmp_path)
        assert again.returncode == 1
        assert b"already running: a (pid" in again.stderr
    finally:
        down = ok(netbroker("down", topology.name, cwd=tmp_path))
    assert f"stopped a (pid {pid})".encode() in down.stdout
    wait_until(lambda: not pid_alive(pid), 5, "the broker to be gone")
    assert not (tmp_path / "run" / "t" / "netbroker-up.json").exists()
    result = netbroker("status", topology.name, cwd=tmp_path)
    assert result.returncode == 1
    assert b"down" in result.stdout


def test_up_keeps_tokens_off_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(
        f"data: run/t\nsecurityToken: s3cret\n"
        f"groups: {{A: {{brokers: {{a: {{port: {free_port()}}}}}}}}}\n"
    )
    ok(netbroker("up", "t.yaml", "--detach", cwd=tmp_path))
    try:
        state = json.loads((tmp_path / "run" / "t" / "netbroker-up.json").read_text())
        pid = state["brokers"][0]["pid"]
        config = tmp_path / "run" / "t" / "a" / "broker.json"
        argv = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")[:-1]
        assert [a.decode() for a in argv] == [
            sys.executable, "-m", "broker", "broker", "--config", str(config)
        ]
        assert config.stat().st_mode & 0o777 == 0o600
        assert json.loads(config.read_text())["token"] == "s3cret"
        # The running broker is still recognised as the one `up` started.
        assert b" up " in ok(netbroker("status", "t.yaml", cwd=tmp_path)).stdout
    finally:
        down = ok(netbroker("down", "t.yaml", cwd=tmp_path))
    assert f"stopped a (pid {pid})".encode() in down.stdout


def test_up_reports_a_broker_that_cannot_start(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        (tmp_path / "t.yaml").write_text(
            f"data: run/t\ngroups: {{A: {{brokers: {{a: {{port: {port}}}}}}}}}\n"
        )
        result = netbroker("up", "t.yaml", "--detach", cwd=tmp_path)
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "Traceback" not in err
    assert ("netbroker: broker a exited with code 1 before it was ready; last lines of "
            "run/t/a/broker.log:") in err
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert not (tmp_path / "run" / "t" / "netbroker-up.json").exists()


def test_single_yaml_plans_one_broker_on_61616() -> None:
    # Running it would need port 61616 free on the test machine; its plan is checked here
    # and `up` itself by the tests above.
    from broker.cluster.loader import load
    from broker.cluster.plan import plan

    plans = plan(load(ROOT / "topologies" / "single.yaml", parse_connector), cwd=ROOT)
    assert [(p.name, p.address) for p in plans] == [("a", "127.0.0.1:61616")]
    assert plans[0].log_path == ROOT / "run" / "single" / "a" / "broker.log"


def _depth(url: str, queue: str) -> int:
    import asyncio

    from broker.client import Client

    async def depth() -> int:
        async with await Client.connect(url) as client:
            return sum(q.depth for q in await client.queues() if q.name == queue)

    return asyncio.run(depth())


def test_ctrl_c_in_send_and_recv_says_how_many(broker: BrokerProcess) -> None:
    """Ctrl-C during a long send or recv exits 130 saying how many messages were sent
    (acknowledged: the queue holds at least that many) or received."""
    send = subprocess.Popen(
        [sys.executable, "-m", "broker", "send", "--url", broker.url, "--count", "1000000",
         "flood", "x"],
        cwd=ROOT, env=ENV, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_until(lambda: _depth(broker.url, "flood") >= 2000, 60, "2,000 messages sent")
        send.send_signal(signal.SIGINT)
        _, err = send.communicate(timeout=30)
    finally:
        send.kill()
    assert send.returncode == 130, err
    match = re.search(rb"interrupted: ([\d,]+) of 1,000,000 messages sent \(acknowledged\) "
                      rb"to flood\n$", err)  # fmt: skip
    assert match, err
    acked = int(match[1].replace(b",", b""))
    depth = _depth(broker.url, "flood")
    assert 2000 <= acked <= depth

    recv = subprocess.Popen(
        [sys.executable, "-m", "broker", "recv", "--url", broker.url, "--count", "1000000",
         "--timeout", "60", "--output", os.devnull, "flood"],
        cwd=ROOT, env=ENV, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_until(lambda: _depth(broker.url, "flood") == 0, 60, "every message received")
        recv.send_signal(signal.SIGINT)
        _, err = recv.communicate(timeout=30)
    finally:
        recv.kill()
    assert recv.returncode == 130, err
    assert err.endswith(
        f"interrupted: {depth:,} of 1,000,000 messages received (acknowledged) from flood\n"
        .encode()
    ), err


def test_browse_shows_pending_messages_in_delivery_order_and_takes_none(
    broker: BrokerProcess,
) -> None:
    ok(netbroker("send", "--url", broker.url, "--header", "kind=low", "orders", "first"))
    ok(netbroker("send", "--url", broker.url, "--priority", "9", "orders", "urgent"))
    ok(netbroker("send", "--url", broker.url, "orders", "--file", "-", input=b"\x00\xffbin"))
    table = ok(netbroker("browse", "--url", broker.url, "orders")).stdout.decode().splitlines()
    assert table[0].split() == ["id", "priority", "redelivered", "persistent", "headers", "body"]
    rows = [line.split() for line in table[1:]]
    assert [r[1:5] for r in rows] == [
        ["9", "0", "yes", "-"], ["4", "0", "yes", "kind=low"], ["4", "0", "yes", "-"]
    ]  # fmt: skip
    assert [r[5] for r in rows] == ["urgent", "first", "\\x00\\xffbin"]
    lines = ok(netbroker("browse", "--url", broker.url, "orders", "--json", "--limit", "2"))
    objects = [json.loads(line) for line in lines.stdout.decode().splitlines()]
    assert [(o["body"], o["priority"], o["headers"]) for o in objects] == [
        ("urgent", 9, {}), ("first", 4, {"kind": "low"})
    ]  # fmt: skip
    # Nothing was taken: all three are still there, in the same order.
    got = ok(netbroker("recv", "--url", broker.url, "orders", "--count", "3", "--json"))
    received = [json.loads(line) for line in got.stdout.decode().splitlines()]
    bodies = [o.get("body", o.get("body_base64")) for o in received]
    assert bodies == ["urgent", "first", "AP9iaW4="]
    assert all(o["redelivered"] is False for o in received)
    missing = netbroker("browse", "--url", broker.url, "nosuch")
    assert missing.returncode == 1
    assert missing.stderr.decode().strip().endswith("no queue named 'nosuch'")


def test_recv_show_headers(broker: BrokerProcess) -> None:
    ok(netbroker("send", "--url", broker.url, "--header", "k=v", "--priority", "7", "q", "hi"))
    out = ok(netbroker("recv", "--url", broker.url, "q", "--show-headers")).stdout.decode()
    head, body = out.split("\n\n", 1)
    fields = dict(line.split(": ", 1) for line in head.splitlines())
    assert fields["priority"] == "7" and fields["k"] == "v" and fields["redelivered"] == "false"
    assert fields["destination"] == "q" and fields["persistent"] == "true" and fields["id"]
    assert body == "hi\n\n"
    both = netbroker("recv", "--url", broker.url, "q", "--json", "--output", "x")
    assert both.returncode == 2


def test_purge_empties_a_queue_and_says_how_many(broker: BrokerProcess) -> None:
    ok(netbroker("send", "--url", broker.url, "--count", "250", "junk", "x"))
    out = ok(netbroker("purge", "--url", broker.url, "junk")).stdout
    assert out == b"purged 250 messages from junk\n"
    assert _depth(broker.url, "junk") == 0
    empty = ok(netbroker("browse", "--url", broker.url, "junk")).stdout
    assert empty == b"junk: no pending messages\n"
