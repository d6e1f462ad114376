"""Ports picked to be bound later come from below the ephemeral range (where the kernel
never puts an outgoing connection's source port), distinct and free."""

from __future__ import annotations

import socket

import pytest

from broker.ports import LOWEST, ephemeral_start, listen_ports, port_slice


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


def test_a_port_slice_keeps_side_by_side_pickers_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    # Test sessions run side by side (scripts/test runs two) each pick in their slice.
    for index in range(3):
        monkeypatch.setenv("NETBROKER_PORT_SLICE", f"{index}/3")
        assert port_slice() == (index, 3)
        ports = listen_ports(50)
        assert all(p % 3 == index and LOWEST <= p < ephemeral_start() for p in ports)
    for bad in ("", "3/3", "x/2", "1"):
        monkeypatch.setenv("NETBROKER_PORT_SLICE", bad)
        assert port_slice() == (0, 1)
