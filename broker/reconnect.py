"""Reconnect policy shared by every outbound connection: the Python client's failover,
network connector links and a slave following its master."""

from __future__ import annotations

import random

# How often an outbound connection is pinged, and how long a ping may go unanswered
# before the connection counts as lost (milliseconds): a frozen peer is given up within
# about 1.1 s, before its group has elected a new master (1-1.5 s), so clients and links
# reach the new master as soon as it serves. Brokers accept pings this often
# (broker/server/listen.py).
KEEPALIVE_INTERVAL_MS = 300
KEEPALIVE_TIMEOUT_MS = 800


class Backoff:
    """Pauses between connection attempts: ``initial``, doubling, capped at ``maximum``."""

    def __init__(self, initial: float, maximum: float) -> None:
        if initial <= 0 or maximum <= 0:
            raise ValueError("reconnect delays must be positive")
        self._initial = min(initial, maximum)
        self._maximum = maximum
        self._next = self._initial

    def next(self) -> float:
        """The pause before the next attempt; later pauses are longer."""
        delay = self._next
        self._next = min(delay * 2, self._maximum)
        return delay

    def reset(self) -> None:
        """Start again from the initial delay (after a connection proved stable)."""
        self._next = self._initial


class AddressRotation:
    """The order in which a client tries its addresses: round robin from the first, or a
    fresh random order for each pass when ``randomize`` (never the same address twice in a
    row when there are several)."""

    def __init__(
        self, addresses: tuple[str, ...], randomize: bool = False, rng: random.Random | None = None
    ) -> None:
        if not addresses:
            raise ValueError("no addresses")
        self._randomize = randomize
        self._rng = rng or random.Random()
        self._order = list(addresses)
        self._position = 0
        if randomize:
            self._rng.shuffle(self._order)

    def next(self) -> str:
        """The address to try next."""
        address = self._order[self._position]
        self._position += 1
        if self._position == len(self._order):
            self._position = 0
            if self._randomize and len(self._order) > 1:
                self._rng.shuffle(self._order)
                if self._order[0] == address:
                    self._order[0], self._order[-1] = self._order[-1], self._order[0]
        return address
