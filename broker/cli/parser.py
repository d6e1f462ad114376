"""The `netbroker` command line's grammar: the top-level parser, each command family's below it."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NoReturn

from broker import __version__, invocation
from broker.cli import broker_cmd, client_cmds, cluster_cmds, queue_cmds, security_cmds
from broker.cli.errors import PROG, UsageError


class Parser(argparse.ArgumentParser):
    # argparse prints usage plus a message and exits; we want one line, said once, by main.
    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = Parser(
        prog=invocation.prog(),
        description="A clustered message broker: run brokers, send and receive messages, "
        "inspect them, and run whole topologies.",
        epilog="Run 'netbroker COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    broker_cmd.add_parser(sub)
    client_cmds.add_parsers(sub)
    queue_cmds.add_parsers(sub)
    cluster_cmds.add_parsers(sub)
    security_cmds.add_parsers(sub)
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
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
        raise UsageError(
            invocation.command(args.command), f"unrecognized arguments: {' '.join(extras)}"
        )
    return args
