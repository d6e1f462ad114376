"""Percentiles and medians as the benchmarks print them."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def pct(samples: Sequence[float], p: float) -> float:
    """The `p` quantile (0..1) of `samples`, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def summary(samples: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max of latency samples (0 for none)."""
    if not samples:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    return {"p50": statistics.median(samples), "p99": pct(samples, 0.99), "max": max(samples)}


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def each_and_median(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """'a / b / c (median m)': every repeat's figure, then their median."""
    each = " / ".join(fmt.format(v) for v in values)
    return f"{each} (median {fmt.format(median(values))})" if len(values) > 1 else each
