"""Users, authentication and permissions against real broker processes: gRPC (the
Python client and the CLI), STOMP (stomp.py), bridges with a broker credential, and no
secret in any process's command line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import argon2
import psutil
import pytest
import yaml

from broker.client import BrokerError, Client
from tests.support.aio import run
from tests.support.groups import status
from tests.support.procs import ROOT, BrokerProcess, free_port
from tests.support.stomp_peer import VERSIONS, Collector

# Cheap parameters for tests: the broker verifies whatever parameters a hash names.
_hasher = argon2.PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
PASSWORDS = {"alice": "alice-pw-1", "bob": "bob-pw-2", "root": "root-pw-3"}
AUTHORIZATION = [
    {"queue": "orders.>", "read": ["consumers"], "write": ["producers"]},
    {"queue": ">", "admin": ["admins"]},
    {"topic": "news.>", "read": ["consumers"], "write": ["producers"]},
]


def write_users(path: Path, **extra: Any) -> Path:
    users = [
        {"name": "alice", "hash": _hasher.hash(PASSWORDS["alice"]), "groups": ["producers"]},
        {"name": "bob", "hash": _hasher.hash(PASSWORDS["bob"]), "groups": ["consumers"]},
        {"name": "root", "hash": _hasher.hash(PASSWORDS["root"]), "groups": ["admins"]},
    ]
    path.write_text(yaml.safe_dump({"users": users, "authorization": AUTHORIZATION, **extra}))
    return path


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[BrokerProcess]:
    users = write_users(tmp_path / "users.yaml")
    stomp_port = free_port()
    proc = BrokerProcess(
        "a", tmp_path / "a", args=("--users", str(users), "--stomp-port", str(stomp_port))
    )
    proc.stomp_port = stomp_port  # type: ignore[attr-defined]
    yield proc.start()
    proc.stop()


def code_of(coro: Any) -> tuple[str, str]:
    try:
        run(coro, timeout=30)
    except BrokerError as exc:
        return exc.code, exc.message
    raise AssertionError("expected a refusal")


async def _send(url: str, queue: str, user: str | None, password: str | None) -> None:
    async with await Client.connect(url, user=user, password=password) as client:
        await client.send(queue, b"x")


def test_wrong_missing_and_unknown_credentials_refused(secure: BrokerProcess) -> None:
    url = secure.url
    assert code_of(_send(url, "orders.eu", None, None))[0] == "UNAUTHENTICATED"
    code, message = code_of(_send(url, "orders.eu", "alice", "guess-9f3k"))
    assert code == "UNAUTHENTICATED" and message == "authentication failed"
    assert code_of(_send(url, "orders.eu", "mallory", "x"))[0] == "UNAUTHENTICATED"
    # The URL form, percent-encoded, works as the options do.
    run(_send(f"alice:{PASSWORDS['alice']}@{url}", "orders.eu", None, None), timeout=30)
    log = secure.log_path.read_text()
    assert "authentication failed for user 'alice'" in log and "unknown user" in log
    assert "guess-9f3k" not in log  # failures are logged without the password


def test_read_but_not_write_per_pattern(secure: BrokerProcess) -> None:
    url, alice, bob = secure.url, PASSWORDS["alice"], PASSWORDS["bob"]

    async def scenario() -> None:
        async with await Client.connect(url, user="alice", password=alice) as client:
            await client.send("orders.eu", b"one")
            with pytest.raises(BrokerError) as info:
                await client.send("billing", b"no entry covers it")
            assert info.value.code == "PERMISSION_DENIED"
            assert "write on queue 'billing'" in info.value.message
        async with await Client.connect(url, user="bob", password=bob) as client:
            with pytest.raises(BrokerError) as info:
                await client.send("orders.eu", b"bob may not")
            assert info.value.code == "PERMISSION_DENIED"
            assert "permission denied: write on queue 'orders.eu'" in info.value.message
            consumer = await client.subscribe("orders.eu", auto_ack=True)
            got = await consumer.receive(timeout=10)
            assert got is not None and got.message.body == b"one"
            refused = await client.subscribe("billing")
            with pytest.raises(BrokerError) as info:
                await refused.receive(timeout=5)
            assert info.value.code == "PERMISSION_DENIED"
            assert "read on queue 'billing'" in info.value.message
            with pytest.raises(BrokerError) as info:
                await client.subscribe(topic="sports.>")
            assert info.value.code == "PERMISSION_DENIED"
            await (await client.subscribe(topic="news.>")).close()

    run(scenario(), timeout=60)


def test_admin_calls_need_admin(secure: BrokerProcess) -> None:
    url = secure.url

    async def scenario() -> None:
        async with await Client.connect(url, user="bob", password=PASSWORDS["bob"]) as client:
            for call in (client.purge("orders.eu"), client.browse("orders.eu"), client.queues()):
                with pytest.raises(BrokerError) as info:
                    await call
                assert info.value.code == "PERMISSION_DENIED"
            assert (await client.status()).name == "a"  # status stays open (probes)
        async with await Client.connect(url, user="alice", password=PASSWORDS["alice"]) as c:
            await c.send("orders.eu", b"to purge")
        async with await Client.connect(url, user="root", password=PASSWORDS["root"]) as client:
            assert await client.purge("orders.eu") == 1
            await client.queues()

    run(scenario(), timeout=60)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_cli_credentials_off_the_command_line(secure: BrokerProcess, tmp_path: Path) -> None:
    url = secure.url
    env = {"NETBROKER_PASSWORD": PASSWORDS["alice"]}
    sent = _cli("send", "orders.eu", "hi", "--url", url, "--user", "alice", env=env)
    assert sent.returncode == 0, sent.stderr
    denied = _cli("send", "orders.eu", "hi", "--url", url, "--user", "bob", env=env)
    assert denied.returncode != 0 and "UNAUTHENTICATED" in denied.stderr
    pw = tmp_path / "bob.pw"
    pw.write_text(PASSWORDS["bob"] + "\n")
    pw.chmod(0o644)
    loose = _cli("recv", "orders.eu", "--url", url, "--user", "bob", "--password-file", str(pw))
    assert loose.returncode != 0 and "chmod 600" in loose.stderr
    pw.chmod(0o600)
    got = _cli("recv", "orders.eu", "--url", url, "--user", "bob", "--password-file", str(pw))
    assert got.returncode == 0 and "hi" in got.stdout, got.stderr
    shown = _cli("send", "orders.eu", "x", "--url", f"bob:{PASSWORDS['bob']}@{url}")
    assert shown.returncode != 0 and PASSWORDS["bob"] not in shown.stderr


def _stomp(port: int, **headers: str) -> tuple[Any, Collector]:
    conn = VERSIONS["1.2"]([("127.0.0.1", port)], auto_decode=False)
    listener = Collector()
    conn.set_listener("collect", listener)
    conn.connect(wait=False, headers=headers)
    return conn, listener


def _stomp_error(port: int, **headers: str) -> str:
    conn, listener = _stomp(port, **headers)
    try:
        listener.wait(lambda: bool(listener.errors), what="an ERROR")
        return str(listener.errors[0].headers.get("message"))
    finally:
        conn.disconnect() if conn.is_connected() else None


def test_stomp_login(secure: BrokerProcess) -> None:
    port = secure.stomp_port  # type: ignore[attr-defined]
    assert _stomp_error(port, login="alice", passcode="wrong") == "authentication failed"
    assert _stomp_error(port, login="mallory", passcode="x") == "authentication failed"
    assert _stomp_error(port).startswith("authentication failed")
    bob, listener = _stomp(port, login="bob", passcode=PASSWORDS["bob"])
    alice, _ = _stomp(port, login="alice", passcode=PASSWORDS["alice"])
    try:
        deadline = time.monotonic() + 10
        while not (bob.is_connected() and alice.is_connected()):
            assert time.monotonic() < deadline, "not connected"
            time.sleep(0.02)
        bob.subscribe("/queue/orders.stomp", id="1", ack="auto")
        alice.send("/queue/orders.stomp", b"from alice", headers={"receipt": "r"})
        assert listener.wait_messages(1)[0].body == b"from alice"
        bob.send("/queue/orders.stomp", b"from bob")
        listener.wait(lambda: bool(listener.errors), what="an ERROR")
        message = listener.errors[0].headers["message"]
        assert "permission denied: write on queue 'orders.stomp'" in message
    finally:
        for conn in (alice, bob):
            if conn.is_connected():
                conn.disconnect()


def _credential(path: Path, secret: str) -> Path:
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return path


def test_bridge_with_bad_credential_refused(
    brokers: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    good = _credential(tmp_path / "good.cred", "broker-secret-1")
    bad = _credential(tmp_path / "bad.cred", "broker-secret-2")
    a = brokers("a", "--broker-credential", str(good))
    b = brokers(
        "b", "--broker-credential", str(bad), "--connector", f"static:({a.url})?networkTTL=1"
    )

    async def bridge_error() -> str:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            got = await status(b)
            if got is not None and got.bridges and got.bridges[0].last_error:
                return got.bridges[0].last_error
            await asyncio.sleep(0.1)
        raise AssertionError("the bridge reported no error")

    error = run(bridge_error(), timeout=30)
    assert "wrong securityToken (broker credential)" in error, error
    # Neither secret shows in any broker's command line or in the status.
    for proc in (a, b):
        assert proc.proc is not None
        cmdline = " ".join(psutil.Process(proc.proc.pid).cmdline())
        assert "broker-secret" not in cmdline
    assert "broker-secret" not in error


def test_ps_shows_no_secret(secure: BrokerProcess, tmp_path: Path) -> None:
    assert secure.proc is not None
    cmdline = " ".join(psutil.Process(secure.proc.pid).cmdline())
    text = (tmp_path / "users.yaml").read_text()
    assert "--users" in cmdline
    for secret in (*PASSWORDS.values(), "$argon2"):
        assert secret not in cmdline
    assert all(p not in text for p in PASSWORDS.values())  # only hashes on disk


def test_passwd_writes_a_users_file_the_broker_accepts(
    brokers: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    users = tmp_path / "made.yaml"
    made = subprocess.run(
        [sys.executable, "-m", "broker", "passwd", "--users", str(users), "--user", "carol",
         "--groups", "x"],
        cwd=ROOT, input="carol-pw\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert users.stat().st_mode & 0o077 == 0 and "carol-pw" not in users.read_text()
    proc = brokers("p", "--users", str(users))
    run(_send(proc.url, "q", "carol", "carol-pw"), timeout=30)
    assert code_of(_send(proc.url, "q", "carol", "other"))[0] == "UNAUTHENTICATED"
