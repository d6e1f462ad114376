"""Each follower's replication lag as the master reports it (masterslave.lag), and the
elections a member counts (masterslave.role), driven directly."""

from __future__ import annotations

import math

from broker.server.status import ReplicaLag
from masterslave.acks import AckTracker
from masterslave.lag import replica_lags


def test_a_caught_up_follower_lags_nothing() -> None:
    t = AckTracker("a", "quorum_mem", 1)
    t.set_isr({"a", "b"}, now=0.0)
    t.local(10, 10, now=1.0)
    t.follower_ack("b", 10, 10, now=1.1)
    assert replica_lags(t, now=50.0, head=10) == (ReplicaLag("b", 0, 0.0),)


def test_entries_behind_and_the_age_of_the_oldest_one_missing() -> None:
    t = AckTracker("a", "quorum_mem", 1)
    t.set_isr({"a", "b", "c"}, now=0.0)
    t.local(4, 4, now=1.0)
    t.local(10, 10, now=3.0)
    t.follower_ack("b", 4, 4, now=3.1)  # lacks 5..10, written at 3.0
    t.follower_ack("c", 2, 2, now=3.1)  # lacks 3..10, the oldest written at 1.0
    assert replica_lags(t, now=5.5, head=10) == (
        ReplicaLag("b", 6, 2.5),
        ReplicaLag("c", 8, 4.5),
    )


def test_quorum_disk_measures_what_the_follower_synced() -> None:
    t = AckTracker("a", "quorum_disk", 1)
    t.set_isr({"a", "b"}, now=0.0)
    t.local(10, 10, now=1.0)
    t.follower_ack("b", received=10, synced=7, now=1.1)
    assert replica_lags(t, now=2.0, head=10) == (ReplicaLag("b", 3, 1.0),)


def test_an_in_sync_member_without_a_stream_is_infinitely_late() -> None:
    t = AckTracker("a", "quorum_mem", 1)
    t.set_isr({"a", "b", "c"}, now=0.0)
    t.local(10, 10, now=1.0)
    t.follower_ack("b", 10, 10, now=1.1)
    t.follower_ack("c", 6, 6, now=1.1)
    t.follower_gone("c", now=1.2)
    lags = replica_lags(t, now=2.0, head=10)
    assert lags[0] == ReplicaLag("b", 0, 0.0)
    assert lags[1].follower == "c" and lags[1].entries == 4 and math.isinf(lags[1].seconds)
    # Dropped from the set (and gone), it is no longer reported.
    t.set_isr({"a", "b"}, now=2.1)
    assert [lag.follower for lag in replica_lags(t, now=2.2, head=10)] == ["b"]


def test_a_follower_outside_the_set_with_a_live_stream_is_reported() -> None:
    t = AckTracker("a", "quorum_mem", 1)  # the set: the master alone
    t.follower_ack("b", 0, 0, now=0.5)  # its stream opened
    t.local(10, 10, now=1.0)
    t.follower_ack("b", 9, 9, now=1.5)
    assert replica_lags(t, now=2.0, head=10) == (ReplicaLag("b", 1, 1.0),)
    # Writes from before its stream opened were not timed for it: their age is unknown.
    t.follower_gone("b", now=2.0)
    t.follower_ack("b", 0, 0, now=2.5)
    assert math.isinf(replica_lags(t, now=3.0, head=10)[0].seconds)


def test_a_master_alone_reports_no_lag() -> None:
    t = AckTracker("a", "quorum_mem", 1)
    t.local(10, 10, now=1.0)
    assert replica_lags(t, now=2.0, head=10) == ()
