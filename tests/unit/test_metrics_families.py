"""The metric families of one snapshot (broker.server.metrics.families), rendered in
Prometheus's text format and parsed back with prometheus_client's parser: the bridge and
group values land under the right names and labels, +Inf included."""

from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from broker.server.metrics import Snapshot, families
from broker.server.status import BridgeStatus, GroupStatus, LinkState, ReplicaLag, Role


class _Fixed(Collector):
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        yield from families(self.snap, store_bytes=None)


def parsed(snap: Snapshot) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(snap))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_bridges_report_unacknowledged_and_the_last_error_time() -> None:
    snap = Snapshot(
        "a", Role.STANDALONE, 0,
        bridges=[
            BridgeStatus("static:h:1", LinkState.UP, peer="b", forwarded=7, unacknowledged=3,
                         last_error_at=1700000000.5),
            BridgeStatus("static:h:2", LinkState.BACKOFF, last_error="x", last_error_at=12.0),
            BridgeStatus("from c", LinkState.UP, peer="c", inbound=True, received=4),
        ],
    )  # fmt: skip
    m = parsed(snap)
    up = (("bridge", "static:h:1"), ("direction", "outbound"), ("peer", "b"))
    down = (("bridge", "static:h:2"), ("direction", "outbound"), ("peer", ""))
    inbound = (("bridge", "from c"), ("direction", "inbound"), ("peer", "c"))
    assert m[("netbroker_bridge_unacknowledged_messages", up)] == 3
    assert m[("netbroker_bridge_last_error_timestamp_seconds", up)] == 1700000000.5
    assert m[("netbroker_bridge_last_error_timestamp_seconds", down)] == 12.0
    assert ("netbroker_bridge_unacknowledged_messages", down) not in m  # no session
    assert ("netbroker_bridge_unacknowledged_messages", inbound) not in m
    assert ("netbroker_bridge_last_error_timestamp_seconds", inbound) not in m
    assert m[("netbroker_bridge_forwarded_messages_total", up)] == 7


def test_a_master_reports_each_followers_lag_and_every_member_its_elections() -> None:
    master = GroupStatus(
        "B", Role.MASTER, epoch=3, position=40, in_sync=("b", "c"),
        lags=(ReplicaLag("c", 0, 0.0), ReplicaLag("d", 12, math.inf)),
        elections=2, became_master=1,
    )  # fmt: skip
    m = parsed(Snapshot("b", Role.MASTER, 0, groups=[master]))
    c, d = (("follower", "c"), ("group", "B")), (("follower", "d"), ("group", "B"))
    assert m[("netbroker_group_replication_lag_entries", c)] == 0
    assert m[("netbroker_group_replication_lag_seconds", c)] == 0
    assert m[("netbroker_group_replication_lag_entries", d)] == 12
    assert m[("netbroker_group_replication_lag_seconds", d)] == math.inf
    assert m[("netbroker_group_elections_total", (("group", "B"),))] == 2
    assert m[("netbroker_group_became_master_total", (("group", "B"),))] == 1

    slave = GroupStatus("B", Role.SLAVE, position=40, master="b", elections=2)
    m = parsed(Snapshot("c", Role.SLAVE, 0, groups=[slave]))
    assert not any(name.startswith("netbroker_group_replication_lag") for name, _ in m)
    assert m[("netbroker_group_elections_total", (("group", "B"),))] == 2
    assert m[("netbroker_group_became_master_total", (("group", "B"),))] == 0

    lock = GroupStatus("L", Role.MASTER, lock="/x/lock")
    m = parsed(Snapshot("l", Role.MASTER, 0, groups=[lock]))
    assert ("netbroker_group_elections_total", (("group", "L"),)) not in m
