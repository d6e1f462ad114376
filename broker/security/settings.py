"""A broker's security settings, read from its users file.

The users file (`--users FILE`, or the topology's `users:`) is YAML (JSON is YAML too):

    users:                       # or the path of another users file, relative to this one
      - {name: alice, hash: "$argon2id$...", groups: [producers]}
    anonymous: false             # clients without credentials are let in (group anonymous)
    authorization:               # optional; without it every user may do everything
      - {queue: "orders.>", read: [consumers], write: [producers], admin: [admins]}
      - {topic: ">", read: [anonymous]}

Every refusal names the file, the key and the reason (`SecurityError`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from broker.security.authorization import AuthorizationMap, parse_authorization
from broker.security.errors import SecurityError
from broker.security.users import User, parse_users

MAX_FILE_BYTES = 16 * 1024 * 1024
ANONYMOUS_GROUP = "anonymous"
KEYS = ("users", "anonymous", "authorization")


@dataclass(frozen=True)
class SecuritySettings:
    users: tuple[User, ...] = ()
    anonymous: bool = False
    authorization: AuthorizationMap | None = None
    by_name: dict[str, User] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.by_name.update((u.name, u) for u in self.users)

    @property
    def anonymous_allowed(self) -> bool:
        """Clients may connect without credentials: the file says `anonymous: true`, or
        its authorization map grants the `anonymous` group something."""
        if self.anonymous:
            return True
        return self.authorization is not None and self.authorization.mentions(ANONYMOUS_GROUP)


def parse_settings(raw: object, base: Path, source: str = "") -> SecuritySettings:
    """Settings from a parsed users file; `base` is where relative paths start."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SecurityError("", "expected a mapping with 'users'", source)
    for key in raw:
        if key not in KEYS:
            raise SecurityError(str(key), f"unknown key (expected {', '.join(KEYS)})", source)
    try:
        users_raw = raw.get("users", [])
        if isinstance(users_raw, str):
            users = load_settings(base / users_raw).users
        else:
            users = parse_users(users_raw)
        anonymous = raw.get("anonymous", False)
        if not isinstance(anonymous, bool):
            raise SecurityError("anonymous", "expected true or false")
        authorization = None
        if raw.get("authorization") is not None:
            authorization = parse_authorization(raw["authorization"])
    except SecurityError as exc:
        raise (exc if exc.source else exc.within(source)) from None
    return SecuritySettings(users, anonymous, authorization)


def load_settings(path: Path) -> SecuritySettings:
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SecurityError("", f"cannot read: {exc.strerror or exc}", source) from None
    if len(data) > MAX_FILE_BYTES:
        raise SecurityError("", "larger than 16 MiB: not a users file", source)
    try:
        raw = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        problem = getattr(exc, "problem", None) or "not UTF-8 YAML"
        raise SecurityError("", f"invalid YAML: {problem}", source) from None
    return parse_settings(raw, path.parent, source)
