"""Destination patterns: which queues a network connector may forward.

Queue names are read as dot-separated segments (`orders.eu.paris`). A pattern is a queue
name whose segments may also be wildcards, as in ActiveMQ:

* `*` matches exactly one segment: `orders.*` matches `orders.eu` but not `orders` or
  `orders.eu.paris`;
* `>` matches one or more trailing segments and may only be the last segment:
  `orders.>` matches `orders.eu` and `orders.eu.paris` but not `orders`; `>` alone
  matches every queue.

A wildcard must be a whole segment: `orders*` or `a.>b` are rejected rather than read as
literals, because an operator who writes them almost certainly expects a glob and would
otherwise get a filter that silently matches nothing. Empty segments (`orders..eu`,
`orders.`) are rejected for the same reason: they are typos far more often than names.

`DestinationFilter` combines a connector's three pattern lists with ActiveMQ's precedence
(an excluded queue is never forwarded, whatever includes it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ANY_SEGMENT = "*"
ANY_TAIL = ">"
SEPARATOR = "."

# A broker sees a bounded but possibly large set of queue names; caching per name makes the
# per-message check a dict lookup, and the bound keeps a flood of one-off names (e.g.
# reply queues) from growing the cache without limit.
DEFAULT_CACHE_SIZE = 4096


class PatternError(ValueError):
    """A destination pattern that cannot be compiled; the message says which and why."""


def _segment_regex(pattern: str) -> str:
    """Translate one validated pattern into a regular expression fragment."""
    segments = pattern.split(SEPARATOR)
    parts: list[str] = []
    for segment in segments:
        if segment == ANY_SEGMENT:
            # One non-empty segment. `+` rather than `*` so `orders.*` does not match the
            # odd queue `orders.` (a name's empty segment is not something to fan out to).
            parts.append(r"[^.]+")
        elif segment == ANY_TAIL:
            # Validated to be last: the rest of the name, at least one character. Kept
            # as `.+` rather than "well-formed segments" so `>` alone really matches every
            # queue, which is what an operator excluding `>` expects.
            parts.append(r".+")
        else:
            parts.append(re.escape(segment))
    return r"\.".join(parts)


def check_pattern(pattern: str) -> str:
    """Return `pattern` if it is a valid destination pattern; raise PatternError if not."""
    if not isinstance(pattern, str):
        raise PatternError(f"destination pattern must be a string, got {pattern!r}")
    if not pattern:
        raise PatternError("destination pattern is empty")
    if pattern != pattern.strip():
        raise PatternError(f"destination pattern {pattern!r} has leading or trailing spaces")
    segments = pattern.split(SEPARATOR)
    last = len(segments) - 1
    for i, segment in enumerate(segments):
        if not segment:
            raise PatternError(
                f"destination pattern {pattern!r} has an empty segment "
                f"(check for a doubled, leading or trailing '{SEPARATOR}')"
            )
        if segment == ANY_TAIL:
            if i != last:
                raise PatternError(
                    f"destination pattern {pattern!r}: '{ANY_TAIL}' may only be the last "
                    f"segment (it matches all remaining segments)"
                )
            continue
        if segment == ANY_SEGMENT:
            continue
        if ANY_SEGMENT in segment or ANY_TAIL in segment:
            raise PatternError(
                f"destination pattern {pattern!r}: wildcards must be a whole segment, "
                f"got {segment!r} (write e.g. 'orders.*', not 'orders*')"
            )
    return pattern


def compile_patterns(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """Compile patterns into one regular expression matching any of them; None if empty.

    One alternation is matched once per queue name instead of looping over the patterns
    in Python, which matters for connectors with long include or exclude lists.
    """
    fragments = [_segment_regex(check_pattern(p)) for p in patterns]
    if not fragments:
        return None
    # DOTALL so `>` (`.+`) also spans any unusual character a queue name may carry.
    return re.compile("|".join(f"(?:{f})" for f in fragments), re.DOTALL)


def matches(pattern: str, queue: str) -> bool:
    """Whether `queue` matches the single destination `pattern` (uncached; for tools/tests)."""
    compiled = compile_patterns([pattern])
    assert compiled is not None  # one valid pattern always compiles to a regex
    return compiled.fullmatch(queue) is not None


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
        if self._excluded is not None and self._excluded.fullmatch(queue):
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
