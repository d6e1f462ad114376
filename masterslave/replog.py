"""The replication log window and catch-up planning.

Store writes are numbered log positions 1, 2, 3, ...; each entry also carries the epoch
of the master that wrote it. Two pure pieces live here:

* `ReplicationLog`: the most recent entries, in memory, bounded by count and bytes. The
  master streams from it. A slave should append every entry it applies to its own
  `ReplicationLog` too: once promoted it can then stream recent entries to the others
  instead of sending each of them a bulk copy.
* `catch_up_plan`: for a follower that (re)connects with its (epoch, position), whether
  the master can stream the entries after its position or must send a bulk copy.

What followers acknowledged, and what may be acknowledged to producers, is
`masterslave.acks`. No I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from masterslave.election import epoch_span

# ---- the log window --------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One replicated store write. `payload` is opaque here; `size` is its encoded bytes."""

    position: int
    epoch: int
    payload: Any
    size: int


class OutOfWindow(LookupError):
    """Entries asked for are no longer (or not yet) held by the window."""


class ReplicationLog:
    """The newest entries of the write log, bounded by `max_entries` and `max_bytes`.

    The window holds positions `first .. last`; it is empty when `first == last + 1`
    (right after construction or `reset`, `last` is the position the log continues from).
    When a bound is exceeded the oldest entries are dropped, but the newest entry is
    always kept even if it alone exceeds `max_bytes`: dropping it would force a bulk copy
    on every follower for the sake of one large write.
    """

    def __init__(self, max_entries: int, max_bytes: int, *, last: int = 0) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        # position -> entry; dicts keep insertion order, so the oldest is always at
        # `self._first`, and lookups by position stay O(1) for catch-up reads.
        self._entries: dict[int, Entry] = {}
        self._bytes = 0
        self.reset(last)

    def reset(self, last: int) -> None:
        """Drop everything; the log continues after `last` (e.g. after a bulk copy)."""
        if last < 0:
            raise ValueError(f"position must be >= 0, got {last}")
        self._entries.clear()
        self._bytes = 0
        self._first = last + 1
        self._last = last
        self._last_epoch = 0

    @property
    def first(self) -> int:
        """Oldest position held (`last + 1` when the window is empty)."""
        return self._first

    @property
    def last(self) -> int:
        """Newest position appended (or the position the log was started/reset at)."""
        return self._last

    @property
    def bytes(self) -> int:
        """Total `size` of the entries held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def holds(self, position: int) -> bool:
        """True if the entry at `position` is in the window."""
        return self._first <= position <= self._last

    def append(self, position: int, epoch: int, payload: Any, size: int) -> None:
        """Add the entry at `position`, which must be `last + 1`.

        A gap or a repeat means a write was lost or applied twice upstream, and streaming
        from such a log would silently corrupt followers, so it raises ValueError. Epochs
        must not go backwards either: a later write from an older master is exactly what
        the epoch exists to reject.
        """
        if position != self._last + 1:
            raise ValueError(f"replication log: position {position} does not follow {self._last}")
        if epoch < self._last_epoch:
            raise ValueError(
                f"replication log: epoch {epoch} at position {position} is older than "
                f"epoch {self._last_epoch} before it"
            )
        if size < 0:
            raise ValueError(f"replication log: size must be >= 0, got {size}")
        self._entries[position] = Entry(position, epoch, payload, size)
        self._bytes += size
        self._last = position
        self._last_epoch = epoch
        while len(self._entries) > 1 and (
            len(self._entries) > self.max_entries or self._bytes > self.max_bytes
        ):
            dropped = self._entries.pop(self._first)
            self._bytes -= dropped.size
            self._first += 1

    def entry(self, position: int) -> Entry:
        """The entry at `position`; raises OutOfWindow if it is not held."""
        found = self._entries.get(position)
        if found is None:
            raise OutOfWindow(
                f"position {position} is not in the window {self._first}..{self._last}"
            )
        return found

    def entries_after(
        self, position: int, limit_bytes: int, limit_entries: int | None = None
    ) -> list[Entry]:
        """Entries from `position + 1` on, in order, for one batch of a catch-up stream.

        Stops before the batch would exceed `limit_bytes` (or `limit_entries`), but
        always returns at least one entry when there is one, so a stream makes progress
        whatever the sizes. Empty when `position >= last`. Raises OutOfWindow when
        `position + 1` has already been dropped: the follower needs a bulk copy.
        """
        if position >= self._last:
            return []
        if position + 1 < self._first:
            raise OutOfWindow(
                f"entries after {position} are gone: the window holds {self._first}..{self._last}"
            )
        out: list[Entry] = []
        total = 0
        for pos in range(position + 1, self._last + 1):
            entry = self._entries[pos]
            if out and (
                total + entry.size > limit_bytes
                or (limit_entries is not None and len(out) >= limit_entries)
            ):
                break
            out.append(entry)
            total += entry.size
        return out


# ---- catching a follower up ------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    """Stream the entries after `from_position` (the follower's log is a prefix)."""

    from_position: int


@dataclass(frozen=True)
class Snapshot:
    """Send a bulk copy of the store; `reason` says why, for the logs."""

    reason: str


Plan = Stream | Snapshot


class StaleMaster(Exception):
    """The follower has applied entries of an epoch newer than this master knows.

    Only a master that has been replaced can see this: it must stop serving, not copy
    its store over a newer one.
    """


def catch_up_plan(
    log: ReplicationLog,
    history: Sequence[tuple[int, int]],
    follower_epoch: int,
    follower_position: int,
    master_position: int,
) -> Plan:
    """How to bring a follower at (`follower_epoch`, `follower_position`) up to date.

    `history` is the in-sync node's (epoch, start position) list, oldest first, the last
    entry being the master's current epoch; `master_position` is the master's last
    position (normally `log.last`).

    The follower's log is a prefix of the master's exactly when its last entry lies
    inside the span its epoch has in the master's history: after the epoch's start and
    no later than the next epoch's start. A follower past that end holds a tail the
    master of its epoch wrote but never got into the next master's log (an old master
    returning after a failover, or a slave that received a tail the new master lacked):
    those entries are not on the master and cannot be undone in a store that has applied
    them, so it gets a bulk copy. Otherwise it is streamed from its position when the
    window still holds the entries after it.
    """
    if not history:
        raise ValueError("catch_up_plan: the epoch history is empty")
    current_epoch = history[-1][0]
    if follower_position < 0 or follower_epoch < 0:
        raise ValueError(
            f"catch_up_plan: bad follower state epoch {follower_epoch} position {follower_position}"
        )
    if follower_epoch > current_epoch:
        raise StaleMaster(
            f"the follower applied entries of epoch {follower_epoch}, newer than this "
            f"master's epoch {current_epoch}"
        )
    if follower_position > master_position:
        return Snapshot(
            f"follower is ahead of the master: position {follower_position} > {master_position}"
        )

    # An empty log is a prefix of every log, whatever epoch it claims.
    if follower_position > 0:
        span = epoch_span(history, follower_epoch)
        if span is None:
            return Snapshot(
                f"follower's epoch {follower_epoch} is not in the master's history "
                f"(epochs {history[0][0]}..{current_epoch})"
            )
        start, end = span
        if follower_position <= start:
            # Its last entry claims an epoch that had not begun at that position in the
            # master's log: the two logs disagree about that entry.
            return Snapshot(
                f"follower's position {follower_position} in epoch {follower_epoch} lies "
                f"before that epoch began at {start}: its log diverges"
            )
        if end is not None and follower_position > end:
            return Snapshot(
                f"follower's log diverges: it holds epoch {follower_epoch} up to "
                f"{follower_position}, but the next epoch began at {end}"
            )

    if follower_position == master_position:
        return Stream(master_position)
    if not log.holds(follower_position + 1) or log.last < master_position:
        return Snapshot(
            f"follower at {follower_position} is too far behind: the window holds "
            f"{log.first}..{log.last} and the master is at {master_position}"
        )
    return Stream(follower_position)
