"""Checks credentials: the users file's argon2 hashes, off the event loop, once.

A check costs tens of milliseconds of CPU by design, and gRPC clients present their
credentials on every call: a credential verified once is remembered (by user and a
digest of the password, never the password itself) so that the next call costs a
dict lookup; the check itself (argon2's) is constant-time, and an unknown user costs
one too. Failures are counted per peer host and user (`FailureLimiter`) and logged
without the password.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable

from broker.security.limiter import FailureLimiter
from broker.security.passwords import verify
from broker.security.principal import Principal
from broker.security.settings import ANONYMOUS_GROUP, SecuritySettings

log = logging.getLogger("netbroker.security")

MAX_CACHED = 10_000
# What every refused client is told: it does not say whether the user exists.
FAILED = "authentication failed"


class AuthenticationError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Authenticator:
    def __init__(
        self,
        settings: SecuritySettings,
        limiter: FailureLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.limiter = limiter or FailureLimiter()
        self.clock = clock
        self.anonymous = (
            Principal("anonymous", frozenset({ANONYMOUS_GROUP}), settings.authorization)
            if settings.anonymous_allowed
            else None
        )
        self._verified: dict[tuple[str, bytes], Principal] = {}
        self._checking: dict[tuple[str, bytes], asyncio.Future[bool]] = {}

    def cached(self, user: str, password: str) -> Principal | None:
        """The principal of credentials verified before, without a check (the hot path)."""
        return self._verified.get((user, _digest(user, password)))

    async def authenticate(self, user: str | None, password: str | None, peer: str) -> Principal:
        """The principal the credentials name; AuthenticationError when refused."""
        if not user:
            if self.anonymous is not None:
                return self.anonymous
            # Not a guess, so not counted: a client (or `up`'s probe) that sends no
            # credentials must not lock out the users of its host who do.
            log.info("refused a call from %s without credentials", peer)
            raise AuthenticationError(f"{FAILED}: this broker requires a user and password")
        password = password or ""
        key = (user, _digest(user, password))
        found = self._verified.get(key)
        if found is not None:
            return found
        # Guesses are counted per host and user: one user's failures do not lock out
        # another's logins from the same host.
        who = f"{peer} {user}"
        wait = self.limiter.retry_after(who, self.clock())
        if wait > 0:
            log.warning("refused login of user %r from %s: too many failures", user, peer)
            raise AuthenticationError(f"{FAILED}: too many failures; retry in {wait:.0f} s")
        entry = self.settings.by_name.get(user)
        checking = self._checking.get(key)
        if checking is None:
            # One check at a time per credential: many calls opened at once with the
            # same ones (a client's first producer and consumer) share it.
            checking = asyncio.get_running_loop().run_in_executor(
                None, verify, entry.hash if entry else None, password
            )
            self._checking[key] = checking
            checking.add_done_callback(lambda _f: self._checking.pop(key, None))
        ok = await checking
        if not ok or entry is None:
            self._refused(who, peer, user, "unknown user" if entry is None else "wrong password")
            raise AuthenticationError(FAILED)
        principal = Principal(user, entry.groups, self.settings.authorization)
        if len(self._verified) >= MAX_CACHED:
            self._verified.clear()
        self._verified[key] = principal
        self.limiter.succeeded(who)
        return principal

    def _refused(self, who: str, peer: str, user: str, why: str) -> None:
        self.limiter.failed(who, self.clock())
        log.warning("authentication failed for user %r from %s: %s", user, peer, why)


# Keyed with a secret of this process: the remembered digests are no offline guessing
# aid to whoever reads the broker's memory (a core dump).
_DIGEST_KEY = os.urandom(32)


def _digest(user: str, password: str) -> bytes:
    return hashlib.blake2b(
        f"{len(user)}:{user}:{password}".encode(), key=_DIGEST_KEY, digest_size=32
    ).digest()
