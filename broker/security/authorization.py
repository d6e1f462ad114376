"""Who may do what where: ActiveMQ's authorization map.

Pure. Entries name a queue or topic pattern (`*` one segment, `>` the rest, as in
broker/core/patterns.py) and the groups that may `read` (consume, subscribe), `write`
(send, publish) and `admin` (purge, browse) there. As in ActiveMQ, the groups of every
entry matching a destination count together; a destination no entry matches is
refused. A subscription pattern is matched as a name, so subscribing to `orders.>`
needs an entry that covers the name `orders.>` (`orders.>` or `>`), not one for
`orders.eu` alone. The groups per (operation, destination) are cached, so the check on
a send costs a dict lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from broker.core.patterns import PatternError, check_pattern, compile_patterns
from broker.security.errors import SecurityError
from broker.security.users import parse_groups

# Destinations whose answers are kept; past it the cache starts again (a broker names
# few destinations, a client inventing names must not grow it without bound).
MAX_CACHED = 10_000
MAX_ENTRIES = 10_000


class Operation(StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


@dataclass(frozen=True)
class Entry:
    pattern: str
    topic: bool
    read: frozenset[str] = frozenset()
    write: frozenset[str] = frozenset()
    admin: frozenset[str] = frozenset()

    def groups(self, op: Operation) -> frozenset[str]:
        return {Operation.READ: self.read, Operation.WRITE: self.write}.get(op, self.admin)


class AuthorizationMap:
    def __init__(self, entries: tuple[Entry, ...]) -> None:
        self.entries = entries
        self._compiled = [(e, compile_patterns([e.pattern])) for e in entries]
        self._cache: dict[tuple[Operation, bool, str], frozenset[str]] = {}

    def groups(self, op: Operation, topic: bool, name: str) -> frozenset[str]:
        """The groups that may do `op` on queue (or topic) `name`."""
        key = (op, topic, name)
        found = self._cache.get(key)
        if found is None:
            found = frozenset().union(
                *(
                    e.groups(op)
                    for e, rx in self._compiled
                    if e.topic == topic and rx is not None and rx.fullmatch(name)
                )
            )
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[key] = found
        return found

    def allowed(self, groups: frozenset[str], op: Operation, topic: bool, name: str) -> bool:
        return not groups.isdisjoint(self.groups(op, topic, name))

    def broker_admin(self, groups: frozenset[str]) -> bool:
        """Whether `groups` may make the Admin service's broker-wide calls (listing every
        queue and subscription): `admin` on an entry for every queue, `queue: ">"`."""
        return any(
            e.pattern == ">" and not e.topic and not groups.isdisjoint(e.admin)
            for e in self.entries
        )

    def mentions(self, group: str) -> bool:
        return any(group in e.read | e.write | e.admin for e in self.entries)


def parse_authorization(raw: object, key: str = "authorization") -> AuthorizationMap:
    """A map from a parsed list of `{queue: PATTERN | topic: PATTERN, read, write, admin}`."""
    if not isinstance(raw, list):
        raise SecurityError(
            key, "expected a list of entries, each {queue or topic, read, write, admin}"
        )
    if len(raw) > MAX_ENTRIES:
        raise SecurityError(key, f"more than {MAX_ENTRIES} entries")
    entries: list[Entry] = []
    for i, item in enumerate(raw):
        at = f"{key}.{i}"
        if not isinstance(item, dict):
            raise SecurityError(
                at, "expected a mapping with 'queue' or 'topic' and read/write/admin"
            )
        unknown = sorted(str(k) for k in item if k not in ("queue", "topic", *Operation))
        if unknown:
            raise SecurityError(
                f"{at}.{unknown[0]}", "unknown key (expected queue or topic, read, write, admin)"
            )
        kinds = [k for k in ("queue", "topic") if k in item]
        if len(kinds) != 1:
            raise SecurityError(
                at, "give exactly one of 'queue' or 'topic' (a destination pattern)"
            )
        kind = kinds[0]
        pattern = item[kind]
        try:
            check_pattern(pattern)
        except PatternError as exc:
            raise SecurityError(f"{at}.{kind}", str(exc)) from None
        groups = {op: parse_groups(item.get(op, []), f"{at}.{op}") for op in Operation}
        read, write, admin = (groups[op] for op in Operation)
        entries.append(Entry(pattern, kind == "topic", read, write, admin))
    return AuthorizationMap(tuple(entries))
