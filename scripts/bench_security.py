"""Produce rate with authentication and an authorization map on, as a ratio to the same
broker settings without (one run, alternating, fresh brokers), 1 KiB non-persistent bodies.

    .venv/bin/python scripts/bench_security.py [--count 50000] [--repeats 2]

Prints each rate, then `ratio auth/open R` (the target is >= 0.8): with per-call metadata
checked against the authenticator's cache and the map's per-destination cache, a batch
costs a dict lookup per message more than without.
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
            {"queue": "bench.>", "read": ["producers"], "write": ["producers"]},
            {"queue": ">", "admin": ["producers"]},
        ],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


async def _produce(url: str, count: int, user: str | None) -> float:
    password = PASSWORD if user else None
    async with await Client.connect(url, user=user, password=password) as client:
        producer = client.producer()
        body = b"x" * 1024
        await (await producer.send("bench.q", body, persistent=False))  # warm: auth, streams
        started = time.perf_counter()
        futures = [await producer.send("bench.q", body, persistent=False) for _ in range(count)]
        await asyncio.gather(*futures)
        rate = count / (time.perf_counter() - started)
        await producer.close()
        return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"open": [], "auth": []}
    with tempfile.TemporaryDirectory() as tmp:
        users = _users(Path(tmp) / "users.yaml")
        for i in range(args.repeats):
            for case in ("open", "auth"):
                extra = ("--users", str(users)) if case == "auth" else ()
                proc = BrokerProcess(f"{case}{i}", Path(tmp) / f"{case}{i}", args=extra).start()
                try:
                    user = "bench" if case == "auth" else None
                    rate = asyncio.run(_produce(proc.url, args.count, user))
                finally:
                    proc.stop()
                rates[case].append(rate)
                print(f"{case:5} run {i + 1}: {rate:,.0f} msg/s", flush=True)
    open_rate, auth_rate = (statistics.median(rates[c]) for c in ("open", "auth"))
    print(f"median open {open_rate:,.0f} msg/s, auth {auth_rate:,.0f} msg/s")
    print(f"ratio auth/open {auth_rate / open_rate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
