"""A delivery sink for tests that drive a broker core directly."""

from __future__ import annotations

from broker.core.queue import Entry


class Collect:
    """Keeps every delivery it is handed, in order."""

    def __init__(self) -> None:
        self.got: list[tuple[int, Entry]] = []

    def deliver(self, deliveries: list[tuple[int, Entry]]) -> None:
        self.got.extend(deliveries)

    @property
    def ids(self) -> list[str]:
        return [entry.message.id for _, entry in self.got]
