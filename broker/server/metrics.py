"""The broker's Prometheus endpoint: `/metrics` over HTTP on `metrics_port`.

prometheus_client serves it from a thread of its own. The broker's state belongs to its
loop, so a scrape does not read it from that thread: it asks the loop for a snapshot
(`snapshot`, run there through `run_coroutine_threadsafe`, a few dictionary walks) and
turns that into metric families in the HTTP thread (`families`, pure). A scrape costs
the loop one short callback.

Names follow Prometheus conventions: a `netbroker_` prefix, base units (`_seconds`,
`_bytes`), `_total` for counters, labels for queues, topics, bridges and groups. The
process's RSS, CPU and open files come from prometheus_client's process collector.
Everything here only reads what the layers report (`GroupStatus`, `BridgeStatus`): a
group's replication lag is computed by masterslave.lag on the master, per follower; its
elections are counted by the member's role machine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from broker.core.broker import QueueSnapshot, TopicSnapshot
from broker.core.histogram import Histogram
from broker.errors import StartupError
from broker.server.gate import ServiceGate
from broker.server.status import BridgeStatus, GroupStatus, LinkState, Role

log = logging.getLogger("netbroker.metrics")

# How long a scrape waits for the loop's snapshot before it answers without it.
SNAPSHOT_TIMEOUT = 2.0


@dataclass(frozen=True)
class Histograms:
    """A copy of a histogram's counts, taken on the loop."""

    buckets: list[tuple[float, int]]
    sum: float

    @classmethod
    def of(cls, histogram: Histogram) -> Histograms:
        return cls(histogram.cumulative(), histogram.sum)


@dataclass(frozen=True)
class Snapshot:
    """What one scrape reports, copied on the broker's loop."""

    broker: str
    role: Role
    open_calls: int
    queues: list[QueueSnapshot] = field(default_factory=list)
    topics: list[TopicSnapshot] = field(default_factory=list)
    published: int = 0
    dropped: int = 0
    groups: list[GroupStatus] = field(default_factory=list)
    bridges: list[BridgeStatus] = field(default_factory=list)
    fsync: Histograms | None = None
    batch_ops: Histograms | None = None
    send: Histograms | None = None


def snapshot(name: str, gate: ServiceGate) -> Snapshot:
    """The broker's state now; on its loop."""
    reports = gate.reports()
    groups = [r for r in reports if isinstance(r, GroupStatus)]
    bridges = [r for r in reports if isinstance(r, BridgeStatus)]
    broker = gate.broker
    if broker is None:
        return Snapshot(name, gate.role, gate.open_calls, groups=groups, bridges=bridges)
    return Snapshot(
        broker=name,
        role=gate.role,
        open_calls=gate.open_calls,
        queues=broker.snapshot(),
        topics=broker.topic_snapshot(),
        published=broker.published,
        dropped=broker.dropped,
        groups=groups,
        bridges=bridges,
        fsync=Histograms.of(broker.committer.fsync_seconds),
        batch_ops=Histograms.of(broker.committer.batch_ops),
        send=Histograms.of(broker.send_seconds),
    )


def _histogram(name: str, doc: str, values: Histograms | None) -> Iterator[Metric]:
    if values is None:
        return
    family = HistogramMetricFamily(name, doc)
    family.add_metric(
        [], [(_le(bound), count) for bound, count in values.buckets], sum_value=values.sum
    )
    yield family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def families(snap: Snapshot, store_bytes: int | None) -> Iterator[Metric]:
    """The metric families of one snapshot; pure."""
    info = GaugeMetricFamily(
        "netbroker_broker_role", "This broker's role now (1 for the current one).",
        labels=["broker", "role"],
    )  # fmt: skip
    for role in Role:
        info.add_metric([snap.broker, role.value], 1.0 if role is snap.role else 0.0)
    yield info
    yield GaugeMetricFamily(
        "netbroker_open_calls", "Client, bridge and admin calls open on the serving core.",
        value=snap.open_calls,
    )  # fmt: skip

    gauges = {
        "ready": ("netbroker_queue_ready_messages", "Messages waiting for a consumer."),
        "in_flight": ("netbroker_queue_in_flight_messages", "Messages delivered, not acked."),
        "consumers": ("netbroker_queue_consumers", "Consumers, local and bridges."),
    }
    counters = {
        "enqueued": ("netbroker_queue_enqueued_messages", "Messages that entered the queue."),
        "dequeued": ("netbroker_queue_dequeued_messages", "Messages acknowledged."),
        "expired": ("netbroker_queue_expired_messages", "Messages that expired."),
        "dead_lettered": ("netbroker_queue_dead_lettered_messages", "Messages dead-lettered."),
    }
    made: dict[str, Any] = {}
    for key, (name, doc) in gauges.items():
        made[key] = GaugeMetricFamily(name, doc, labels=["queue"])
    for key, (name, doc) in counters.items():
        made[key] = CounterMetricFamily(name, doc, labels=["queue"])
    for q in snap.queues:
        made["ready"].add_metric([q.name], q.pending)
        made["in_flight"].add_metric([q.name], q.in_flight)
        made["consumers"].add_metric([q.name], q.consumers)
        made["enqueued"].add_metric([q.name], q.enqueued)
        made["dequeued"].add_metric([q.name], q.dequeued)
        made["expired"].add_metric([q.name], q.expired)
        made["dead_lettered"].add_metric([q.name], q.dead_lettered)
    yield from made.values()

    labels = ["topic", "subscription"]
    t_ready = GaugeMetricFamily(
        "netbroker_topic_ready_messages", "Copies waiting in a subscription.", labels=labels
    )
    t_flight = GaugeMetricFamily(
        "netbroker_topic_in_flight_messages", "Copies delivered, not acked.", labels=labels
    )
    t_active = GaugeMetricFamily(
        "netbroker_topic_subscriber_active", "Whether a subscriber holds it.", labels=labels
    )
    t_in = CounterMetricFamily(
        "netbroker_topic_enqueued_messages", "Copies that entered a subscription.", labels=labels
    )
    t_out = CounterMetricFamily(
        "netbroker_topic_dequeued_messages", "Copies acknowledged.", labels=labels
    )
    for topic in snap.topics:
        for n, sub in enumerate(topic.subscriptions):
            label = "/".join(sub.durable) if sub.durable else (sub.label or f"#{n + 1}")
            row = [topic.name, label]
            t_ready.add_metric(row, sub.pending)
            t_flight.add_metric(row, sub.in_flight)
            t_active.add_metric(row, 1.0 if sub.active else 0.0)
            t_in.add_metric(row, sub.enqueued)
            t_out.add_metric(row, sub.dequeued)
    yield from (t_ready, t_flight, t_active, t_in, t_out)
    yield CounterMetricFamily(
        "netbroker_topic_published_messages", "Topic messages published here.",
        value=snap.published,
    )  # fmt: skip
    yield CounterMetricFamily(
        "netbroker_topic_dropped_messages", "Topic messages no subscription took.",
        value=snap.dropped,
    )  # fmt: skip

    b_labels = ["bridge", "peer", "direction"]
    b_up = GaugeMetricFamily("netbroker_bridge_up", "1 while the link is up.", labels=b_labels)
    b_fwd = CounterMetricFamily(
        "netbroker_bridge_forwarded_messages", "Messages forwarded (this session).",
        labels=b_labels,
    )  # fmt: skip
    b_recv = CounterMetricFamily(
        "netbroker_bridge_received_messages", "Messages received (this session).",
        labels=b_labels,
    )  # fmt: skip
    b_unacked = GaugeMetricFamily(
        "netbroker_bridge_unacknowledged_messages",
        "Messages sent to the peer and not yet answered by it (while linked).",
        labels=b_labels,
    )
    b_error = GaugeMetricFamily(
        "netbroker_bridge_last_error_timestamp_seconds",
        "When the link last failed or dropped, Unix seconds (0: never).",
        labels=b_labels,
    )
    for b in snap.bridges:
        row = [b.label, b.peer, "inbound" if b.inbound else "outbound"]
        b_up.add_metric(row, 1.0 if b.state is LinkState.UP else 0.0)
        if not b.inbound:
            b_fwd.add_metric(row, b.forwarded or 0)
            b_error.add_metric(row, b.last_error_at)
        else:
            b_recv.add_metric(row, b.received)
        if b.unacknowledged is not None:
            b_unacked.add_metric(row, b.unacknowledged)
    yield from (b_up, b_fwd, b_recv, b_unacked, b_error)

    g_role = GaugeMetricFamily(
        "netbroker_group_role", "This member's role in its group (1 for the current one).",
        labels=["group", "role"],
    )  # fmt: skip
    g_epoch = GaugeMetricFamily("netbroker_group_epoch", "The group's epoch.", labels=["group"])
    g_pos = GaugeMetricFamily(
        "netbroker_group_replication_position",
        "This member's position in the group's log (a slave's lag: the master's minus it).",
        labels=["group"],
    )
    g_isr = GaugeMetricFamily(
        "netbroker_group_in_sync_members", "The master's in-sync set's size.", labels=["group"]
    )
    lag_labels = ["group", "follower"]
    g_lag = GaugeMetricFamily(
        "netbroker_group_replication_lag_entries",
        "On the master: log entries a follower lacks (the master's position minus its ack).",
        labels=lag_labels,
    )
    g_lag_s = GaugeMetricFamily(
        "netbroker_group_replication_lag_seconds",
        "On the master: how long the oldest entry a follower lacks has waited for it "
        "(0 caught up, +Inf unknown).",
        labels=lag_labels,
    )
    g_elections = CounterMetricFamily(
        "netbroker_group_elections",
        "Elections this member saw end (each new epoch it entered, as master or slave).",
        labels=["group"],
    )
    g_won = CounterMetricFamily(
        "netbroker_group_became_master",
        "Elections this member won (times it became master).",
        labels=["group"],
    )
    for g in snap.groups:
        for role in (Role.MASTER, Role.SLAVE, Role.ELECTING, Role.STOPPED):
            g_role.add_metric([g.name, role.value], 1.0 if g.role is role else 0.0)
        if g.epoch is not None:
            g_epoch.add_metric([g.name], g.epoch)
        if g.position is not None:
            g_pos.add_metric([g.name], g.position)
        if g.role is Role.MASTER:
            g_isr.add_metric([g.name], len(g.in_sync))
        for lag in g.lags:
            g_lag.add_metric([g.name, lag.follower], lag.entries)
            g_lag_s.add_metric([g.name, lag.follower], lag.seconds)
        if not g.lock:  # a lock-file member holds no elections
            g_elections.add_metric([g.name], g.elections)
            g_won.add_metric([g.name], g.became_master)
    yield from (g_role, g_epoch, g_pos, g_isr, g_lag, g_lag_s, g_elections, g_won)

    yield from _histogram(
        "netbroker_store_fsync_seconds", "Time one fsync of the store's log took.", snap.fsync
    )
    yield from _histogram(
        "netbroker_store_write_batch_operations", "Operations in one store write.", snap.batch_ops
    )
    yield from _histogram(
        "netbroker_produce_ack_seconds",
        "From a producer batch's arrival to its answer (durable under the sync policy).",
        snap.send,
    )
    if store_bytes is not None:
        yield GaugeMetricFamily(
            "netbroker_store_bytes", "Bytes of the store's files on disk.", value=store_bytes
        )


def _dir_bytes(path: Path) -> int | None:
    total = 0
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    except OSError:
        return None
    return total


class _BrokerCollector(Collector):
    def __init__(
        self, name: str, gate: ServiceGate, store: Path, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.name = name
        self.gate = gate
        self.store = store
        self.loop = loop

    def collect(self) -> Iterator[Metric]:
        async def take() -> Snapshot:
            return snapshot(self.name, self.gate)

        try:
            future = asyncio.run_coroutine_threadsafe(take(), self.loop)
            snap = future.result(timeout=SNAPSHOT_TIMEOUT)
        except (concurrent.futures.TimeoutError, RuntimeError) as exc:
            log.warning("metrics: no snapshot from the broker's loop: %r", exc)
            return
        yield from families(snap, _dir_bytes(self.store))


class MetricsEndpoint:
    """prometheus_client's HTTP server for one broker; stop with `close`."""

    def __init__(self, host: str, port: int, collector: Collector) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        ProcessCollector(registry=registry)
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise StartupError(
                f"cannot serve metrics on {host}:{port}: "
                f"{'port in use' if exc.errno == 98 else exc.strerror or exc}"
            ) from None
        self.port = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(
    name: str, gate: ServiceGate, store: Path, host: str, port: int
) -> MetricsEndpoint:
    """Start `/metrics` on host:port (port 0: any free one) for the broker behind `gate`;
    from its loop."""
    collector = _BrokerCollector(name, gate, store, asyncio.get_running_loop())
    return MetricsEndpoint(host, port, collector)
