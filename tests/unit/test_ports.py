"""Ports picked to be bound later come from below the ephemeral range (where the kernel
never puts an outgoing connection's source port), distinct and free."""

from __future__ import annotations

import socket

from broker.ports import LOWEST, ephemeral_start, listen_ports


def test_ports_are_below_the_ephemeral_range_distinct_and_free() -> None:
    ports = listen_ports(20, avoid=())
    assert len(set(ports)) == 20
    assert all(LOWEST <= p < ephemeral_start() for p in ports)
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_in_use_or_to_avoid_is_never_picked() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", listen_ports(1)[0]))
        used = taken.getsockname()[1]
        avoid = set(listen_ports(30))
        for _ in range(20):
            picked = listen_ports(5, avoid=avoid)
            assert used not in picked and not avoid & set(picked)
