"""A browsed message as the console's page shows it (pure): its fields, headers and
the start of its body as text."""

from __future__ import annotations

from typing import Any

from broker.pb.message_pb2 import Message

# How much of a body the page shows, in bytes.
PREVIEW_BYTES = 200


def preview(body: bytes, limit: int = PREVIEW_BYTES) -> str:
    """The start of a body: UTF-8 as text, other bytes as \\x escapes; the page escapes
    it for HTML."""
    text = body[:limit].decode("utf-8", errors="backslashreplace")
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in text)


def message_json(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "priority": m.priority,
        "persistent": m.persistent,
        "redelivery_count": m.redelivery_count,
        "timestamp_ms": m.timestamp_ms,
        "expiration_ms": m.expiration_ms,
        "broker_path": list(m.broker_path),
        "headers": dict(sorted(m.headers.items())),
        "size": len(m.body),
        "preview": preview(m.body),
        "truncated": len(m.body) > PREVIEW_BYTES,
    }
