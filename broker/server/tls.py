"""gRPC credentials from a broker's TLS material, and the check of a peer broker's
certificate on the bridge and replication ports (mutual TLS)."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from broker.security.tls import TlsMaterial, certificate_refusal, peer_names


def server_credentials(tls: TlsMaterial, *, peers: bool) -> grpc.ServerCredentials:
    """Credentials for a port: `peers` (bridge, replication) require a certificate the
    CA signed; the client port asks none (clients authenticate with users)."""
    return grpc.ssl_server_credentials(
        [(tls.key, tls.cert)], root_certificates=tls.ca, require_client_auth=peers
    )


def peer_channel_credentials(tls: TlsMaterial) -> grpc.ChannelCredentials:
    """Credentials a broker dials another with: it checks the other against the CA and
    presents its own certificate."""
    return grpc.ssl_channel_credentials(tls.ca, tls.key, tls.cert)


def peer_refusal(
    context: grpc.aio.ServicerContext, claimed: str, accepted: Iterable[str], what: str
) -> str | None:
    """Why the calling broker, saying it is `claimed`, is refused as `what` by its
    certificate; None if it is not."""
    return certificate_refusal(peer_names(context.auth_context()), claimed, accepted, what)
