"""Topic subscriptions: the table of who receives what is published, with no I/O.

Every subscription is backed by a queue of its own (so credit, prefetch, acks,
redelivery marks, dead letters and expiry are the queue machinery's), named here under
an internal name no user queue can take: queue names may not hold control characters,
and these begin with one. The broker publishes a topic message by copying it into the
queue of each subscription the table matches, and carries out what the table decides
when a durable subscription is taken, replaced or removed.

A durable subscription is known by (client id, subscription name). Subscribing again
under the same key with the same pattern resumes it; with another pattern it replaces
it (its messages go: ActiveMQ's behaviour); one subscriber at a time may hold it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from broker.core.names import MAX_NAME_BYTES
from broker.core.patterns import (
    PatternError,
    check_pattern,
    compile_patterns,
    has_wildcard,
)
from broker.errors import BrokerError, InvalidArgument

# The internal queue names: a control character first, so that `check_queue_name`
# refuses every one of them to users (and no user queue can collide), then the kind.
_MARK = "\x1e"
NONDURABLE_PREFIX = _MARK + "t" + _MARK
DURABLE_PREFIX = _MARK + "d" + _MARK
SUBSCRIPTION_PREFIX = _MARK
# A bridge's queue of topic messages on their way to the broker behind it (its path
# name follows): the network's conduit subscription, one per neighbour.
NETWORK_PREFIX = _MARK + "n" + _MARK

# A publisher may name many topics: the match cache holds this many names at most.
MATCH_CACHE_SIZE = 4096
# Durable subscriptions one broker keeps: each costs a queue in memory even while its
# subscriber is away, so their number is bounded as any input is.
MAX_DURABLE_SUBSCRIPTIONS = 10_000


def is_subscription_queue(name: str) -> bool:
    """Whether `name` is the internal queue of a topic subscription (a network one too)."""
    return name.startswith(SUBSCRIPTION_PREFIX)


def network_queue(peer: str) -> str:
    """The queue of topic messages a bridge carries to the broker named `peer` in paths."""
    return NETWORK_PREFIX + peer


def is_network_queue(name: str) -> bool:
    return name.startswith(NETWORK_PREFIX)


def _check_text(what: str, value: str) -> str:
    if not value:
        raise InvalidArgument(f"{what} is empty")
    encoded = value.encode("utf-8", "surrogatepass")
    if len(encoded) > MAX_NAME_BYTES:
        raise InvalidArgument(
            f"{what} is {len(encoded)} bytes, over the limit of {MAX_NAME_BYTES}: {value[:40]!r}..."
        )
    for ch in value:
        if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
            raise InvalidArgument(f"{what} {value!r} contains control character {ch!r}")
        if 0xD800 <= ord(ch) <= 0xDFFF:
            raise InvalidArgument(f"{what} {value!r} is not valid UTF-8")
    return value


def check_topic_pattern(pattern: str) -> str:
    """Return `pattern` if a subscription may use it; raise InvalidArgument saying why not."""
    _check_text("topic pattern", pattern)
    try:
        return check_pattern(pattern)
    except PatternError as exc:
        raise InvalidArgument(f"topic pattern: {exc}") from None


def check_topic_name(name: str) -> str:
    """Return `name` if a message may be published to it: a pattern without wildcards."""
    _check_text("topic name", name)
    try:
        check_pattern(name)
    except PatternError as exc:
        raise InvalidArgument(f"topic name: {exc}") from None
    if has_wildcard(name):
        raise InvalidArgument(
            f"topic name {name!r} has a wildcard: messages are published to one topic "
            f"('*' and '>' are for subscriptions)"
        )
    return name


def check_durable(client_id: str, subscription: str) -> tuple[str, str]:
    """A durable subscription's key, checked: both parts given and printable."""
    if not client_id:
        raise InvalidArgument(
            f"durable subscription {subscription!r} needs a client id (subscription names "
            f"are per client)"
        )
    _check_text("client id", client_id)
    _check_text("subscription name", subscription)
    return client_id, subscription


def durable_queue(client_id: str, subscription: str, generation: str) -> str:
    """The internal queue of a durable subscription. The generation tells a replacing
    subscription from the one it replaced, whose writes may still be landing."""
    return f"{DURABLE_PREFIX}{client_id}{_MARK}{subscription}{_MARK}{generation}"


class SubscriptionBusy(BrokerError):
    """A durable subscription already has its one subscriber. ALREADY_EXISTS rather than
    FAILED_PRECONDITION: clients read the latter as "this broker does not serve, try the
    next one", and another broker would not make the subscriber go away."""

    def __init__(self, client_id: str, subscription: str) -> None:
        super().__init__(
            "ALREADY_EXISTS",
            f"durable subscription {subscription!r} of client {client_id!r} already has "
            f"an active subscriber (one at a time)",
        )


@dataclass(eq=False)
class Subscription:
    queue: str
    pattern: str
    # (client id, subscription name) of a durable subscription; None: non-durable.
    durable: tuple[str, str] | None = None
    # Whether a subscriber holds it now (a non-durable one exists only while it does).
    active: bool = False
    label: str = ""


class Take(Enum):
    NEW = "new"  # created: write its record
    RESUME = "resume"  # known, same pattern: messages stored meanwhile are waiting
    REPLACE = "replace"  # known under another pattern: the old one and its messages go


@dataclass
class DurableTake:
    kind: Take
    subscription: Subscription
    replaced: Subscription | None = None


@dataclass
class _Matcher:
    """Subscriptions by pattern: exact names in a dict, wildcard patterns compiled."""

    exact: dict[str, list[Subscription]] = field(default_factory=dict)
    wild: dict[str, tuple[re.Pattern[str], list[Subscription]]] = field(default_factory=dict)


class SubscriptionTable:
    """Every topic subscription of one broker, by queue and by durable key."""

    def __init__(self) -> None:
        self.by_queue: dict[str, Subscription] = {}
        self.durables: dict[tuple[str, str], Subscription] = {}
        self._matcher = _Matcher()
        self._cache: dict[str, tuple[Subscription, ...]] = {}
        self._ids = itertools.count(1)
        # Told whenever the set of subscriptions changes (the network advertises their
        # patterns).
        self.listeners: list[Callable[[], None]] = []

    def __len__(self) -> int:
        return len(self.by_queue)

    # -- adding and removing ---------------------------------------------------------

    def add_nondurable(self, pattern: str, label: str = "") -> Subscription:
        """A new non-durable subscription, active from the start."""
        check_topic_pattern(pattern)
        sub = Subscription(f"{NONDURABLE_PREFIX}{next(self._ids)}", pattern, None, True, label)
        self._add(sub)
        return sub

    def take_durable(
        self, client_id: str, name: str, pattern: str, generation: str, label: str = ""
    ) -> DurableTake:
        """A subscriber takes durable subscription (client_id, name) on `pattern`: resume
        it, replace it, or create it (under a queue of `generation`). It is active until
        `release`. Raises SubscriptionBusy if it is active already."""
        key = check_durable(client_id, name)
        check_topic_pattern(pattern)
        known = self.durables.get(key)
        if known is not None and known.active:
            raise SubscriptionBusy(client_id, name)
        if known is not None and known.pattern == pattern:
            known.active = True
            known.label = label
            return DurableTake(Take.RESUME, known)
        if known is None and len(self.durables) >= MAX_DURABLE_SUBSCRIPTIONS:
            raise BrokerError(
                "RESOURCE_EXHAUSTED",
                f"this broker holds {len(self.durables):,} durable subscriptions, its "
                f"limit: remove one (unsubscribe) before subscribing {name!r} of {client_id!r}",
            )
        if known is not None:
            self.remove(known.queue)
        sub = Subscription(durable_queue(client_id, name, generation), pattern, key, True, label)
        self._add(sub)
        return DurableTake(Take.NEW if known is None else Take.REPLACE, sub, known)

    def restore_durable(self, client_id: str, name: str, pattern: str, queue: str) -> Subscription:
        """A durable subscription recorded in the store, inactive until taken."""
        sub = Subscription(queue, pattern, (client_id, name), False)
        old = self.durables.get((client_id, name))
        if old is not None:
            self.remove(old.queue)
        self._add(sub)
        return sub

    def release(self, queue: str) -> Subscription | None:
        """Its subscriber left. A non-durable subscription goes with it (returned, for the
        caller to drop its queue); a durable one stays, inactive (None returned)."""
        sub = self.by_queue.get(queue)
        if sub is None:
            return None
        if sub.durable is None:
            self.remove(queue)
            return sub
        sub.active = False
        sub.label = ""
        return None

    def remove_durable(self, client_id: str, name: str) -> Subscription:
        """Unsubscribe by name: the subscription is removed (returned, for the caller to
        drop its queue and record). Raises if unknown or active."""
        key = check_durable(client_id, name)
        sub = self.durables.get(key)
        if sub is None:
            raise BrokerError(
                "NOT_FOUND", f"no durable subscription {name!r} of client {client_id!r}"
            )
        if sub.active:
            raise BrokerError(
                "ALREADY_EXISTS",
                f"durable subscription {name!r} of client {client_id!r} has an active "
                f"subscriber: it must leave before the subscription is removed",
            )
        self.remove(sub.queue)
        return sub

    def remove(self, queue: str) -> Subscription | None:
        sub = self.by_queue.pop(queue, None)
        if sub is None:
            return None
        if sub.durable is not None and self.durables.get(sub.durable) is sub:
            del self.durables[sub.durable]
        matcher = self._matcher
        if has_wildcard(sub.pattern):
            _, subs = matcher.wild[sub.pattern]
            subs.remove(sub)
            if not subs:
                del matcher.wild[sub.pattern]
        else:
            subs = matcher.exact[sub.pattern]
            subs.remove(sub)
            if not subs:
                del matcher.exact[sub.pattern]
        self._cache.clear()
        self._changed()
        return sub

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    def _add(self, sub: Subscription) -> None:
        self.by_queue[sub.queue] = sub
        if sub.durable is not None:
            self.durables[sub.durable] = sub
        matcher = self._matcher
        if has_wildcard(sub.pattern):
            entry = matcher.wild.get(sub.pattern)
            if entry is None:
                compiled = compile_patterns([sub.pattern])
                assert compiled is not None
                matcher.wild[sub.pattern] = entry = (compiled, [])
            entry[1].append(sub)
        else:
            matcher.exact.setdefault(sub.pattern, []).append(sub)
        self._cache.clear()
        self._changed()

    # -- publishing ------------------------------------------------------------------

    def match(self, topic: str) -> tuple[Subscription, ...]:
        """The subscriptions a message published to `topic` goes to (each once)."""
        cached = self._cache.get(topic)
        if cached is not None:
            return cached
        found: list[Subscription] = list(self._matcher.exact.get(topic, ()))
        for compiled, subs in self._matcher.wild.values():
            if compiled.fullmatch(topic):
                found.extend(subs)
        result = tuple(found)
        if len(self._cache) >= MATCH_CACHE_SIZE:
            del self._cache[next(iter(self._cache))]
        self._cache[topic] = result
        return result

    def patterns(self) -> dict[str, list[Subscription]]:
        """Subscriptions grouped by pattern, for status."""
        out: dict[str, list[Subscription]] = {}
        for sub in self.by_queue.values():
            out.setdefault(sub.pattern, []).append(sub)
        return out
