"""The STOMP frame codec, directly: frames in pieces, binary bodies, escaping per
version, heart-beats, and every malformed or oversized frame as a ProtocolError."""

from __future__ import annotations

import pytest

from broker.stomp.frames import (
    SERVER_COMMANDS,
    Escaping,
    FrameParser,
    Limits,
    ProtocolError,
    encode,
    escape,
    unescape,
)


def _parser(escaping: int = Escaping.V12, **limits: int) -> FrameParser:
    parser = FrameParser(Limits(**limits))
    parser.escaping = escaping
    return parser


def test_a_frame_with_headers_and_body() -> None:
    frames = _parser().feed(b"SEND\ndestination:/queue/a\nx:1\n\nhello\0")
    assert len(frames) == 1
    assert frames[0].command == "SEND"
    assert frames[0].headers == {"destination": "/queue/a", "x": "1"}
    assert frames[0].body == b"hello"


def test_crlf_line_ends_and_heartbeats_between_frames() -> None:
    data = b"\r\n\n\nSEND\r\ndestination:a\r\n\r\nbody\0\r\n\nDISCONNECT\r\n\r\n\0\n"
    frames = _parser().feed(data)
    assert [f.command for f in frames] == ["SEND", "DISCONNECT"]
    assert frames[0].headers == {"destination": "a"}
    assert frames[0].body == b"body"


def test_fed_one_byte_at_a_time() -> None:
    data = b"SEND\ndestination:a\ncontent-length:3\n\n\0\0\0\0\nSEND\ndestination:b\n\nxy\0"
    parser = _parser()
    frames = []
    for i in range(len(data)):
        frames.extend(parser.feed(data[i : i + 1]))
    assert [(f.headers["destination"], f.body) for f in frames] == [("a", b"\0\0\0"), ("b", b"xy")]
    assert parser.buffered == 0


def test_binary_body_with_nuls_by_content_length() -> None:
    body = bytes(range(256)) * 4
    frames = _parser().feed(encode("SEND", [("destination", "a")], body) + b"\n")
    assert frames[0].body == body


def test_first_of_a_repeated_header_wins() -> None:
    frames = _parser().feed(b"SEND\ndestination:a\nx:first\nx:second\n\n\0")
    assert frames[0].headers["x"] == "first"


@pytest.mark.parametrize(
    "value", ["plain", "a:b", "line\nbreak", "back\\slash", "cr\rlf", ":\\\n\r:", ""]
)
def test_escaping_round_trip_in_12(value: str) -> None:
    data = encode("MESSAGE", [("k:" + value, value)], b"", Escaping.V12)
    parser = FrameParser(Limits(), SERVER_COMMANDS)
    parser.escaping = Escaping.V12
    frame = parser.feed(data)[0]
    assert frame.headers["k:" + value] == value


def test_11_has_no_cr_escape() -> None:
    assert unescape("a\\nb\\cc\\\\", Escaping.V11) == "a\nb:c\\"
    with pytest.raises(ProtocolError, match="undefined escape"):
        unescape("a\\rb", Escaping.V11)
    assert unescape("a\\rb", Escaping.V12) == "a\rb"


def test_10_and_connect_are_not_unescaped() -> None:
    frame = _parser(Escaping.NONE).feed(b"SEND\ndestination:a\nx:a\\nb\n\n\0")[0]
    assert frame.headers["x"] == "a\\nb"
    frame = _parser(Escaping.V12).feed(b"CONNECT\nlogin:a\\qb\n\n\0")[0]
    assert frame.headers["login"] == "a\\qb"
    # And CONNECTED is never escaped on the way out.
    assert b"a:b" in encode("CONNECTED", [("x", "a:b")])
    assert escape("a\nb", Escaping.NONE) == "a b"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"FROB\n\n\0", "unknown command 'FROB'"),
        (b"send\ndestination:a\n\n\0", "unknown command"),
        (b"MESSAGE\n\n\0", "unknown command"),  # a server frame from a client
        (b"SEND\ndestination\n\n\0", "without a colon"),
        (b"SEND\n:value\n\n\0", "empty name"),
        (b"SEND\nx:a\\tb\n\n\0", "undefined escape sequence"),
        (b"SEND\nx:trailing\\\n\n\0", "undefined escape sequence"),
        (b"SEND\ncontent-length:abc\n\n\0", "not a number"),
        (b"SEND\ncontent-length:-1\n\n\0", "not a number"),
        (b"SEND\ncontent-length:2\n\nabc\0", "no NUL after its content-length"),
        (b"SUBSCRIBE\nid:1\n\nbody\0", "must not have a body"),
        (b"SEND\nx:\xff\xfe\n\n\0", "not valid UTF-8"),
        (b"\rSEND\n\n\0", "carriage return"),
    ],
)
def test_malformed_frames(data: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        _parser().feed(data)


def test_a_bad_frame_names_its_receipt() -> None:
    with pytest.raises(ProtocolError) as caught:
        _parser().feed(b"SUBSCRIBE\nreceipt:r7\nid:1\n\nbody\0")
    assert caught.value.receipt == "r7"


def test_limits_each_an_error_never_a_wait() -> None:
    # Headers that never end: refused once past the header block's bound.
    parser = _parser(max_header_block=1024)
    parser.feed(b"SEND\n")
    with pytest.raises(ProtocolError, match="frame headers over 1024 bytes"):
        for _ in range(100):
            parser.feed(b"x:" + b"y" * 30 + b"\n")
    with pytest.raises(ProtocolError, match="over the limit of 3"):
        _parser(max_headers=3).feed(b"SEND\na:1\nb:2\nc:3\nd:4\n\n\0")
    with pytest.raises(ProtocolError, match="a header of 21 characters"):
        _parser(max_header_length=20).feed(b"SEND\nx:" + b"y" * 19 + b"\n\n\0")
    with pytest.raises(ProtocolError, match="content-length 11 over the limit of 10"):
        _parser(max_body=10).feed(b"SEND\ncontent-length:11\n\n")
    # A body without content-length that never ends: refused once past the bound.
    parser = _parser(max_body=100)
    parser.feed(b"SEND\ndestination:a\n\n")
    with pytest.raises(ProtocolError, match="body over the limit of 100"):
        for _ in range(20):
            parser.feed(b"z" * 10)
    # Garbage without a line end at all.
    with pytest.raises(ProtocolError, match="frame headers over"):
        _parser(max_header_block=64).feed(b"G" * 65)


def test_partial_frames_are_kept_until_complete() -> None:
    parser = _parser()
    assert parser.feed(b"SEND\ndestination:a\ncontent-length:5\n\nab") == []
    assert parser.feed(b"cde") == []
    frames = parser.feed(b"\0SEND\ndestination:b\n\n")
    assert [f.body for f in frames] == [b"abcde"]
    assert [f.body for f in parser.feed(b"end\0")] == [b"end"]
    assert parser.buffered == 0


def test_encode_sets_content_length_and_nul() -> None:
    data = encode("MESSAGE", [("a", "1")], b"x\0y")
    assert data == b"MESSAGE\na:1\ncontent-length:3\n\nx\0y\0"
    assert encode("RECEIPT", [("receipt-id", "r")]) == b"RECEIPT\nreceipt-id:r\n\n\0"
