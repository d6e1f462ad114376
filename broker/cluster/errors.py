"""What goes wrong in cluster operations: a topology file's problems and up/status/down's.

A `TopologyError` reads `FILE: KEY.PATH: reason` (or `FILE: line N, column M: reason`),
one line an operator can act on; `key_path` writes the KEY.PATH. An `UpError` says what
failed first, later lines may quote a log.
"""

from __future__ import annotations


class TopologyError(Exception):
    """One problem in a topology file, located by key path or by line."""

    def __init__(
        self,
        source: str,
        key: str | None,
        reason: str,
        *,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        self.line = line
        self.column = column
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [self.source]
        if self.line is not None:
            where.append(f"line {self.line}" + (f", column {self.column}" if self.column else ""))
        if self.key:
            where.append(self.key)
        return ": ".join([*where, self.reason])


def key_path(parts: tuple[str | int, ...]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else p
    return out


class UpError(Exception):
    """A failure of up/status/down. The first line says what; later lines may quote a log."""


class Interrupted(Exception):
    """A stop was requested (Ctrl-C, SIGTERM) while brokers were still starting."""
