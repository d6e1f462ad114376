"""Unit tests for the replication log window, catch-up plans and ack accounting
(masterslave.replog)."""

from __future__ import annotations

import math

import pytest

from masterslave.replog import (
    AckTracker,
    OutOfWindow,
    ReplicationLog,
    Snapshot,
    StaleMaster,
    Stream,
    Sync,
    catch_up_plan,
)


def filled(
    first: int, last: int, *, epoch: int = 1, size: int = 10, **bounds: int
) -> ReplicationLog:
    log = ReplicationLog(bounds.get("max_entries", 1000), bounds.get("max_bytes", 10**9))
    log.reset(first - 1)
    for pos in range(first, last + 1):
        log.append(pos, epoch, f"ops{pos}", size)
    return log


# ---- ReplicationLog ----------------------------------------------------------------


def test_empty_log_continues_from_its_start() -> None:
    log = ReplicationLog(10, 1000, last=41)
    assert (log.first, log.last, len(log), log.bytes) == (42, 41, 0, 0)
    assert not log.holds(41)
    assert log.entries_after(41, 100) == []
    log.append(42, 3, "x", 5)
    assert (log.first, log.last) == (42, 42)
    assert log.entry(42).payload == "x"


def test_append_rejects_gaps_and_repeats() -> None:
    log = filled(1, 3)
    with pytest.raises(ValueError, match="does not follow 3"):
        log.append(5, 1, "x", 1)
    with pytest.raises(ValueError, match="does not follow 3"):
        log.append(3, 1, "x", 1)
    log.append(4, 1, "x", 1)  # the log is unchanged by the refusals


def test_append_rejects_older_epoch_and_negative_size() -> None:
    log = filled(1, 3, epoch=2)
    with pytest.raises(ValueError, match="epoch 1"):
        log.append(4, 1, "x", 1)
    with pytest.raises(ValueError, match="size"):
        log.append(4, 2, "x", -1)
    log.append(4, 3, "x", 1)  # a newer epoch is fine


def test_window_bounded_by_entries() -> None:
    log = filled(1, 10, max_entries=4)
    assert (log.first, log.last, len(log)) == (7, 10, 4)
    assert log.bytes == 40
    with pytest.raises(OutOfWindow):
        log.entry(6)


def test_window_bounded_by_bytes() -> None:
    log = filled(1, 10, size=10, max_bytes=35)
    assert (log.first, log.last, log.bytes) == (8, 10, 30)


def test_oversized_newest_entry_is_kept_alone() -> None:
    log = filled(1, 3, size=10, max_bytes=50)
    log.append(4, 1, "big", 500)
    assert (log.first, log.last, len(log), log.bytes) == (4, 4, 1, 500)
    log.append(5, 1, "small", 10)
    assert (log.first, log.last, log.bytes) == (5, 5, 10)


def test_reset_drops_everything() -> None:
    log = filled(1, 5)
    log.reset(1000)
    assert (log.first, log.last, len(log), log.bytes) == (1001, 1000, 0, 0)
    log.append(1001, 1, "x", 1)


def test_entries_after_in_order_and_limited_by_bytes() -> None:
    log = filled(1, 10, size=10)
    batch = log.entries_after(3, limit_bytes=35)
    assert [e.position for e in batch] == [4, 5, 6]
    assert [e.payload for e in batch] == ["ops4", "ops5", "ops6"]
    assert [e.position for e in log.entries_after(8, 1000)] == [9, 10]
    assert log.entries_after(10, 1000) == []
    assert log.entries_after(99, 1000) == []


def test_entries_after_limited_by_count() -> None:
    log = filled(1, 10)
    assert [e.position for e in log.entries_after(0, 1000, limit_entries=2)] == [1, 2]


def test_entries_after_always_makes_progress() -> None:
    log = filled(1, 3, size=100)
    assert [e.position for e in log.entries_after(0, limit_bytes=1)] == [1]


def test_entries_after_dropped_position_raises() -> None:
    log = filled(1, 10, max_entries=4)
    assert [e.position for e in log.entries_after(6, 1000)] == [7, 8, 9, 10]
    with pytest.raises(OutOfWindow, match=r"7\.\.10"):
        log.entries_after(5, 1000)


def test_bad_bounds() -> None:
    with pytest.raises(ValueError):
        ReplicationLog(0, 10)
    with pytest.raises(ValueError):
        ReplicationLog(10, -1)


# ---- catch_up_plan -----------------------------------------------------------------

HISTORY = [(1, 0), (2, 530), (3, 1042), (4, 2001)]


def master_log() -> ReplicationLog:
    # The master is at 2100 in epoch 4, holding 1900..2100 in its window.
    log = filled(1900, 2001, epoch=3)
    for pos in range(2002, 2101):
        log.append(pos, 4, None, 10)
    return log


def test_stream_when_follower_is_a_prefix_in_the_window() -> None:
    assert catch_up_plan(master_log(), HISTORY, 4, 2050, 2100) == Stream(2050)


def test_stream_for_older_epoch_ending_exactly_at_its_end() -> None:
    # Its last entry is epoch 3's last (2001): a prefix of the master's log.
    assert catch_up_plan(master_log(), HISTORY, 3, 2001, 2100) == Stream(2001)
    assert catch_up_plan(master_log(), HISTORY, 3, 1950, 2100) == Stream(1950)


def test_caught_up_follower_streams_from_master_position() -> None:
    assert catch_up_plan(master_log(), HISTORY, 4, 2100, 2100) == Stream(2100)


def test_caught_up_follower_needs_no_window() -> None:
    empty = ReplicationLog(10, 100, last=2100)
    assert catch_up_plan(empty, HISTORY, 4, 2100, 2100) == Stream(2100)


def test_snapshot_when_too_far_behind() -> None:
    plan = catch_up_plan(master_log(), HISTORY, 3, 1500, 2100)
    assert isinstance(plan, Snapshot)
    assert "too far behind" in plan.reason


def test_stream_from_first_entry_still_held() -> None:
    # 1899 is one before the window: the next entry it needs, 1900, is still held.
    assert catch_up_plan(master_log(), HISTORY, 3, 1899, 2100) == Stream(1899)
    assert isinstance(catch_up_plan(master_log(), HISTORY, 3, 1898, 2100), Snapshot)


def test_divergent_tail_after_failover_gets_snapshot() -> None:
    # The old master reached 1100 in epoch 3, but the new master began epoch 4 at 1042:
    # 1043..1100 of epoch 3 never made it into the new lineage.
    history = [(1, 0), (2, 530), (3, 900), (4, 1042)]
    log = filled(1000, 1200, epoch=4)
    plan = catch_up_plan(log, history, 3, 1100, 1200)
    assert isinstance(plan, Snapshot)
    assert "diverges" in plan.reason
    assert "1042" in plan.reason
    # Had it stopped at 1042, it would be a prefix.
    assert catch_up_plan(log, history, 3, 1042, 1200) == Stream(1042)


def test_divergent_tail_of_an_epoch_superseded_by_a_lower_start() -> None:
    # Epoch 6 began at 1995, below epoch 5's start: epoch 4 effectively ends at 1995.
    history = [(4, 1042), (5, 2001), (6, 1995)]
    log = filled(1900, 2100, epoch=4)
    assert isinstance(catch_up_plan(log, history, 4, 2001, 2100), Snapshot)
    assert catch_up_plan(log, history, 4, 1995, 2100) == Stream(1995)


def test_position_before_its_epoch_began_is_inconsistent() -> None:
    plan = catch_up_plan(master_log(), HISTORY, 4, 1999, 2100)
    assert isinstance(plan, Snapshot)
    assert "before that epoch began" in plan.reason


def test_follower_ahead_of_master_gets_snapshot() -> None:
    plan = catch_up_plan(master_log(), HISTORY, 4, 2101, 2100)
    assert isinstance(plan, Snapshot)
    assert "ahead" in plan.reason


def test_epoch_missing_from_history_gets_snapshot() -> None:
    history = [(3, 1042), (4, 2001)]  # epochs 1 and 2 trimmed
    plan = catch_up_plan(master_log(), history, 2, 600, 2100)
    assert isinstance(plan, Snapshot)
    assert "not in the master's history" in plan.reason


def test_empty_follower_streams_from_zero_when_window_starts_at_one() -> None:
    log = filled(1, 50, epoch=1)
    assert catch_up_plan(log, [(1, 0)], 0, 0, 50) == Stream(0)


def test_empty_follower_with_trimmed_window_gets_snapshot() -> None:
    assert isinstance(catch_up_plan(master_log(), HISTORY, 0, 0, 2100), Snapshot)


def test_follower_of_a_newer_epoch_means_stale_master() -> None:
    with pytest.raises(StaleMaster, match="epoch 5"):
        catch_up_plan(master_log(), HISTORY, 5, 2050, 2100)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="history is empty"):
        catch_up_plan(master_log(), [], 1, 1, 1)
    with pytest.raises(ValueError, match="bad follower state"):
        catch_up_plan(master_log(), HISTORY, 1, -1, 1)


def test_window_not_reaching_master_position_gets_snapshot() -> None:
    log = filled(1, 50, epoch=1)
    assert isinstance(catch_up_plan(log, [(1, 0)], 1, 40, 60), Snapshot)


# ---- AckTracker: commits ----------------------------------------------------------


def tracker(
    sync: str = "quorum_mem", min_insync: int = 1, members: tuple[str, ...] = ("b", "c")
) -> AckTracker:
    t = AckTracker("a", sync, min_insync)
    t.set_isr({"a", *members}, now=0.0)
    return t


def test_quorum_mem_waits_for_every_in_sync_follower_received() -> None:
    t = tracker("quorum_mem")
    t.local(10, 2, now=1.0)
    assert t.committed() == 0
    t.follower_ack("b", received=8, synced=1, now=1.1)
    assert t.committed() == 0  # c has acknowledged nothing
    t.follower_ack("c", received=6, synced=0, now=1.1)
    assert t.committed() == 6
    t.follower_ack("c", received=10, synced=0, now=1.2)
    assert t.committed() == 8


def test_quorum_mem_bounded_by_master_written() -> None:
    t = tracker("quorum_mem")
    t.local(5, 0, now=1.0)
    t.follower_ack("b", 5, 5, now=1.0)
    t.follower_ack("c", 5, 5, now=1.0)
    assert t.committed() == 5


def test_quorum_disk_waits_for_synced_everywhere() -> None:
    t = tracker("quorum_disk")
    t.local(10, 4, now=1.0)
    t.follower_ack("b", received=10, synced=7, now=1.1)
    t.follower_ack("c", received=10, synced=9, now=1.1)
    assert t.committed() == 4  # the master's own disk is the slowest
    t.local(10, 10, now=1.2)
    assert t.committed() == 7
    t.follower_ack("b", received=10, synced=10, now=1.3)
    assert t.committed() == 9


def test_quorum_mem_versus_quorum_disk_for_the_same_acks() -> None:
    mem, disk = tracker("quorum_mem"), tracker("quorum_disk")
    for t in (mem, disk):
        t.local(10, 10, now=1.0)
        t.follower_ack("b", received=10, synced=3, now=1.0)
        t.follower_ack("c", received=9, synced=5, now=1.0)
    assert mem.committed() == 9
    assert disk.committed() == 3


@pytest.mark.parametrize(("sync", "expected"), [("local_disk", 4), ("local_mem", 10)])
def test_local_modes_ignore_followers(sync: str, expected: int) -> None:
    t = tracker(sync)
    t.local(10, 4, now=1.0)
    assert t.committed() == expected


def test_committed_never_goes_back() -> None:
    t = tracker("quorum_mem")
    t.local(10, 10, now=1.0)
    t.follower_ack("b", 10, 10, now=1.0)
    t.follower_ack("c", 10, 10, now=1.0)
    assert t.committed() == 10
    # c restarted and lost what it held only in memory: its ack goes back...
    t.follower_ack("c", 7, 7, now=2.0)
    assert t.acks("c") == (7, 7)
    # ...but what was acknowledged to producers stays acknowledged.
    assert t.committed() == 10
    t.local(12, 12, now=2.0)
    t.follower_ack("b", 12, 12, now=2.0)
    assert t.committed() == 10


def test_synced_beyond_received_counts_as_received() -> None:
    t = tracker("quorum_mem", members=("b",))
    t.local(10, 10, now=1.0)
    t.follower_ack("b", received=3, synced=6, now=1.0)
    assert t.acks("b") == (6, 6)
    assert t.committed() == 6


def test_min_insync_stall_with_only_the_master_left() -> None:
    # replicas=3, min_insync=2: b and c were removed, the master is alone.
    t = AckTracker("a", "quorum_mem", min_insync=2)
    t.local(100, 100, now=1.0)
    assert t.committed() == 0
    assert t.stalled_reason() is not None
    assert "below min_insync 2" in (t.stalled_reason() or "")
    t.local(200, 200, now=2.0)
    assert t.committed() == 0  # never acknowledged without quorum


def test_min_insync_stall_keeps_earlier_commits_and_resumes() -> None:
    t = AckTracker("a", "quorum_mem", min_insync=2)
    t.set_isr({"a", "b", "c"}, now=0.0)
    t.local(50, 50, now=1.0)
    t.follower_ack("b", 50, 50, now=1.0)
    t.follower_ack("c", 40, 40, now=1.0)
    assert t.committed() == 40
    t.set_isr({"a"}, now=2.0)
    t.local(60, 60, now=2.0)
    assert t.committed() == 40
    t.set_isr({"a", "b"}, now=3.0)
    t.follower_ack("b", 60, 60, now=3.0)
    assert t.committed() == 60
    assert t.stalled_reason() is None


@pytest.mark.parametrize("sync", ["local_disk", "local_mem"])
def test_min_insync_applies_in_local_modes_too(sync: str) -> None:
    t = AckTracker("a", sync, min_insync=2)
    t.local(10, 10, now=1.0)
    assert t.committed() == 0


def test_insync_subset_is_what_counts_against_min_insync() -> None:
    t = AckTracker("a", "quorum_mem", min_insync=2)
    # b's acks are awaited, but only a is recorded in sync: no commit.
    t.set_isr({"a", "b"}, now=0.0, insync={"a"})
    t.local(10, 10, now=1.0)
    t.follower_ack("b", 10, 10, now=1.0)
    assert t.committed() == 0
    t.set_isr({"a", "b"}, now=1.0)
    assert t.committed() == 10


def test_set_isr_validation() -> None:
    t = AckTracker("a", "quorum_mem", 1)
    with pytest.raises(ValueError, match="must include the master"):
        t.set_isr({"b"}, now=0.0)
    with pytest.raises(ValueError, match="not within"):
        t.set_isr({"a"}, now=0.0, insync={"a", "b"})


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="sync must be one of quorum_mem"):
        AckTracker("a", "quorum", 1)
    with pytest.raises(ValueError, match="min_insync"):
        AckTracker("a", "quorum_mem", 0)
    assert AckTracker("a", Sync.QUORUM_DISK, 1).sync is Sync.QUORUM_DISK


def test_ack_validation() -> None:
    t = tracker()
    with pytest.raises(ValueError, match="is the master"):
        t.follower_ack("a", 1, 1, now=0.0)
    with pytest.raises(ValueError):
        t.follower_ack("b", -1, 0, now=0.0)
    with pytest.raises(ValueError, match="beyond written"):
        t.local(5, 6, now=0.0)


def test_followers_outside_the_set_do_not_hold_commits() -> None:
    t = tracker(members=("b",))
    t.local(10, 10, now=1.0)
    t.follower_ack("b", 10, 10, now=1.0)
    t.follower_ack("d", 1, 1, now=1.0)
    assert t.committed() == 10
    assert t.followers() == {"b", "d"}


# ---- AckTracker: lag ---------------------------------------------------------------


def test_caught_up() -> None:
    t = tracker("quorum_disk")
    t.local(10, 10, now=1.0)
    t.follower_ack("b", received=10, synced=8, now=1.0)
    assert not t.caught_up("b", 10)  # under quorum_disk, synced is what counts
    assert t.caught_up("b", 8)
    assert not t.caught_up("zz", 0)  # never acknowledged


def test_lagging_after_timeout_from_the_oldest_missing_write() -> None:
    t = tracker()
    t.local(10, 10, now=1.0)
    t.follower_ack("b", 10, 10, now=1.0)
    t.follower_ack("c", 10, 10, now=1.0)
    t.local(11, 11, now=5.0)  # written at 5.0
    t.local(12, 12, now=5.5)
    t.follower_ack("b", 12, 12, now=5.6)
    assert t.lagging(now=6.9, timeout=2.0, head=12) == set()
    assert t.lag("c", now=6.9, head=12) == pytest.approx(1.9)
    assert t.lagging(now=7.1, timeout=2.0, head=12) == {"c"}
    # Acks up to 11: the oldest write it lacks is now 12, written at 5.5.
    t.follower_ack("c", 11, 11, now=7.2)
    assert t.lagging(now=7.2, timeout=2.0, head=12) == set()
    assert t.lagging(now=7.6, timeout=2.0, head=12) == {"c"}


def test_caught_up_follower_is_never_lagging_however_old_its_ack() -> None:
    t = tracker()
    t.local(10, 10, now=1.0)
    t.follower_ack("b", 10, 10, now=1.0)
    t.follower_ack("c", 10, 10, now=1.0)
    assert t.lagging(now=3600.0, timeout=2.0, head=10) == set()
    assert t.lag("c", now=3600.0, head=10) == 0.0
    # An hour of silence, then a write: nobody is lagging until the write has waited.
    t.local(11, 11, now=3600.0)
    assert t.lagging(now=3601.0, timeout=2.0, head=11) == set()
    assert t.lagging(now=3602.5, timeout=2.0, head=11) == {"b", "c"}


def test_steadily_acking_but_falling_behind_is_lagging() -> None:
    t = tracker(members=("b",))
    # The master writes 10 positions a second; b acks every second but only 5 of them.
    for second in range(1, 11):
        t.local(10 * second, 10 * second, now=float(second))
        t.follower_ack("b", 5 * second, 5 * second, now=float(second))
    # b holds 50; 51 was written at second 6, four seconds ago.
    assert t.lag("b", now=10.0, head=100) == pytest.approx(4.0)
    assert t.lagging(now=10.0, timeout=2.0, head=100) == {"b"}


def test_in_sync_follower_that_never_acked_gets_grace_from_entering() -> None:
    t = AckTracker("a", "quorum_mem", 1)
    t.local(100, 100, now=1.0)
    t.set_isr({"a", "b"}, now=10.0)
    assert t.lagging(now=11.0, timeout=2.0, head=100) == set()
    assert t.lagging(now=12.5, timeout=2.0, head=100) == {"b"}
    assert t.lag("b", now=12.5, head=100) == math.inf


def test_only_followers_in_the_set_are_reported() -> None:
    t = tracker(members=("b",))
    t.local(10, 10, now=1.0)
    t.follower_ack("b", 10, 10, now=1.0)
    t.follower_ack("d", 0, 0, now=1.0)
    assert t.lagging(now=100.0, timeout=2.0, head=10) == set()


def test_gone_follower_is_lagging_as_soon_as_it_is_behind() -> None:
    t = tracker()
    t.local(10, 10, now=1.0)
    t.follower_ack("b", 10, 10, now=1.0)
    t.follower_ack("c", 10, 10, now=1.0)
    t.follower_gone("c", now=1.5)
    assert t.lagging(now=1.5, timeout=2.0, head=10) == set()  # it holds everything
    assert t.followers() == {"b"}
    t.local(11, 11, now=1.6)
    t.follower_ack("b", 11, 11, now=1.6)
    assert t.lagging(now=1.6, timeout=2.0, head=11) == {"c"}
    assert t.committed() == 10  # its acks still count until the set shrinks
    # A new stream brings it back.
    t.follower_ack("c", 11, 11, now=1.7)
    assert t.lagging(now=1.7, timeout=2.0, head=11) == set()
    assert t.followers() == {"b", "c"}


def test_lag_unknown_below_start() -> None:
    # A new master at 2001 does not know when 1..2001 were written.
    t = AckTracker("a", "quorum_mem", 1, start=2001)
    t.follower_ack("b", 1990, 1990, now=1.0)
    assert t.lag("b", now=1.0, head=2001) == math.inf
    t.follower_ack("b", 2001, 2001, now=1.1)
    assert t.lag("b", now=1.1, head=2001) == 0.0
    t.local(2005, 2005, now=2.0)
    assert t.lag("b", now=2.5, head=2005) == pytest.approx(0.5)


def test_admission_floor_covers_the_epoch_start() -> None:
    t = AckTracker("a", "quorum_mem", 2, start=2001)
    assert t.admission_floor() == 2001
    t.set_isr({"a", "b"}, now=0.0)
    t.follower_ack("b", 2050, 2050, now=1.0)
    t.local(2100, 2100, now=1.0)
    assert t.admission_floor() == 2050


def test_head_beyond_local_counts_as_just_written() -> None:
    t = tracker(members=("b",))
    t.local(10, 10, now=1.0)
    t.follower_ack("b", 10, 10, now=1.0)
    assert t.lag("b", now=50.0, head=11) == 0.0


def test_marks_are_pruned_once_every_follower_has_them() -> None:
    t = tracker()
    for pos in range(1, 101):
        t.local(pos, pos, now=float(pos))
    t.follower_ack("b", 100, 100, now=100.0)
    t.follower_ack("c", 90, 90, now=100.0)
    assert len(t._mark_pos) == 10  # positions 91..100 are still needed by c
    t.follower_ack("c", 100, 100, now=100.0)
    assert t._mark_pos == []


def test_marks_bounded_by_max_marks() -> None:
    t = AckTracker("a", "quorum_mem", 1, max_marks=5)
    t.set_isr({"a", "b"}, now=0.0)
    t.follower_ack("b", 0, 0, now=0.0)
    for pos in range(1, 21):
        t.local(pos, pos, now=float(pos))
    assert len(t._mark_pos) == 5
    # b is behind writes older than remembered: unknown lag, and lagging.
    assert t.lag("b", now=20.0, head=20) == math.inf
    assert t.lagging(now=20.0, timeout=2.0, head=20) == {"b"}
    # Within the remembered marks the lag is exact again.
    t.follower_ack("b", 17, 17, now=20.0)
    assert t.lag("b", now=20.0, head=20) == pytest.approx(2.0)
