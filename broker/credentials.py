"""A client's credentials as call metadata, and where the CLI finds a password.

Passwords never come from the command line, where `ps` shows them to every user of the
machine: `NETBROKER_PASSWORD`, a file only its owner can read (`--password-file`), or a
URL's `user:password@` (which does show in `ps` when the URL is an argument).
"""

from __future__ import annotations

import base64
import os

# The metadata key the broker reads them from (broker/server/guard.py).
METADATA_KEY = "authorization"
PASSWORD_ENV = "NETBROKER_PASSWORD"
USER_ENV = "NETBROKER_USER"


def credentials_metadata(user: str, password: str) -> tuple[tuple[str, str], ...]:
    """HTTP Basic credentials as gRPC metadata; () without a user."""
    if not user:
        return ()
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return ((METADATA_KEY, f"Basic {token}"),)


def environment_metadata() -> tuple[tuple[str, str], ...]:
    """The credentials `NETBROKER_USER` and `NETBROKER_PASSWORD` name, as metadata (what
    `up`, `status` and the console present to brokers with users); () without a user."""
    return credentials_metadata(os.environ.get(USER_ENV, ""), os.environ.get(PASSWORD_ENV, ""))
