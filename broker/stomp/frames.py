"""The STOMP frame codec, with no I/O: bytes in, frames or a protocol error out; frames
in, bytes out.

A frame is a command line, header lines, a blank line, a body and a NUL. Lines end with
`\\n` or `\\r\\n`; EOLs between frames are heart-beats. A `content-length` header makes
the body binary (it may hold NULs). Header values are escaped (`\\\\ \\n \\r \\c`) from
STOMP 1.1 on, except in CONNECT and CONNECTED; 1.0 has no escaping. Every part of a
frame is bounded (header block, header count, header length, body), and a frame past a
bound is a `ProtocolError` as soon as the bound is crossed, so no input is buffered
without limit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

CLIENT_COMMANDS = frozenset(
    {
        "CONNECT",
        "STOMP",
        "SEND",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "ACK",
        "NACK",
        "BEGIN",
        "COMMIT",
        "ABORT",
        "DISCONNECT",
    }
)
SERVER_COMMANDS = frozenset({"CONNECTED", "MESSAGE", "RECEIPT", "ERROR"})
# Frames that may carry a body; every other one must not.
WITH_BODY = frozenset({"SEND", "MESSAGE", "ERROR"})
# Frames whose headers are never escaped, in any version.
UNESCAPED = frozenset({"CONNECT", "STOMP", "CONNECTED"})

HEARTBEAT = b"\n"


class ProtocolError(Exception):
    """A frame that breaks the protocol or a limit; `receipt` is the frame's `receipt`
    header when it was read before the error (the ERROR names it)."""

    def __init__(self, message: str, receipt: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.receipt = receipt


@dataclass(slots=True)
class Frame:
    command: str
    # The first occurrence of a repeated header wins (as the specification says).
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Limits:
    # The command line and headers of one frame, in bytes.
    max_header_block: int = 64 * 1024
    max_headers: int = 128
    # One header line, name and value, in bytes.
    max_header_length: int = 8 * 1024
    max_body: int = 4 * 1024 * 1024


class Escaping:
    """Which header escapes a connection's version defines."""

    NONE = 0  # STOMP 1.0
    V11 = 1  # \\ \n \c
    V12 = 2  # and \r


_UNESCAPES = {
    Escaping.V11: {"\\\\": "\\", "\\n": "\n", "\\c": ":"},
    Escaping.V12: {"\\\\": "\\", "\\n": "\n", "\\c": ":", "\\r": "\r"},
}
_ESCAPE_SEQ = re.compile(r"\\(.|$)", re.DOTALL)
_NEEDS_ESCAPE = re.compile(r"[\\\n\r:]")
_ESCAPE_TABLE = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", ":": "\\c"})
_ESCAPE_TABLE_11 = str.maketrans({"\\": "\\\\", "\n": "\\n", ":": "\\c", "\r": ""})


def unescape(value: str, escaping: int) -> str:
    """A header value as sent, unescaped; an escape the version does not define is an error."""
    table = _UNESCAPES[escaping]

    def one(match: re.Match[str]) -> str:
        seq = match.group(0)
        plain = table.get(seq)
        if plain is None:
            raise ProtocolError(f"undefined escape sequence {seq!r} in a header")
        return plain

    return _ESCAPE_SEQ.sub(one, value)


def escape(value: str, escaping: int) -> str:
    if not _NEEDS_ESCAPE.search(value):
        return value
    if escaping == Escaping.V12:
        return value.translate(_ESCAPE_TABLE)
    if escaping == Escaping.V11:
        return value.translate(_ESCAPE_TABLE_11)
    # 1.0 cannot carry a line end in a header at all.
    return value.replace("\r", "").replace("\n", " ")


def encode(
    command: str, headers: Iterable[tuple[str, str]], body: bytes = b"", escaping: int = 2
) -> bytes:
    """One frame as bytes. Header values are escaped as `escaping` says (never in
    CONNECTED); a body always goes with its `content-length`, so it may be binary."""
    lines = [command]
    if command in UNESCAPED:
        escaping = Escaping.NONE
    if escaping == Escaping.NONE:
        lines.extend(f"{escape(k, 0)}:{escape(v, 0)}" for k, v in headers)
    else:
        lines.extend(f"{escape(k, escaping)}:{escape(v, escaping)}" for k, v in headers)
    if body or command in WITH_BODY:
        lines.append(f"content-length:{len(body)}")
    lines.append("\n")
    return "\n".join(lines).encode() + body + b"\0"


class FrameParser:
    """Frames from a byte stream, fed in pieces as they arrive.

    `escaping` follows the connection's negotiated version (set it after CONNECTED);
    until then only CONNECT/STOMP are expected, which are never escaped."""

    def __init__(self, limits: Limits, commands: frozenset[str] = CLIENT_COMMANDS) -> None:
        self.limits = limits
        self.commands = commands
        self.escaping = Escaping.NONE
        self._buf = bytearray()
        # A frame whose headers are read, waiting for its body: the frame, where its body
        # starts, and its content-length (-1: up to the NUL).
        self._partial: tuple[Frame, int, int] | None = None
        # Where the search for the NUL of a body without content-length goes on.
        self._scanned = 0
        # Where the unread part of the buffer starts.
        self._pos = 0

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> list[Frame]:
        """The frames completed by `data`; raises ProtocolError at the first bad one."""
        self.append(data)
        frames: list[Frame] = []
        while (frame := self.next()) is not None:
            frames.append(frame)
        return frames

    def append(self, data: bytes) -> None:
        self._buf += data

    def next(self) -> Frame | None:
        """The next complete frame, or None until more bytes come. One at a time, so
        that the escaping may change after CONNECT for the frames behind it."""
        buf = self._buf
        end = len(buf)
        pos = self._pos
        partial = self._partial
        if partial is None:
            if pos >= end:
                self._compact()
                return None
            if buf[pos] in (10, 13):
                # Heart-beats and the EOLs that may follow a frame's NUL.
                while pos < end and buf[pos] in (10, 13):
                    if buf[pos] == 13 and (pos + 1 >= end or buf[pos + 1] != 10):
                        if pos + 1 >= end:
                            break  # a CR whose LF has not come yet
                        raise ProtocolError("a carriage return not followed by a line feed")
                    pos += 1
                self._pos = pos
                if pos >= end or (buf[pos] == 13 and pos + 1 >= end):
                    self._compact()
                    return None
            limit = self.limits.max_header_block
            # Searched no further than a header block may reach (the buffer may hold many
            # frames behind this one), and the CRLF form only before the LF form's end.
            reach = pos + limit + 3
            if reach > end:
                reach = end
            stop = buf.find(b"\n\n", pos, reach)
            if stop != -1 and buf.find(b"\r", pos, stop) == -1:
                head_end, body_start = stop, stop + 2
            else:
                crlf = buf.find(b"\n\r\n", pos, reach if stop == -1 else stop + 1)
                if crlf != -1 and (stop == -1 or crlf < stop):
                    head_end, body_start = crlf, crlf + 3
                elif stop != -1:
                    head_end, body_start = stop, stop + 2
                else:
                    if end - pos > limit:
                        raise ProtocolError(f"frame headers over {limit} bytes")
                    self._pos = pos
                    self._compact()
                    return None
            if head_end - pos > limit:
                raise ProtocolError(f"frame headers over {limit} bytes")
            frame, length = self._head(bytes(buf[pos:head_end]))
            if length >= 0:
                # The common case, the whole frame here: no partial state kept.
                body_end = body_start + length
                if end > body_end:
                    if buf[body_end] != 0:
                        raise ProtocolError(
                            f"{frame.command} frame: no NUL after its content-length of "
                            f"{length} bytes",
                            frame.headers.get("receipt"),
                        )
                    if length:
                        if frame.command not in WITH_BODY:
                            raise ProtocolError(
                                f"{frame.command} frame must not have a body",
                                frame.headers.get("receipt"),
                            )
                        frame.body = bytes(buf[body_start:body_end])
                    self._pos = body_end + 1
                    return frame
            partial = self._partial = (frame, body_start, length)
            self._scanned = body_start
            self._pos = pos
        frame, body_start, length = partial
        limits = self.limits
        if length >= 0:
            if end < body_start + length + 1:
                self._compact()
                return None
            if buf[body_start + length] != 0:
                raise ProtocolError(
                    f"{frame.command} frame: no NUL after its content-length of {length} bytes",
                    frame.headers.get("receipt"),
                )
            body_end = body_start + length
        else:
            body_end = buf.find(b"\0", self._scanned)
            if body_end == -1:
                if end - body_start > limits.max_body:
                    raise ProtocolError(
                        f"{frame.command} frame: body over the limit of {limits.max_body} bytes",
                        frame.headers.get("receipt"),
                    )
                self._scanned = end
                self._compact()
                return None
        if body_end > body_start:
            if frame.command not in WITH_BODY:
                raise ProtocolError(
                    f"{frame.command} frame must not have a body", frame.headers.get("receipt")
                )
            frame.body = bytes(buf[body_start:body_end])
        self._partial = None
        self._pos = body_end + 1
        return frame

    def _compact(self) -> None:
        """Drop what was consumed (once per batch of input, not per frame)."""
        pos = self._pos
        if pos:
            del self._buf[:pos]
            self._pos = 0
            if self._partial is not None:
                frame, body_start, length = self._partial
                self._partial = (frame, body_start - pos, length)
            self._scanned = max(0, self._scanned - pos)

    def _head(self, block: bytes) -> tuple[Frame, int]:
        limits = self.limits
        try:
            text = block.decode()
        except UnicodeDecodeError:
            raise ProtocolError("frame headers are not valid UTF-8") from None
        lines = text.split("\n")
        command = lines[0]
        headers: dict[str, str] | None = None
        # Most frames have no CR, no escape, no line over the limit and no repeated or
        # malformed header: those take one C-level pass. Anything else takes the
        # general path, which gives the same frame or names what is wrong.
        if (
            command in self.commands
            and len(block) <= limits.max_header_length
            and len(lines) - 1 <= limits.max_headers
            and "\r" not in text
            and ("\\" not in text or command in UNESCAPED or not self.escaping)
        ):
            try:
                pairs = [line.split(":", 1) for line in lines[1:]]
                fast = dict(pairs)  # pairs of two, else ValueError
            except ValueError:
                pass
            else:
                if len(fast) == len(pairs) and "" not in fast:
                    headers = fast
        if headers is None:
            command, headers = self._head_general(lines)
        length = -1
        raw = headers.get("content-length")
        if raw is not None:
            receipt = headers.get("receipt")
            if not raw.isdigit() or not raw.isascii() or len(raw) > 12:
                raise ProtocolError(
                    f"{command} frame: content-length {raw[:20]!r} is not a number", receipt
                )
            length = int(raw)
            if length > limits.max_body:
                raise ProtocolError(
                    f"{command} frame: content-length {length} over the limit of "
                    f"{limits.max_body} bytes",
                    receipt,
                )
        return Frame(command, headers), length

    def _head_general(self, lines: list[str]) -> tuple[str, dict[str, str]]:
        limits = self.limits
        command = lines[0].removesuffix("\r")
        if command not in self.commands:
            shown = command if len(command) <= 40 else command[:40] + "..."
            raise ProtocolError(f"unknown command {shown!r}")
        if len(lines) - 1 > limits.max_headers:
            raise ProtocolError(
                f"{command} frame has {len(lines) - 1} headers, over the limit of "
                f"{limits.max_headers}"
            )
        escaping = Escaping.NONE if command in UNESCAPED else self.escaping
        headers: dict[str, str] = {}
        errors: list[str] = []
        for line in lines[1:]:
            line = line.removesuffix("\r")
            if len(line) > limits.max_header_length:
                errors.append(
                    f"a header of {len(line)} characters, over the limit of "
                    f"{limits.max_header_length}"
                )
                continue
            name, colon, value = line.partition(":")
            if not colon:
                errors.append(f"header line without a colon: {line[:40]!r}")
                continue
            if not name:
                errors.append("a header with an empty name")
                continue
            if escaping and ("\\" in name or "\\" in value):
                try:
                    name = unescape(name, escaping)
                    value = unescape(value, escaping)
                except ProtocolError as exc:
                    errors.append(exc.message)
                    continue
            if name not in headers:
                headers[name] = value
        if errors:
            raise ProtocolError(f"{command} frame: {errors[0]}", headers.get("receipt"))
        return command, headers
