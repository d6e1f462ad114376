"""`netbroker broker`: its options, and one broker run in the foreground from them.

The options are the settings of `broker.config.BrokerConfig`, made from its fields' flags,
help and bounds; their defaults and rules are the model's. `--config FILE` runs a broker
from the file `netbroker up` writes instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

from broker import invocation
from broker.cli.arguments import int_range, positive_float
from broker.cli.errors import EXIT_USAGE, CliError, UsageError
from broker.config import (
    BrokerConfig,
    ConfigError,
    Election,
    Setting,
    Sync,
    setting,
    setting_type,
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "broker",
        help="run one broker in the foreground",
        description="Run one broker until SIGTERM or Ctrl-C. Prints "
        "'netbroker: broker NAME listening on HOST:PORT' on stdout once "
        "ready; logs go to stderr. Its settings come from the options below, or all "
        "from a config file (--config).",
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="take every setting from FILE (JSON, as `netbroker up` writes it in the "
        "broker's data directory); no other option but --log-level goes with it",
    )
    sections: dict[str, argparse._ActionsContainer] = {"": p}
    for f in fields(BrokerConfig):
        s = setting(f)
        if not s.flag:
            continue
        if s.section not in sections:
            sections[s.section] = p.add_argument_group(s.section)
        sections[s.section].add_argument(
            s.flag, dest=f.name, default=argparse.SUPPRESS, help=_help(f, s),
            **_parsing(setting_type(f), s),
        )  # fmt: skip
    p.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="[%(default)s]",
    )
    p.set_defaults(handler=_cmd_broker)


def _help(f: Field[Any], s: Setting) -> str:
    shown = str(f.default) if s.shown is None else s.shown
    return f"{s.help} [{shown}]" if shown else s.help


def _parsing(kind: Any, s: Setting) -> dict[str, Any]:
    """How argparse reads a setting of type `kind`: values as a JSON config holds them,
    each checked by the model's own rule for it."""
    if kind is int:
        return {"type": int_range(s.low or 0, s.high), "metavar": s.metavar}
    if kind is float:
        return {"type": positive_float(), "metavar": s.metavar}
    if kind in (Sync, Election):
        return {"choices": [m.value for m in kind if m.value]}
    check = s.check
    if kind == tuple[str, ...]:
        # One item per flag; the model's check is of the whole list.
        item = _checked(None if check is None else lambda text: check((text,)))
        return {"action": "append", "type": item, "metavar": s.metavar}
    return {"type": _checked(check), "metavar": s.metavar}


def _checked(check: Callable[[Any], str | None] | None) -> Callable[[str], str]:
    def parse(text: str) -> str:
        why = check(text) if check is not None else None
        if why:
            raise argparse.ArgumentTypeError(why)
        return text

    return parse


def _flag(key: str) -> str:
    """A setting as the command line names it: its flag."""
    for f in fields(BrokerConfig):
        if f.name == key and setting(f).flag:
            return setting(f).flag
    return key


def config_of(args: argparse.Namespace) -> BrokerConfig:
    """The broker's config: from --config FILE, else from the options given."""
    settings = fields(BrokerConfig)
    given = {f.name: getattr(args, f.name) for f in settings if hasattr(args, f.name)}
    if args.config is not None:
        if given:
            flags = ", ".join(setting(f).flag for f in settings if f.name in given)
            raise _usage(
                f"--config takes every setting from its file; give no other option with it "
                f"but --log-level (given: {flags})"
            )
        try:
            return BrokerConfig.from_file(args.config)
        except ConfigError as e:
            raise CliError(str(e)) from None
    missing = [setting(f).flag for f in settings if f.default is MISSING and f.name not in given]
    if missing:
        raise _usage(f"the following arguments are required: {', '.join(missing)}")
    try:
        return BrokerConfig.from_dict(given)
    except ConfigError as e:
        raise CliError(e.told(_flag)) from None


def _usage(message: str) -> CliError:
    """A usage error found after parsing, said as argparse's are."""
    return CliError(str(UsageError(invocation.command("broker"), message)), code=EXIT_USAGE)


def _cmd_broker(args: argparse.Namespace) -> int:
    from broker.errors import StartupError

    config = config_of(args)
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
        raise CliError(f"broker {config.name}: {e}") from None
