"""A progress bar for long sends and receives, or plain count lines when not on a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from broker.cli.errors import PROG


class Progress:
    """A progress bar on a terminal; on a pipe or file, a plain count line now and then."""

    WIDTH = 30

    def __init__(
        self,
        total: int,
        verb: str,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.verb = verb
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.now = now
        self.start = now()
        # Short runs show nothing: a bar only after 0.5 s, a plain line only after 5 s.
        self.next_draw = self.start + (0.5 if self.tty else 5.0)
        self.drawn = False

    def update(self, done: int) -> None:
        t = self.now()
        if t < self.next_draw:
            return
        self.next_draw = t + (0.1 if self.tty else 5.0)
        elapsed = t - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.tty:
            filled = int(self.WIDTH * done / self.total) if self.total else self.WIDTH
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            eta = f"  ETA {(self.total - done) / rate:,.0f} s" if rate > 0 else ""
            self.stream.write(
                f"\r[{bar}] {100 * done // max(self.total, 1):3d}% "
                f"{done:,}/{self.total:,}  {rate:,.0f} msg/s{eta}\x1b[K"
            )
            self.drawn = True
        else:
            self.stream.write(f"{PROG}: {self.verb} {done:,}/{self.total:,} ({rate:,.0f} msg/s)\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
