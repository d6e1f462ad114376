"""A message as the command line shows it: one JSON object (`--json`), or a header block
and a body preview for people (`browse`, `recv --show-headers`)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from broker.pb.message_pb2 import Message

# How much of a body a preview shows, in bytes.
PREVIEW_BYTES = 60


def as_json(message: Message, redelivered: bool | None = None) -> str:
    """One line of JSON: every field; the body as text when it is UTF-8, else base64."""
    out: dict[str, Any] = {
        "id": message.id,
        "destination": message.destination,
        "topic": message.topic,
        "priority": message.priority,
        "persistent": message.persistent,
        "redelivery_count": message.redelivery_count,
        "timestamp_ms": message.timestamp_ms,
        "expiration_ms": message.expiration_ms,
        "broker_path": list(message.broker_path),
        "headers": dict(message.headers),
    }
    if redelivered is not None:
        out["redelivered"] = redelivered
    try:
        out["body"] = message.body.decode("utf-8")
    except UnicodeDecodeError:
        out["body_base64"] = base64.b64encode(message.body).decode("ascii")
    return json.dumps(out, ensure_ascii=False, sort_keys=False)


def preview(body: bytes, limit: int = PREVIEW_BYTES) -> str:
    """The start of a body, printable: text as text, other bytes escaped."""
    head = body[:limit]
    text = head.decode("utf-8", errors="backslashreplace")
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    more = f"... ({len(body):,} bytes)" if len(body) > limit else ""
    return text + more


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def header_block(message: Message, redelivered: bool | None = None) -> list[str]:
    """The lines `--show-headers` prints before a body: the message's fields, then its
    headers, one `name: value` a line."""
    lines = [
        f"id: {message.id}",
        f"destination: {'topic://' if message.topic else ''}{message.destination}",
        f"priority: {message.priority}",
        f"persistent: {str(message.persistent).lower()}",
    ]
    if redelivered is not None:
        lines.append(f"redelivered: {str(redelivered).lower()}")
    lines.append(f"redelivery-count: {message.redelivery_count}")
    if message.timestamp_ms:
        lines.append(f"timestamp: {_time(message.timestamp_ms)}")
    if message.expiration_ms:
        lines.append(f"expires: {_time(message.expiration_ms)}")
    if message.broker_path:
        lines.append(f"broker-path: {','.join(message.broker_path)}")
    lines.extend(f"{key}: {value}" for key, value in sorted(message.headers.items()))
    return lines
