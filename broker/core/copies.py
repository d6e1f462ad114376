"""A topic message's copy in one subscription's queue.

Publishing to N subscriptions makes N queue entries of one message. They share the
parsed message and its serialized bytes (copying them N times would cost N times the
CPU and memory), until one of them is redelivered: raising a redelivery count changes
the message, so that copy takes a message of its own first and the others are unmoved.
"""

from __future__ import annotations

from broker.core.queue import Entry
from broker.pb.message_pb2 import Message


class TopicCopy(Entry):
    __slots__ = ("_shared",)

    def __init__(
        self,
        message: Message,
        seq: int,
        size: int,
        key: bytes | None,
        data: bytes | None,
        *,
        stored: bool,
    ) -> None:
        # Entry's fields set here rather than through its __init__: one copy is made per
        # subscription of every message published, and the call costs a fifth of it.
        self.message = message
        self.key = key
        self.seq = seq
        self.priority = message.priority
        # Held in the store only for a durable subscription; every other copy, of a
        # persistent message or not, lives in memory and counts against the memory gate.
        self.persistent = stored
        self.size = size
        self._data = data
        self.dispatched = False
        self._shared = True

    def count_redelivery(self) -> int:
        if self._shared:
            own = Message()
            own.CopyFrom(self.message)
            self.message = own
            self._shared = False
        return super().count_redelivery()
