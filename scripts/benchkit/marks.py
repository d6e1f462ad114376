"""What a benchmark message carries: its sequence number and when it was sent.

The first 16 bytes of the body are the sequence number and time.perf_counter_ns() at the
send (CLOCK_MONOTONIC on Linux: comparable across the processes of one machine); the rest
is padding up to the body size.
"""

from __future__ import annotations

import os
import struct

_HEAD = struct.Struct(">QQ")
HEAD_SIZE = _HEAD.size


class Bodies:
    """Bodies of `size` bytes (at least the 16 of the mark) with one random padding."""

    def __init__(self, size: int) -> None:
        self.padding = os.urandom(max(0, size - HEAD_SIZE))

    def body(self, seq: int, stamp_ns: int) -> bytes:
        return _HEAD.pack(seq, stamp_ns) + self.padding


def read_mark(body: bytes) -> tuple[int, int]:
    """(sequence number, send time in ns) of a body made by `Bodies`."""
    seq, stamp = _HEAD.unpack_from(body)
    return seq, stamp
