"""Produce, consume and forwarding rates with authentication and an authorization map on,
and with TLS on top, as ratios to the same brokers plaintext and open (one run,
alternating, fresh brokers), 1 KiB non-persistent bodies.

    .venv/bin/python scripts/bench_security.py [--count 50000] [--repeats 2]

Produce: one producer into broker a. Consume: the same messages out of a. Forward: a
bridges to a second broker b (mutual TLS on b's bridge port in the tls case, each
forward checked as the `brokers` principal) and a consumer at b takes them. Prints each
rate, then `ratio auth/open` and `ratio tls/open` per measure (the target is >= 0.8).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import argon2
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.client import Client
from tests.support.procs import BrokerProcess

PASSWORD = "bench-password"


def _users(path: Path) -> Path:
    hashed = argon2.PasswordHasher().hash(PASSWORD)
    doc = {
        "users": [{"name": "bench", "hash": hashed, "groups": ["producers"]}],
        "authorization": [
            {"queue": "bench.>", "read": ["producers"], "write": ["producers", "brokers"]},
            {"queue": ">", "admin": ["producers"]},
        ],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


async def _measure(
    a: str, b: str, count: int, user: str | None, ca: str | None
) -> dict[str, float]:
    password = PASSWORD if user else None
    out: dict[str, float] = {}
    body = b"x" * 1024
    async with await Client.connect(a, user=user, password=password, ca=ca) as client:
        producer = client.producer()
        await (await producer.send("bench.q", body, persistent=False))  # warm: auth, streams
        started = time.perf_counter()
        futures = [await producer.send("bench.q", body, persistent=False) for _ in range(count)]
        await asyncio.gather(*futures)
        out["produce"] = count / (time.perf_counter() - started)
        consumer = await client.subscribe("bench.q", prefetch=1000)
        started = time.perf_counter()
        for _ in range(count + 1):
            delivery = await consumer.receive(timeout=30)
            assert delivery is not None, "consume stalled"
            delivery.ack()
        out["consume"] = count / (time.perf_counter() - started)
        await consumer.close()
        # Forward: queued at a, taken by b's consumer over the bridge.
        futures = [await producer.send("bench.f", body, persistent=False) for _ in range(count)]
        await asyncio.gather(*futures)
        await producer.close()
    async with await Client.connect(b, user=user, password=password, ca=ca) as client:
        consumer = await client.subscribe("bench.f", prefetch=1000)
        first = await consumer.receive(timeout=30)
        assert first is not None, "nothing forwarded"
        first.ack()
        started = time.perf_counter()
        for _ in range(count - 1):
            delivery = await consumer.receive(timeout=30)
            assert delivery is not None, "forwarding stalled"
            delivery.ack()
        out["forward"] = (count - 1) / (time.perf_counter() - started)
        await consumer.close()
    return out


def main() -> int:
    from broker.security.certs import broker_files, ensure_brokers
    from tests.support.procs import free_port

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cases = ("open", "auth", "tls")
    rates: dict[str, dict[str, list[float]]] = {c: {} for c in cases}
    with tempfile.TemporaryDirectory() as tmp:
        users = _users(Path(tmp) / "users.yaml")
        pki = Path(tmp) / "pki"
        # Certificates name the broker they are for: a bridge must present its own.
        names = [f"{x}tls{i}" for x in "ab" for i in range(args.repeats)]
        ensure_brokers(pki, [(name, []) for name in names])
        ca = str(pki / "ca.pem")

        def tls(name: str) -> tuple[str, ...]:
            files = broker_files(pki, name)
            return ("--tls-cert", str(files.cert), "--tls-key", str(files.key), "--tls-ca", ca)

        for i in range(args.repeats):
            for case in cases:
                auth = ("--users", str(users)) if case != "open" else ()
                # a forwards to b (its connector), for b's consumer: under TLS over b's
                # bridge port.
                bridge = free_port()
                secure = (*tls(f"btls{i}"), "--bridge-port", str(bridge)) if case == "tls" else ()
                b = BrokerProcess(f"b{case}{i}", Path(tmp) / f"b{case}{i}",
                                  args=(*auth, *secure)).start()  # fmt: skip
                target = f"127.0.0.1:{bridge}" if case == "tls" else b.url
                a_args = (*auth, *(tls(f"atls{i}") if case == "tls" else ()),
                          "--connector", f"static:({target})")  # fmt: skip
                a = BrokerProcess(f"a{case}{i}", Path(tmp) / f"a{case}{i}", args=a_args).start()
                try:
                    user = "bench" if case != "open" else None
                    got = asyncio.run(_measure(
                        a.url, b.url, args.count, user, ca if case == "tls" else None
                    ))  # fmt: skip
                finally:
                    b.stop()
                    a.stop()
                for measure, rate in got.items():
                    rates[case].setdefault(measure, []).append(rate)
                shown = ", ".join(f"{m} {r:,.0f}" for m, r in got.items())
                print(f"{case:5} run {i + 1}: {shown} msg/s", flush=True)
    for measure in ("produce", "consume", "forward"):
        base = statistics.median(rates["open"][measure])
        ratios = "  ".join(
            f"ratio {c}/open {statistics.median(rates[c][measure]) / base:.2f}"
            for c in ("auth", "tls")
        )
        print(f"{measure:8} open {base:,.0f} msg/s  {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
