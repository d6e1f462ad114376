"""`netbroker broker`: its options, and one broker run in the foreground from them."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from broker.cli.arguments import int_range, ip_address, positive_float
from broker.cli.cluster_cmds import broker_name
from broker.cli.errors import CliError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "broker",
        help="run one broker in the foreground",
        description="Run one broker until SIGTERM or Ctrl-C. Prints "
        "'netbroker: broker NAME listening on HOST:PORT' on stdout once "
        "ready; logs go to stderr.",
    )
    p.add_argument("--name", required=True, type=broker_name, help="the broker's name")
    p.add_argument(
        "--port",
        required=True,
        type=int_range(0, 65535),
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
        type=int_range(1, None),
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
        type=int_range(0, None),
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
        type=ip_address,
        metavar="IP",
        help="address of an interface zeroconf advertises and browses on (repeatable) [127.0.0.1]",
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
        type=int_range(1, 65535),
        metavar="PORT",
        help="port slaves replicate from when this broker is master",
    )
    g.add_argument(
        "--replicas",
        type=int_range(1, 99),
        default=1,
        metavar="N",
        help="members in the group [%(default)s]",
    )
    g.add_argument(
        "--min-insync",
        type=int_range(1, 99),
        metavar="K",
        help="smallest in-sync set that may acknowledge [replicas/2+1 for 3 or more, 1 for a pair]",
    )
    g.add_argument(
        "--weight",
        type=int_range(0, 1000),
        default=1,
        metavar="W",
        help="election preference among equally up-to-date members [%(default)s]",
    )
    g.add_argument(
        "--session-timeout",
        type=positive_float(),
        default=1.0,
        metavar="S",
        help="ZooKeeper session timeout: how fast a dead master is replaced [%(default)s]",
    )
    g.add_argument(
        "--lag-timeout",
        type=positive_float(),
        default=1.0,
        metavar="S",
        help="a slave silent this long while behind leaves the in-sync set [%(default)s]",
    )
    g.add_argument(
        "--commit-timeout",
        type=positive_float(),
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


def _cmd_broker(args: argparse.Namespace) -> int:
    from broker.config import BrokerConfig
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
