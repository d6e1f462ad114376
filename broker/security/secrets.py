"""Secrets read from files that only their owner can read (never from the command line,
where `ps` shows them to everyone on the machine)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_SECRET_BYTES = 64 * 1024


class SecretFileError(ValueError):
    pass


def read_secret(path: Path, what: str = "secret") -> str:
    """The file's text without its trailing newline; refused when group or others may
    read or write it, or when it is empty."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise SecretFileError(
            f"{path}: cannot read the {what} file: {exc.strerror or exc}"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretFileError(
            f"{path}: the {what} file may be read by others (mode {stat.S_IMODE(mode):04o}); "
            f"chmod 600 it"
        )
    if len(data) > MAX_SECRET_BYTES:
        raise SecretFileError(f"{path}: larger than {MAX_SECRET_BYTES} bytes: not a {what} file")
    try:
        text = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise SecretFileError(f"{path}: the {what} file is not UTF-8 text") from None
    if not text:
        raise SecretFileError(f"{path}: the {what} file is empty")
    return text
