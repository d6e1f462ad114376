"""The console's HTTP server over real sockets, beside brokers that are not there: the
page and its files, the state and event stream (every broker "down"), the bounds on
watchers, request size and time, a taken port, and a clean stop."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.cli.cluster_cmds import _console
from broker.cluster import model
from broker.cluster.errors import UpError
from broker.cluster.zookeeper import free_ports
from broker.console import server
from broker.console.console import Console, ConsoleError
from tests.unit.test_topology import check


@pytest.fixture
def console() -> Iterator[Console]:
    a, b, c = free_ports(3)  # nothing listens on them: every broker is down
    t = check(
        f"groups: {{A: {{brokers: {{a: {{port: {a}}}}}}}, "
        f"B: {{election: lockfile, brokers: {{b: {{port: {b}}}, c: {{port: {c}}}}}}}}}"
    )
    running = Console.start(t, 0)
    try:
        yield running
    finally:
        running.close()


def get(c: Console, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(c.url + path.lstrip("/"), timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def raw(c: Console, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", c.port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def events(sock: socket.socket, until: bytes, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    got = b""
    deadline = time.monotonic() + timeout
    while until not in got:
        assert time.monotonic() < deadline, got
        chunk = sock.recv(65536)
        assert chunk, got
        got += chunk
    return got


def watch(c: Console) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", c.port), timeout=5)
    s.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{c.port}\r\n\r\n".encode())
    return s


def test_page_files_and_state(console: Console) -> None:
    status, headers, body = get(console, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert b'<script src="/console.js">' in body
    # Nothing on the page comes from another host.
    assert b"http://" not in body.replace(b'xmlns="http://www.w3.org/2000/svg"', b"")
    assert b"https://" not in body
    for path in ("/console.js", "/console.css", "/favicon.svg"):
        assert get(console, path)[0] == 200

    def all_down() -> bool:
        state = json.loads(get(console, "/api/state")[2])
        return {n: b["role"] for n, b in state["brokers"].items()} == dict.fromkeys("abc", "down")

    deadline = time.monotonic() + 5
    while not all_down():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_events_stream_the_state_then_changes(console: Console) -> None:
    with watch(console) as s:
        got = events(s, b"event: state\n")
        assert got.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
        assert b"retry: 1000\n" in got


def test_watchers_are_bounded(console: Console) -> None:
    watchers = [watch(console) for _ in range(server.MAX_WATCHERS)]
    try:
        for s in watchers:
            events(s, b"event: state\n")
        status, _, body = get(console, "/api/events")
        assert status == 503 and b"pages are watching already" in body
    finally:
        for s in watchers:
            s.close()
    # A page that leaves frees its place at once (not at the next write, which may be a
    # keepalive 15 s away).
    deadline = time.monotonic() + 2
    while True:
        with watch(console) as s:
            if events(s, b"\r\n").startswith(b"HTTP/1.1 200 "):
                break
        assert time.monotonic() < deadline, "closed watchers still hold their places"
        time.sleep(0.05)


def test_oversized_slow_and_malformed_requests(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = raw(console, b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n")
    assert big.startswith(b"HTTP/1.1 431 ")
    assert raw(console, b"BREW / HTCPCP/1.0\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    # A name re-pointed at 127.0.0.1 (DNS rebinding) is not this console.
    rebound = raw(console, b"GET /api/state HTTP/1.1\r\nHost: evil.example:8161\r\n\r\n")
    assert rebound.startswith(b"HTTP/1.1 403 ") and b"is not this console" in rebound
    body = b"x" * 5000
    too_big = raw(console, b"POST /api/brokers/a/purge HTTP/1.1\r\nContent-Length: 5000\r\n\r\n"
                  + body)  # fmt: skip
    assert too_big.startswith(b"HTTP/1.1 413 ")
    monkeypatch.setattr(server, "REQUEST_TIMEOUT", 0.5)
    started = time.monotonic()
    slow = raw(console, b"GET / HTTP/1.1\r\n")  # the head never ends
    assert slow.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 3


def test_browse_and_purge_of_a_broker_that_is_down(console: Console) -> None:
    status, _, body = get(console, "/api/brokers/a/queues/q/messages")
    assert status == 503 and b"broker a is down" in body, body
    status, _, body = get(console, "/api/brokers/nobody/queues/q/messages")
    assert status == 404 and b"no broker 'nobody' in this cluster" in body


def test_a_taken_port_is_a_clear_error(console: Console) -> None:
    with pytest.raises(ConsoleError, match=f"cannot listen on 127.0.0.1:{console.port}"):
        Console.start(check("groups: {A: {brokers: {a: {port: 1}}}}"), console.port)


def test_close_stops_serving(console: Console, caplog: pytest.LogCaptureFixture) -> None:
    port = console.port
    with watch(console) as s:  # a page still watching when `up` stops
        events(s, b"event: state\n")
        started = time.monotonic()
        console.close()
        assert time.monotonic() - started < 3
        s.settimeout(2)
        while s.recv(65536):  # its stream ends
            pass
    # No handler ended with an error (Python 3.11 logs a cancelled one as one).
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")], caplog.text
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_up_without_a_console_when_the_default_port_is_taken(
    console: Console, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another cluster's console on the default port: this `up` runs without one and
    says so; a port the file or the command line asked for stops `up` instead."""
    monkeypatch.setattr(model, "DEFAULT_CONSOLE_PORT", console.port)
    t = check("groups: {A: {brokers: {a: {port: 1}}}}")
    start = _console(t, None)
    assert start is not None and start(t) is None
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{console.port}" in err
    assert "running without it (--console-port)" in err
    for asked in (_console(t, console.port), _console(
        check(f"console_port: {console.port}\ngroups: {{A: {{brokers: {{a: {{port: 1}}}}}}}}"), None
    )):  # fmt: skip
        assert asked is not None
        with pytest.raises(UpError, match="choose another with --console-port"):
            asked(t)


def test_a_broker_with_users_answers_the_console_as_its_user_may(tmp_path: Path) -> None:
    """Status is open; listing, browsing and purging need a user with admin rights,
    whose credentials `up` hands the console (NETBROKER_USER, NETBROKER_PASSWORD)."""
    from broker.client import Client
    from broker.credentials import credentials_metadata
    from tests.integration.test_security_auth import PASSWORDS, write_users
    from tests.support.aio import run
    from tests.support.procs import BrokerProcess

    users = write_users(tmp_path / "users.yaml")
    broker = BrokerProcess("a", tmp_path / "a", args=("--users", str(users))).start()
    try:
        t = check(f"groups: {{A: {{brokers: {{a: {{port: {broker.port}}}}}}}}}")

        async def fill() -> None:
            url = broker.url
            async with await Client.connect(url, user="alice", password=PASSWORDS["alice"]) as c:
                await c.send("orders.eu", b"one")

        run(fill(), timeout=30)

        def a_as(c: Console) -> dict[str, Any]:
            deadline = time.monotonic() + 5
            while True:
                a = json.loads(get(c, "/api/state")[2])["brokers"]["a"]
                if a["role"] == "standalone" and (a["queues"] is not None or a["queues_error"]):
                    return a
                assert time.monotonic() < deadline, a
                time.sleep(0.05)

        bob = Console.start(t, 0, metadata=credentials_metadata("bob", PASSWORDS["bob"]))
        try:
            a = a_as(bob)
            assert a["queues"] is None
            assert str(a["queues_error"]).startswith("PERMISSION_DENIED: "), a
        finally:
            bob.close()
        root = Console.start(t, 0, metadata=credentials_metadata("root", PASSWORDS["root"]))
        try:
            a = a_as(root)
            assert [q["name"] for q in a["queues"]] == ["orders.eu"]
            request = urllib.request.Request(
                root.url + "api/brokers/a/purge",
                data=b'{"queue": "orders.eu"}',
                headers={"Content-Type": "application/json", "X-Netbroker-Console": "1"},
            )
            with urllib.request.urlopen(request, timeout=5) as r:
                assert json.loads(r.read())["purged"] == 1
        finally:
            root.close()
    finally:
        broker.stop()
