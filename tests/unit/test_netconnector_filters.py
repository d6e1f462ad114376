"""Unit tests for destination patterns and DestinationFilter (netconnector.filters)."""

from __future__ import annotations

import pytest

from netconnector.filters import (
    DestinationFilter,
    PatternError,
    check_pattern,
    compile_patterns,
    matches,
)


@pytest.mark.parametrize(
    ("pattern", "queue", "expected"),
    [
        # literals
        ("orders", "orders", True),
        ("orders", "orders.eu", False),
        ("orders.eu", "orders.eu", True),
        ("orders.eu", "orders.eux", False),
        ("orders.eu", "ordersXeu", False),  # '.' is literal, not a regex wildcard
        # '*': exactly one segment
        ("orders.*", "orders.eu", True),
        ("orders.*", "orders", False),
        ("orders.*", "orders.eu.paris", False),
        ("*.eu", "orders.eu", True),
        ("*.eu", "eu", False),
        ("orders.*.paris", "orders.eu.paris", True),
        ("orders.*.paris", "orders.paris", False),
        ("*", "orders", True),
        ("*", "orders.eu", False),
        ("*.*", "a.b", True),
        ("*.*", "a.b.c", False),
        # '>': one or more trailing segments
        ("orders.>", "orders.eu", True),
        ("orders.>", "orders.eu.paris", True),
        ("orders.>", "orders", False),
        ("orders.>", "ordersX.eu", False),
        (">", "anything", True),
        (">", "any.thing.at.all", True),
        ("*.>", "a", False),
        ("*.>", "a.b", True),
        ("*.>", "a.b.c", True),
        ("orders.*.>", "orders.eu", False),
        ("orders.*.>", "orders.eu.paris.left", True),
        # regex metacharacters in names are literal
        ("a+b.(c)", "a+b.(c)", True),
        ("a+b.(c)", "aab.c", False),
        ("DLQ.orders", "DLQ.orders", True),
    ],
)
def test_matches(pattern: str, queue: str, expected: bool) -> None:
    assert matches(pattern, queue) is expected


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("", "is empty"),
        ("a.>.b", "'>' may only be the last segment"),
        (">.a", "'>' may only be the last segment"),
        ("a.>.>", "'>' may only be the last segment"),
        ("orders*", "wildcards must be a whole segment"),
        ("a.b>", "wildcards must be a whole segment"),
        ("a.*x.b", "wildcards must be a whole segment"),
        ("a..b", "empty segment"),
        (".a", "empty segment"),
        ("a.", "empty segment"),
        (" a", "leading or trailing spaces"),
    ],
)
def test_invalid_patterns_rejected_at_parse_time(pattern: str, reason: str) -> None:
    with pytest.raises(PatternError) as info:
        check_pattern(pattern)
    assert reason in str(info.value)
    assert isinstance(info.value, ValueError)
    # Building a filter compiles its patterns, so a bad one fails there, not per message.
    with pytest.raises(PatternError):
        DestinationFilter(excluded=["ok.>", pattern])


def test_non_string_pattern_rejected() -> None:
    with pytest.raises(PatternError, match="must be a string"):
        check_pattern(5)  # type: ignore[arg-type]


def test_compile_patterns_empty_is_none() -> None:
    assert compile_patterns([]) is None
    compiled = compile_patterns(["a.*", "b.>"])
    assert compiled is not None
    assert compiled.fullmatch("a.x")
    assert compiled.fullmatch("b.x.y")
    assert not compiled.fullmatch("c.x")


def test_no_patterns_forwards_everything_dynamically_nothing_statically() -> None:
    flt = DestinationFilter()
    assert flt.forwards_dynamically("orders")
    assert flt.forwards_dynamically("a.b.c")
    assert not flt.forwards_statically("orders")


def test_dynamically_included_restricts() -> None:
    flt = DestinationFilter(dynamically_included=["orders.>", "audit"])
    assert flt.forwards_dynamically("orders.eu")
    assert flt.forwards_dynamically("audit")
    assert not flt.forwards_dynamically("orders")
    assert not flt.forwards_dynamically("billing")


def test_excluded_wins_over_dynamically_included() -> None:
    flt = DestinationFilter(excluded=["orders.secret.>"], dynamically_included=["orders.>"])
    assert flt.forwards_dynamically("orders.eu")
    assert not flt.forwards_dynamically("orders.secret.x")
    assert flt.is_excluded("orders.secret.x")
    assert not flt.is_excluded("orders.eu")


def test_excluded_without_includes() -> None:
    flt = DestinationFilter(excluded=["tmp.*"])
    assert not flt.forwards_dynamically("tmp.x")
    assert flt.forwards_dynamically("tmp.x.y")
    assert flt.forwards_dynamically("orders")


def test_statically_included() -> None:
    flt = DestinationFilter(statically_included=["audit.>"])
    assert flt.forwards_statically("audit.eu")
    assert not flt.forwards_statically("audit")
    assert not flt.forwards_statically("orders")
    # Static inclusion does not narrow dynamic forwarding (no dynamic list: all).
    assert flt.forwards_dynamically("orders")


def test_excluded_wins_over_statically_included() -> None:
    flt = DestinationFilter(excluded=["audit.private"], statically_included=["audit.*"])
    assert flt.forwards_statically("audit.public")
    assert not flt.forwards_statically("audit.private")


def test_exclude_everything() -> None:
    flt = DestinationFilter(
        excluded=[">"], statically_included=["a"], dynamically_included=["a"]
    )
    assert not flt.forwards_dynamically("a")
    assert not flt.forwards_statically("a")


def test_patterns_kept_as_given() -> None:
    flt = DestinationFilter(["x"], ["y.*"], ["z.>"])
    assert flt.excluded == ("x",)
    assert flt.statically_included == ("y.*",)
    assert flt.dynamically_included == ("z.>",)
    assert "z.>" in repr(flt)


def test_cache_is_bounded_and_answers_stay_correct() -> None:
    flt = DestinationFilter(excluded=["q.13"], cache_size=8)
    for i in range(100):
        assert flt.forwards_dynamically(f"q.{i}") is (i != 13)
        assert len(flt._cache) <= 8
    # Evicted names are recomputed, not misremembered.
    assert not flt.forwards_dynamically("q.13")
    assert flt.forwards_dynamically("q.0")


def test_cache_hit_returns_same_answer() -> None:
    flt = DestinationFilter(dynamically_included=["a.*"])
    assert flt.forwards_dynamically("a.b")
    assert "a.b" in flt._cache
    assert flt.forwards_dynamically("a.b")
    assert not flt.forwards_statically("a.b")


def test_cache_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="cache_size"):
        DestinationFilter(cache_size=0)


def test_many_patterns_compile_once() -> None:
    patterns = [f"team{i}.>" for i in range(500)]
    flt = DestinationFilter(dynamically_included=patterns)
    assert flt.forwards_dynamically("team499.orders")
    assert not flt.forwards_dynamically("team500.orders")
