"""Destination filters: which queues a network connector may forward.

The patterns are those of `broker.core.patterns` (dot-separated segments, `*` for one
segment, `>` for the rest, ActiveMQ's syntax). `DestinationFilter` combines a
connector's three pattern lists with ActiveMQ's precedence (an excluded queue is never
forwarded, whatever includes it).
"""

from __future__ import annotations

from collections.abc import Iterable

# The pattern syntax lives in the core (topic subscriptions use it too); re-exported here
# for the connector code and its tests.
from broker.core.patterns import (
    ANY_SEGMENT,
    ANY_TAIL,
    SEPARATOR,
    PatternError,
    check_pattern,
    compile_patterns,
    matches,
)
from broker.core.topics import is_subscription_queue

__all__ = [
    "ANY_SEGMENT",
    "ANY_TAIL",
    "SEPARATOR",
    "DestinationFilter",
    "PatternError",
    "check_pattern",
    "compile_patterns",
    "matches",
]

# A broker sees a bounded but possibly large set of queue names; caching per name makes the
# per-message check a dict lookup, and the bound keeps a flood of one-off names (e.g.
# reply queues) from growing the cache without limit.
DEFAULT_CACHE_SIZE = 4096


class DestinationFilter:
    """Which queues a connector forwards, from its exclude and include pattern lists.

    * `forwards_dynamically(queue)`: the queue may get a network consumer when a neighbour
      advertises demand for it: not excluded, and either no dynamically included patterns
      were given (everything is included) or one of them matches.
    * `forwards_statically(queue)`: the queue is forwarded whether or not anyone advertises
      demand: it matches a statically included pattern and is not excluded.

    Exclusion always wins over inclusion, as in ActiveMQ. Patterns are compiled once, when
    the filter is built, so an invalid pattern fails at configuration time; results are
    cached per queue name in a bounded dict.
    """

    __slots__ = ("_cache", "_cache_size", "_dynamic", "_excluded", "_static", "patterns")

    def __init__(
        self,
        excluded: Iterable[str] = (),
        statically_included: Iterable[str] = (),
        dynamically_included: Iterable[str] = (),
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        excluded_t = tuple(excluded)
        static_t = tuple(statically_included)
        dynamic_t = tuple(dynamically_included)
        #: The pattern lists as given, for display: (excluded, static, dynamic).
        self.patterns: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] = (
            excluded_t,
            static_t,
            dynamic_t,
        )
        self._excluded = compile_patterns(excluded_t)
        self._static = compile_patterns(static_t)
        self._dynamic = compile_patterns(dynamic_t)
        self._cache_size = cache_size
        # queue -> (forwards_dynamically, forwards_statically); both answers are computed
        # together because the exclusion match they share is the expensive part.
        self._cache: dict[str, tuple[bool, bool]] = {}

    @property
    def excluded(self) -> tuple[str, ...]:
        """The excluded patterns as given."""
        return self.patterns[0]

    @property
    def statically_included(self) -> tuple[str, ...]:
        """The statically included patterns as given."""
        return self.patterns[1]

    @property
    def dynamically_included(self) -> tuple[str, ...]:
        """The dynamically included patterns as given."""
        return self.patterns[2]

    def _decide(self, queue: str) -> tuple[bool, bool]:
        cached = self._cache.get(queue)
        if cached is not None:
            return cached
        if is_subscription_queue(queue):
            # A topic subscription's own queue is no destination: its copies are for
            # its subscriber here, whatever pattern (`>`) would include it.
            result = (False, False)
        elif self._excluded is not None and self._excluded.fullmatch(queue):
            result = (False, False)
        else:
            dynamic = self._dynamic is None or self._dynamic.fullmatch(queue) is not None
            static = self._static is not None and self._static.fullmatch(queue) is not None
            result = (dynamic, static)
        if len(self._cache) >= self._cache_size:
            # Evict the oldest entry (dicts keep insertion order): cheap, and a queue that
            # is still busy is simply recomputed and reinserted on its next message.
            del self._cache[next(iter(self._cache))]
        self._cache[queue] = result
        return result

    def is_excluded(self, queue: str) -> bool:
        """Whether `queue` matches an excluded pattern."""
        return self._excluded is not None and self._excluded.fullmatch(queue) is not None

    def forwards_dynamically(self, queue: str) -> bool:
        """Whether demand advertised for `queue` may create a network consumer for it."""
        return self._decide(queue)[0]

    def forwards_statically(self, queue: str) -> bool:
        """Whether `queue` is forwarded regardless of advertised demand."""
        return self._decide(queue)[1]

    def __repr__(self) -> str:
        excluded, static, dynamic = self.patterns
        return (
            f"DestinationFilter(excluded={list(excluded)!r}, "
            f"statically_included={list(static)!r}, dynamically_included={list(dynamic)!r})"
        )
