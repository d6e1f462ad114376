"""The gRPC server a broker listens with."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc

from broker.config import BrokerConfig
from broker.core.broker import now_ms
from broker.errors import StartupError
from broker.pb import admin_pb2
from broker.security.tls import TlsMaterial
from broker.server.admin import AdminService
from broker.server.decode import unary_handlers
from broker.server.gate import ServiceGate
from broker.server.guard import CallGuard
from broker.server.service import install_client_service
from broker.server.tls import server_credentials

# The shortest interval between a peer's pings that the server accepts (below the
# clients' 300 ms, so that timer jitter never counts as a strike).
MIN_PING_INTERVAL_MS = 200

# Adds a plugged-in layer's service (bridges, replication) to the server.
ServiceInstaller = Callable[[grpc.aio.Server], None]


def build_server(
    config: BrokerConfig,
    gate: ServiceGate,
    extra: Sequence[ServiceInstaller] = (),
    guard: CallGuard | None = None,
    tls: TlsMaterial | None = None,
) -> tuple[grpc.aio.Server, int]:
    """A ready-to-start server with the client, admin and `extra` services, and its port.

    With `tls`, the client port is TLS and the bridge port (if any) mutual TLS: the same
    services on both, told apart by whether the caller presented a certificate."""
    options = [
        *config.grpc_options(),
        # Dead clients are noticed within seconds, so their in-flight messages return.
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        # Without it gRPC waits 60 s for a ping answer, whatever keepalive_timeout says.
        ("grpc.http2.ping_timeout_ms", 5_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Clients and bridges ping every 300 ms to notice a frozen broker fast
        # (KEEPALIVE_INTERVAL_MS in broker/reconnect.py): accept that, with or without
        # calls, or gRPC answers GOAWAY too_many_pings and drops healthy connections.
        ("grpc.http2.min_recv_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
        ("grpc.http2.max_ping_strikes", 0),
    ]
    server = grpc.aio.server(options=options)
    install_client_service(server, gate, guard)
    # Decoded in the handlers, so that an undecodable request gets INVALID_ARGUMENT.
    admin = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
    server.add_generic_rpc_handlers(
        (unary_handlers(admin, AdminService(config, gate, now_ms(), guard), admin_pb2),)
    )
    for install in extra:
        install(server)
    port = _bind(server, config.host, config.port, tls, peers=False)
    if tls is not None and config.bridge_port:
        _bind(server, config.host, config.bridge_port, tls, peers=True)
    return server, port


def _bind(
    server: grpc.aio.Server, host: str, port: int, tls: TlsMaterial | None, *, peers: bool
) -> int:
    address = f"{host}:{port}"
    try:
        if tls is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, server_credentials(tls, peers=peers))
    except RuntimeError as exc:
        raise StartupError(f"cannot listen on {address}: port in use or not bindable") from exc
    if bound == 0:
        raise StartupError(f"cannot listen on {address}: port in use or not bindable")
    return bound
