"""masterslave.liveness against real sockets: only a refused connection says "gone"."""

from __future__ import annotations

import asyncio
import socket

from masterslave.liveness import gone, refused


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_a_port_nobody_listens_on_is_refused() -> None:
    port = closed_port()
    assert asyncio.run(refused(f"127.0.0.1:{port}")) is True
    assert asyncio.run(gone(f"127.0.0.1:{port}")) is True


def test_a_listener_that_never_accepts_is_not_refused() -> None:
    # A frozen process: its kernel still completes the handshake into the backlog.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        address = f"127.0.0.1:{s.getsockname()[1]}"
        assert asyncio.run(refused(address)) is False
        assert asyncio.run(gone(address, probes=2, spacing=0)) is False


def test_a_listener_closing_between_probes_is_gone() -> None:
    # The dying process's listening socket may close a moment after its streams did.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    address = f"127.0.0.1:{s.getsockname()[1]}"

    async def scenario() -> bool:
        asyncio.get_running_loop().call_later(0.02, s.close)
        return await gone(address, probes=10, spacing=0.01)

    try:
        assert asyncio.run(scenario()) is True
    finally:
        s.close()


def test_a_bad_address_is_not_refused() -> None:
    assert asyncio.run(refused("not an address")) is False


def test_a_name_is_refused_only_when_every_address_it_stands_for_refuses() -> None:
    port = closed_port()
    assert asyncio.run(refused(f"localhost:{port}")) is True
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        # "localhost" may also be ::1, where nothing listens: 127.0.0.1 answers.
        assert asyncio.run(refused(f"localhost:{s.getsockname()[1]}")) is False
