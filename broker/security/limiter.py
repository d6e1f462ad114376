"""Failed logins per peer: past a few in a window, a peer is refused without a check.

Pure, with time passed in. An argon2 check costs tens of milliseconds of CPU by design;
without a bound one client guessing passwords would keep a core busy, and guessing
would be cheap. Memory is bounded: past `max_peers` the peer seen longest ago is
forgotten.
"""

from __future__ import annotations

from collections import deque


class FailureLimiter:
    def __init__(self, limit: int = 5, window: float = 10.0, max_peers: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.max_peers = max_peers
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, peer: str, now: float) -> float:
        """Seconds until `peer` may try again; 0 when it may now."""
        times = self._failures.get(peer)
        if times is None:
            return 0.0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[peer]
            return 0.0
        if len(times) < self.limit:
            return 0.0
        return times[0] + self.window - now

    def failed(self, peer: str, now: float) -> None:
        times = self._failures.pop(peer, None)
        if times is None:
            times = deque(maxlen=self.limit)
            if len(self._failures) >= self.max_peers:
                del self._failures[next(iter(self._failures))]
        times.append(now)
        self._failures[peer] = times  # re-inserted: most recently seen last

    def succeeded(self, peer: str) -> None:
        self._failures.pop(peer, None)

    @property
    def peers(self) -> int:
        return len(self._failures)
