"""The console's HTTP, decided without I/O: a request head parsed within bounds, its
route, the cross-site guard on purge, and the bytes of responses and Server-Sent Events.

Only what the page needs: GET and POST, HTTP/1.1 (or 1.0), one request per connection
(`Connection: close`), bodies by Content-Length only, at most MAX_BODY bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

# Bounds on what a client may send: a head (request line and headers) and a body.
MAX_HEAD = 8192
MAX_BODY = 4096
MAX_HEADERS = 64
# The header a purge must carry. A page on another site can send a cross-origin POST
# but not a custom header without a CORS preflight, which this server never grants.
GUARD_HEADER = "x-netbroker-console"
# How many messages a browse may ask for.
MAX_BROWSE = 500
DEFAULT_BROWSE = 50

STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/console.css": ("console.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}

class HttpError(Exception):
    """A request refused with `status`; `reason` is the sentence the client gets."""

    def __init__(self, status: int, reason: str, allow: str = "") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.allow = allow


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    # Lower-case names; a repeated header keeps its last value.
    headers: dict[str, str] = field(default_factory=dict)

    def body_length(self) -> int:
        """How many body bytes follow the head; refuses what this server does not take."""
        if "transfer-encoding" in self.headers:
            raise HttpError(411, "send the body with a Content-Length, not chunked")
        text = self.headers.get("content-length")
        if text is None:
            if self.method == "POST":
                raise HttpError(411, "a POST needs a Content-Length")
            return 0
        if not text.isdigit():
            raise HttpError(400, f"bad Content-Length {text!r}")
        n = int(text)
        if n > MAX_BODY:
            raise HttpError(413, f"a body may have at most {MAX_BODY} bytes, this has {n}")
        return n


def parse_head(head: bytes) -> Request:
    """The request line and headers (without the blank line that ends them)."""
    if len(head) > MAX_HEAD:
        raise HttpError(431, f"the request head is over {MAX_HEAD} bytes")
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "the request head is not ASCII") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, f"bad request line {lines[0][:100]!r}")
    method, target, _version = parts
    if not target.startswith("/"):
        raise HttpError(400, "the request target must be a path")
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, f"bad header line {line[:100]!r}")
        headers[name.lower()] = value.strip()
    url = urlsplit(target)
    return Request(method, url.path, parse_qs(url.query), headers)


# ----------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Static:
    file: str
    content_type: str


@dataclass(frozen=True)
class State:
    pass


@dataclass(frozen=True)
class Events:
    pass


@dataclass(frozen=True)
class Browse:
    broker: str
    queue: str
    limit: int


@dataclass(frozen=True)
class Purge:
    broker: str


Route = Static | State | Events | Browse | Purge


def _only(req: Request, method: str) -> None:
    if req.method != method:
        raise HttpError(405, f"{req.path} takes {method} only", allow=method)


def route(req: Request) -> Route:
    """What the request asks for; 404 or 405 when nothing here answers it."""
    if req.path in STATIC:
        _only(req, "GET")
        return Static(*STATIC[req.path])
    if req.path == "/api/state":
        _only(req, "GET")
        return State()
    if req.path == "/api/events":
        _only(req, "GET")
        return Events()
    parts = req.path.split("/")
    # /api/brokers/B/queues/Q/messages and /api/brokers/B/purge
    api = parts[:3] == ["", "api", "brokers"]
    if api and len(parts) == 7 and (parts[4], parts[6]) == ("queues", "messages"):
        _only(req, "GET")
        return Browse(unquote(parts[3]), unquote(parts[5]), _limit(req))
    if api and len(parts) == 5 and parts[4] == "purge":
        _only(req, "POST")
        return Purge(unquote(parts[3]))
    raise HttpError(404, f"nothing at {req.path}")


def _limit(req: Request) -> int:
    values = req.query.get("limit")
    if not values:
        return DEFAULT_BROWSE
    text = values[-1]
    if not text.isdigit() or not 1 <= int(text) <= MAX_BROWSE:
        raise HttpError(400, f"limit must be an integer 1-{MAX_BROWSE}, got {text!r}")
    return int(text)


def check_host(req: Request, port: int) -> None:
    """Refuse a Host other than this machine's loopback names: a page of another site
    whose name was re-pointed at 127.0.0.1 (DNS rebinding) would otherwise count as this
    console's own origin and read it."""
    host = req.headers.get("host")
    if host is not None and host not in (f"127.0.0.1:{port}", f"localhost:{port}"):
        raise HttpError(403, f"Host {host!r} is not this console (127.0.0.1:{port})")


def check_purge(req: Request, body: bytes, origin: str) -> str:
    """The queue a purge names, once the request has shown it comes from this console's
    own page: the guard header, and an Origin (when the browser sends one) that is
    `origin`. Refuses anything else with 403, 415 or 400."""
    if req.headers.get(GUARD_HEADER) != "1":
        raise HttpError(403, f"a purge needs the header {GUARD_HEADER}: 1 (sent by the console)")
    sent_origin = req.headers.get("origin")
    if sent_origin is not None and sent_origin != origin:
        raise HttpError(403, f"a purge from {sent_origin} is refused: only {origin} may")
    if req.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise HttpError(415, "send the purge as application/json")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "the body is not JSON") from None
    queue = data.get("queue") if isinstance(data, dict) else None
    if not isinstance(queue, str) or not queue:
        raise HttpError(400, 'expected {"queue": NAME} with a non-empty queue name')
    return queue


# ----------------------------------------------------------------------- responses


def response(
    status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
) -> bytes:
    headers = {
        "Content-Type": content_type,
        "Content-Length": str(len(body)),
        "Connection": "close",
        "Cache-Control": "no-store",
        # Nothing of the page may come from elsewhere, nor the page be framed elsewhere.
        "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff",
        **(extra or {}),
    }
    head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("ascii") + b"\r\n" + body


def json_response(status: int, data: Any) -> bytes:
    return response(status, json.dumps(data).encode(), "application/json")


def error_response(e: HttpError) -> bytes:
    extra = {"Allow": e.allow} if e.allow else None
    body = json.dumps({"error": e.reason}).encode()
    return response(e.status, body, "application/json", extra)


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-store\r\n"
    b"Connection: close\r\n"
    b"X-Content-Type-Options: nosniff\r\n"
    b"\r\n"
)


def sse(event: str, data: Any) -> bytes:
    """One Server-Sent Event; JSON has no raw newlines, so the data is one line."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()
