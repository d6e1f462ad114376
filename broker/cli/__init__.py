"""The `netbroker` command line: run a broker, send and receive, inspect, run a topology.

Every failure ends with one line on stderr, `netbroker: what went wrong`, and a non-zero
exit code: 2 for a usage error, 1 for anything else, 130 for Ctrl-C. No tracebacks,
unless NETBROKER_DEBUG=1 is set (for bugs in netbroker itself).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from broker import __version__

if TYPE_CHECKING:
    from broker.cluster.model import Topology

PROG = "netbroker"
DEFAULT_URL = "127.0.0.1:61616"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A bad command line, as argparse found it."""

    def __init__(self, prog: str, message: str) -> None:
        self.prog = prog
        sub = prog.removeprefix(PROG).strip()
        text = " ".join(message.split())  # argparse messages may wrap; keep one line
        super().__init__(f"{sub + ': ' if sub else ''}{text} (see '{prog} --help')")


class CliError(Exception):
    """A failure with a message for the operator; exits 1 unless `code` says otherwise."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    # argparse prints usage plus a message and exits; we want one line, said once, by main.
    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, message)


# ------------------------------------------------------------------ argument types


def _int_range(lo: int, hi: int | None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < lo or (hi is not None and value > hi):
            bound = f"{lo}-{hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"expected an integer {bound}, got {text!r}")
        return value

    return parse


def _positive_float() -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
        return value

    return parse


def _broker_name(text: str) -> str:
    from broker.cluster.schema import check_name

    problem = check_name(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def _ip_address(text: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IP address (give the interface's address, e.g. 127.0.0.1)"
        ) from None


def _queue_name(text: str) -> str:
    from broker.core.names import check_queue_name
    from broker.errors import BrokerError

    try:
        return check_queue_name(text)
    except BrokerError as e:
        raise argparse.ArgumentTypeError(e.message) from None


def _header(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


# ------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="A clustered message broker: run brokers, send and receive messages, "
        "inspect them, and run whole topologies.",
        epilog="Run 'netbroker COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "broker",
        help="run one broker in the foreground",
        description="Run one broker until SIGTERM or Ctrl-C. Prints "
        "'netbroker: broker NAME listening on HOST:PORT' on stdout once "
        "ready; logs go to stderr.",
    )
    p.add_argument("--name", required=True, type=_broker_name, help="the broker's name")
    p.add_argument(
        "--port",
        required=True,
        type=_int_range(0, 65535),
        help="client port; 0 picks a free one (see the listening line)",
    )
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        metavar="DIR",
        help="the broker's data directory (created if missing)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on [%(default)s]")
    p.add_argument(
        "--max-message-bytes",
        type=_int_range(1, None),
        metavar="B",
        help="largest message body accepted [100 MiB]",
    )
    p.add_argument(
        "--sync",
        choices=("local_disk", "local_mem", "quorum_mem", "quorum_disk"),
        help="when a persistent send is answered: after fsync (local_disk, the "
        "default standalone), after the write (local_mem), or once every in-sync group "
        "member holds it (quorum_mem, the default in a group) or has fsynced it (quorum_disk)",
    )
    p.add_argument(
        "--max-redeliveries",
        type=_int_range(0, None),
        metavar="K",
        help="deliveries without ack before DLQ.<queue> [6]",
    )
    p.add_argument(
        "--group", default="", metavar="NAME", help="the master/slave group this broker belongs to"
    )
    p.add_argument(
        "--connector",
        action="append",
        default=[],
        metavar="URI",
        help="a network connector, e.g. 'static:(127.0.0.1:61617)?networkTTL=2' (repeatable)",
    )
    p.add_argument(
        "--token",
        default="",
        metavar="SECRET",
        help="securityToken that links and replication connections must present",
    )
    d = p.add_argument_group("discovery (multicast:// connectors)")
    d.add_argument(
        "--discovery-interface",
        action="append",
        type=_ip_address,
        metavar="IP",
        help="address of an interface zeroconf advertises and browses on (repeatable) "
        "[127.0.0.1]",
    )
    d.add_argument(
        "--discovery-token",
        default="",
        metavar="SECRET",
        help="advertised as a digest; brokers with another token are ignored",
    )
    g = p.add_argument_group("master/slave group")
    g.add_argument(
        "--election",
        choices=("zookeeper", "lockfile"),
        help="how the group elects its master (needs --group)",
    )
    g.add_argument(
        "--zookeeper",
        default="",
        metavar="HOST:PORT,...",
        help="ZooKeeper ensemble for --election zookeeper",
    )
    g.add_argument(
        "--zk-path",
        default="",
        metavar="PATH",
        help="the group's ZooKeeper path [/netbroker/groups/GROUP]",
    )
    g.add_argument(
        "--replication-port",
        type=_int_range(1, 65535),
        metavar="PORT",
        help="port slaves replicate from when this broker is master",
    )
    g.add_argument(
        "--replicas",
        type=_int_range(1, 99),
        default=1,
        metavar="N",
        help="members in the group [%(default)s]",
    )
    g.add_argument(
        "--min-insync",
        type=_int_range(1, 99),
        metavar="K",
        help="smallest in-sync set that may acknowledge [replicas/2+1 for 3 or more, 1 for a pair]",
    )
    g.add_argument(
        "--weight",
        type=_int_range(0, 1000),
        default=1,
        metavar="W",
        help="election preference among equally up-to-date members [%(default)s]",
    )
    g.add_argument(
        "--session-timeout",
        type=_positive_float(),
        default=1.0,
        metavar="S",
        help="ZooKeeper session timeout: how fast a dead master is replaced [%(default)s]",
    )
    g.add_argument(
        "--lag-timeout",
        type=_positive_float(),
        default=1.0,
        metavar="S",
        help="a slave silent this long while behind leaves the in-sync set [%(default)s]",
    )
    g.add_argument(
        "--commit-timeout",
        type=_positive_float(),
        default=10.0,
        metavar="S",
        help="a persistent send the in-sync set has not acknowledged by then "
        "fails with UNAVAILABLE [%(default)s]",
    )
    g.add_argument(
        "--shared-dir",
        type=Path,
        metavar="DIR",
        help="the store directory lock-file members share [--data]",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="[%(default)s]",
    )
    p.set_defaults(handler=_cmd_broker)

    def client_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--url",
            default=DEFAULT_URL,
            help="broker address, host:port or failover:(a,b) [%(default)s]",
        )
        p.add_argument(
            "--connect-timeout",
            type=_positive_float(),
            default=30.0,
            metavar="SECONDS",
            help="give up when no broker accepts within this (a plain address "
            "is tried once; a failover URL until its own timeout) [%(default)s]",
        )

    p = sub.add_parser(
        "send",
        help="send messages to a queue",
        description="Send BODY (or a file's bytes) COUNT times to QUEUE. "
        "Persistent by default: each send is answered once the broker "
        "holds it durably.",
    )
    client_options(p)
    p.add_argument("queue", metavar="QUEUE", type=_queue_name)
    p.add_argument("body", metavar="BODY", nargs="?", help="the message body (UTF-8 text)")
    p.add_argument("--file", metavar="F", help="take the body from file F ('-': stdin)")
    p.add_argument(
        "--count",
        type=_int_range(1, None),
        default=1,
        metavar="N",
        help="send the message N times, pipelined [%(default)s]",
    )
    p.add_argument(
        "--non-persistent",
        action="store_true",
        help="held in memory only; lost if the broker stops",
    )
    p.add_argument(
        "--priority", type=_int_range(0, 9), metavar="P", help="0 (lowest) to 9 (highest) [4]"
    )
    p.add_argument(
        "--ttl",
        type=_positive_float(),
        metavar="SECONDS",
        help="expire (to DLQ.<queue>) if not consumed within this",
    )
    p.add_argument(
        "--header",
        type=_header,
        action="append",
        default=[],
        metavar="K=V",
        help="a message header; repeat for more",
    )
    p.set_defaults(handler=_cmd_send)

    p = sub.add_parser(
        "recv",
        help="receive messages from a queue",
        description="Receive up to COUNT messages from QUEUE, acknowledging "
        "each once written out. Exits 1 if fewer than COUNT arrive.",
    )
    client_options(p)
    p.add_argument("queue", metavar="QUEUE", type=_queue_name)
    p.add_argument(
        "--count",
        type=_int_range(1, None),
        default=1,
        metavar="N",
        help="stop after N messages [%(default)s]",
    )
    p.add_argument(
        "--timeout",
        type=_positive_float(),
        default=5.0,
        metavar="SECONDS",
        help="stop when no message arrives within this [%(default)s]",
    )
    p.add_argument(
        "--output",
        metavar="FILE",
        help="write bodies to FILE, byte for byte, back to back (default: "
        "print each body on stdout, newline-terminated)",
    )
    p.add_argument(
        "--prefetch",
        type=_int_range(1, None),
        metavar="K",
        help="deliveries the broker may push ahead of acks [min(N, 1000)]",
    )
    p.set_defaults(handler=_cmd_recv)

    p = sub.add_parser(
        "stat",
        help="show a broker's queues and components",
        description="Show the broker's name and role, its queues and its "
        "components: each bridge (outbound ones by connector, e.g. "
        "'static:127.0.0.1:61617'; inbound ones as 'from BROKER') with its "
        "state (connecting, up, backoff) and detail (peer, messages "
        "forwarded, or the last error).",
    )
    client_options(p)
    p.set_defaults(handler=_cmd_stat)

    p = sub.add_parser(
        "up",
        help="start every broker of a topology file (and its embedded ZooKeeper)",
        description="Start what FILE needs: ZooKeeper first when it says "
        "'zookeeper: embedded', then every broker as its own process with its "
        "group's settings and connectors. Wait until every broker is ready, each "
        "master/slave group has one master and its other members are slaves, and "
        "every bridge of each standalone broker and group master is up; show each "
        "broker's role, replication position, port, pid and bridges, and each "
        "group's master; then supervise them until Ctrl-C, reporting role changes "
        "as they happen (or leave them running with --detach). Ctrl-C stops the "
        "brokers, then ZooKeeper. If the start takes longer than --timeout, name "
        "what is not ready, stop everything and exit 1.",
    )
    p.add_argument("file", metavar="FILE", help="topology file, e.g. topologies/ab_c.yaml")
    p.add_argument(
        "--detach",
        action="store_true",
        help="leave the brokers (and ZooKeeper) running and exit; stop them with "
        "'netbroker down'",
    )
    p.add_argument(
        "--timeout",
        type=_positive_float(),
        default=30.0,
        metavar="SECONDS",
        help="how long the brokers may take to be ready, elect their masters and bring "
        "up their bridges [%(default)s]",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds between status lines; 0 for none [%(default)s]",
    )
    p.set_defaults(handler=_cmd_up)

    p = sub.add_parser(
        "status",
        help="show the brokers of a topology file",
        description="Show each broker of FILE from live Admin.Status calls: "
        "role, replication position, client address, pid, queue depth and its "
        "bridges; each master/slave group's master and its address; the embedded "
        "ZooKeeper. Exits 1 if a broker does not answer, a group has no single "
        "master, or a bridge is not up.",
    )
    p.add_argument("file", metavar="FILE")
    p.set_defaults(handler=_cmd_status)

    p = sub.add_parser(
        "down",
        help="stop the brokers 'netbroker up' started",
        description="Stop the brokers of FILE started by 'netbroker up' "
        "(SIGTERM, then SIGKILL after --timeout), then its embedded ZooKeeper.",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument(
        "--timeout",
        type=_positive_float(),
        default=10.0,
        metavar="SECONDS",
        help="grace before SIGKILL [%(default)s]",
    )
    p.set_defaults(handler=_cmd_down)
    return parser


# ------------------------------------------------------------------------- main


def _say(message: str, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    stream.write(f"{PROG}: {message}\n")
    stream.flush()


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args, extras = parser.parse_known_args(argv)
    # argparse takes a command's positionals in one go, so in `send QUEUE --count 5 BODY`
    # the BODY after the options is left over. Take it back rather than refuse it.
    if (
        args.command == "send"
        and args.body is None
        and len(extras) == 1
        and not extras[0].startswith("-")
    ):
        args.body, extras = extras[0], []
    if extras:
        raise UsageError(f"{PROG} {args.command}", f"unrecognized arguments: {' '.join(extras)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except UsageError as e:
        _say(str(e))
        return EXIT_USAGE
    except SystemExit as e:  # --help, --version
        return e.code if isinstance(e.code, int) else 0
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except CliError as e:
        _say(str(e))
        return e.code
    except BrokenPipeError:
        # Reading end closed (`netbroker recv ... | head`): stop quietly, as Unix tools do;
        # point stdout at /dev/null so the interpreter's final flush does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as e:
        from broker.cluster.errors import TopologyError, UpError
        from broker.errors import StartupError

        if isinstance(e, TopologyError | UpError | StartupError):
            _say(str(e))
            return 1
        if os.environ.get("NETBROKER_DEBUG"):
            traceback.print_exc()
        _say(f"unexpected error: {type(e).__name__}: {e} (NETBROKER_DEBUG=1 shows where)")
        return 1


# -------------------------------------------------------------------- commands


def _cmd_broker(args: argparse.Namespace) -> int:
    from broker.core.config import BrokerConfig
    from broker.errors import StartupError

    options: dict[str, Any] = {
        "host": args.host,
        "group": args.group,
        "connectors": tuple(args.connector),
        "token": args.token,
        "discovery_interfaces": tuple(args.discovery_interface or ("127.0.0.1",)),
        "discovery_token": args.discovery_token,
    }
    if args.max_message_bytes is not None:
        options["max_message_bytes"] = args.max_message_bytes
    if args.sync is not None:
        options["sync"] = args.sync
    if args.max_redeliveries is not None:
        options["max_redeliveries"] = args.max_redeliveries
    if args.election:
        if not args.group:
            raise CliError("--election needs --group")
        if args.election == "zookeeper" and not (args.zookeeper and args.replication_port):
            raise CliError("--election zookeeper needs --zookeeper and --replication-port")
        options.update(
            election=args.election, zookeeper=args.zookeeper, zk_path=args.zk_path,
            replication_port=args.replication_port or 0, replicas=args.replicas,
            min_insync=args.min_insync or 0, weight=args.weight,
            session_timeout=args.session_timeout, shared_dir=args.shared_dir,
            lag_timeout=args.lag_timeout, commit_timeout=args.commit_timeout,
        )  # fmt: skip
        if args.election == "zookeeper" and args.sync is None:
            options["sync"] = "quorum_mem"
    if args.sync in ("quorum_mem", "quorum_disk") and args.election != "zookeeper":
        raise CliError(
            f"--sync {args.sync} needs members that replicate (--election zookeeper); "
            "use local_disk or local_mem"
        )
    config = BrokerConfig(name=args.name, port=args.port, data_dir=args.data, **options)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Imported here: the assembly pulls in every layer, which no other command needs.
    from broker import app

    try:
        return app.run(config)
    except StartupError as e:
        raise CliError(f"broker {args.name}: {e}") from None


def _load_topology(path: str) -> Topology:
    from broker.cluster import loader
    from netconnector.uri import parse_connector

    return loader.load(path, parse_connector)


def _cmd_up(args: argparse.Namespace) -> int:
    from broker.cluster import commands

    topology = _load_topology(args.file)
    return commands.up(topology, detach=args.detach, timeout=args.timeout, interval=args.interval)


def _cmd_status(args: argparse.Namespace) -> int:
    from broker.cluster import commands

    return commands.status(_load_topology(args.file))


def _cmd_down(args: argparse.Namespace) -> int:
    from broker.cluster import commands

    return commands.down(_load_topology(args.file), timeout=args.timeout)


def _cmd_send(args: argparse.Namespace) -> int:
    return _run_client(args, _send(args))


def _cmd_recv(args: argparse.Namespace) -> int:
    return _run_client(args, _recv(args))


def _cmd_stat(args: argparse.Namespace) -> int:
    return _run_client(args, _stat(args))


# ------------------------------------------------------------------ client commands


def _reason(e: BaseException) -> str:
    """An exception from the client or gRPC in an operator's words."""
    code = getattr(e, "code", None)
    message = getattr(e, "message", None)
    if isinstance(code, str) and isinstance(message, str):  # BrokerError
        return f"{code}: {message}" if code else message
    details = getattr(e, "details", None)
    if callable(code) and callable(details):  # grpc.RpcError
        return f"{code().name}: {details()}"
    text = str(e)
    return text if text else type(e).__name__


def _run_client(args: argparse.Namespace, coro: Awaitable[int]) -> int:
    from broker.client import BrokerError, ConnectionLost

    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except ConnectionLost as e:
        raise CliError(f"lost the connection to {args.url}: {_reason(e)}") from None
    except BrokerError as e:
        raise CliError(f"{args.url}: {_reason(e)}") from None
    except ValueError as e:  # the client's own argument checks
        raise CliError(str(e), code=EXIT_USAGE) from None


async def _connect(args: argparse.Namespace) -> Any:
    from broker.client import Client, ConnectionLost

    try:
        return await asyncio.wait_for(Client.connect(args.url), args.connect_timeout)
    except TimeoutError:
        raise CliError(
            f"cannot connect to {args.url}: no broker answered within {args.connect_timeout:g} s"
        ) from None
    except ValueError as e:  # a malformed URL
        raise CliError(f"--url: {e}", code=EXIT_USAGE) from None
    except ConnectionLost as e:
        if "Connection refused" in e.message and not args.url.startswith("failover:"):
            # gRPC's wording is a paragraph; the operator needs one fact.
            raise CliError(
                f"cannot connect to {args.url}: connection refused (is a broker running there?)"
            ) from None
        raise CliError(e.message) from None  # it says which addresses refused and why
    except Exception as e:
        raise CliError(f"cannot connect to {args.url}: {_reason(e)}") from None


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _rate(n: int, seconds: float, nbytes: int | None = None) -> str:
    if seconds <= 0:
        return ""
    text = f"{n / seconds:,.0f} msg/s"
    if nbytes is not None and nbytes >= 1024 * 1024:
        text += f", {nbytes / seconds / (1024 * 1024):,.1f} MiB/s"
    return text


def _messages(n: int) -> str:
    return f"{n:,} message{'s' if n != 1 else ''}"


class Progress:
    """A progress bar on a terminal; on a pipe or file, a plain count line now and then."""

    WIDTH = 30

    def __init__(
        self,
        total: int,
        verb: str,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.verb = verb
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.now = now
        self.start = now()
        # Short runs show nothing: a bar only after 0.5 s, a plain line only after 5 s.
        self.next_draw = self.start + (0.5 if self.tty else 5.0)
        self.drawn = False

    def update(self, done: int) -> None:
        t = self.now()
        if t < self.next_draw:
            return
        self.next_draw = t + (0.1 if self.tty else 5.0)
        elapsed = t - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.tty:
            filled = int(self.WIDTH * done / self.total) if self.total else self.WIDTH
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            eta = f"  ETA {(self.total - done) / rate:,.0f} s" if rate > 0 else ""
            self.stream.write(
                f"\r[{bar}] {100 * done // max(self.total, 1):3d}% "
                f"{done:,}/{self.total:,}  {rate:,.0f} msg/s{eta}\x1b[K"
            )
            self.drawn = True
        else:
            self.stream.write(f"{PROG}: {self.verb} {done:,}/{self.total:,} ({rate:,.0f} msg/s)\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _read_body(args: argparse.Namespace) -> bytes:
    if args.body is not None and args.file is not None:
        raise CliError("send: give BODY or --file, not both", code=EXIT_USAGE)
    if args.file == "-":
        return sys.stdin.buffer.read()
    if args.file is not None:
        try:
            return Path(args.file).read_bytes()
        except OSError as e:
            raise CliError(f"{args.file}: {e.strerror or e}") from None
    if args.body is None:
        raise CliError(
            "send: give a message BODY or --file F (--file - reads stdin)", code=EXIT_USAGE
        )
    return str(args.body).encode()


async def _send(args: argparse.Namespace) -> int:
    body = _read_body(args)
    options: dict[str, Any] = {"persistent": not args.non_persistent}
    if args.header:
        options["headers"] = dict(args.header)
    if args.priority is not None:
        options["priority"] = args.priority
    if args.ttl is not None:
        options["ttl"] = args.ttl

    client = await _connect(args)
    try:
        started = time.monotonic()
        message_id = None
        if args.count == 1:
            message_id = await client.send(args.queue, body, **options)
        else:
            await _send_many(client, args, body, options)
        elapsed = time.monotonic() - started
    finally:
        await client.close()
    rate = _rate(args.count, elapsed, args.count * len(body)) if args.count > 1 else ""
    detail = rate or (f"id {message_id}" if message_id else "")
    print(
        f"sent {_messages(args.count)} to {args.queue} in {elapsed:.3f} s"
        + (f" ({detail})" if detail else ""),
        flush=True,
    )
    return 0


async def _send_many(
    client: Any, args: argparse.Namespace, body: bytes, options: dict[str, Any]
) -> None:
    """Pipelined sends: the producer keeps many unanswered; callbacks count the answers.

    Futures are not kept: a million of them would cost more memory than the messages.
    """
    progress = Progress(args.count, "sent")
    acked = 0
    failures: list[BaseException] = []

    def done(fut: asyncio.Future[Any]) -> None:
        nonlocal acked
        if fut.cancelled():
            failures.append(asyncio.CancelledError("send cancelled"))
        elif fut.exception() is not None:
            failures.append(fut.exception())  # type: ignore[arg-type]
        else:
            acked += 1
            progress.update(acked)

    from broker.client import BrokerError

    producer = client.producer()
    try:
        for _ in range(args.count):
            if failures:
                break
            try:
                fut = await producer.send(args.queue, body, **options)
            except BrokerError as e:  # the producer has failed for good (connection lost)
                failures.append(e)
                break
            fut.add_done_callback(done)
        try:
            await producer.flush()
        except BrokerError as e:
            if not failures:
                failures.append(e)
    finally:
        try:
            await producer.close()
        finally:
            progress.close()
    if failures:
        raise CliError(
            f"sent {acked:,} of {_messages(args.count)} to {args.queue}, then: "
            f"{_reason(failures[0])}"
        )


async def _recv(args: argparse.Namespace) -> int:
    # Open the output first so that a bad path fails before any message is taken.
    try:
        sink = open(args.output, "wb") if args.output else None  # noqa: SIM115
    except OSError as e:
        raise CliError(f"{args.output}: {e.strerror or e}") from None
    # A consumer holds at most `prefetch` unacknowledged messages; those not consumed go
    # back on close with their redelivery count raised, so never ask for more than needed.
    prefetch = args.prefetch or min(args.count, 1000)
    progress = Progress(args.count, "received") if args.count > 1 else None
    received = 0
    started = time.monotonic()
    try:
        client = await _connect(args)
        try:
            consumer = await client.subscribe(args.queue, prefetch=prefetch, auto_ack=False)
            try:
                while received < args.count:
                    delivery = await consumer.receive(timeout=args.timeout)
                    if delivery is None:
                        break
                    body = bytes(delivery.body)
                    # Written (and flushed) before the ack: a crash in between redelivers
                    # the message rather than losing it.
                    if sink is not None:
                        sink.write(body)
                        sink.flush()
                    else:
                        out = sys.stdout.buffer
                        out.write(body if body.endswith(b"\n") else body + b"\n")
                        out.flush()
                    await _maybe_await(delivery.ack())
                    received += 1
                    if progress:
                        progress.update(received)
            finally:
                await consumer.close()
        finally:
            await client.close()
    finally:
        if progress:
            progress.close()
        if sink is not None:
            sink.close()
    elapsed = time.monotonic() - started
    if received < args.count:
        _say(
            f"received {received:,} of {_messages(args.count)} from {args.queue}: no "
            f"message arrived within {args.timeout:g} s"
        )
        return 1
    if args.count > 1 or sink is not None:
        rate = _rate(received, elapsed)
        _say(
            f"received {_messages(received)} from {args.queue} in {elapsed:.3f} s"
            + (f" ({rate})" if args.count > 1 and rate else "")
            + (f", written to {args.output}" if sink is not None else "")
        )
    return 0


def _uptime(started_ms: int) -> str:
    if started_ms <= 0:
        return "?"
    s = max(0, int(time.time() - started_ms / 1000))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{s}s" if minutes else f"{s}s"


async def _stat(args: argparse.Namespace) -> int:
    from broker.cluster.report import format_table

    client = await _connect(args)
    try:
        st = await client.status()
        queues = await client.queues()
    finally:
        await client.close()
    print(
        f"broker {st.name}  role {st.role}  address {st.client_address}  "
        f"version {st.version or '?'}  up {_uptime(st.started_ms)}"
    )
    print()
    if queues:
        rows = [
            (q.name, q.depth, q.pending, q.in_flight, q.enqueued, q.dequeued, q.consumers)
            for q in sorted(queues, key=lambda q: q.name)
        ]
        print(
            format_table(
                ("queue", "depth", "pending", "in-flight", "enqueued", "dequeued", "consumers"),
                rows,
            )
        )
    else:
        print("no queues")
    if st.components:
        print()
        component_rows = [(c.kind, c.name, c.state, c.detail) for c in st.components]
        print(format_table(("component", "name", "state", "detail"), component_rows))
    sys.stdout.flush()
    return 0
