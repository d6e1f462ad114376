"""The types of the command line's arguments: each parses one value or says why not."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_range(lo: int, hi: int | None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < lo or (hi is not None and value > hi):
            bound = f"{lo}-{hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"expected an integer {bound}, got {text!r}")
        return value

    return parse


def positive_float() -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
        return value

    return parse


def queue_name(text: str) -> str:
    from broker.core.names import check_queue_name
    from broker.errors import BrokerError

    try:
        return check_queue_name(text)
    except BrokerError as e:
        raise argparse.ArgumentTypeError(e.message) from None


TOPIC_SCHEME = "topic://"
QUEUE_SCHEME = "queue://"


def destination(text: str) -> tuple[str, str]:
    """A destination as ActiveMQ spells one: `topic://NAME`, `queue://NAME`, or a bare
    NAME, a queue (as in STOMP, where `/topic/NAME` and `/queue/NAME` say the same).
    Returns ("topic" or "queue", NAME); a topic name may be a pattern (`*`, `>`)."""
    from broker.core.names import check_queue_name
    from broker.core.topics import check_topic_pattern
    from broker.errors import BrokerError

    try:
        if text.startswith(TOPIC_SCHEME):
            return "topic", check_topic_pattern(text[len(TOPIC_SCHEME) :])
        if text.startswith(QUEUE_SCHEME):
            text = text[len(QUEUE_SCHEME) :]
        return "queue", check_queue_name(text)
    except BrokerError as e:
        raise argparse.ArgumentTypeError(e.message) from None


def header(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value
