"""Ports to listen on that nothing takes in the meantime.

A port chosen now and bound later (a broker's, told to its peers before it starts) must
not be one the kernel hands out as the source port of an outgoing connection meanwhile:
binding port 0 returns exactly such a port (from the ephemeral range), and a connection
that picks it as its source port makes the later bind fail with "address already in
use". So ports are picked below the ephemeral range, where the kernel never assigns
source ports, and checked free by binding them.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
from collections.abc import Collection
from pathlib import Path

# Below this, ports are those of services that are usually installed (and reserved ones).
LOWEST = 10_000
_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_start() -> int:
    """The first port the kernel may use as an outgoing connection's source port."""
    try:
        return int(_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def port_slice() -> tuple[int, int]:
    """`NETBROKER_PORT_SLICE=i/n`: pick only ports p with p % n == i. Several pickers on
    one host that each pick then bind later (test sessions run side by side, each with
    its clusters) can then never pick the same port; (0, 1), every port, without it."""
    raw = os.environ.get("NETBROKER_PORT_SLICE", "")
    index, _, count = raw.partition("/")
    if index.isdigit() and count.isdigit() and int(index) < int(count):
        return int(index), int(count)
    return 0, 1


def listen_ports(count: int, avoid: Collection[int] = (), host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free on `host` now, below the ephemeral range and not in
    `avoid` (ports others mean to bind soon), in this process's `port_slice`. Raises
    OSError if none can be found."""
    top = ephemeral_start()
    index, slices = port_slice()
    if top <= LOWEST + count * slices + slices:
        raise OSError(f"no port range below the ephemeral ports (they start at {top})")
    rng = random.SystemRandom()
    picked: list[int] = []
    with contextlib.ExitStack() as stack:
        for _ in range(count * 50 + 200):
            port = rng.randrange(LOWEST, top - slices)
            port += (index - port) % slices
            if port in avoid or port in picked:
                continue
            sock = stack.enter_context(socket.socket())
            try:
                sock.bind((host, port))
            except OSError:
                continue
            picked.append(port)
            if len(picked) == count:
                return picked
    raise OSError(f"found no {count} free ports between {LOWEST} and {top}")


def listen_port(host: str = "127.0.0.1") -> int:
    return listen_ports(1, host=host)[0]
