"""Destination patterns: dot-separated names with ActiveMQ's `*` and `>` wildcards.

Queue and topic names are read as dot-separated segments (`orders.eu.paris`). A pattern
is a name whose segments may also be wildcards, as in ActiveMQ:

* `*` matches exactly one segment: `orders.*` matches `orders.eu` but not `orders` or
  `orders.eu.paris`;
* `>` matches one or more trailing segments and may only be the last segment:
  `orders.>` matches `orders.eu` and `orders.eu.paris` but not `orders`; `>` alone
  matches every name.

A wildcard must be a whole segment: `orders*` or `a.>b` are rejected rather than read as
literals, because whoever writes them almost certainly expects a glob and would
otherwise get a pattern that silently matches nothing. Empty segments (`orders..eu`,
`orders.`) are rejected for the same reason: they are typos far more often than names.

Network connectors filter the queues they forward with these patterns; topic
subscriptions choose the topics they receive with them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ANY_SEGMENT = "*"
ANY_TAIL = ">"
SEPARATOR = "."


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


def has_wildcard(name: str) -> bool:
    """Whether `name` has a wildcard segment (a pattern, not a single name)."""
    return any(s in (ANY_SEGMENT, ANY_TAIL) for s in name.split(SEPARATOR))
