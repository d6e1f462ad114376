"""TLS against real broker processes: clients (the Python client, the CLI, stomp.py),
bridges and replication with mutual TLS, and `up topologies/ab_c_tls.yaml` through a
kill -9 failover of B's master with traffic, nothing lost and no secret in `ps`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import psutil
import pytest
import stomp

from broker.client import Client
from broker.pb import admin_pb2, admin_pb2_grpc
from broker.security.certs import broker_files, ensure_brokers
from tests.support.aio import run
from tests.support.groups import Start, start_group
from tests.support.procs import ROOT, BrokerProcess, free_port
from tests.support.scenario import check_exactly_once, receive_all, send_many, wait_for
from tests.support.uptools import Relocated, netbroker
from tests.support.zk import Ensemble


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA with certificates for a, b, c and x, and beside it a rogue CA's for b."""
    ensure_brokers(tmp_path / "pki", [(n, ["127.0.0.1"]) for n in ("a", "b", "c", "x")])
    ensure_brokers(tmp_path / "rogue", [("b", ["127.0.0.1"])])
    return tmp_path / "pki"


def tls_args(pki: Path, name: str, ca: Path | None = None) -> list[str]:
    files = broker_files(pki, name)
    return ["--tls-cert", str(files.cert), "--tls-key", str(files.key),
            "--tls-ca", str(ca or pki / "ca.pem")]  # fmt: skip


async def tls_status(address: str, ca: Path) -> admin_pb2.StatusResponse | None:
    credentials = grpc.ssl_channel_credentials(ca.read_bytes())
    async with grpc.aio.secure_channel(address, credentials) as channel:
        try:
            return await admin_pb2_grpc.AdminStub(channel).Status(
                admin_pb2.StatusRequest(), timeout=2
            )
        except grpc.aio.AioRpcError:
            return None


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_clients_verify_the_broker(brokers: Start, pki: Path, tmp_path: Path) -> None:
    a = brokers("a", *tls_args(pki, "a"))
    ca = str(pki / "ca.pem")
    # Plaintext against the TLS port: one line naming the address and TLS.
    plain = cli("recv", "q", "--url", a.url, "--connect-timeout", "3")
    assert plain.returncode == 1
    assert plain.stderr.count("\n") == 1 and a.url in plain.stderr and "TLS" in plain.stderr
    # A CA that did not sign the broker's certificate.
    wrong = cli("recv", "q", "--url", f"ssl://{a.url}", "--ca", str(tmp_path / "rogue/ca.pem"),
                "--connect-timeout", "3")  # fmt: skip
    assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1, wrong.stderr
    assert a.url in wrong.stderr and "TLS handshake failed" in wrong.stderr
    # The right CA, from the environment.
    sent = cli("send", "q", "hello", "--url", f"ssl://{a.url}", env={"NETBROKER_CA": ca})
    assert sent.returncode == 0, sent.stderr

    async def receive() -> None:
        async with await Client.connect(a.url, ca=ca) as client:
            got = await receive_all(client, "q", 1, timeout=5)
            assert [d.body for d in got] == [b"hello"]

    run(receive(), timeout=30)


def test_stomp_over_tls(brokers: Start, pki: Path) -> None:
    port = free_port()
    brokers("a", *tls_args(pki, "a"), "--stomp-port", str(port))
    conn = stomp.Connection([("127.0.0.1", port)], heartbeats=(0, 0))
    conn.set_ssl(for_hosts=[("127.0.0.1", port)], ca_certs=str(pki / "ca.pem"))
    got: list[str] = []

    class Listener(stomp.ConnectionListener):
        def on_message(self, frame: stomp.utils.Frame) -> None:
            got.append(frame.body)

    conn.set_listener("", Listener())
    conn.connect(wait=True)
    try:
        conn.subscribe("/queue/s", id="1", ack="auto")
        conn.send("/queue/s", "over tls")
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
        assert got == ["over tls"]
    finally:
        conn.disconnect()


async def bridge_error(proc: BrokerProcess, ca: Path) -> str:
    async def error() -> str:
        got = await tls_status(proc.url, ca)
        return got.bridges[0].last_error if got is not None and got.bridges else ""

    return str(await wait_for(error, 20, "the bridge to report an error"))


def test_bridge_with_wrong_certificate_refused(brokers: Start, pki: Path, tmp_path: Path) -> None:
    bridge_port = free_port()
    a = brokers("a", *tls_args(pki, "a"), "--bridge-port", str(bridge_port))
    target = f"static:(127.0.0.1:{bridge_port})?networkTTL=1"
    # b's certificate comes from another CA (b trusts a's): a's bridge port refuses it.
    rogue = brokers("b", *tls_args(tmp_path / "rogue", "b", ca=pki / "ca.pem"),
                    "--connector", target)  # fmt: skip
    error = run(bridge_error(rogue, tmp_path / "rogue/ca.pem"), timeout=30)
    assert "TLS" in error and "refused this side's certificate" in error, error
    rogue.stop()
    # A certificate the CA signed, but naming another broker than the one that says hello.
    impostor = brokers("c", "--tls-cert", str(broker_files(pki, "x").cert), "--tls-key",
                       str(broker_files(pki, "x").key), "--tls-ca", str(pki / "ca.pem"),
                       "--connector", target)  # fmt: skip
    error = run(bridge_error(impostor, pki / "ca.pem"), timeout=30)
    assert "PERMISSION_DENIED" in error and "naming" in error and "not itself" in error, error
    # And a bridge to the client port, which asks no certificate, is sent to the bridge port.
    lost = brokers("d", *tls_args(pki, "c"), "--connector", f"static:({a.url})")
    error = run(bridge_error(lost, pki / "ca.pem"), timeout=30)
    assert "must present a broker certificate" in error or "not itself" in error, error


def test_follower_without_member_certificate_refused(
    brokers: Start, zookeeper: Ensemble, pki: Path
) -> None:
    members = ["--group-member", "b", "--group-member", "c"]
    procs = start_group(brokers, zookeeper, ["b"], 2, *tls_args(pki, "b"), *members,
                        "--weight", "5")  # fmt: skip
    # c presents x's certificate: signed by the CA, but not naming a member.
    procs |= start_group(brokers, zookeeper, ["c"], 2, "--tls-cert",
                         str(broker_files(pki, "x").cert), "--tls-key",
                         str(broker_files(pki, "x").key), "--tls-ca", str(pki / "ca.pem"),
                         *members)  # fmt: skip

    async def refused() -> bool:
        return "refused replication from c" in procs["b"].log(200)

    run(wait_for(refused, 30, "b to refuse c's certificate"), timeout=40)
    assert "not itself" in procs["b"].log(200)


def test_ab_c_tls_up_failover_loses_nothing(
    relocated: Callable[..., Relocated], tmp_path: Path
) -> None:
    t: Relocated = relocated("ab_c_tls.yaml")
    started = netbroker("up", str(t.path), "--detach", cwd=tmp_path, timeout=120)
    assert started.returncode == 0, started.stderr + started.stdout
    ca = tmp_path / "run/ab_c_tls/certs/ca.pem"
    assert (tmp_path / "run/ab_c_tls/certs/b.key").stat().st_mode & 0o077 == 0
    # From another directory: the registry says where `up` ran, and the CA is read there.
    elsewhere = netbroker("status", str(t.path), cwd=ROOT)
    assert elsewhere.returncode == 0, elsewhere.stderr + elsewhere.stdout
    assert "master" in elsewhere.stdout
    # No secret on any command line: brokers, ZooKeeper, the supervisor.
    secrets = ("app-secret", "ops-secret", "$argon2", "BEGIN")
    for p in psutil.process_iter(["cmdline"]):
        line = " ".join(p.info["cmdline"] or [])
        if str(tmp_path) in line:
            assert not any(s in line for s in secrets), line
    b_url, c_url = t.url("b"), t.url("c")
    group = f"failover:(ssl://{b_url},ssl://{c_url})?timeout=30000"

    async def scenario() -> None:
        producer = await Client.connect(group, user="app", password="app-secret", ca=str(ca))
        sent: list[str] = []
        try:
            sent += await send_many(producer, "orders", [b"%d" % i for i in range(200)])
            st = await tls_status(b_url, ca)
            assert st is not None and st.role_kind == admin_pb2.ROLE_MASTER, st
            pid = next(
                p.pid for p in psutil.process_iter(["cmdline"])
                if any(a.endswith("/b/broker.json") for a in (p.info["cmdline"] or []))
            )  # fmt: skip
            os.kill(pid, 9)
            sent += await send_many(producer, "orders", [b"%d" % i for i in range(200, 400)])
        finally:
            await producer.close()
        # Consumed at a: B's new master forwards to it over the mutual TLS bridge.
        async with await Client.connect(
            f"ssl://{t.url('a')}", user="app", password="app-secret", ca=str(ca)
        ) as consumer:
            got = await receive_all(consumer, "orders", len(sent), timeout=15)
        print(f"acked {len(sent)}")
        check_exactly_once(sent, got, marked_ok=True)

    run(scenario(), timeout=120)
    stopped = netbroker("down", str(t.path), cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stderr


def test_certs_command_writes_private_keys(tmp_path: Path) -> None:
    made = cli("certs", str(tmp_path / "d"), "--broker", "p@10.0.0.1", "--broker", "q")
    assert made.returncode == 0, made.stderr
    assert "issued: p, q" in made.stdout
    for name in ("ca", "p", "q"):
        assert (tmp_path / "d" / f"{name}.key").stat().st_mode & 0o077 == 0
    again = cli("certs", str(tmp_path / "d"), "--broker", "q")
    assert "issued: none; kept: q" in again.stdout


def test_tls_key_readable_by_others_is_refused(brokers: Start, pki: Path) -> None:
    key = broker_files(pki, "a").key
    key.chmod(0o644)
    with pytest.raises(RuntimeError, match="chmod 600"):
        brokers("a", *tls_args(pki, "a"))



def test_the_console_asks_tls_brokers_over_tls(brokers: Start, pki: Path) -> None:
    """`up`'s console verifies TLS brokers with the topology's CA; without it, a TLS
    broker would only ever look down on the page."""
    import json
    import urllib.request

    from broker.console.console import Console
    from tests.unit.test_topology import check

    a = brokers("a", *tls_args(pki, "a"))
    t = check(f"groups: {{A: {{brokers: {{a: {{port: {a.port}}}}}}}}}")

    def role_of(console: Console, want: str) -> str:
        deadline = time.monotonic() + 10
        while True:
            with urllib.request.urlopen(console.url + "api/state", timeout=5) as r:
                role = str(json.loads(r.read())["brokers"]["a"]["role"])
            if role == want or time.monotonic() > deadline:
                return role
            time.sleep(0.05)

    with_ca = Console.start(t, 0, ca=(pki / "ca.pem").read_bytes())
    plain = Console.start(t, 0)
    try:
        assert role_of(with_ca, "standalone") == "standalone"
        assert role_of(plain, "down") == "down"  # a plaintext console cannot reach it
    finally:
        with_ca.close()
        plain.close()
