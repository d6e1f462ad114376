"""STOMP clients for tests: stomp.py connections whose frames are collected and waited
for with deadlines, and raw sockets for frames no client library would send."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import stomp
from stomp.utils import Frame

from tests.support.procs import BrokerProcess, free_port

VERSIONS: dict[str, Any] = {
    "1.0": stomp.Connection10,
    "1.1": stomp.Connection11,
    "1.2": stomp.Connection12,
}


def stomp_broker(name: str, data_dir: Any, *args: str) -> BrokerProcess:
    """A broker process with STOMP on a free port (`stomp_port` attribute)."""
    port = free_port()
    broker = BrokerProcess(name, data_dir, args=("--stomp-port", str(port), *args))
    broker.stomp_port = port  # type: ignore[attr-defined]
    return broker


class Collector(stomp.ConnectionListener):
    """Every MESSAGE, RECEIPT and ERROR a connection gets, waited for with deadlines."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.messages: list[Frame] = []
        self.receipts: list[str] = []
        self.errors: list[Frame] = []
        self.disconnected = False

    def on_message(self, frame: Frame) -> None:
        with self.cond:
            self.messages.append(frame)
            self.cond.notify_all()

    def on_receipt(self, frame: Frame) -> None:
        with self.cond:
            self.receipts.append(frame.headers["receipt-id"])
            self.cond.notify_all()

    def on_error(self, frame: Frame) -> None:
        with self.cond:
            self.errors.append(frame)
            self.cond.notify_all()

    def on_disconnected(self) -> None:
        with self.cond:
            self.disconnected = True
            self.cond.notify_all()

    def wait(self, done: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        with self.cond:
            if not self.cond.wait_for(done, timeout):
                raise AssertionError(
                    f"timed out waiting for {what or 'a condition'}: {len(self.messages)} "
                    f"messages, receipts {self.receipts}, errors "
                    f"{[e.headers.get('message') for e in self.errors]}"
                )

    def wait_messages(self, n: int, timeout: float = 10.0) -> list[Frame]:
        self.wait(lambda: len(self.messages) >= n, timeout, f"{n} messages")
        return list(self.messages)

    def wait_receipt(self, receipt: str, timeout: float = 10.0) -> None:
        self.wait(lambda: receipt in self.receipts, timeout, f"receipt {receipt}")

    def quiet(self, seconds: float) -> int:
        """Messages after `seconds` with nothing new (to show none more come)."""
        with self.cond:
            count = len(self.messages)
        time.sleep(seconds)
        with self.cond:
            return len(self.messages) - count


def connect(
    port: int, version: str = "1.2", *, headers: dict[str, str] | None = None, **kw: Any
) -> tuple[Any, Collector]:
    conn = VERSIONS[version]([("127.0.0.1", port)], auto_decode=False, **kw)
    listener = Collector()
    conn.set_listener("collect", listener)
    conn.connect(wait=True, headers=headers or {})
    return conn, listener


class RawStomp:
    """A plain socket speaking whatever bytes a test writes."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.data = b""

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_until_closed(self, timeout: float = 10.0) -> bytes:
        """Everything the broker writes until it closes the connection."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"connection not closed in {timeout}s; got {self.data!r}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return self.data
            if not chunk:
                return self.data
            self.data += chunk

    def read_frame(self, timeout: float = 10.0) -> bytes:
        """The next frame (up to its NUL)."""
        deadline = time.monotonic() + timeout
        while b"\0" not in self.data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no frame in {timeout}s; got {self.data!r}")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"closed before a frame; got {self.data!r}")
            self.data += chunk
        frame, _, self.data = self.data.partition(b"\0")
        return frame.lstrip(b"\r\n")

    def close(self) -> None:
        self.sock.close()
