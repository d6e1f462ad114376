"""broker.zookeeper against the real thing: Debian's ZooKeeper, kazoo, real signals.

Timings are printed (pytest -s shows them); the limits asserted are several times the
figures measured on a 2-CPU machine (standalone ~0.5 s, ensemble ~1-1.5 s, a new leader
~0.3-0.7 s after kill -9), so they catch a regression to Debian's defaults (a 4 s session,
a minute of election backoff) without failing on a slow machine.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kazoo.client import KazooClient, KazooState

from broker.cluster import zookeeper as zkmod
from broker.cluster.zookeeper import PortInUse, ZooKeeperError, four_letter
from tests.support.zk import Ensemble

ROOT = Path(__file__).resolve().parents[2]
KazooFactory = Callable[..., KazooClient]


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Poll `predicate` until true; returns the seconds it took, fails after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - start


def gone(pid: int) -> bool:
    """True once `pid` no longer runs ZooKeeper (exited, or reaped and reused)."""
    try:
        return b"QuorumPeerMain" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


class StateLog:
    """Connection states a KazooClient reports, in order, safe to read from the test."""

    def __init__(self, client: KazooClient) -> None:
        self.states: list[str] = []
        self._lock = threading.Lock()
        client.add_listener(self._on_state)

    def _on_state(self, state: str) -> None:
        with self._lock:
            self.states.append(str(state))

    def seen(self, state: str) -> bool:
        with self._lock:
            return state in self.states

    def last(self) -> str | None:
        with self._lock:
            return self.states[-1] if self.states else None


def test_standalone_starts_fast_and_answers_ruok(tmp_path: Path) -> None:
    start = time.monotonic()
    with Ensemble(tmp_path / "zk") as zk:
        elapsed = time.monotonic() - start
        print(f"standalone ready in {elapsed:.2f} s at {zk.connect_string}")
        assert elapsed < 2.0
        port = zk[0].client_port
        assert zk.connect_string == f"127.0.0.1:{port}"
        assert four_letter(port, "ruok") == "imok"
        assert "Mode: standalone" in four_letter(port, "srvr")
        assert zk.leader() == 0
        cfg = (tmp_path / "zk" / "zoo.cfg").read_text()
        assert "tickTime=500\n" in cfg and "minSessionTimeout=1000\n" in cfg
        assert (tmp_path / "zk" / "zookeeper.log").stat().st_size > 0


def test_kazoo_gets_the_one_second_session_it_asks_for(
    zookeeper: Ensemble, kazoo_client: KazooFactory
) -> None:
    # kazoo logs the negotiated timeout at its BLATHER level (5) only; capture it there.
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("test_zookeeper.kazoo")
    logger.setLevel(5)

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Capture(level=5)
    logger.addHandler(handler)
    try:
        client = kazoo_client(zookeeper.connect_string, timeout=1.0, logger=logger)
        client.create("/netbroker/probe", b"hello", makepath=True, ephemeral=True)
        data, stat = client.get("/netbroker/probe")
    finally:
        logger.removeHandler(handler)
    assert data == b"hello"
    assert stat.ephemeralOwner == client.client_id[0]
    negotiated = [
        r.args[2]
        for r in records
        if "negotiated session timeout" in r.msg and isinstance(r.args, tuple)
    ]
    assert negotiated == [1000], negotiated  # Debian's tickTime=2000 would give 4000
    assert "tickTime 500 ms minSessionTimeout 1000 ms" in zookeeper[0].run_log()


def test_ensemble_elects_a_new_leader_after_kill(
    zk_ensemble: Ensemble, kazoo_client: KazooFactory
) -> None:
    modes = sorted(server.mode() or "-" for server in zk_ensemble)
    assert modes == ["follower", "follower", "leader"]
    assert len(zk_ensemble.connect_string.split(",")) == 3
    old = zk_ensemble.leader()
    assert old is not None
    # Connected to the leader itself (listed first, no shuffling), so killing it must
    # cost the client its connection. A 4 s session outlives the election: the client
    # reconnects to a survivor with its session and ephemeral nodes intact.
    leader = zk_ensemble[old]
    others = [server.address for server in zk_ensemble if server is not leader]
    hosts = ",".join([leader.address, *others])
    client = kazoo_client(hosts, timeout=4.0, randomize_hosts=False)
    states = StateLog(client)
    client.create("/owner", b"me", ephemeral=True)
    session = client.client_id

    start = time.monotonic()
    zk_ensemble.kill(old)
    new = zk_ensemble.wait_leader(timeout=10.0, exclude=old)
    elapsed = time.monotonic() - start
    print(f"new leader {new} (was {old}) {elapsed:.2f} s after kill -9")
    assert new != old and not zk_ensemble[old].alive
    assert elapsed < 3.0

    wait_for(lambda: states.seen(KazooState.SUSPENDED), 5.0, "kazoo notices the dead leader")
    wait_for(lambda: states.last() == KazooState.CONNECTED, 10.0, "kazoo reconnects")
    client.set("/owner", b"still me")
    print(f"kazoo working again {time.monotonic() - start:.2f} s after kill -9")
    assert client.get("/owner")[0] == b"still me"
    assert client.client_id == session
    assert not states.seen(KazooState.LOST)

    zk_ensemble.restart(old)  # the killed node rejoins as a follower
    assert zk_ensemble[old].mode() == "follower"


def test_pause_suspends_and_resume_reconnects_kazoo(
    zookeeper: Ensemble, kazoo_client: KazooFactory
) -> None:
    client = kazoo_client(zookeeper.connect_string, timeout=1.0)
    states = StateLog(client)
    client.create("/ephemeral", ephemeral=True)

    zookeeper.pause()
    suspended = wait_for(lambda: states.seen(KazooState.SUSPENDED), 5.0, "SUSPENDED")
    print(f"kazoo SUSPENDED {suspended:.2f} s after SIGSTOP")
    assert suspended < 2.0  # 2/3 of the 1 s session, plus a ping interval

    zookeeper.resume()
    back = wait_for(lambda: states.last() == KazooState.CONNECTED, 5.0, "CONNECTED again")
    print(f"kazoo CONNECTED {back:.2f} s after SIGCONT")
    # Resumed within the session timeout: same session, its ephemeral node still there.
    assert not states.seen(KazooState.LOST)
    assert client.exists("/ephemeral") is not None


def test_stop_leaves_no_java_process(tmp_path: Path) -> None:
    zk = Ensemble(tmp_path / "zk", size=3).start()
    pids = zk.pids
    assert len(pids) == 3 and not any(gone(pid) for pid in pids)
    zk.pause(1)  # a paused server must be stopped too
    start = time.monotonic()
    zk.stop()
    print(f"ensemble stopped in {time.monotonic() - start:.2f} s")
    assert all(gone(pid) for pid in pids)
    assert not zkmod._LIVE.intersection(zk.servers)  # nothing left for the atexit guard


def test_servers_die_with_a_killed_parent(tmp_path: Path) -> None:
    """kill -9 of the process that started ZooKeeper (no atexit) still takes it down."""
    script = (
        "import sys; from broker.cluster.zookeeper import Ensemble\n"
        f"zk = Ensemble({str(tmp_path / 'zk')!r}, size=3).start()\n"
        "print(*zk.pids, flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert parent.stdout is not None
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 3 and not any(gone(pid) for pid in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        wait_for(lambda: all(gone(pid) for pid in pids), 5.0, "servers gone after parent")
    finally:
        parent.kill()
        parent.wait()


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(PortInUse, match=f"port {port} .* already in use"):
            Ensemble(tmp_path / "zk", client_port=port).start()


def test_missing_java_or_jars_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zkmod, "JAVA_DIR", tmp_path / "no-java-dir")
    with pytest.raises(ZooKeeperError, match=r"zookeeper\.jar.*apt-get install -y zookeeper"):
        Ensemble(tmp_path / "zk").start()
    monkeypatch.undo()
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ZooKeeperError, match=r"java not found.*apt-get install -y zookeeper"):
        Ensemble(tmp_path / "zk").start()


def test_not_ready_in_time_shows_the_log(tmp_path: Path) -> None:
    expected = r"not ready within 0\.0 s: server\(s\) 1 not serving \(see .*zookeeper\.log\)"
    zk = Ensemble(tmp_path / "zk")
    with pytest.raises(ZooKeeperError, match=expected):
        zk.start(timeout=0.0)
    assert not zk[0].alive and gone(zk.pids[0])  # the half-started server was stopped


def test_cli_detach_and_stop(tmp_path: Path) -> None:
    data = tmp_path / "zk"
    cli = [sys.executable, str(ROOT / "scripts" / "zookeeper.py")]
    started = subprocess.run(
        [*cli, "start", "--data", str(data), "--detach"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 0, started.stderr
    connect = started.stdout.strip().splitlines()[-1]
    port = int(connect.rsplit(":", 1)[1])
    assert four_letter(port, "ruok") == "imok"
    pids = [int(server["pid"]) for server in zkmod.read_state(data)["servers"]]
    assert pids and not any(gone(pid) for pid in pids)

    stopped = subprocess.run(
        [*cli, "stop", "--data", str(data)], capture_output=True, text=True, timeout=60
    )
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: all(gone(pid) for pid in pids), 5.0, "detached servers stopped")
    again = subprocess.run(
        [*cli, "stop", "--data", str(data)], capture_output=True, text=True, timeout=60
    )
    assert again.returncode != 0
    assert again.stderr.count("\n") == 1 and "no detached ZooKeeper" in again.stderr
    assert os.path.exists(data / "zookeeper.log")
