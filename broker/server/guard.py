"""Authentication and permissions of gRPC calls: credentials from call metadata.

A client presents `authorization: Basic base64(user:password)` on every call; the guard
asks the `Authenticator` (which remembers what it verified, so a call costs a dict
lookup) and ends a refused call with UNAUTHENTICATED, a forbidden operation with
PERMISSION_DENIED naming the operation and the destination. Without a users file the
guard lets everything through, as before there were users.
"""

from __future__ import annotations

import base64
import binascii

import grpc

from broker.credentials import METADATA_KEY
from broker.security.authenticator import AuthenticationError, Authenticator
from broker.security.authorization import Operation
from broker.security.principal import Principal, denial


class CallGuard:
    def __init__(self, authenticator: Authenticator | None = None) -> None:
        self.authenticator = authenticator

    async def principal(self, context: grpc.aio.ServicerContext) -> Principal | None:
        """Who the call is from (None: security is off); aborts with UNAUTHENTICATED."""
        authenticator = self.authenticator
        if authenticator is None:
            return None
        try:
            user, password = credentials(context.invocation_metadata() or ())
            if user:
                found = authenticator.cached(user, password)
                if found is not None:
                    return found
            return await authenticator.authenticate(user, password, peer_host(context.peer()))
        except AuthenticationError as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)
            raise AssertionError("unreachable: abort raises") from None

    async def require(
        self,
        context: grpc.aio.ServicerContext,
        principal: Principal | None,
        op: Operation,
        topic: bool,
        destination: str,
    ) -> None:
        """Abort with PERMISSION_DENIED unless `principal` may do `op` on `destination`."""
        if principal is not None and not principal.may(op, topic, destination):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, denial(op, topic, destination, principal)
            )


def credentials(metadata: object) -> tuple[str, str]:
    """(user, password) from call metadata; ("", "") when there are none."""
    for item in metadata:  # type: ignore[attr-defined]
        key, value = item[0], item[1]
        if key != METADATA_KEY:
            continue
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        scheme, _, encoded = value.partition(" ")
        if scheme.lower() != "basic":
            raise AuthenticationError("authentication failed: expected Basic credentials")
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthenticationError("authentication failed: malformed credentials") from None
        if not sep:
            raise AuthenticationError("authentication failed: malformed credentials")
        return user, password
    return "", ""


def peer_host(peer: str) -> str:
    """The host part of gRPC's peer string (ipv4:127.0.0.1:5000): failures count per host."""
    address = peer.partition(":")[2] or peer
    return address.rsplit(":", 1)[0] if ":" in address else address
