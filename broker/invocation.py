"""The command an operator types to run netbroker, for the hints messages give.

`netbroker` where it is on PATH. Run from a checkout, `scripts/netbroker` sets
`NETBROKER_PROG` to the path it was run as, so a hint such as `scripts/netbroker status
topologies/ab_c.yaml` works when pasted; the venv's own script, run by its path, names
that path.
"""

from __future__ import annotations

import os
import shutil
import sys


def prog() -> str:
    explicit = os.environ.get("NETBROKER_PROG")
    if explicit:
        return explicit
    if shutil.which("netbroker") is None and os.path.basename(sys.argv[0]) == "netbroker":
        return sys.argv[0]
    return "netbroker"


def command(*words: str) -> str:
    """The command line that runs `netbroker WORDS...` from here."""
    return " ".join([prog(), *words])
