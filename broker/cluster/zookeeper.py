"""Apache ZooKeeper run by hand: a standalone server or an ensemble on 127.0.0.1.

Tests, `scripts/zookeeper.py` and an embedded `zookeeper:` in a topology start ZooKeeper
from Debian's `zookeeper` package as plain child processes (no service, no /etc config):

    with Ensemble(tmp_path / "zk", size=3).start() as zk:
        client = KazooClient(zk.connect_string, timeout=1.0)
        old = zk.leader()
        zk.kill(old)
        new = zk.wait_leader(exclude=old)

Each node gets its own directory (the data dir itself for a standalone server, `zk1`,
`zk2`, ... for an ensemble) holding `zoo.cfg`, `myid`, the snapshots and
`zookeeper.log`. Ports are picked free on 127.0.0.1 unless given.

Why the settings in `zoo.cfg` (see also docs/architecture.md):
* `tickTime=500`, `minSessionTimeout=1000`: the server clamps a session timeout to
  [2, 20] ticks by default and kazoo reports the result only in a debug log line; at
  Debian's tickTime=2000 a 1 s kazoo session silently becomes 4 s, and so does failover.
* `admin.enableServer=false`: otherwise every server binds the AdminServer on port 8080.
* `4lw.commands.whitelist`: `ruok` and `srvr` are how readiness and the leader are probed.
* `forceSync=no`, `preAllocSize`: a dev/test server holds election nodes only; skipping
  fsync keeps session creation fast on a busy disk, and a small preallocation keeps each
  node from reserving a 64 MB transaction log.

Processes are broker.cluster.managed's, like the brokers': started in sessions of their
own (so a terminal's Ctrl-C reaches only our supervisor, which then stops them cleanly),
known by pid and start time, and never left behind: `stop()` on `__exit__`, an atexit guard
for the interpreter's exit, and, unless `die_with_parent=False`, the Linux parent-death
signal (SIGKILL) so that even a SIGKILLed test run takes its servers with it. The kernel
ties that signal to the *thread* that started the process: start servers from a thread
that lives as long as they should.
"""

from __future__ import annotations

import atexit
import errno
import json
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from broker.cluster.managed import ManagedProcess, cmdline, stop_all
from broker.ports import listen_ports

JAVA_DIR = Path("/usr/share/java")
# zookeeper.jar's manifest Class-Path names its whole runtime (jute, netty, jackson, jetty,
# ...) by absolute path, so `zookeeper.jar:slf4j-simple.jar` is enough to start; the slf4j
# binding is the one addition (without it slf4j falls back to a no-op logger and the log is
# empty). The other jars are those a server on the NIO connection factory actually loads
# (checked with -Xlog:class+load); naming them makes the dependency explicit and lets us
# say "install the package" up front instead of a NoClassDefFoundError, because the JVM
# silently skips a manifest entry whose file is missing.
CLASSPATH_JARS = (
    "zookeeper.jar",
    "zookeeper-jute.jar",
    "slf4j-api.jar",
    "slf4j-simple.jar",
    "metrics-core.jar",
    "snappy-java.jar",
)
MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
INSTALL_HINT = "install Debian's zookeeper package: apt-get install -y zookeeper"
JVM_OPTIONS = (
    "-Xmx128m",
    # One GC thread and C1 only: a standalone server serves sooner (median 0.33 s against
    # 0.41 s on 2 CPUs) with less memory; a handful of election clients never needs C2.
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
    # Millisecond timestamps in the log, to line events up with a test's own.
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
    # Leader election backs off up to 60 s between notification rounds by default; a node
    # that started early or lost its leader would then wait far past our deadlines.
    "-Dzookeeper.fastleader.maxNotificationInterval=1000",
    # Every four-letter probe (we poll ruok/srvr) would log an INFO line and bury the
    # messages that matter; this logger has little else to say at INFO.
    "-Dorg.slf4j.simpleLogger.log.org.apache.zookeeper.server.NIOServerCnxn=warn",
    # An election port taken by another process: exit after one try, not three a second apart,
    # so start() can pick new ports sooner.
    "-Dzookeeper.electionPortBindRetry=1",
)
LOG_NAME = "zookeeper.log"
STATE_NAME = "zookeeper.json"
SERVING_MODES = ("standalone", "leader", "follower")
PORT_RETRIES = 3  # free ports are picked then released: another process may take one


class ZooKeeperError(RuntimeError):
    """ZooKeeper cannot be started or stopped; the message says why and what to do."""


class PortInUse(ZooKeeperError):
    """A port given to (or picked for) ZooKeeper is taken by another process."""


def java_command(cfg: Path, log_dir: Path) -> list[str]:
    """The command line running one ZooKeeper server on `cfg`; checks java and the jars."""
    java = shutil.which("java")
    if java is None:
        # The package depends on default-jre, so installing it brings java too.
        raise ZooKeeperError(
            f"java not found on PATH: ZooKeeper needs a Java runtime; {INSTALL_HINT}"
        )
    missing = [jar for jar in CLASSPATH_JARS if not (JAVA_DIR / jar).is_file()]
    if missing:
        raise ZooKeeperError(f"{', '.join(missing)} not found in {JAVA_DIR}: {INSTALL_HINT}")
    classpath = ":".join(str(JAVA_DIR / jar) for jar in CLASSPATH_JARS)
    return [
        java,
        *JVM_OPTIONS,
        f"-Dzookeeper.log.dir={log_dir}",
        "-cp",
        classpath,
        MAIN_CLASS,
        str(cfg),
    ]


def four_letter(port: int, command: str, host: str = "127.0.0.1", timeout: float = 1.0) -> str:
    """Send a four-letter word (`ruok`, `srvr`, `stat`, `mntr`) and return the answer.

    Raises OSError when nothing answers, e.g. ConnectionRefusedError before it listens.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(command.encode())
        chunks: list[bytes] = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def free_ports(count: int, avoid: Collection[int] = ()) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 now, none of them in `avoid` (ports others
    mean to bind soon, such as a topology's); below the ephemeral range, so that no
    outgoing connection takes one before its server binds it (broker/ports.py)."""
    try:
        return listen_ports(count, avoid)
    except OSError as exc:
        raise ZooKeeperError(str(exc)) from None


def check_port_free(port: int) -> None:
    """Raise PortInUse if something listens on 127.0.0.1:`port` (for ports a user gave)."""
    with socket.socket() as sock:
        # Like the JVM's server sockets: a port left in TIME_WAIT by a stopped server is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"port {port} on 127.0.0.1 is already in use") from None
            raise ZooKeeperError(f"cannot use port {port} on 127.0.0.1: {exc}") from None


# Every server this process started and has not stopped or released: stopped at exit.
_LIVE: set[ZooKeeperServer] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop(timeout=2.0)


class ZooKeeperServer:
    """One ZooKeeper server process: its directory, ports, config and signals."""

    def __init__(
        self,
        node_dir: Path,
        client_port: int,
        *,
        myid: int = 1,
        quorum_port: int | None = None,
        election_port: int | None = None,
    ) -> None:
        self.node_dir = Path(node_dir).resolve()
        self.client_port = client_port
        self.myid = myid
        self.quorum_port = quorum_port
        self.election_port = election_port
        self.process: ManagedProcess | None = None
        # SIGSTOPped (tests pause servers, tests/support/zk.py): probes would only hang
        # until their timeout, so leader() passes over it.
        self.paused = False
        self._log_offset = 0  # where this run's output starts in the (appended) log

    def __repr__(self) -> str:
        return f"<ZooKeeperServer {self.myid} 127.0.0.1:{self.client_port} pid={self.pid}>"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def cfg_path(self) -> Path:
        return self.node_dir / "zoo.cfg"

    @property
    def log_path(self) -> Path:
        return self.node_dir / LOG_NAME

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        """True while the process exists (also while paused)."""
        return self.process is not None and self.process.alive()

    def write_config(self, peers: Sequence[ZooKeeperServer] = ()) -> None:
        """Write `zoo.cfg` (and `myid` for an ensemble); `peers` includes this server."""
        self.node_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"dataDir={self.node_dir}",
            f"clientPort={self.client_port}",
            "clientPortAddress=127.0.0.1",
            "admin.enableServer=false",
            "4lw.commands.whitelist=ruok,srvr,stat,mntr",
            "tickTime=500",
            "minSessionTimeout=1000",
            "maxSessionTimeout=20000",
            "initLimit=10",
            "syncLimit=5",
            "forceSync=no",
            "preAllocSize=4096",
        ]
        if peers:
            lines.append("quorumListenOnAllIPs=false")
            lines += [f"server.{p.myid}=127.0.0.1:{p.quorum_port}:{p.election_port}" for p in peers]
            (self.node_dir / "myid").write_text(f"{self.myid}\n")
        self.cfg_path.write_text("\n".join(lines) + "\n")

    def spawn(self, *, die_with_parent: bool = True) -> None:
        """Start the process on the written config; returns at once (see wait_ready)."""
        if self.alive:
            raise ZooKeeperError(f"ZooKeeper server {self.myid} is already running")
        command = java_command(self.cfg_path, self.node_dir)
        self.node_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            self.process = ManagedProcess.start(
                command,
                cwd=self.node_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                die_with_parent=signal.SIGKILL if die_with_parent else None,
            )
        self.paused = False
        _LIVE.add(self)

    def ruok(self, timeout: float = 0.5) -> bool:
        try:
            return four_letter(self.client_port, "ruok", timeout=timeout) == "imok"
        except OSError:
            return False

    def mode(self, timeout: float = 0.5) -> str | None:
        """`standalone`, `leader` or `follower` while serving; None otherwise."""
        try:
            answer = four_letter(self.client_port, "srvr", timeout=timeout)
        except OSError:
            return None
        for line in answer.splitlines():
            if line.startswith("Mode:"):
                return line.split(":", 1)[1].strip()
        return None  # "This ZooKeeper instance is not currently serving requests"

    def run_log(self) -> str:
        """This run's part of the log (earlier runs in the same directory are above it)."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 25) -> str:
        """The end of this run's log, for error messages."""
        return "\n".join(self.run_log().splitlines()[-lines:]) or "(empty log)"

    def check_running(self) -> None:
        """Raise a readable ZooKeeperError if the process has exited."""
        if self.process is None:
            raise ZooKeeperError(f"ZooKeeper server {self.myid} was never started")
        if self.process.alive():
            return
        code = self.process.returncode
        _LIVE.discard(self)
        if "Address already in use" in self.run_log():
            ports = [p for p in (self.client_port, self.quorum_port, self.election_port) if p]
            raise PortInUse(
                f"ZooKeeper server {self.myid} could not bind its ports "
                f"({', '.join(map(str, ports))}): address already in use"
            )
        raise ZooKeeperError(
            f"ZooKeeper server {self.myid} exited with code {code}; "
            f"end of {self.log_path}:\n{self.log_tail()}"
        )

    def _signal(self, sig: signal.Signals) -> None:
        # Only while not reaped, so the pid (= its process group) cannot have been reused.
        if self.process is not None:
            self.process.signal(sig)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` s; returns the exit code."""
        if self.process is None:
            return None
        code = self.process.stop(timeout)  # SIGCONT too: a paused JVM would ignore SIGTERM
        _LIVE.discard(self)
        return code

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown (no session handover, sockets just close)."""
        if self.process is None:
            return
        self.process.signal(signal.SIGKILL)
        self.process.wait_gone(None)
        _LIVE.discard(self)

    def release(self) -> None:
        """Forget the process without stopping it (a detached server outlives us)."""
        _LIVE.discard(self)


class Ensemble:
    """`size` ZooKeeper servers on 127.0.0.1: 1 is a standalone server, 3 or 5 an ensemble.

    Servers are indexed 0..size-1 (their myid is index + 1). `client_port` fixes the first
    client port (the others follow it: P, P+1, ...); 0 picks free ports.
    """

    def __init__(
        self,
        data_dir: Path | str,
        size: int = 1,
        *,
        client_port: int = 0,
        die_with_parent: bool = True,
        avoid_ports: Collection[int] = (),
    ) -> None:
        if size < 1:
            raise ValueError("an ensemble needs at least one server")
        self.data_dir = Path(data_dir).resolve()
        self.size = size
        self.client_port = client_port
        self.die_with_parent = die_with_parent
        # Ports free now that others will bind later (brokers started after ZooKeeper).
        self.avoid_ports = frozenset(avoid_ports)
        self.servers: list[ZooKeeperServer] = []

    def __repr__(self) -> str:
        return f"<Ensemble size={self.size} {self.connect_string or '(not started)'}>"

    def __enter__(self) -> Self:
        if not any(server.alive for server in self.servers):
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __getitem__(self, index: int) -> ZooKeeperServer:
        return self.servers[index]

    def __iter__(self) -> Iterator[ZooKeeperServer]:
        return iter(self.servers)

    @property
    def connect_string(self) -> str:
        """`127.0.0.1:p1,127.0.0.1:p2,...`, for KazooClient(hosts=...) and topologies."""
        return ",".join(server.address for server in self.servers)

    @property
    def pids(self) -> list[int]:
        return [s.pid for s in self.servers if s.pid is not None]

    def start(self, timeout: float = 30.0) -> Self:
        """Start every server and wait until all serve (a leader and followers)."""
        if any(server.alive for server in self.servers):
            raise ZooKeeperError(f"{self!r} is already running")
        deadline = time.monotonic() + timeout
        for attempt in range(1, PORT_RETRIES + 1):
            self._configure()
            for server in self.servers:
                server.spawn(die_with_parent=self.die_with_parent)
            try:
                self.wait_ready(max(deadline - time.monotonic(), 0.0))
                return self
            except PortInUse:
                self.stop(timeout=2.0)
                # Ports we picked ourselves were taken in the meantime: pick again.
                if self.client_port or attempt == PORT_RETRIES:
                    raise
            except BaseException:
                self.stop(timeout=2.0)
                raise
        raise AssertionError("unreachable")

    def _configure(self) -> None:
        n = self.size
        if self.client_port:
            client_ports = [self.client_port + i for i in range(n)]
            for port in client_ports:
                check_port_free(port)
            peer_ports = free_ports(2 * n, self.avoid_ports) if n > 1 else []
        else:
            picked = free_ports(3 * n if n > 1 else 1, self.avoid_ports)
            client_ports, peer_ports = picked[:n], picked[n:]
        if n == 1:
            self.servers = [ZooKeeperServer(self.data_dir, client_ports[0])]
            self.servers[0].write_config()
            return
        self.servers = [
            ZooKeeperServer(
                self.data_dir / f"zk{i + 1}",
                client_ports[i],
                myid=i + 1,
                quorum_port=peer_ports[2 * i],
                election_port=peer_ports[2 * i + 1],
            )
            for i in range(n)
        ]
        for server in self.servers:
            server.write_config(self.servers)

    def _indexes(self, index: int | None) -> Iterable[int]:
        return range(self.size) if index is None else (index,)

    def wait_ready(self, timeout: float = 30.0, indexes: Iterable[int] | None = None) -> None:
        """Wait until the servers answer `imok` and serve as standalone/leader/follower."""
        waiting = list(self._indexes(None) if indexes is None else indexes)
        deadline = time.monotonic() + timeout
        while True:
            for i in list(waiting):
                server = self.servers[i]
                server.check_running()
                if server.ruok() and server.mode() in SERVING_MODES:
                    waiting.remove(i)
            if not waiting:
                return
            if time.monotonic() >= deadline:
                stuck = [self.servers[i] for i in waiting]
                details = "\n".join(f"--- {s.log_path}:\n{s.log_tail()}" for s in stuck)
                raise ZooKeeperError(
                    f"ZooKeeper not ready within {timeout:.1f} s: server(s) "
                    f"{', '.join(str(s.myid) for s in stuck)} not serving "
                    f"(see {', '.join(str(s.log_path) for s in stuck)})\n{details}"
                )
            time.sleep(0.05)

    def leader(self) -> int | None:
        """Index of the server that is leader (0 for a standalone one); None if none is."""
        for i, server in enumerate(self.servers):
            if server.alive and not server.paused and server.mode() in ("leader", "standalone"):
                return i
        return None

    def wait_leader(self, timeout: float = 10.0, exclude: int | None = None) -> int:
        """Wait for a serving leader other than `exclude` (e.g. the one just killed)."""
        deadline = time.monotonic() + timeout
        while True:
            index = self.leader()
            if index is not None and index != exclude:
                return index
            if time.monotonic() >= deadline:
                raise ZooKeeperError(f"no ZooKeeper leader within {timeout:.1f} s")
            time.sleep(0.02)

    def kill(self, index: int) -> None:
        """SIGKILL server `index` (it stays down until started again)."""
        self.servers[index].kill()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every server: SIGTERM to all at once, SIGKILL to any left after `timeout`."""
        stop_all([s.process for s in self.servers if s.process is not None], timeout=timeout)
        for server in self.servers:
            _LIVE.discard(server)

    # --- detached servers (scripts/zookeeper.py start --detach / stop) ---

    @property
    def state_path(self) -> Path:
        return self.data_dir / STATE_NAME

    def detach(self) -> Path:
        """Leave the servers running past this process; record them for stop_detached()."""
        state = {
            "connect_string": self.connect_string,
            "servers": [
                {
                    "myid": s.myid,
                    **s.process.record(),
                    "client_port": s.client_port,
                    "dir": str(s.node_dir),
                }
                for s in self.servers
                if s.process is not None
            ],
        }
        self.state_path.write_text(json.dumps(state, indent=2) + "\n")
        for server in self.servers:
            server.release()
        return self.state_path


def _is_zookeeper(process: ManagedProcess) -> bool:
    """True if the recorded server still runs ZooKeeper (not a process that reused the pid;
    a record from before start times were kept has only the main class to go by)."""
    return process.alive() and MAIN_CLASS in (cmdline(process.pid) or ())


def read_state(data_dir: Path | str) -> dict[str, Any]:
    """What Ensemble.detach() recorded: `connect_string` and `servers` (myid, pid, ...)."""
    path = Path(data_dir).resolve() / STATE_NAME
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise ZooKeeperError(
            f"no detached ZooKeeper in {path.parent} ({path.name} missing)"
        ) from None
    except ValueError as exc:
        raise ZooKeeperError(f"{path} is not valid JSON: {exc}") from None
    return state


def stop_detached(data_dir: Path | str, timeout: float = 5.0) -> list[int]:
    """Stop the servers recorded by Ensemble.detach() in `data_dir`; returns pids stopped."""
    state = read_state(data_dir)
    servers = state.get("servers")
    if not isinstance(servers, list):
        raise ZooKeeperError(f"{Path(data_dir) / STATE_NAME} lists no servers")
    running = [p for p in map(ManagedProcess.adopt, servers) if _is_zookeeper(p)]
    stop_all(running, timeout=timeout)
    (Path(data_dir).resolve() / STATE_NAME).unlink(missing_ok=True)
    return [p.pid for p in running]
