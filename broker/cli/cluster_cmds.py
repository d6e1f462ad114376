"""`netbroker up`, `status` and `down`: a topology file's brokers, through broker.cluster.

The CLI's calls into broker.cluster live here (besides `stat`'s table), each imported where
it is used: the other commands need none of it.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from broker.cli.arguments import int_range, positive_float

if TYPE_CHECKING:
    from broker.cluster.commands import Sidecar, SidecarStarter
    from broker.cluster.model import Topology


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        help="leave the brokers (and ZooKeeper) running and exit; stop them with 'netbroker down'",
    )
    p.add_argument(
        "--timeout",
        type=positive_float(),
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
    p.add_argument(
        "--console-port",
        type=int_range(0, 65535),
        default=None,
        metavar="PORT",
        help="serve the web console on 127.0.0.1:PORT while in the foreground, 0 for none "
        "[the file's console_port, else 8161]",
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
        type=positive_float(),
        default=10.0,
        metavar="SECONDS",
        help="grace before SIGKILL [%(default)s]",
    )
    p.set_defaults(handler=_cmd_down)


    p = sub.add_parser(
        "restart",
        help="start one broker of a running cluster again (after a crash)",
        description="Start BROKER of FILE's running cluster again, with the command "
        "line 'netbroker up' started it with (after a crash or a kill -9), and wait "
        "until it is ready; a foreground 'netbroker up' takes it over.",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("broker", metavar="BROKER")
    p.add_argument(
        "--timeout",
        type=positive_float(),
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for it to be ready [%(default)s]",
    )
    p.set_defaults(handler=_cmd_restart)


def failures() -> tuple[type[Exception], ...]:
    """The cluster operations' own errors: their message is for the operator as it is."""
    from broker.cluster.errors import TopologyError, UpError

    return (TopologyError, UpError)


def load_topology(path: str) -> Topology:
    """The topology file, loaded and checked (CliError naming the problem)."""
    return _load_topology(path)


def _load_topology(path: str) -> Topology:
    from broker.cluster import loader
    from netconnector.uri import parse_connector

    return loader.load(path, parse_connector)


def _cmd_up(args: argparse.Namespace) -> int:
    from broker.cluster import commands

    topology = _load_topology(args.file)
    return commands.up(
        topology,
        detach=args.detach,
        timeout=args.timeout,
        interval=args.interval,
        sidecar=_console(topology, args.console_port),
    )


def _console(topology: Topology, override: int | None) -> SidecarStarter | None:
    """How `up` starts the web console: on --console-port, else the file's console_port,
    else the default port; none on 0. A port that was asked for and is taken stops `up`;
    the default one taken (another cluster's console) only costs this run its console."""
    from broker.cluster.errors import UpError
    from broker.cluster.model import DEFAULT_CONSOLE_PORT
    from broker.cluster.report import print_line

    asked = override if override is not None else topology.console_port
    port = DEFAULT_CONSOLE_PORT if asked is None else asked
    if port == 0:
        return None
    if override is not None:
        _check_console_port(topology, port)

    def start(t: Topology) -> Sidecar | None:
        from broker.cluster.plan import topology_ca
        from broker.console.console import Console, ConsoleError
        from broker.credentials import environment_metadata

        # Brokers with users answer the console's queue listing, browse and purge only
        # for a user with admin rights: `up`'s environment names one, as for the CLI.
        try:
            return Console.start(
                t, port, metadata=environment_metadata(), ca=topology_ca(t)
            )
        except ConsoleError as e:
            if asked is not None:
                raise UpError(f"{e}; choose another with --console-port (0: none)") from None
            print_line(sys.stderr, f"netbroker: {e}; running without it (--console-port)")
            return None

    return start


def _check_console_port(topology: Topology, port: int) -> None:
    """--console-port clashing with a port the file gives a broker (or ZooKeeper)."""
    from broker.cli.errors import CliError
    from broker.cluster.model import WILDCARD_HOSTS

    zk = topology.zookeeper
    if zk is not None and zk.embedded and zk.port == port:
        raise CliError(f"--console-port {port} is the file's zookeeper_port")
    for b in topology.brokers:
        if b.host not in ("127.0.0.1", *WILDCARD_HOSTS):
            continue
        for key, used in b.ports.items():
            if used == port:
                raise CliError(f"--console-port {port} is broker {b.name}'s {key} in the file")


def _cmd_status(args: argparse.Namespace) -> int:
    from broker.cluster import commands

    return commands.status(_load_topology(args.file))


def _cmd_down(args: argparse.Namespace) -> int:
    from broker.cluster import commands

    return commands.down(_load_topology(args.file), timeout=args.timeout)


def _cmd_restart(args: argparse.Namespace) -> int:
    from broker.cluster import commands

    return commands.restart(_load_topology(args.file), args.broker, timeout=args.timeout)
