"""The users of a broker: names, password hashes and groups, as a users file lists them.

Pure: `parse_users` checks the parsed YAML/JSON and refuses what would be unsafe or
ambiguous (a plaintext password, a duplicate name, a name a client could not present),
with the key of the entry at fault.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from broker.security.errors import SecurityError

# A user name goes in `user:password` (HTTP Basic in gRPC metadata) and in STOMP's
# `login` header: no ':' and nothing a header could not carry.
USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}")
GROUP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# The argon2 encodings argon2-cffi writes and verifies ($argon2id$v=19$m=...).
HASH_PREFIXES = ("$argon2id$", "$argon2i$", "$argon2d$")
MAX_USERS = 100_000
PLAINTEXT = (
    "plaintext passwords are refused; store an argon2 hash (make one with `netbroker passwd`)"
)


@dataclass(frozen=True)
class User:
    name: str
    hash: str = field(repr=False)
    groups: frozenset[str] = frozenset()


def parse_groups(raw: object, key: str) -> frozenset[str]:
    """Group names: a list, or one comma-separated string (ActiveMQ's spelling)."""
    if isinstance(raw, str):
        items: list[object] = [g.strip() for g in raw.split(",") if g.strip()]
    elif isinstance(raw, list):
        items = list(raw)
    else:
        raise SecurityError(key, "expected a list of group names")
    for i, group in enumerate(items):
        if not isinstance(group, str) or not GROUP_RE.fullmatch(group):
            raise SecurityError(
                f"{key}.{i}",
                f"invalid group name {str(group)[:40]!r}: use letters, digits, '.', '-', '_'",
            )
    return frozenset(items)  # type: ignore[arg-type]


def parse_users(raw: object, key: str = "users") -> tuple[User, ...]:
    """The users of a parsed list of `{name, hash, groups}` entries."""
    if not isinstance(raw, list):
        raise SecurityError(key, "expected a list of users, each {name, hash, groups}")
    if len(raw) > MAX_USERS:
        raise SecurityError(key, f"more than {MAX_USERS} users")
    users: list[User] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        at = f"{key}.{i}"
        if not isinstance(entry, dict):
            raise SecurityError(at, "expected a mapping with 'name', 'hash' and 'groups'")
        if "password" in entry:
            raise SecurityError(f"{at}.password", PLAINTEXT)
        unknown = sorted(str(k) for k in entry if k not in ("name", "hash", "groups"))
        if unknown:
            raise SecurityError(f"{at}.{unknown[0]}", "unknown key (expected name, hash, groups)")
        name = entry.get("name")
        if not isinstance(name, str) or not USER_RE.fullmatch(name):
            raise SecurityError(
                f"{at}.name",
                "expected a user name of letters, digits and '_.@+-' (no ':'), at most 128",
            )
        if name in seen:
            raise SecurityError(f"{at}.name", f"user {name!r} is listed twice")
        seen.add(name)
        hashed = entry.get("hash")
        if not isinstance(hashed, str) or not hashed:
            raise SecurityError(f"{at}.hash", "missing: give the password's argon2 hash")
        if not hashed.startswith(HASH_PREFIXES):
            raise SecurityError(f"{at}.hash", f"not an argon2 hash: {PLAINTEXT}")
        groups = parse_groups(entry.get("groups", []), f"{at}.groups")
        users.append(User(name, hashed, groups))
    return tuple(users)
