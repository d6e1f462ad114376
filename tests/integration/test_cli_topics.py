"""The CLI with topics against a real broker: `send topic://T`, `recv topic://P` (also
durable, kept between runs), `stat`'s subscriptions, `unsubscribe`, and the refusals."""

from __future__ import annotations

import subprocess
import sys

from broker.client import BlockingClient
from tests.integration.test_cli_roundtrip import ENV, ROOT, netbroker, ok
from tests.support.procs import BrokerProcess
from tests.support.uptools import wait_until


def _subscribed(url: str, topic: str) -> bool:
    with BlockingClient.connect(url) as client:
        return any(t.name == topic for t in client.topics().topics)


def test_publish_to_a_live_subscriber(broker: BrokerProcess) -> None:
    recv = subprocess.Popen(
        [sys.executable, "-m", "broker", "recv", "--url", broker.url, "topic://news.>",
         "--count", "3", "--timeout", "20"],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_until(lambda: _subscribed(broker.url, "news.>"), 20, "the subscription")
        sent = ok(netbroker("send", "--url", broker.url, "topic://news.eu", "one"))
        assert sent.stdout.startswith(b"sent 1 message to topic news.eu in ")
        ok(netbroker("send", "--url", broker.url, "topic://news.us.east", "two", "--count", "2"))
        out, err = recv.communicate(timeout=30)
    finally:
        recv.kill()
    assert recv.returncode == 0, err.decode()
    assert out == b"one\ntwo\ntwo\n"
    # A queue of the same name is another destination: it got nothing.
    empty = netbroker("recv", "--url", broker.url, "news.eu", "--timeout", "0.3")
    assert empty.returncode == 1


def test_durable_subscription_between_runs(broker: BrokerProcess) -> None:
    url = ["--url", broker.url]
    durable = ["topic://orders.*", "--durable", "audit", "--client-id", "shop"]
    first = netbroker("recv", *url, *durable, "--timeout", "0.3")
    assert first.returncode == 1  # created, nothing yet
    ok(netbroker("send", *url, "topic://orders.eu", "kept", "--count", "3"))
    stat = ok(netbroker("stat", *url)).stdout.decode()
    assert "orders.*" in stat and "shop/audit" in stat
    assert "published 3, dropped 0" in stat
    got = ok(netbroker("recv", *url, *durable, "--count", "3"))
    assert got.stdout == b"kept\nkept\nkept\n"
    removed = ok(netbroker("unsubscribe", *url, "audit", "--client-id", "shop"))
    assert removed.stdout == b"removed durable subscription audit of client shop\n"
    again = netbroker("unsubscribe", *url, "audit", "--client-id", "shop")
    assert again.returncode == 1
    assert b"NOT_FOUND: no durable subscription 'audit' of client 'shop'" in again.stderr
    ok(netbroker("send", *url, "topic://orders.eu", "dropped"))
    assert "dropped 1" in ok(netbroker("stat", *url)).stdout.decode()


def test_refusals(broker: BrokerProcess) -> None:
    url = ["--url", broker.url]
    wild = netbroker("send", *url, "topic://orders.*", "x")
    assert wild.returncode == 1
    assert b"INVALID_ARGUMENT: topic name 'orders.*' has a wildcard" in wild.stderr
    for args, words in [
        (["recv", *url, "topic://a..b"], b"empty segment"),
        (["recv", *url, "topic://a", "--durable", "s"], b"--durable needs --client-id"),
        (["recv", *url, "plain", "--durable", "s", "--client-id", "c"], b"are for topics"),
        (["send", *url, "topic://", "x"], b"topic pattern is empty"),
    ]:
        result = netbroker(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert words in result.stderr, result.stderr
        assert b"Traceback" not in result.stderr
