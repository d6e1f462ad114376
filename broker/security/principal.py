"""Who a connection is, and what that lets it do."""

from __future__ import annotations

from dataclasses import dataclass

from broker.security.authorization import AuthorizationMap, Operation


@dataclass(frozen=True)
class Principal:
    name: str
    groups: frozenset[str]
    # The authorization map it is judged by; None: it may do everything.
    authorization: AuthorizationMap | None = None

    def may(self, op: Operation, topic: bool, destination: str) -> bool:
        auth = self.authorization
        return auth is None or auth.allowed(self.groups, op, topic, destination)

    def may_administer(self) -> bool:
        auth = self.authorization
        return auth is None or auth.broker_admin(self.groups)


def denial(op: Operation, topic: bool, destination: str, principal: Principal) -> str:
    """The refusal's words: the operation and the destination, and who was refused."""
    kind = "topic" if topic else "queue"
    return f"permission denied: {op.value} on {kind} {destination!r} for user {principal.name!r}"


# The group a bridge's broker is judged as when an authorization map checks what it
# forwards (docs/security.md): `write` on a destination lets bridges deliver there.
BROKERS_GROUP = "brokers"


def broker_principal(peer: str, authorization: AuthorizationMap | None) -> Principal:
    """The principal a bridge from broker `peer` forwards as."""
    return Principal(f"broker:{peer}", frozenset({BROKERS_GROUP}), authorization)
