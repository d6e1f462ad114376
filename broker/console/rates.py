"""A rate per second from successive readings of a counter (pure: time passed in)."""

from __future__ import annotations

from collections import deque

# Readings this old or older leave the window: the rate is over about the last 2 s, so
# that a 4 Hz poll's jitter does not make it jump about.
WINDOW = 2.0
# Bound on readings kept, whatever the poll rate.
MAX_READINGS = 64


class Rate:
    """Readings of one counter; a counter that goes backwards (a new session, a restart)
    starts the window afresh rather than showing a negative rate."""

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self._readings: deque[tuple[float, int]] = deque(maxlen=MAX_READINGS)

    def add(self, now: float, count: int | None) -> float | None:
        """Record a reading; the rate per second over the window, None until there are
        two readings (or with no counter at all)."""
        if count is None:
            self._readings.clear()
            return None
        if self._readings and (count < self._readings[-1][1] or now < self._readings[-1][0]):
            self._readings.clear()
        self._readings.append((now, count))
        while len(self._readings) > 2 and now - self._readings[1][0] >= self.window:
            self._readings.popleft()
        return self.rate

    @property
    def rate(self) -> float | None:
        if len(self._readings) < 2:
            return None
        (t0, c0), (t1, c1) = self._readings[0], self._readings[-1]
        if t1 <= t0:
            return None
        return (c1 - c0) / (t1 - t0)
