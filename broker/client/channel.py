"""A connection to one broker (its channel and stubs), and whether a broker's status says
it serves clients."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from broker.pb import admin_pb2, admin_pb2_grpc, client_pb2_grpc

# Roles (StatusResponse.role_kind) of a broker that does not take clients.
_REFUSING_ROLES = frozenset({admin_pb2.ROLE_SLAVE, admin_pb2.ROLE_ELECTING})


def _refusal(status: admin_pb2.StatusResponse) -> str | None:
    """Why a broker's status says it does not serve clients now, or None if it does."""
    if status.role_kind in _REFUSING_ROLES or status.refusal:
        return status.refusal or f"broker {status.name!r} is {status.role}"
    return None


@dataclass(eq=False)
class _Connection:
    """A channel to one broker that serves clients, with its two stubs."""

    address: str
    channel: grpc.aio.Channel
    broker: client_pb2_grpc.BrokerStub
    admin: admin_pb2_grpc.AdminStub
    # Sent with every call: the client's credentials, if it has any.
    metadata: tuple[tuple[str, str], ...] = ()
