"""Counting a run's messages: sent, acknowledged, received, lost and repeated.

Workers report sets of sequence numbers as ranges (`to_ranges`), which stay short for the
runs of consecutive numbers a producer sends. A message is *lost* when its send was
acknowledged and no consumer received it; a *repeat* is a second delivery of a number, and
an *unmarked* repeat one that did not say `redelivered` (the broker promises none).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Ranges = list[list[int]]


def to_ranges(numbers: Iterable[int]) -> Ranges:
    """[[start, end), ...] covering exactly `numbers`, in order."""
    ranges: Ranges = []
    for n in sorted(set(numbers)):
        if ranges and ranges[-1][1] == n:
            ranges[-1][1] = n + 1
        else:
            ranges.append([n, n + 1])
    return ranges


def from_ranges(ranges: Ranges) -> set[int]:
    return {n for start, end in ranges for n in range(start, end)}


@dataclass
class Tally:
    """One run's counts, added up from its producers' and consumers' results."""

    sent: int = 0
    acked: set[int] = field(default_factory=set)
    received: set[int] = field(default_factory=set)
    deliveries: int = 0
    unmarked: int = 0
    #: Acknowledged numbers no consumer was meant to take (a backlog left in place).
    left: set[int] = field(default_factory=set)

    def add_producer(self, result: dict[str, Any]) -> None:
        self.sent += result["sent"]
        self.acked |= from_ranges(result["acked"])

    def add_consumer(self, result: dict[str, Any]) -> None:
        self.received |= from_ranges(result["received"])
        self.deliveries += result["deliveries"]
        self.unmarked += result["unmarked"]

    @property
    def lost(self) -> int:
        return len(self.acked - self.received - self.left)

    @property
    def repeats(self) -> int:
        return self.deliveries - len(self.received)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.unmarked == 0

    def line(self) -> str:
        return (
            f"sent {self.sent} acked {len(self.acked)} received {len(self.received)} "
            f"lost {self.lost} repeats {self.repeats} unmarked {self.unmarked}"
        )


class Ledger:
    """Every run's tally in one benchmark, for the totals and the exit status."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, Tally]] = []

    def record(self, what: str, tally: Tally) -> Tally:
        self.runs.append((what, tally))
        flag = "" if tally.ok else "   <-- FAILED"
        print(f"    counts ({what}): {tally.line()}{flag}", flush=True)
        return tally

    def finish(self) -> int:
        """Print the totals and the last line `lost L unmarked U`; the exit status."""
        lost = sum(t.lost for _, t in self.runs)
        unmarked = sum(t.unmarked for _, t in self.runs)
        failed = [what for what, t in self.runs if not t.ok]
        print(
            f"  {len(self.runs)} runs: sent {sum(t.sent for _, t in self.runs)} "
            f"acked {sum(len(t.acked) for _, t in self.runs)} "
            f"received {sum(len(t.received) for _, t in self.runs)} "
            f"repeats {sum(t.repeats for _, t in self.runs)}"
        )
        if failed:
            print(f"  FAILED: {', '.join(failed)}")
        print(f"lost {lost} unmarked {unmarked}", flush=True)
        return 1 if failed else 0
