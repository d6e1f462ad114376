"""A failover client keeps asking a group member that is electing, however the dead
master's address fails.

After a master dies its address refuses connections while the other member is still
electing; the client must go on asking that member at least every `ELECTING_POLL` or so
(docs/semantics.md, "Finding the master"), or it reaches the new master long after it
was elected. The electing member is a small gRPC server that answers Status and counts
when it was asked; the dead master is a port nothing listens on.
"""

from __future__ import annotations

import socket
import time

import grpc
import pytest

from broker.client import Client, ConnectionLost
from broker.client.limits import ELECTING_POLL
from broker.pb import admin_pb2
from tests.support.aio import run
from tests.support.stand_ins import admin_status, serve


class ElectingMember:
    """Answers every Status with "electing" and records when it was asked."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def status(
        self, request: admin_pb2.StatusRequest, context: object
    ) -> admin_pb2.StatusResponse:
        self.asked.append(time.monotonic())
        return admin_pb2.StatusResponse(
            name="c",
            role="electing",
            role_kind=admin_pb2.ROLE_ELECTING,
            refusal="broker c in group B is not serving: waiting for ZooKeeper",
        )

    async def serve(self) -> tuple[grpc.aio.Server, str]:
        return await serve(admin_status(self.status))


def dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_an_electing_member_is_asked_again_often_beside_a_dead_master() -> None:
    async def scenario() -> None:
        electing = ElectingMember()
        server, address = await electing.serve()
        try:
            # The dead master first, as a client that was connected to it retries it.
            url = f"failover:({dead_address()},{address})?timeout=2000"
            with pytest.raises(ConnectionLost):
                await Client.connect(url)
        finally:
            await server.stop(0)
        gaps = [b - a for a, b in zip(electing.asked, electing.asked[1:], strict=False)]
        print(f"asked {len(electing.asked)} times; longest gap {max(gaps):.3f}s")
        # One pause before the dead address and one before the electing member, each
        # at most ELECTING_POLL, plus the probes themselves and room for a loaded
        # machine. (Growing the pause after each refusal of the dead address left gaps
        # of 0.74 s and more.)
        assert max(gaps) < 2 * ELECTING_POLL + 0.3, gaps
        assert len(electing.asked) >= 8

    run(scenario(), timeout=30)
