"""Quorum acknowledgement accounting on the master: what may be acknowledged, who lags.

`AckTracker` takes what followers acknowledged, and from that tells the highest position
that may be acknowledged to producers under the group's `sync` mode and `min_insync`;
also which in-sync followers are lagging (for `masterslave.isr.IsrPolicy`).

No I/O and no clock: time is passed in as `now` (seconds, any monotonic origin).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

from broker.config import Sync


@dataclass
class _Follower:
    received: int
    synced: int
    # Its stream ended: no ack can come until it reconnects (see follower_gone).
    gone: bool = False


class AckTracker:
    """Acknowledgement accounting on the master, for quorum acks and lag detection.

    Inputs:

    * `local(written, synced, now)`: the master's own store, whenever it advances.
      `written` is also the head of the log; the tracker remembers when each head
      position was written, which is how lag is measured.
    * `follower_ack(id, received, synced, now)`: a follower holds up to `received`
      (applied, in memory at least) and has up to `synced` on disk. The newest ack
      replaces the previous one, so a follower that restarted and lost what it held only
      in memory is seen as it is. Feed acks of one follower in order, and only from a
      stream that passed `catch_up_plan` in the current epoch.
    * `follower_gone(id, now)`: the follower's stream ended.
    * `set_isr(members, now, insync=...)`: whose acks every commit needs. The tracker
      starts with the master alone (what `new_epoch` records); after that only
      `IsrPolicy` should call this, because the order relative to ZooKeeper writes is
      what keeps the in-sync set honest.

    Outputs:

    * `committed()`: the highest position that may be acknowledged to producers. It
      never goes back. Under `quorum_mem` it is the minimum of the master's `written`
      and the `received` of every follower in the set; under `quorum_disk` the minimum of
      the `synced` positions; under `local_disk`/`local_mem` the master's own `synced`/
      `written`. While fewer than `min_insync` members count as in sync, it does not
      advance (in every mode: the design says below `min_insync` persistent sends are
      never acknowledged; set `min_insync` 1 to opt out).
    * `lagging(now, timeout, head)`: followers in the set that should be removed.

    The *relevant* position of a follower is `synced` under `quorum_disk` and
    `received` otherwise: it is the one commits wait for.

    A follower is **lagging** when it is behind `head` and the oldest write it lacks was
    written more than `timeout` seconds ago: that write has waited longer than the
    timeout for its acknowledgement (docs/semantics.md: a slave with no ack within a
    timeout leaves the set). This is measured from the write, not from the follower's
    last ack, for two reasons: a caught-up follower that had nothing to ack for an hour
    must not count as lagging the moment the next write arrives, and a follower that
    acks steadily but falls further and further behind must still be dropped, since
    every commit waits for it. A follower is given `timeout` seconds from when it
    entered the set before it can count as lagging, and a follower that is caught up is
    never lagging. A follower whose stream ended (`follower_gone`) is lagging as soon as
    it is behind."""

    def __init__(
        self,
        master_id: str,
        sync_mode: Sync | str,
        min_insync: int,
        *,
        start: int = 0,
        max_marks: int = 65536,
    ) -> None:
        """`start` is the master's log position when it took over (its epoch's start).

        The new master cannot tell which of its entries up to `start` the previous
        master acknowledged, so it must assume all of them were: a follower may enter
        the in-sync set only once it holds `start` (`admission_floor`). The tracker also
        does not know when those entries were written, so a follower below `start` has
        an unknown (treated as long) lag until it passes it. `max_marks` bounds the
        remembered write times (one per advance of `written`).
        """
        if min_insync < 1:
            raise ValueError(f"min_insync must be at least 1, got {min_insync}")
        if max_marks < 1:
            raise ValueError(f"max_marks must be at least 1, got {max_marks}")
        self.master_id = master_id
        try:
            self.sync = Sync(sync_mode)
        except ValueError:
            modes = ", ".join(m.value for m in Sync)
            raise ValueError(f"sync must be one of {modes}, got {sync_mode!r}") from None
        self.min_insync = min_insync
        self.start = start
        self._written = start
        self._synced = start
        # Commits of a previous epoch were counted by the previous master; this one
        # starts from nothing and lets its own quorum decide.
        self._committed = 0
        self._followers: dict[str, _Follower] = {}
        self._members: frozenset[str] = frozenset({master_id})
        self._insync: frozenset[str] = self._members
        # When each follower entered the set: its grace period starts there.
        self._entered: dict[str, float] = {}
        # Head marks: _mark_pos[i] was the head at _mark_time[i]; positions increase.
        # Positions in (_mark_pos[i-1], _mark_pos[i]] were written at _mark_time[i].
        self._mark_pos: list[int] = []
        self._mark_time: list[float] = []
        self._max_marks = max_marks
        # Marks at or below this position were dropped: their times are unknown.
        self._dropped_upto = start

    # ---- inputs -----------------------------------------------------------------------

    def local(self, written: int, synced: int, now: float) -> None:
        """The master's own store: written up to `written`, on disk up to `synced`."""
        if synced > written:
            raise ValueError(f"master synced {synced} beyond written {written}")
        if written > self._written:
            self._mark_pos.append(written)
            self._mark_time.append(now)
            self._written = written
        self._synced = max(self._synced, synced)
        self._prune_marks()

    def follower_ack(self, follower_id: str, received: int, synced: int, now: float) -> None:
        """Record that `follower_id` holds up to `received`, on disk up to `synced`."""
        if follower_id == self.master_id:
            raise ValueError(f"{follower_id!r} is the master, not a follower")
        if received < 0 or synced < 0:
            raise ValueError(f"ack positions must be >= 0, got {received}, {synced}")
        # What is on disk is held: a follower cannot have synced what it did not receive.
        self._followers[follower_id] = _Follower(max(received, synced), synced)
        self._prune_marks()

    def follower_gone(self, follower_id: str, now: float) -> None:
        """The follower's stream ended: it cannot acknowledge anything until it is back.

        Its last acks still count (it holds what it acknowledged), but while it is in the
        set and behind the head it is lagging at once, without waiting for `timeout`:
        commits need its acks and none can come, so the set should shrink now (a killed
        slave then stalls producers only for one ZooKeeper write). It is no candidate to
        join either. Its next `follower_ack` (a new stream) brings it back.
        """
        del now  # part of the signature for symmetry; nothing here depends on time
        f = self._followers.get(follower_id)
        if f is not None:
            f.gone = True
            self._prune_marks()

    def set_isr(
        self, members: Iterable[str], now: float, *, insync: Iterable[str] | None = None
    ) -> None:
        """Set whose acknowledgements every commit needs.

        `members` must include the master. `insync` (default: all of `members`) are those
        counted against `min_insync`; during an ISR change it is the members recorded
        both before and after the write (see `masterslave.isr`).
        """
        new = frozenset(members)
        if self.master_id not in new:
            raise ValueError(f"the in-sync set {sorted(new)} must include the master")
        counted = new if insync is None else frozenset(insync)
        if not counted <= new:
            raise ValueError(f"insync {sorted(counted)} is not within {sorted(new)}")
        for member in new - self._members:
            self._entered[member] = now
        for member in self._members - new:
            self._entered.pop(member, None)
        self._members = new
        self._insync = counted

    # ---- queries ----------------------------------------------------------------------

    @property
    def members(self) -> frozenset[str]:
        """Whose acks commits currently need (the master included)."""
        return self._members

    @property
    def insync(self) -> frozenset[str]:
        """The members counted against `min_insync`."""
        return self._insync

    @property
    def head(self) -> int:
        """The master's written position as last reported to `local`."""
        return self._written

    def followers(self) -> frozenset[str]:
        """Followers with a live stream that have acknowledged something."""
        return frozenset(f for f, state in self._followers.items() if not state.gone)

    def acks(self, follower_id: str) -> tuple[int, int] | None:
        """(received, synced) last acknowledged by `follower_id`, or None."""
        f = self._followers.get(follower_id)
        return None if f is None else (f.received, f.synced)

    def position(self, follower_id: str) -> int:
        """The follower's relevant position: what commits wait for (0 if unknown)."""
        f = self._followers.get(follower_id)
        if f is None:
            return 0
        return f.synced if self.sync is Sync.QUORUM_DISK else f.received

    def caught_up(self, follower_id: str, head: int) -> bool:
        """True if the follower's relevant position has reached `head`."""
        return follower_id in self._followers and self.position(follower_id) >= head

    def stalled_reason(self) -> str | None:
        """Why commits cannot advance (too few in sync), or None if they can."""
        if len(self._insync) >= self.min_insync:
            return None
        return (
            f"only {len(self._insync)} member(s) in sync ({', '.join(sorted(self._insync))}),"
            f" below min_insync {self.min_insync}: persistent sends are not acknowledged"
        )

    def admission_floor(self) -> int:
        """The position a follower must hold before it may be recorded as in sync.

        Every write that may have been acknowledged: this master's commits so far, and
        everything up to `start`, which the previous master may have acknowledged.
        """
        return max(self.committed(), self.start)

    def committed(self) -> int:
        """The highest position that may be acknowledged to producers (never decreases)."""
        if len(self._insync) < self.min_insync:
            return self._committed
        followers = self._members - {self.master_id}
        if self.sync is Sync.QUORUM_MEM:
            candidate = min([self._written, *(self.position(f) for f in followers)])
        elif self.sync is Sync.QUORUM_DISK:
            candidate = min([self._synced, *(self.position(f) for f in followers)])
        elif self.sync is Sync.LOCAL_DISK:
            candidate = self._synced
        else:
            candidate = self._written
        if candidate > self._committed:
            self._committed = candidate
        return self._committed

    def lag(self, follower_id: str, now: float, head: int) -> float:
        """Seconds the oldest write the follower lacks has been waiting for it.

        0.0 when it has reached `head`; `math.inf` when unknown (it never acknowledged,
        or it is behind writes older than the tracker remembers).
        """
        f = self._followers.get(follower_id)
        if f is None or f.gone:
            return math.inf
        position = self.position(follower_id)
        if position >= head:
            return 0.0
        return max(0.0, now - self._head_passed(position, now))

    def lagging(self, now: float, timeout: float, head: int) -> set[str]:
        """Followers in the set that are behind `head` and have been for over `timeout`.

        Behind means: the oldest write the follower lacks was written more than `timeout`
        seconds ago (and it entered the set more than `timeout` ago). A follower at
        `head` is never lagging however old its last ack.
        """
        out: set[str] = set()
        for member in self._members - {self.master_id}:
            position = self.position(member)
            if position >= head:
                continue
            f = self._followers.get(member)
            if f is not None and f.gone:
                out.add(member)
                continue
            since = max(self._head_passed(position, now), self._entered.get(member, -math.inf))
            if now - since > timeout:
                out.add(member)
        return out

    # ---- head marks -------------------------------------------------------------------

    def _head_passed(self, position: int, now: float) -> float:
        """When the head first moved beyond `position`; -inf when no longer known.

        A position beyond every mark (the caller's `head` ahead of what `local` was told)
        counts as written just now.
        """
        if position < self._dropped_upto:
            return -math.inf
        i = bisect_right(self._mark_pos, position)
        if i == len(self._mark_pos):
            return now
        return self._mark_time[i]

    def _prune_marks(self) -> None:
        """Drop marks no follower needs, and the oldest beyond `max_marks`.

        A mark at or below the position of every follower with a live stream and every
        member of the set only dates writes they all hold; a follower that later shows
        up below it gets an unknown (long) lag, which is the safe answer for deciding
        whether it may join the set.
        """
        # Members of the set that have not acknowledged yet will need marks from 0 on.
        needing = (set(self._followers) | self._members) - {self.master_id}
        needing -= {f for f, state in self._followers.items() if state.gone}
        floor = min((self.position(f) for f in needing), default=self._written)
        cut = bisect_right(self._mark_pos, floor)
        cut = max(cut, len(self._mark_pos) - self._max_marks)
        if cut > 0:
            self._dropped_upto = max(self._dropped_upto, self._mark_pos[cut - 1])
            del self._mark_pos[:cut]
            del self._mark_time[:cut]
