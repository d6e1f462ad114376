"""Unit tests for the replication log window and catch-up plans (masterslave.replog)."""

from __future__ import annotations

import pytest

from masterslave.replog import (
    OutOfWindow,
    ReplicationLog,
    Snapshot,
    StaleMaster,
    Stream,
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
