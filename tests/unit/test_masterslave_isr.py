"""Unit tests for the in-sync set policy and new epochs (masterslave.isr)."""

from __future__ import annotations

import random

import pytest

from masterslave.acks import AckTracker
from masterslave.election import IsrState
from masterslave.isr import IsrPolicy, new_epoch, reconcile

TIMEOUT = 2.0

# ---- new_epoch ----------------------------------------------------------------------


def test_new_epoch_for_a_fresh_group() -> None:
    state = new_epoch(None, "b", 0)
    assert state == IsrState(1, "b", frozenset({"b"}), ((1, 0),))


def test_new_epoch_after_a_failover() -> None:
    old = IsrState(3, "b", frozenset({"b", "c"}), ((1, 0), (2, 530), (3, 1042)))
    state = new_epoch(old, "c", 2001)
    assert state.epoch == 4
    assert state.master == "c"
    assert state.isr == {"c"}  # the others must show their logs match first
    assert state.history == ((1, 0), (2, 530), (3, 1042), (4, 2001))
    assert IsrState.parse(state.to_bytes()) == state


def test_new_epoch_may_start_below_the_previous_start() -> None:
    # quorum_mem: the best member left lost an in-memory tail; the group must go on.
    old = IsrState(5, "b", frozenset({"b", "c"}), ((4, 1042), (5, 2001)))
    assert new_epoch(old, "c", 1995).history[-1] == (6, 1995)


def test_new_epoch_for_a_fresh_group_over_existing_stores() -> None:
    # The in-sync node was lost with ZooKeeper's data; stores hold epochs up to 7.
    assert new_epoch(None, "b", 5000, min_epoch=7).epoch == 8
    old = IsrState(9, "b", frozenset({"b"}), ((9, 0),))
    assert new_epoch(old, "b", 10, min_epoch=7).epoch == 10


def test_new_epoch_rejects_negative_position() -> None:
    with pytest.raises(ValueError):
        new_epoch(None, "b", -1)


# ---- helpers ------------------------------------------------------------------------


def state(*members: str, epoch: int = 2) -> IsrState:
    return IsrState(epoch, "a", frozenset({"a", *members}), ((1, 0), (epoch, 0)))


class Master:
    """A master's accounting: tracker, policy, and the state ZooKeeper holds."""

    def __init__(self, *isr: str, sync: str = "quorum_mem", min_insync: int = 1) -> None:
        self.tracker = AckTracker("a", sync, min_insync)
        self.policy = IsrPolicy()
        self.recorded = state(*isr)
        # As it would be after an election into this state.
        self.policy.confirm(self.recorded, self.tracker, 0.0)

    def write(self, head: int, now: float) -> None:
        self.tracker.local(head, head, now)

    def ack(self, follower: str, position: int, now: float) -> None:
        self.tracker.follower_ack(follower, position, position, now)

    def review(self, now: float, head: int) -> IsrState | None:
        return self.policy.next_change(self.recorded, self.tracker, now, TIMEOUT, head)

    def confirm(self, change: IsrState, now: float) -> None:
        self.policy.confirm(change, self.tracker, now)
        self.recorded = change


# ---- shrink -------------------------------------------------------------------------


def test_shrink_then_commit() -> None:
    m = Master("b", "c")
    m.write(10, now=1.0)
    m.ack("b", 10, now=1.0)
    m.ack("c", 10, now=1.0)
    assert m.tracker.committed() == 10
    # c stops acknowledging; b keeps up.
    m.write(20, now=2.0)
    m.ack("b", 20, now=2.1)
    assert m.review(now=3.0, head=20) is None
    assert m.tracker.committed() == 10  # waits for c: it is still in sync in ZooKeeper
    change = m.review(now=4.5, head=20)
    assert change is not None
    assert change.isr == {"a", "b"}
    assert (change.epoch, change.master, change.history) == (2, "a", m.recorded.history)
    # Written but not yet confirmed: still nothing without c.
    assert m.tracker.committed() == 10
    assert m.review(now=4.6, head=20) is None  # one change at a time
    m.confirm(change, now=4.7)
    assert m.tracker.committed() == 20
    assert m.policy.pending is None


def test_failed_shrink_keeps_waiting_for_the_follower() -> None:
    m = Master("b", "c")
    m.write(10, now=1.0)
    m.ack("b", 10, now=1.0)
    m.ack("c", 5, now=1.0)
    change = m.review(now=3.5, head=10)
    assert change is not None and change.isr == {"a", "b"}
    m.policy.abort(m.recorded, m.tracker, now=3.6)
    assert m.tracker.committed() == 5
    assert m.tracker.members == {"a", "b", "c"}
    # The policy tries again.
    assert m.review(now=3.7, head=10) == change


def test_shrink_of_several_lagging_followers_at_once() -> None:
    m = Master("b", "c", "d")
    m.write(10, now=1.0)
    m.ack("b", 10, now=1.0)
    change = m.review(now=3.5, head=10)
    assert change is not None and change.isr == {"a", "b"}


def test_shrink_below_min_insync_stalls_commits() -> None:
    # replicas=3, min_insync=2: both followers are gone.
    m = Master("b", "c", min_insync=2)
    m.write(10, now=1.0)
    m.ack("b", 10, now=1.0)
    m.ack("c", 10, now=1.0)
    assert m.tracker.committed() == 10
    m.tracker.follower_gone("b", now=1.1)
    m.tracker.follower_gone("c", now=1.1)
    m.write(15, now=1.2)
    change = m.review(now=1.2, head=15)  # gone and behind: no timeout to wait
    assert change is not None and change.isr == {"a"}
    m.confirm(change, now=1.3)
    m.write(30, now=1.4)
    assert m.tracker.committed() == 10  # the master alone never acknowledges
    assert m.tracker.stalled_reason() is not None


def test_caught_up_follower_is_not_removed() -> None:
    m = Master("b")
    m.write(10, now=1.0)
    m.ack("b", 10, now=1.0)
    assert m.review(now=1000.0, head=10) is None


# ---- expand -------------------------------------------------------------------------


def test_expand_when_caught_up() -> None:
    m = Master()
    m.write(10, now=1.0)
    assert m.tracker.committed() == 10
    m.ack("b", 10, now=1.5)
    change = m.review(now=1.5, head=10)
    assert change is not None and change.isr == {"a", "b"}
    # From the proposal on, commits wait for b, even before ZooKeeper confirms.
    m.write(12, now=1.6)
    assert m.tracker.committed() == 10
    m.ack("b", 12, now=1.7)
    assert m.tracker.committed() == 12
    m.confirm(change, now=1.8)
    assert m.recorded.isr == {"a", "b"}
    assert m.policy.joining == frozenset()
    assert m.review(now=1.9, head=12) is None


def test_expand_under_load_joins_first_then_admits() -> None:
    # Writes keep coming: b is never exactly at the head when the policy looks.
    m = Master()
    m.write(90, now=0.9)
    m.ack("b", 90, now=0.9)  # b is streaming (acks of a follower the tracker knows)
    m.write(100, now=1.0)
    m.ack("b", 98, now=1.0)
    m.write(105, now=1.2)
    assert m.tracker.committed() == 105
    # b's lag (oldest missing write 99, written at 1.0) is small: it starts joining.
    assert m.review(now=1.3, head=105) is None
    assert m.policy.joining == {"b"}
    m.write(110, now=1.4)
    assert m.tracker.committed() == 105  # commits now wait for b
    m.ack("b", 105, now=1.5)
    change = m.review(now=1.5, head=110)
    assert change is not None and change.isr == {"a", "b"}
    m.confirm(change, now=1.6)
    m.ack("b", 110, now=1.7)
    assert m.tracker.committed() == 110


def test_follower_first_seen_below_the_forgotten_head_must_catch_up_first() -> None:
    # With no follower to date them, write times are not kept: a newcomer's lag is
    # unknown until it passes the head as of its arrival (or reaches the head).
    m = Master()
    m.write(100, now=1.0)
    m.ack("b", 98, now=1.0)
    assert m.review(now=1.0, head=100) is None
    assert m.policy.joining == frozenset()
    m.write(110, now=1.1)
    assert m.tracker.committed() == 110  # the adapter asks after every write
    m.ack("b", 101, now=1.2)
    assert m.review(now=1.2, head=110) is None
    assert m.policy.joining == {"b"}


def test_far_behind_follower_does_not_join() -> None:
    m = Master()
    m.write(10, now=1.0)
    m.ack("b", 2, now=1.0)
    m.write(20, now=5.0)
    assert m.review(now=5.0, head=20) is None
    assert m.policy.joining == frozenset()
    assert m.tracker.committed() == 20


def test_joiner_that_falls_behind_is_dropped_without_a_write() -> None:
    m = Master()
    m.ack("b", 0, now=0.5)
    m.write(10, now=1.0)
    assert m.tracker.committed() == 10
    m.ack("b", 9, now=1.0)
    assert m.review(now=1.1, head=10) is None
    assert m.policy.joining == {"b"}
    m.write(20, now=1.2)
    assert m.tracker.committed() == 10
    # b stops acknowledging: after the timeout it no longer holds commits back.
    assert m.review(now=3.5, head=20) is None
    assert m.policy.joining == frozenset()
    assert m.tracker.committed() == 20


def test_joiner_must_hold_the_new_masters_start() -> None:
    # The new master took over at 2001 and cannot tell which of its entries the previous
    # master acknowledged: b at 1995 may lack acknowledged writes.
    tracker = AckTracker("a", "quorum_mem", 1, start=2001)
    policy = IsrPolicy()
    recorded = new_epoch(IsrState(4, "x", frozenset({"x", "a"}), ((4, 1000),)), "a", 2001)
    policy.confirm(recorded, tracker, 0.0)
    tracker.follower_ack("b", 1995, 1995, now=1.0)
    assert policy.next_change(recorded, tracker, 1.0, TIMEOUT, 2001) is None
    assert policy.joining == frozenset()
    tracker.follower_ack("b", 2001, 2001, now=1.1)
    change = policy.next_change(recorded, tracker, 1.1, TIMEOUT, 2001)
    assert change is not None and change.isr == {"a", "b"}


def test_pending_expand_does_not_count_towards_min_insync() -> None:
    m = Master(min_insync=2)
    m.write(10, now=1.0)
    m.ack("b", 10, now=1.0)
    change = m.review(now=1.0, head=10)
    assert change is not None
    assert m.tracker.committed() == 0  # b is not yet recorded in sync
    m.confirm(change, now=1.1)
    assert m.tracker.committed() == 10


def test_gone_follower_does_not_join() -> None:
    m = Master()
    m.write(10, now=1.0)
    m.ack("b", 10, now=1.0)
    m.tracker.follower_gone("b", now=1.0)
    assert m.review(now=1.0, head=10) is None


def test_shrink_comes_before_expand() -> None:
    m = Master("b")
    m.write(10, now=1.0)
    m.ack("c", 10, now=3.5)
    change = m.review(now=3.5, head=10)
    assert change is not None and change.isr == {"a"}
    m.confirm(change, now=3.6)
    change = m.review(now=3.7, head=10)
    assert change is not None and change.isr == {"a", "c"}


def test_wrong_master_is_refused() -> None:
    m = Master("b")
    other = IsrState(2, "b", frozenset({"a", "b"}), ((2, 0),))
    with pytest.raises(ValueError, match="names master 'b'"):
        m.policy.next_change(other, m.tracker, 1.0, TIMEOUT, 0)


def test_join_lag_can_be_set() -> None:
    m = Master()
    m.policy = IsrPolicy(join_lag=0.0)
    m.policy.confirm(m.recorded, m.tracker, 0.0)
    m.ack("b", 0, now=0.5)
    m.write(10, now=1.0)
    assert m.tracker.committed() == 10
    m.ack("b", 9, now=1.0)
    assert m.review(now=1.1, head=10) is None
    assert m.policy.joining == frozenset()
    with pytest.raises(ValueError):
        IsrPolicy(join_lag=-1.0)


# ---- the invariant, under random schedules ---------------------------------------


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize(("sync", "min_insync"), [("quorum_mem", 1), ("quorum_disk", 2)])
def test_committed_never_exceeds_what_the_recorded_set_holds(
    seed: int, sync: str, min_insync: int
) -> None:
    """Random writes, acks, stalls, disconnects and failed ZooKeeper writes.

    After every step: each follower ZooKeeper lists as in sync holds every committed
    position, and commits advance only while ZooKeeper lists at least `min_insync`.
    At the end, with writes stopped, every live follower is back in sync and everything
    is committed.
    """
    rng = random.Random(seed)
    followers = ["b", "c", "d"]
    tracker = AckTracker("a", sync, min_insync)
    policy = IsrPolicy()
    recorded = new_epoch(None, "a", 0)
    policy.confirm(recorded, tracker, 0.0)
    held = dict.fromkeys(followers, 0)  # what each follower really holds
    alive = dict.fromkeys(followers, True)
    stalled = dict.fromkeys(followers, False)
    in_flight: IsrState | None = None
    head = 0
    now = 0.0
    committed = 0

    def check() -> None:
        nonlocal committed
        c = tracker.committed()
        assert c >= committed
        for f in recorded.isr - {"a"}:
            assert held[f] >= c, f"{f} listed in sync holds {held[f]} < committed {c}"
        if c > committed:
            assert len(recorded.isr) >= min_insync
        committed = c

    for _ in range(400):
        now += rng.uniform(0.0, 0.4)
        if rng.random() < 0.5:
            head += rng.randint(1, 5)
            tracker.local(head, head, now)
        for f in followers:
            roll = rng.random()
            if alive[f] and roll < 0.02:
                alive[f] = False
                tracker.follower_gone(f, now)
            elif not alive[f] and roll < 0.1:
                alive[f] = True
                tracker.follower_ack(f, held[f], held[f], now)
            elif alive[f] and roll < 0.06:
                stalled[f] = not stalled[f]
            elif alive[f] and not stalled[f] and rng.random() < 0.7:
                held[f] = min(head, held[f] + rng.randint(0, 8))
                tracker.follower_ack(f, held[f], held[f], now)
            check()
        # The ZooKeeper write proposed at the previous step completes (or fails) now,
        # so commits may happen while it is in flight.
        if in_flight is not None:
            if rng.random() < 0.8:
                policy.confirm(in_flight, tracker, now)
                recorded = in_flight
            else:
                policy.abort(recorded, tracker, now)
            in_flight = None
            check()
        in_flight = policy.next_change(recorded, tracker, now, TIMEOUT, head)
        check()

    # Quiet period: no writes; everyone alive recovers and catches up.
    if in_flight is not None:
        policy.confirm(in_flight, tracker, now)
        recorded = in_flight
    for f in followers:
        alive[f] = True
        held[f] = head
        tracker.follower_ack(f, head, head, now)
    for _ in range(len(followers) + 1):
        now += 0.1
        change = policy.next_change(recorded, tracker, now, TIMEOUT, head)
        if change is not None:
            policy.confirm(change, tracker, now)
            recorded = change
        check()
    assert recorded.isr == {"a", *followers}
    assert tracker.committed() == head


# ---- a write whose outcome is unknown -------------------------------------------------


def grown_in_doubt() -> tuple[Master, IsrState]:
    """{a} -> {a, b} was sent and raised (ConnectionLoss): ZooKeeper may list b."""
    m = Master()
    m.write(10, now=1.0)
    m.ack("b", 10, now=1.0)
    change = m.review(now=1.0, head=10)
    assert change is not None and change.isr == {"a", "b"}
    m.policy.in_doubt(m.recorded, m.tracker, now=1.1)
    return m, change


def test_in_doubt_grow_keeps_waiting_for_the_joiner() -> None:
    m, _ = grown_in_doubt()
    assert m.policy.doubtful
    m.write(20, now=1.2)
    assert m.tracker.members == {"a", "b"}
    assert m.tracker.committed() == 10  # b may be listed: nothing passes it
    m.ack("b", 20, now=1.3)
    assert m.tracker.committed() == 20


def test_in_doubt_joiner_is_never_dropped_for_lag() -> None:
    m, _ = grown_in_doubt()
    m.write(20, now=1.2)
    m.tracker.follower_gone("b", now=1.2)
    # Long past the lag timeout: without reading the node back nothing changes.
    for now in (5.0, 50.0, 500.0):
        assert m.review(now=now, head=20) is None
        assert m.tracker.members == {"a", "b"}
        assert m.tracker.committed() == 10


def test_in_doubt_grow_read_back_as_written_is_confirmed() -> None:
    m, change = grown_in_doubt()
    assert reconcile(m.recorded, 3, change, change, 4) == "written"
    m.confirm(change, now=2.0)
    assert not m.policy.doubtful
    assert m.recorded.isr == {"a", "b"}
    # Now an ordinary member: dropped for lag through a write, as any other.
    m.write(20, now=2.1)
    m.tracker.follower_gone("b", now=2.1)
    shrink = m.review(now=2.2, head=20)
    assert shrink is not None and shrink.isr == {"a"}


def test_in_doubt_grow_read_back_unchanged_is_aborted() -> None:
    m, change = grown_in_doubt()
    assert reconcile(m.recorded, 3, change, m.recorded, 3) == "not_written"
    m.policy.abort(m.recorded, m.tracker, now=2.0)
    assert not m.policy.doubtful
    assert m.policy.pending is None
    # b still catches up as a joiner and is proposed again.
    assert m.review(now=2.1, head=10) == change


def test_reconcile_anything_else_is_another_masters_write() -> None:
    recorded = state()
    proposed = state("b")
    newer = IsrState(3, "c", frozenset({"c"}), ((1, 0), (2, 0), (3, 10)))
    assert reconcile(recorded, 3, proposed, newer, 4) == "foreign"
    assert reconcile(recorded, 3, proposed, None, -1) == "foreign"
    # The recorded data at another version: someone wrote the node meanwhile.
    assert reconcile(recorded, 3, proposed, recorded, 5) == "foreign"


def test_in_doubt_needs_a_pending_write() -> None:
    m = Master("b")
    with pytest.raises(ValueError):
        m.policy.in_doubt(m.recorded, m.tracker, now=1.0)


# ---- a member about to take a bulk copy ------------------------------------------------


def test_evicted_member_is_removed_at_once_and_kept_out_until_readmitted() -> None:
    m = Master("b", "c")
    m.write(10, now=1.0)
    m.ack("b", 10, now=1.0)
    m.ack("c", 10, now=1.0)
    assert m.policy.holds(m.recorded, "b")
    m.policy.evict("b")  # b is about to have its store cleared
    change = m.review(now=1.0, head=10)  # no lag timeout to wait for
    assert change is not None and change.isr == {"a", "c"}
    assert m.policy.holds(m.recorded, "b")  # pending: ZooKeeper may still list it
    m.confirm(change, now=1.1)
    assert not m.policy.holds(m.recorded, "b")
    # Mid-copy its acks claim nothing, but even caught up it stays out until readmitted.
    m.ack("b", 10, now=1.2)
    assert m.review(now=1.2, head=10) is None
    assert "b" not in m.policy.joining
    m.policy.readmit("b")
    rejoin = m.review(now=1.3, head=10)
    assert rejoin is not None and rejoin.isr == {"a", "b", "c"}
