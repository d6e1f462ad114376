"""`netbroker passwd`: a password's argon2 hash, printed or written into a users file.

The password is read from the terminal (asked twice) or, when stdin is not a terminal,
as the first line of stdin; never from the command line, where `ps` would show it.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from broker.cli.errors import EXIT_USAGE, CliError


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "passwd",
        help="hash a password for a users file",
        description="Read a password (from the terminal, asked twice, or the first line of "
        "stdin) and print its argon2 hash; with --users and --user, add the user to the "
        "users file or replace its hash instead (the file is rewritten, mode 0600).",
    )
    p.add_argument("--users", type=Path, metavar="FILE", help="users file to write the user to")
    p.add_argument("--user", metavar="NAME", help="the user (with --users)")
    p.add_argument(
        "--groups",
        metavar="G1,G2",
        help="the user's groups, comma-separated (with --users; default: kept, or none)",
    )
    p.set_defaults(handler=_cmd_passwd)
    c = sub.add_parser(
        "certs",
        help="create a development CA and broker certificates",
        description="Create a development CA in DIR (ca.pem, ca.key) unless it is there, and "
        "for each broker without one a certificate DIR/NAME.pem and key DIR/NAME.key "
        "(mode 0600) naming the broker, its host, 127.0.0.1 and localhost: the brokers of "
        "--topology FILE, and each --broker NAME[@HOST]. For development and tests: a "
        "production deployment brings its own CA.",
    )
    c.add_argument("dir", type=Path, metavar="DIR", help="the certificates directory")
    c.add_argument("--topology", metavar="FILE", help="issue for every broker of this file")
    c.add_argument(
        "--broker", action="append", default=[], metavar="NAME[@HOST]",
        help="issue for this broker (repeatable)",
    )  # fmt: skip
    c.set_defaults(handler=_cmd_certs)


def _cmd_certs(args: argparse.Namespace) -> int:
    from broker.security.certs import CA_CERT, ensure_brokers

    brokers: list[tuple[str, list[str]]] = []
    if args.topology is not None:
        from broker.cli.cluster_cmds import load_topology

        brokers += [(b.name, [b.host]) for b in load_topology(args.topology).brokers]
    for item in args.broker:
        name, _, host = item.partition("@")
        brokers.append((name, [host] if host else []))
    if not brokers:
        raise CliError("name the brokers: --topology FILE or --broker NAME", code=EXIT_USAGE)
    try:
        issued = ensure_brokers(args.dir, brokers)
    except (OSError, ValueError) as e:
        raise CliError(f"cannot create the certificates in {args.dir}: {e}") from None
    kept = [name for name, _ in brokers if name not in issued]
    print(f"netbroker: CA {args.dir / CA_CERT}; issued: {', '.join(issued) or 'none'}"
          f"{'; kept: ' + ', '.join(kept) if kept else ''}")  # fmt: skip
    return 0


def _password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise CliError("the two passwords differ")
    else:
        first = sys.stdin.readline().rstrip("\r\n")
    if not first:
        raise CliError("empty password")
    return first


def _cmd_passwd(args: argparse.Namespace) -> int:
    from broker.security.errors import SecurityError
    from broker.security.passwords import hash_password
    from broker.security.settings import load_settings
    from broker.security.users import USER_RE, parse_groups

    if (args.users is None) != (args.user is None):
        raise CliError("--users and --user go together", code=EXIT_USAGE)
    if args.groups is not None and args.users is None:
        raise CliError("--groups needs --users and --user", code=EXIT_USAGE)
    if args.user is not None and not USER_RE.fullmatch(args.user):
        raise CliError(f"--user {args.user!r}: use letters, digits and '_.@+-' (no ':')")
    groups = None
    if args.groups is not None:
        try:
            groups = sorted(parse_groups(args.groups, "--groups"))
        except SecurityError as e:
            raise CliError(str(e), code=EXIT_USAGE) from None
    hashed = hash_password(_password())
    if args.users is None:
        print(hashed)
        return 0
    import yaml

    path: Path = args.users
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            load_settings(path)  # refuse to rewrite a file that is wrong already
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (SecurityError, OSError) as e:
            raise CliError(str(e)) from None
        raw = loaded if isinstance(loaded, dict) else {}
    users = raw.get("users", [])
    if isinstance(users, str):
        raise CliError(f"{path}: users: names another file ({users}); write to that one")
    entry = next((u for u in users if u.get("name") == args.user), None)
    added = entry is None
    if entry is None:
        entry = {"name": args.user, "groups": groups or []}
        users.append(entry)
    elif groups is not None:
        entry["groups"] = groups
    entry["hash"] = hashed
    raw["users"] = users
    _write(path, yaml.safe_dump(raw, sort_keys=False))
    print(f"netbroker: {'added' if added else 'updated'} user {args.user} in {path}")
    return 0


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CliError(f"cannot write {path}: {e.strerror or e}") from None
