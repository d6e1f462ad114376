"""Frames waiting to be written to a bridge stream, in order."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

from broker.pb import bridge_pb2


class Outbox:
    """Sessions write without waiting; one writer task drains the box into the stream."""

    def __init__(self) -> None:
        self._frames: deque[bridge_pb2.BridgeFrame] = deque()
        self._wake = asyncio.Event()
        self._closed = False

    def put(self, frame: bridge_pb2.BridgeFrame) -> None:
        if not self._closed:
            self._frames.append(frame)
            self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    async def __aiter__(self) -> AsyncIterator[bridge_pb2.BridgeFrame]:
        while True:
            while self._frames:
                yield self._frames.popleft()
            if self._closed:
                return
            self._wake.clear()
            await self._wake.wait()
