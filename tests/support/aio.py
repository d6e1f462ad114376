"""Running a test's coroutine with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def run(coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
    """Run a scenario on a fresh loop with a deadline, so a hang fails instead of stalling."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
