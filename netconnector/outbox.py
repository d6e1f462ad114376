"""Frames waiting to be written to a bridge stream, in order."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import TypeAlias

from broker.pb import bridge_pb2

# A frame to write: a BridgeFrame, or one already serialized (forward batches are framed
# from the stored bytes of their messages, see broker.core.wire).
Frame: TypeAlias = bridge_pb2.BridgeFrame | bytes

LINK_METHOD = "/netbroker.Bridge/Link"


def serialize_frame(frame: Frame) -> bytes:
    """The stream serializer of both ends of a link."""
    return frame if isinstance(frame, bytes) else frame.SerializeToString()


class Outbox:
    """Sessions write without waiting; one writer task drains the box into the stream."""

    def __init__(self) -> None:
        self._frames: deque[Frame] = deque()
        self._wake = asyncio.Event()
        self._closed = False

    def put(self, frame: Frame) -> None:
        if not self._closed:
            self._frames.append(frame)
            self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    async def __aiter__(self) -> AsyncIterator[Frame]:
        while True:
            while self._frames:
                yield self._frames.popleft()
            if self._closed:
                return
            self._wake.clear()
            await self._wake.wait()
