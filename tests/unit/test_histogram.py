"""The fixed-bucket histogram the broker's hot paths record into."""

from __future__ import annotations

import pytest

from broker.core.histogram import Histogram


def test_counts_are_cumulative_with_an_infinite_last_bucket() -> None:
    h = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        h.observe(value)
    assert h.cumulative() == [(0.1, 2), (1.0, 3), (float("inf"), 4)]
    assert h.count == 4 and h.sum == pytest.approx(3.65)


@pytest.mark.parametrize("bounds", [(), (1.0, 0.5), (1.0, 1.0)])
def test_bounds_must_increase(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="increasing"):
        Histogram(bounds)
