"""Master/slave benchmark: failover time, steadiness under load, replicated produce rate.

    .venv/bin/python scripts/bench_failover.py [--rounds 5] [--load-seconds 20] [--count 50000]

Starts a ZooKeeper; every case gets a fresh group (b, c: replicas 2, quorum_mem) and every
client is a process of its own, connected through `failover:(b,c)`:

* failover: a probe process sends one acknowledged persistent message at a time, a producer
  process sends at `--load-rate` and a consumer process counts what arrives. Broker a has
  `masterslave:(b,c)`. Each round kills the master with kill -9 and measures the time until
  the probe's first send is acknowledged by the other member (and, apart, until that
  member's Admin.Status says master: the gap is the client's reconnect backoff, which
  `--url-options maxReconnectDelay=50` shortens), and until a's bridge is up to it; the
  killed member is restarted and the group waits until both are in sync again. Median and
  max over `--rounds` kills; then the counts (0 lost, 0 unmarked repeats).
* steadiness: a producer flat out and a consumer on the group for `--load-seconds`, no
  faults; how many times the master changed (Admin.Status of both members, polled).
* rates: persistent produce, then consume, on the group (quorum_mem) and on a standalone
  broker (local_disk).

Every run counts sent / acknowledged / received / lost / repeats / unmarked repeats; the
last line is `lost L unmarked U` and the exit status is 1 if either is not 0.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from broker.cluster.zookeeper import Ensemble
from broker.pb import admin_pb2, admin_pb2_grpc
from scripts.benchkit.runs import fresh_broker, produce_then_consume
from scripts.benchkit.stats import each_and_median, median
from scripts.benchkit.tally import Ledger, Tally, to_ranges
from scripts.benchkit.workers import Worker, exit_on_sigterm, stop_workers
from tests.support.procs import BrokerProcess, free_port

PROBE_SEQ = 10**12  # the probe's numbers, apart from the producer's


def status(url: str) -> admin_pb2.StatusResponse | None:
    with grpc.insecure_channel(url) as channel:
        try:
            answer: admin_pb2.StatusResponse = admin_pb2_grpc.AdminStub(channel).Status(
                admin_pb2.StatusRequest(), timeout=1
            )
            return answer
        except grpc.RpcError:
            return None


def until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.005)
    return value


def in_sync(group: dict[str, BrokerProcess]) -> str | None:
    """The master's name once every member is in its in-sync set."""
    for name, proc in group.items():
        answer = status(proc.url)
        if answer is None or answer.role_kind != admin_pb2.ROLE_MASTER:
            continue
        if set(group) <= set(answer.group.in_sync):
            return name
    return None


def bridge_to(a: BrokerProcess, name: str) -> bool:
    answer = status(a.url)
    return answer is not None and any(
        b.state == admin_pb2.LINK_UP and not b.inbound and b.peer == name for b in answer.bridges
    )


@contextmanager
def fresh_group(
    tmp: Path, zk: Ensemble, name: str, *, with_a: bool = False
) -> Iterator[tuple[dict[str, BrokerProcess], BrokerProcess | None]]:
    """Group `name` (b, c; replicas 2), in sync; with `with_a` also broker a, which has
    `masterslave:(b,c)` and to which b and c bridge back."""
    ports = {member: free_port() for member in ("a", "b", "c")}
    with ExitStack() as stack:
        group = {}
        back = ("--connector", f"static:(127.0.0.1:{ports['a']})") if with_a else ()
        for member in ("b", "c"):
            group[member] = stack.enter_context(fresh_broker(
                tmp, member, port=ports[member],
                args=("--group", name, "--election", "zookeeper", "--zookeeper",
                      zk.connect_string, "--replication-port", str(free_port()),
                      "--replicas", "2", *back),
            ))  # fmt: skip
        a = None
        if with_a:
            a = stack.enter_context(fresh_broker(
                tmp, "a", port=ports["a"],
                args=("--connector",
                      f"masterslave:(127.0.0.1:{ports['b']},127.0.0.1:{ports['c']})"),
            ))  # fmt: skip
        until(lambda: in_sync(group), 30, f"group {name} to be in sync")
        yield group, a


def failover_url(group: dict[str, BrokerProcess], options: str = "") -> str:
    url = f"failover:({','.join(proc.url for proc in group.values())})"
    return f"{url}?{options}" if options else url


class Probe(Worker):
    """The sync-send worker whose acks tell which broker accepted them."""

    address: str | None = None


def takeover(probe: Probe, killed: str, successor: str, timeout: float) -> tuple[int, int]:
    """When (ns) `successor` first said it is master (Admin.Status, polled), and when the
    probe's first send was acknowledged by a broker other than `killed`: the gap is the
    client's own delay (its reconnect backoff)."""
    deadline = time.monotonic() + timeout
    elected = accepted = None
    while elected is None or accepted is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"no takeover within {timeout}s (elected {elected}, sent {accepted})")
        if elected is None:
            answer = status(successor)
            if answer is not None and answer.role_kind == admin_pb2.ROLE_MASTER:
                elected = time.perf_counter_ns()
        event = probe.event(timeout=0.005)
        if accepted is None and event is not None and event.get("address") not in (None, killed):
            accepted = int(event["ns"])
    return elected, accepted


def probe_on(probe: Probe, address: str, timeout: float = 15.0) -> None:
    """Until the probe's latest acks come from `address` (the master it starts a round on)."""
    deadline = time.monotonic() + timeout
    while probe.address != address:
        if time.monotonic() > deadline:
            raise SystemExit(f"the probe's sends never reached {address}")
        event = probe.event(timeout=0.1)
        if event is not None and "address" in event:
            probe.address = event["address"]


def failover(args: argparse.Namespace, tmp: Path, zk: Ensemble, ledger: Ledger) -> None:
    with fresh_group(tmp / "failover", zk, "F1", with_a=True) as (group, a):
        assert a is not None
        url = failover_url(group, args.url_options)
        common = ["--url", url, "--queue", "bench.failover", "--count", "0"]
        consumer = Worker("consume", *common, log_dir=tmp).ready()
        producer = Worker("produce", *common, "--rate", str(args.load_rate), log_dir=tmp)
        probe = Probe(
            "sync-send", *common, "--rate", "200", "--first-seq", str(PROBE_SEQ), log_dir=tmp
        ).ready()
        probe.address = probe.ready_line.get("address")
        failovers: list[float] = []
        elections: list[float] = []  # until the successor's Status says master
        bridges: list[float] = []
        for i in range(args.rounds):
            master = until(lambda: in_sync(group), 60, "the group to be in sync")
            other = next(name for name in group if name != master)
            probe_on(probe, group[master].url)
            until(partial(bridge_to, a, master), 15, "a's bridge to the master")
            killed = time.perf_counter_ns()
            group[master].kill()
            elected, accepted = takeover(probe, group[master].url, group[other].url, 30)
            probe.address = group[other].url
            failovers.append((accepted - killed) / 1e9)
            elections.append((elected - killed) / 1e9)
            until(partial(bridge_to, a, other), 30, f"a's bridge to reach {other}")
            bridges.append((time.perf_counter_ns() - killed) / 1e9)
            print(
                f"  round {i + 1}: {master} killed; {other} master after {elections[-1]:.3f}s, "
                f"a send through failover:(b,c) accepted after {failovers[-1]:.3f}s, "
                f"a's bridge up to {other} after {bridges[-1]:.2f}s",
                flush=True,
            )
            group[master].start()
        until(lambda: in_sync(group), 60, "the group to be in sync")
        tally = Tally()
        for sender in (producer, probe):
            sender.tell(stop=True)
            tally.add_producer(sender.result())
        consumer.tell(expect=to_ranges(tally.acked))
        tally.add_consumer(consumer.result())
    print(
        f"  failover (kill -9 -> a send accepted through failover:(...)), {args.rounds} kills: "
        f"median {median(failovers):.3f}s, max {max(failovers):.3f}s (target: median <= 0.5s)"
    )
    print(f"    each: {' / '.join(f'{f:.3f}' for f in failovers)} s")
    print(
        f"  kill -9 -> the other member's Status says master: median {median(elections):.3f}s, "
        f"max {max(elections):.3f}s (the rest is the client's reconnect delay)"
    )
    print(f"  a's masterslave: bridge up to the new master, median {median(bridges):.2f}s")
    ledger.record(f"through {args.rounds} kills (producer at {args.load_rate}/s + probe)", tally)


def steadiness(args: argparse.Namespace, tmp: Path, zk: Ensemble, ledger: Ledger) -> None:
    with fresh_group(tmp / "steady", zk, "F2") as (group, _):
        url = failover_url(group, args.url_options)
        common = ["--url", url, "--queue", "bench.load", "--count", "0"]
        consumer = Worker("consume", *common, log_dir=tmp).ready()
        producer = Worker("produce", *common, log_dir=tmp).ready()
        masters: list[tuple[str, int]] = []  # (name, epoch), each as first seen
        shrinks = 0  # times the master's in-sync set went from whole to not
        whole = True
        end = time.monotonic() + args.load_seconds
        while time.monotonic() < end:
            for name, proc in group.items():
                answer = status(proc.url)
                if answer is None or answer.role_kind != admin_pb2.ROLE_MASTER:
                    continue
                if not masters or masters[-1] != (name, answer.group.epoch):
                    masters.append((name, answer.group.epoch))
                now_whole = set(group) <= set(answer.group.in_sync)
                shrinks += whole and not now_whole
                whole = now_whole
            time.sleep(0.05)
        producer.tell(stop=True)
        produced = producer.result()
        tally = Tally()
        tally.add_producer(produced)
        consumer.tell(expect=to_ranges(tally.acked))
        consumed = consumer.result()
        tally.add_consumer(consumed)
    changes = max(0, len(masters) - 1)
    print(
        f"  {args.load_seconds:g}s of full load, no faults (produce {produced['rate']:,.0f} "
        f"msg/s): the master changed {changes} times "
        f"({' -> '.join(f'{n}@{e}' for n, e in masters)}); the in-sync set shrank "
        f"{shrinks} times (target: no change)"
    )
    ledger.record("full load, no faults", tally)


def rates(args: argparse.Namespace, tmp: Path, zk: Ensemble, ledger: Ledger) -> None:
    group_rates: list[float] = []
    local_rates: list[float] = []
    for r in range(args.repeats):
        with fresh_group(tmp / f"rates{r}", zk, f"R{r}") as (group, _):
            master = until(partial(in_sync, group), 30, "the group to be in sync")
            produced, _, tally = produce_then_consume(
                group[master].url, "bench.replicated", args.count, log_dir=tmp
            )
        group_rates.append(produced["rate"])
        ledger.record("produce/consume, group quorum_mem", tally)
        with fresh_broker(tmp / f"local{r}", "local") as local:
            produced, _, tally = produce_then_consume(
                local.url, "bench.local", args.count, log_dir=tmp
            )
        local_rates.append(produced["rate"])
        ledger.record("produce/consume, standalone local_disk", tally)
    print(f"  persistent produce, group quorum_mem: {each_and_median(group_rates)} msg/s")
    print(
        f"  persistent produce, standalone local_disk: {each_and_median(local_rates)} msg/s "
        f"(quorum_mem is {median(group_rates) / median(local_rates):.0%} of it)"
    )


def main() -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--load-rate", type=int, default=1_000, help="producer during kills")
    parser.add_argument("--load-seconds", type=float, default=20.0)
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=1, help="of the rates")
    parser.add_argument(
        "--url-options", default="",
        help="the clients' failover URL options, e.g. maxReconnectDelay=50 (default: none)",
    )  # fmt: skip
    args = parser.parse_args()
    print(
        "netbroker failover bench: groups of b, c (replicas 2, quorum_mem), "
        "clients in their own processes through failover:(b,c)",
        flush=True,
    )
    ledger = Ledger()
    with (
        tempfile.TemporaryDirectory(prefix="netbroker-bench-") as tmp,
        Ensemble(Path(tmp) / "zk", size=1) as zk,
    ):
        try:
            failover(args, Path(tmp), zk, ledger)
            steadiness(args, Path(tmp), zk, ledger)
            rates(args, Path(tmp), zk, ledger)
        finally:
            stop_workers()
    return ledger.finish()


if __name__ == "__main__":
    sys.exit(main())
