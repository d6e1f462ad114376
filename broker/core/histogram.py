"""A fixed-bucket histogram of observations: counts only, no I/O.

The broker's hot paths (an fsync, a write batch, a produce's answer) record into these;
the metrics endpoint reads them as Prometheus histograms. Cumulative counts are computed
when read, so an observation costs a bisect and two additions.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence


class Histogram:
    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("histogram bounds must be increasing and not empty")
        self.bounds = tuple(bounds)
        # counts[i]: observations <= bounds[i] and > bounds[i-1]; the last is above all.
        self._counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), the last bound +inf."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self._counts, strict=True):
            running += count
            out.append((bound, running))
        return out


# Seconds, from a fast fsync (tens of µs on a cache) to a stalled disk.
SECONDS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
)  # fmt: skip
# Store operations in one write batch (about two per message).
OPS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
