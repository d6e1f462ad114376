"""The error a security file or topology section is refused with."""

from __future__ import annotations


class SecurityError(ValueError):
    """A refused setting: `FILE: KEY: reason` (the key is a dotted path, `users.0.hash`).
    Never carries a secret: reasons name what is wrong, not the value."""

    def __init__(self, key: str, reason: str, source: str = "") -> None:
        self.key = key
        self.reason = reason
        self.source = source
        super().__init__(": ".join(p for p in (source, key, reason) if p))

    def within(self, source: str, prefix: str = "") -> SecurityError:
        key = ".".join(p for p in (prefix, self.key) if p)
        return SecurityError(key, self.reason, source)
