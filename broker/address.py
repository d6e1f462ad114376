"""``host:port`` addresses: the one parser for client URLs, connector URIs and topologies.

``parse_address("tcp://127.0.0.1:61616")`` returns ``Address("127.0.0.1", 61616)``, whose
``str`` is the normalised ``host:port`` every caller stores. The rules, the same wherever
an address is written:

* an optional ``tcp://`` prefix (any case), dropped; no other transport;
* no path or options after the address (``/`` and ``?`` are refused);
* the host: a dotted-quad IPv4 address with every part 0-255 (anything made only of digits
  and dots is read as one, so ``999.1.1.1`` and ``1.2.3`` are refused rather than looked
  up as names), a host name (dot-separated labels of letters, digits, ``-`` and ``_``,
  at most 253 characters), or an IPv6 address in brackets (``[::1]``, ``[fe80::1%eth0]``);
* the port: decimal digits, 1-65535 (leading zeros allowed: ``host:065535``).

A bad address raises :class:`AddressError`, a ValueError whose text names the address and
what is wrong; its ``problem`` and ``part`` let a caller word the error in its own terms.
Pure: it resolves no names and opens nothing, so every layer (client, connectors,
cluster operations) may import it.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass

__all__ = ["PORT_MAX", "PORT_MIN", "Address", "AddressError", "Problem", "parse_address"]

PORT_MIN, PORT_MAX = 1, 65535

# Hostnames: dot-separated labels of letters, digits, '-' and '_' (underscores are not
# valid DNS but appear in container and /etc/hosts names, and gRPC resolves them).
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOST_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_HOST_MAX = 253
_IPV4ISH_RE = re.compile(r"[0-9.]+")
_PORT_RE = re.compile(r"[0-9]+")


class Problem(enum.Enum):
    """What is wrong with an address."""

    EMPTY = "empty"
    TRANSPORT = "transport"  # a prefix other than tcp://
    PATH = "path"  # '/' or '?' after the transport
    BRACKET = "bracket"  # '[' without ']'
    IPV6 = "ipv6"  # not an IPv6 address inside the brackets
    UNBRACKETED_IPV6 = "unbracketed-ipv6"
    NO_HOST = "no-host"
    IPV4 = "ipv4"  # digits and dots, but not a dotted quad of 0-255
    HOST = "host"  # not a host name
    NO_PORT = "no-port"  # no ':' before a port
    EMPTY_PORT = "empty-port"  # ':' with nothing after it
    PORT = "port"  # not decimal digits
    PORT_RANGE = "port-range"  # digits, but outside 1-65535


class AddressError(ValueError):
    """An address that cannot be used: ``text`` the address as given (stripped),
    ``problem`` what is wrong, ``part`` the piece at fault (the transport, host or port
    text; the whole address when no piece is)."""

    def __init__(self, problem: Problem, text: str, part: str, message: str) -> None:
        super().__init__(message)
        self.problem = problem
        self.text = text
        self.part = part


@dataclass(frozen=True)
class Address:
    """A checked address: ``host`` as written (an IPv6 address without its brackets)."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text: str) -> Address:
    """Check one ``[tcp://]host:port`` (surrounding spaces ignored) and return it.

    Raises AddressError saying what is wrong, e.g. ``bad IPv4 address '999.1.1.1' in
    '999.1.1.1:1'`` or ``port 0 out of range 1-65535``.
    """
    given = text.strip()
    if not given:
        raise AddressError(Problem.EMPTY, given, "", "empty address")
    rest = given
    if "://" in rest:
        transport, _, rest = rest.partition("://")
        if transport.lower() != "tcp":
            raise AddressError(
                Problem.TRANSPORT,
                given,
                transport,
                f"unsupported transport '{transport}' in {given!r} (only tcp:// is "
                f"supported; the prefix may also be left out)",
            )
    if "?" in rest or "/" in rest:
        raise AddressError(
            Problem.PATH,
            given,
            given,
            f"address {given!r} may not carry a path or options; use host:port",
        )
    if rest.startswith("["):
        host, port_text = _bracketed(given, rest)
    else:
        host, port_text = _plain(given, rest)
    return Address(host, _port(given, port_text))


def _bracketed(given: str, rest: str) -> tuple[str, str]:
    """``[ipv6]:port`` split into the IPv6 address (checked) and the port text."""
    close = rest.find("]")
    if close < 0:
        raise AddressError(Problem.BRACKET, given, rest, f"missing ']' in address {given!r}")
    host, after = rest[1:close], rest[close + 1 :]
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise AddressError(
            Problem.IPV6, given, host, f"bad IPv6 address {host!r} in {given!r}"
        ) from None
    if not after.startswith(":"):
        raise AddressError(
            Problem.NO_PORT,
            given,
            given,
            f"missing port in address {given!r} (expected [host]:port)",
        )
    return host, after[1:]


def _plain(given: str, rest: str) -> tuple[str, str]:
    """``host:port`` split into the host (an IPv4 address or a name, checked) and the port
    text."""
    host, colon, port_text = rest.rpartition(":")
    if not colon:
        raise AddressError(
            Problem.NO_PORT, given, given, f"missing port in address {given!r} (expected host:port)"
        )
    if ":" in host:
        raise AddressError(
            Problem.UNBRACKETED_IPV6,
            given,
            host,
            f"IPv6 address in {given!r} must be in brackets: [host]:port",
        )
    if not host:
        raise AddressError(Problem.NO_HOST, given, host, f"missing host in address {given!r}")
    if _IPV4ISH_RE.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise AddressError(
                Problem.IPV4, given, host, f"bad IPv4 address {host!r} in {given!r}"
            ) from None
    elif not _HOST_RE.fullmatch(host) or len(host) > _HOST_MAX:
        raise AddressError(Problem.HOST, given, host, f"bad host name {host!r} in {given!r}")
    return host, port_text


def _port(given: str, port_text: str) -> int:
    """The port number: decimal digits, 1-65535."""
    if not port_text:
        raise AddressError(
            Problem.EMPTY_PORT, given, port_text, f"missing port in address {given!r}"
        )
    if not _PORT_RE.fullmatch(port_text):
        raise AddressError(
            Problem.PORT, given, port_text, f"bad port {port_text!r} in address {given!r}"
        )
    port = int(port_text)
    if not PORT_MIN <= port <= PORT_MAX:
        raise AddressError(
            Problem.PORT_RANGE, given, port_text, f"port {port} out of range {PORT_MIN}-{PORT_MAX}"
        )
    return port
