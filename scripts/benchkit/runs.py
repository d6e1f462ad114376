"""The runs the benchmarks are made of, each with its clients in their own processes.

* `produce_then_consume`: a producer process sends `count` messages, then a consumer
  process takes them all (the rates of each, and the broker's CPU over each phase);
* `send_while_receiving`: a consumer process subscribes, then a sender process sends
  (on a schedule, one acknowledged send at a time, or flat out) while it receives;
* `fresh_broker`: a broker of its own for one case, always stopped.

Each returns the workers' results and the run's `Tally`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scripts.benchkit.tally import Tally
from scripts.benchkit.workers import Worker
from tests.support.procs import BrokerProcess

Result = dict[str, Any]


@contextmanager
def fresh_broker(
    tmp: Path, name: str, *, port: int = 0, args: tuple[str, ...] = ()
) -> Iterator[BrokerProcess]:
    """A broker with an empty store in a directory of its own, stopped on leaving."""
    tmp.mkdir(parents=True, exist_ok=True)
    broker = BrokerProcess(name, tmp / name, port=port, args=args)
    try:
        yield broker.start()
    finally:
        broker.stop()


def broker_pid(broker: BrokerProcess) -> int:
    assert broker.proc is not None, "not started"
    return broker.proc.pid


def pid_of(pid: int | None) -> list[str]:
    """`--cpu-pid` arguments for the process (a broker) whose CPU a worker samples."""
    return [] if pid is None else ["--cpu-pid", str(pid)]


def produce_then_consume(
    url: str, queue: str, count: int, *, log_dir: Path, persistent: bool = True,
    size: int = 1024, cpu: int | None = None, consume_url: str | None = None,
    consume_count: int | None = None, sync: bool = False,
) -> tuple[Result, Result, Tally]:  # fmt: skip
    """Produce `count` (`sync`: one acknowledged send at a time) then consume them (or the
    first `consume_count`), from `consume_url` if given. `cpu`: the broker's pid, whose CPU
    each phase reports."""
    common = ["--queue", queue, "--size", str(size)]
    if not persistent:
        common.append("--transient")
    producer = Worker(
        "sync-send" if sync else "produce", "--url", url, "--count", str(count), *common,
        *pid_of(cpu), log_dir=log_dir,
    )  # fmt: skip
    produced = producer.result()
    taken = count if consume_count is None else consume_count
    consumer = Worker(
        "consume", "--url", consume_url or url, "--count", str(taken), *common, *pid_of(cpu),
        log_dir=log_dir,
    )  # fmt: skip
    consumed = consumer.result()
    tally = Tally()
    tally.add_producer(produced)
    tally.add_consumer(consumed)
    tally.left = set(range(taken, count))
    return produced, consumed, tally


def send_while_receiving(
    url: str, queue: str, count: int, *, log_dir: Path, rate: float = 0, sync: bool = True,
    persistent: bool = True, size: int = 1024, cpu: int | None = None,
    consume_url: str | None = None, latency: bool = True,
) -> tuple[Result, Result, Tally]:  # fmt: skip
    """A consumer (on `consume_url`, across a bridge, if given) subscribed first; then the
    sender: `sync` one acknowledged send at a time, else a pipelined producer."""
    common = ["--queue", queue, "--size", str(size), "--count", str(count)]
    if not persistent:
        common.append("--transient")
    receiving = ["--latency"] if latency else []
    if consume_url:
        receiving += ["--demand-on", url]
    consumer = Worker(
        "consume", "--url", consume_url or url, *common, *receiving, log_dir=log_dir
    ).ready()
    sender = Worker(
        "sync-send" if sync else "produce", "--url", url, "--rate", str(rate), *common,
        *pid_of(cpu), log_dir=log_dir,
    )  # fmt: skip
    sent = sender.result()
    consumed = consumer.result()
    tally = Tally()
    tally.add_producer(sent)
    tally.add_consumer(consumed)
    return sent, consumed, tally
