"""The console's HTTP decisions (broker/console/http.py): request heads parsed within
bounds, routes, the purge guard against cross-site requests, and the bytes sent back;
and a browsed message as the page shows it (broker/console/messages.py)."""

from __future__ import annotations

import json

import pytest

from broker.console import http
from broker.console.http import Browse, Events, HttpError, Purge, State, Static
from broker.console.messages import message_json, preview
from broker.pb.message_pb2 import Message

ORIGIN = "http://127.0.0.1:8161"


def head(*lines: str) -> bytes:
    return "\r\n".join(lines).encode()


def refused(data: bytes) -> HttpError:
    with pytest.raises(HttpError) as info:
        http.route(http.parse_head(data))
    return info.value


def test_a_request_head() -> None:
    req = http.parse_head(head("GET /api/state?x=1&x=2 HTTP/1.1", "Host: h", "X-A:  b "))
    assert (req.method, req.path, req.query) == ("GET", "/api/state", {"x": ["1", "2"]})
    assert req.headers == {"host": "h", "x-a": "b"}
    assert req.body_length() == 0


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"GET /\xff HTTP/1.1", 400, "not ASCII"),
        (b"GET / HTTP/2", 400, "bad request line"),
        (b"GET /", 400, "bad request line"),
        (b"GET http://x/ HTTP/1.1", 400, "must be a path"),
        (head("GET / HTTP/1.1", "no colon"), 400, "bad header line"),
        (head("GET / HTTP/1.1", " Host: x"), 400, "bad header line"),
        (head("GET / HTTP/1.1", *["A: b"] * 65), 431, "more than 64 headers"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1", 431, "over 8192 bytes"),
    ],
)
def test_bad_heads_get_a_clear_4xx(data: bytes, status: int, words: str) -> None:
    with pytest.raises(HttpError) as info:
        http.parse_head(data)
    assert info.value.status == status and words in info.value.reason


@pytest.mark.parametrize(
    ("headers", "status", "words"),
    [
        (["Transfer-Encoding: chunked"], 411, "not chunked"),
        ([], 411, "a POST needs a Content-Length"),
        (["Content-Length: -1"], 400, "bad Content-Length"),
        (["Content-Length: 4097"], 413, "at most 4096 bytes"),
    ],
)
def test_bodies_are_bounded(headers: list[str], status: int, words: str) -> None:
    req = http.parse_head(head("POST /api/brokers/a/purge HTTP/1.1", *headers))
    with pytest.raises(HttpError) as info:
        req.body_length()
    assert info.value.status == status and words in info.value.reason
    ok = http.parse_head(head("POST /api/brokers/a/purge HTTP/1.1", "Content-Length: 12"))
    assert ok.body_length() == 12


def test_routes() -> None:
    def route(line: str) -> http.Route:
        return http.route(http.parse_head(line.encode()))

    assert route("GET / HTTP/1.1") == Static("index.html", "text/html; charset=utf-8")
    assert route("GET /console.js HTTP/1.1") == Static(
        "console.js", "text/javascript; charset=utf-8"
    )
    assert route("GET /api/state HTTP/1.0") == State()
    assert route("GET /api/events HTTP/1.1") == Events()
    assert route("GET /api/brokers/a/queues/orders.eu/messages HTTP/1.1") == Browse(
        "a", "orders.eu", 50
    )
    # Names are percent-encoded by the page; a '/' inside one stays inside it.
    assert route("GET /api/brokers/a/queues/x%2Fy%20z/messages?limit=500 HTTP/1.1") == Browse(
        "a", "x/y z", 500
    )
    assert route("POST /api/brokers/b/purge HTTP/1.1") == Purge("b")


def test_wrong_paths_methods_and_limits() -> None:
    e = refused(b"GET /etc/passwd HTTP/1.1")
    assert (e.status, e.reason) == (404, "nothing at /etc/passwd")
    e = refused(b"POST /api/state HTTP/1.1")
    assert (e.status, e.allow) == (405, "GET")
    e = refused(b"GET /api/brokers/a/purge HTTP/1.1")
    assert (e.status, e.allow) == (405, "POST")
    assert refused(b"GET /api/brokers/a/queues/q/other HTTP/1.1").status == 404
    for limit in ("0", "501", "x", "-1"):
        e = refused(f"GET /api/brokers/a/queues/q/messages?limit={limit} HTTP/1.1".encode())
        assert e.status == 400 and "limit must be an integer 1-500" in e.reason


def purge(*headers: str, body: bytes = b'{"queue": "orders"}') -> str:
    req = http.parse_head(head("POST /api/brokers/a/purge HTTP/1.1", *headers))
    return http.check_purge(req, body, ORIGIN)


GUARDED = ("X-Netbroker-Console: 1", "Content-Type: application/json")


def test_purge_from_the_console_page() -> None:
    assert purge(*GUARDED) == "orders"
    assert purge(*GUARDED, f"Origin: {ORIGIN}") == "orders"
    assert purge("X-Netbroker-Console: 1", "Content-Type: application/json; charset=utf-8") == (
        "orders"
    )


@pytest.mark.parametrize(
    ("headers", "body", "status", "words"),
    [
        # A form on another site can POST here, but cannot add the header.
        (("Content-Type: application/json",), b'{"queue": "q"}', 403, "x-netbroker-console: 1"),
        ((*GUARDED, "Origin: http://evil.example"), b'{"queue": "q"}', 403,
         "a purge from http://evil.example is refused"),
        (("X-Netbroker-Console: 1", "Content-Type: text/plain"), b'{"queue": "q"}', 415,
         "application/json"),
        (GUARDED, b"queue=q", 400, "not JSON"),
        (GUARDED, b"\xff", 400, "not JSON"),
        (GUARDED, b'["q"]', 400, 'expected {"queue": NAME}'),
        (GUARDED, b'{"queue": ""}', 400, 'expected {"queue": NAME}'),
        (GUARDED, b'{"queue": 5}', 400, 'expected {"queue": NAME}'),
    ],
)  # fmt: skip
def test_purge_refusals(headers: tuple[str, ...], body: bytes, status: int, words: str) -> None:
    with pytest.raises(HttpError) as info:
        purge(*headers, body=body)
    assert info.value.status == status and words in info.value.reason


def test_only_this_machines_names_for_the_console_are_served() -> None:
    for host in ("127.0.0.1:8161", "localhost:8161"):
        http.check_host(http.parse_head(head("GET / HTTP/1.1", f"Host: {host}")), 8161)
    http.check_host(http.parse_head(b"GET / HTTP/1.0"), 8161)  # no Host: an old client
    for host in ("evil.example:8161", "127.0.0.1:8162", "127.0.0.1"):
        with pytest.raises(HttpError) as info:
            http.check_host(http.parse_head(head("GET / HTTP/1.1", f"Host: {host}")), 8161)
        assert info.value.status == 403 and "is not this console" in info.value.reason


def test_responses() -> None:
    data = http.json_response(200, {"a": 1})
    head_part, body = data.split(b"\r\n\r\n", 1)
    lines = head_part.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    assert "Content-Length: 8" in lines and "Connection: close" in lines
    assert "Content-Security-Policy: default-src 'self'; frame-ancestors 'none'" in lines
    assert json.loads(body) == {"a": 1}
    err = http.error_response(HttpError(405, "GET only", allow="GET"))
    assert err.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n") and b"Allow: GET\r\n" in err
    assert json.loads(err.split(b"\r\n\r\n", 1)[1]) == {"error": "GET only"}
    assert http.sse("log", {"x": "a\nb"}) == b'event: log\ndata: {"x": "a\\nb"}\n\n'


def test_a_browsed_message() -> None:
    m = Message(id="m1", body=b'{"n": 1}', headers={"z": "1", "a": "2"}, priority=7,
                persistent=True, redelivery_count=2, timestamp_ms=5)  # fmt: skip
    shown = message_json(m)
    assert list(shown["headers"]) == ["a", "z"]
    assert (shown["preview"], shown["size"], shown["truncated"]) == ('{"n": 1}', 8, False)
    assert (shown["priority"], shown["redelivery_count"], shown["persistent"]) == (7, 2, True)
    assert preview(b"\x00\xffok\n") == "\\x00\\xffok\\n"
    big = message_json(Message(body=b"x" * 1000))
    assert (len(big["preview"]), big["truncated"]) == (200, True)
