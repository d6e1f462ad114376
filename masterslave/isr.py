"""The in-sync set policy: what the master should write to `<zkPath>/isr` next.

The in-sync set (ISR) recorded in ZooKeeper promises that each member holds every write
the master has acknowledged, because election trusts exactly that promise. The master
keeps it true by changing two things in the right order: the set recorded in ZooKeeper
and the set whose acks its `AckTracker` waits for before committing.

* **Shrink** (a follower is lagging): commits go on waiting for that follower until
  ZooKeeper has confirmed the smaller set. Only then does the tracker stop waiting for
  it. So nothing is acknowledged without a follower while ZooKeeper still lists it.
* **Expand** (a follower has caught up): the tracker starts waiting for the follower
  *before* the larger set is written (it is "joining"), and the write is proposed only
  once the follower holds everything that may have been acknowledged so far: this
  master's commits and its whole log as of its election (`AckTracker.admission_floor`),
  since it cannot tell which of those entries its predecessor acknowledged. From then
  on no commit happens without it, so by the time ZooKeeper lists it, it holds every
  acknowledged write.

At every moment the tracker waits for the union of the recorded set, the set being
written and the joining followers, and counts towards `min_insync` only the members
recorded both before and after the pending write. Hence the invariant: `committed()`
never exceeds what every member of the ZooKeeper-recorded set has acknowledged, and
never advances while the recorded set is below `min_insync`.

Joining starts when a follower's lag (the age of the oldest write it lacks) is at most
`join_lag` (default half the lag timeout): a follower merely milliseconds behind under
continuous load can join, whereas requiring it to be exactly at the head could keep it
out for as long as producers keep sending. A joining follower that falls behind is
dropped from the joiners (a local change: ZooKeeper never listed it).

Protocol for the adapter, on the master, e.g. every 100 ms and after acks::

    change = policy.next_change(isr, tracker, now, timeout, head)
    if change is not None:
        try:
            new_version = zk.set(isr_path, change.to_bytes(), version=isr_version)
        except BadVersion:
            policy.abort(isr, tracker, now)   # and step down: another master wrote
        except Exception:
            policy.in_doubt(isr, tracker, now)   # e.g. ConnectionLoss: maybe written
        else:
            isr, isr_version = change, new_version
            policy.confirm(change, tracker, now)

    # while policy.doubtful: re-read the node, then
    match reconcile(isr, isr_version, policy.pending, read_state, read_version):
        case "written":     isr, isr_version = policy.pending, read_version; confirm
        case "not_written": policy.abort(isr, tracker, now)
        case "foreign":     policy.abort(...) and step down

A write that raised may or may not have reached ZooKeeper (a ConnectionLoss after the
request was sent). Until the node is read back, the policy treats both sets as possibly
recorded: commits wait for old | proposed, only members of both count as in sync, and
nothing else changes (a joiner that ZooKeeper may list is never dropped behind its back).

A member about to receive a bulk copy (its store is cleared first) must leave the set
before the first chunk goes out: `evict(member)` makes the next change remove it, and
keeps it from rejoining until `readmit(member)` (its copy is complete or its stream
ended); `holds(member)` says whether ZooKeeper may still list it.

Only one change is in flight at a time: `next_change` returns None while one is pending.
On election the new master writes `new_epoch(...)` (in-sync set: itself alone: the
others must first show, in the new epoch, that their logs are prefixes of its log) and
creates `AckTracker(master, sync_mode, min_insync, start=position)`, which already
waits for the master alone, and a fresh `IsrPolicy`. Nothing else should call
`tracker.set_isr`: the order relative to the ZooKeeper write is the whole point.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Literal

from masterslave.acks import AckTracker
from masterslave.election import IsrState


def new_epoch(
    isr: IsrState | None, master_id: str, position: int, *, min_epoch: int = 0
) -> IsrState:
    """The in-sync node a newly elected master writes: next epoch, itself alone in sync.

    `position` is the new master's log position: the new epoch's entries start after it.
    `min_epoch` is the highest epoch any present member reports; it matters only for a
    fresh group whose stores already hold data (the in-sync node was lost with
    ZooKeeper's state), where numbering must continue above every epoch already in a
    store so that no two lineages share an epoch number.
    """
    if position < 0:
        raise ValueError(f"position must be >= 0, got {position}")
    previous = isr.epoch if isr is not None else 0
    epoch = max(previous, min_epoch) + 1
    history = (isr.history if isr is not None else ()) + ((epoch, position),)
    return IsrState(epoch, master_id, frozenset({master_id}), history)


class IsrPolicy:
    """Decides shrink and expand of the in-sync set and keeps the tracker in step.

    Stateful only in what it is doing: the change being written (`pending`) and the
    followers the tracker already waits for ahead of their admission (`joining`).
    """

    def __init__(self, join_lag: float | None = None) -> None:
        """`join_lag`: the largest lag (seconds) at which a follower may start joining.

        None means half the `timeout` given to `next_change`, so a follower is clearly
        inside the timeout when admitted and does not flap in and out at its edge.
        """
        if join_lag is not None and join_lag < 0:
            raise ValueError(f"join_lag must be >= 0, got {join_lag}")
        self.join_lag = join_lag
        self._pending: IsrState | None = None
        self._joining: set[str] = set()
        # The pending write raised: ZooKeeper may hold `_pending` or the recorded set.
        self._doubt = False
        # Members to remove now and keep out until readmitted (bulk copy under way).
        self._evicted: set[str] = set()

    @property
    def pending(self) -> IsrState | None:
        """The state handed out by `next_change` and not yet confirmed or aborted."""
        return self._pending

    @property
    def doubtful(self) -> bool:
        """The pending write's outcome is unknown: the node must be read back first."""
        return self._doubt

    def holds(self, isr: IsrState, member: str) -> bool:
        """Whether ZooKeeper may list `member`: recorded, or in a write in flight."""
        return member in isr.isr or (self._pending is not None and member in self._pending.isr)

    def evict(self, member: str) -> None:
        """`member` is about to lose its store (a bulk copy): the next change removes it
        from the set, and it does not join again until `readmit`."""
        self._evicted.add(member)
        self._joining.discard(member)

    def readmit(self, member: str) -> None:
        """`member` may join again once it catches up (its copy completed or ended)."""
        self._evicted.discard(member)

    @property
    def joining(self) -> frozenset[str]:
        """Followers commits already wait for, not yet in the recorded set."""
        return frozenset(self._joining)

    def next_change(
        self, isr: IsrState, tracker: AckTracker, now: float, timeout: float, head: int
    ) -> IsrState | None:
        """The next state to write to ZooKeeper, or None if nothing should change.

        `isr` is the state as last written (and confirmed) in ZooKeeper; `head` the
        master's last log position; `timeout` the lag timeout in seconds. Shrinking
        comes first: a lagging member holds commits back until it is removed. May
        update the tracker (joining followers) even when it returns None.
        """
        if isr.master != tracker.master_id:
            raise ValueError(
                f"the in-sync node names master {isr.master!r}, this tracker is "
                f"{tracker.master_id!r}"
            )
        if self._pending is not None:
            return None
        # Re-point the tracker at `isr` every time: cheap, and it keeps the accounting
        # right even if the caller replaced `isr` some other way (e.g. a fresh read).
        self._joining -= isr.isr
        self._apply(isr, tracker, now)
        lagging = tracker.lagging(now, timeout, head) - {isr.master}

        # Joiners that fell behind: stop waiting for them. No write needed, since
        # ZooKeeper never listed them.
        if self._joining & lagging:
            self._joining -= lagging
            self._apply(isr, tracker, now)

        if self._joining & self._evicted:
            self._joining -= self._evicted
            self._apply(isr, tracker, now)

        removed = (lagging | self._evicted) & isr.isr
        if removed:
            return self._propose(isr, replace(isr, isr=isr.isr - removed), tracker, now)

        join_lag = timeout / 2 if self.join_lag is None else self.join_lag
        candidates = {
            f
            for f in tracker.followers() - isr.isr - self._joining - self._evicted
            if tracker.lag(f, now, head) <= join_lag
        }
        if candidates:
            self._joining |= candidates
            self._apply(isr, tracker, now)

        # Once the tracker waits for a joiner, commits cannot pass it; it is admitted
        # when it holds everything that may have been acknowledged before that.
        floor = tracker.admission_floor()
        ready = {f for f in self._joining if tracker.position(f) >= floor}
        if ready:
            return self._propose(isr, replace(isr, isr=isr.isr | ready), tracker, now)
        return None

    def confirm(self, written: IsrState, tracker: AckTracker, now: float) -> None:
        """ZooKeeper accepted `written`: the tracker now follows it (and the joiners)."""
        self._pending = None
        self._doubt = False
        self._joining -= written.isr
        self._apply(written, tracker, now)

    def abort(self, isr: IsrState, tracker: AckTracker, now: float) -> None:
        """The write failed; `isr` is still what ZooKeeper holds.

        The tracker keeps waiting for every member of `isr`. On a version conflict the
        master has been replaced and must stop serving; this only keeps the accounting
        honest until it does. Call it only when the write is known not to have happened
        (a version conflict, or the node read back unchanged); otherwise `in_doubt`.
        """
        self._pending = None
        self._doubt = False
        self._apply(isr, tracker, now)

    def in_doubt(self, isr: IsrState, tracker: AckTracker, now: float) -> None:
        """The write raised without saying whether ZooKeeper applied it (ConnectionLoss).

        The pending change stays pending: commits wait for `isr` | pending | joining and
        count only members of both as in sync, and `next_change` proposes nothing until
        the node is read back and `confirm` or `abort` settles it.
        """
        if self._pending is None:
            raise ValueError("in_doubt: no write is pending")
        self._doubt = True
        self._apply(isr, tracker, now)

    def _propose(
        self, isr: IsrState, proposed: IsrState, tracker: AckTracker, now: float
    ) -> IsrState:
        self._pending = proposed
        self._apply(isr, tracker, now)
        return proposed

    def _apply(self, recorded: IsrState, tracker: AckTracker, now: float) -> None:
        """Wait for recorded | pending | joining; count recorded & pending as in sync."""
        members: set[str] = set(recorded.isr) | self._joining
        insync: Iterable[str] = recorded.isr
        if self._pending is not None:
            members |= self._pending.isr
            insync = recorded.isr & self._pending.isr
        tracker.set_isr(members, now, insync=insync)


Outcome = Literal["written", "not_written", "foreign"]


def reconcile(
    recorded: IsrState,
    recorded_version: int,
    proposed: IsrState,
    read: IsrState | None,
    read_version: int,
) -> Outcome:
    """What became of a write whose outcome was unknown, from the node read back.

    "written": the node holds `proposed` (only this master writes in its epoch, so it
    is this master's write). "not_written": the node is untouched (same version, the
    recorded data). "foreign": anything else, i.e. another member wrote the node; this
    master must stop serving.
    """
    if read is not None and read == proposed and read_version != recorded_version:
        return "written"
    if read is not None and read == recorded and read_version == recorded_version:
        return "not_written"
    return "foreign"
