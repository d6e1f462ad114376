"""Each follower's replication lag on the master, in entries and in seconds, for status
and metrics.

Read from the master's `AckTracker`: the followers with a live stream and the members
commits wait for (an in-sync member whose stream ended still counts, as infinitely
late, until the in-sync set drops it). A Prometheus user reads it as Kafka's replica
lag: how many entries the follower lacks, and how long the oldest of them has waited.
"""

from __future__ import annotations

from broker.server.status import ReplicaLag
from masterslave.acks import AckTracker


def replica_lags(tracker: AckTracker, now: float, head: int) -> tuple[ReplicaLag, ...]:
    """Every follower's lag behind `head` (the master's last log position) at `now`,
    sorted by name."""
    followers = tracker.followers() | (tracker.members - {tracker.master_id})
    return tuple(
        ReplicaLag(
            follower,
            entries=max(0, head - tracker.position(follower)),
            seconds=tracker.lag(follower, now, head),
        )
        for follower in sorted(followers)
    )
