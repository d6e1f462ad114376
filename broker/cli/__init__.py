"""The `netbroker` command line: run a broker, send and receive, inspect, run a topology.

Every failure ends with one line on stderr, `netbroker: what went wrong`, and a non-zero
exit code: 2 for a usage error, 1 for anything else, 130 for Ctrl-C. No tracebacks,
unless NETBROKER_DEBUG=1 is set (for bugs in netbroker itself).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

from broker.cli.cluster_cmds import failures
from broker.cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, CliError, UsageError, say
from broker.cli.parser import build_parser, parse


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parse(parser, argv)
    except UsageError as e:
        say(str(e))
        return EXIT_USAGE
    except SystemExit as e:  # --help, --version
        return e.code if isinstance(e.code, int) else 0
    if args.command != "broker":
        # gRPC's core logs a failed TLS handshake on stderr (before our one line says
        # it in plain words); a broker keeps those lines in its log.
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except CliError as e:
        say(str(e))
        return e.code
    except BrokenPipeError:
        # Reading end closed (`netbroker recv ... | head`): stop quietly, as Unix tools do;
        # point stdout at /dev/null so the interpreter's final flush does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as e:
        from broker.errors import StartupError

        if isinstance(e, (*failures(), StartupError)):
            say(str(e))
            return 1
        if os.environ.get("NETBROKER_DEBUG"):
            traceback.print_exc()
        say(f"unexpected error: {type(e).__name__}: {e} (NETBROKER_DEBUG=1 shows where)")
        return 1
