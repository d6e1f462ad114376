"""Unit tests for the quorum acknowledgement accounting (masterslave.acks)."""

from __future__ import annotations

import math

import pytest

from broker.config import Sync
from masterslave.acks import AckTracker

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
