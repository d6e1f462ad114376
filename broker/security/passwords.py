"""Password hashes: argon2id through argon2-cffi, with its recommended parameters."""

from __future__ import annotations

import argon2

_hasher = argon2.PasswordHasher()
# Verified against when a user is unknown, so that an unknown name costs what a wrong
# password does and the two cannot be told apart by timing (made on first use: a hash
# costs as much as a check).
_dummy: list[str] = []


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify(hashed: str | None, password: str) -> bool:
    """Whether `password` matches `hashed` (None: an unknown user; always False)."""
    if hashed is None and not _dummy:
        _dummy.append(_hasher.hash("netbroker: no such user"))
    try:
        return _hasher.verify(hashed or _dummy[0], password) and hashed is not None
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False
