"""Client URLs: ``host:port`` or ``failover:(host:port,...)?options``, parsed."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote

from broker.address import AddressError, Problem, parse_address

_OPTION_NAMES = {
    "maxreconnectdelay": "maxReconnectDelay",
    "initialreconnectdelay": "initialReconnectDelay",
    "maxreconnectattempts": "maxReconnectAttempts",
    "timeout": "timeout",
    "randomize": "randomize",
}


@dataclass(frozen=True)
class ClientUrl:
    """A parsed client URL. Durations are in seconds."""

    #: ``host:port`` strings, in the order given.
    addresses: tuple[str, ...]
    #: Whether the URL was a ``failover:`` URL (reconnect on loss) or a plain address.
    failover: bool = False
    #: First pause between connection attempts (``initialReconnectDelay``, default 10 ms).
    initial_reconnect_delay: float = 0.010
    #: Longest pause between attempts (``maxReconnectDelay``, default 1000 ms).
    max_reconnect_delay: float = 1.0
    #: Give up when no address accepted for this long (``timeout``); None retries forever.
    timeout: float | None = None
    #: Try the addresses in random order (``randomize``, default false).
    randomize: bool = False
    #: Give up after this many further rounds over the addresses once the first round
    #: failed (``maxReconnectAttempts``; -1, the default, or None here: never).
    max_reconnect_attempts: int | None = None
    #: Credentials from a ``user:password@`` prefix ("" for none). The URL shows in
    #: ``ps`` when given on a command line: there, prefer NETBROKER_PASSWORD or a file.
    user: str = ""
    password: str = field(default="", repr=False)
    #: TLS to the brokers: the addresses were written ``ssl://host:port`` (ActiveMQ's
    #: spelling). A CA given to the client turns it on too.
    tls: bool = False


_TLS_SCHEME = "ssl://"


def _tls_prefix(part: str) -> tuple[bool, str]:
    stripped = part.strip()
    if stripped.lower().startswith(_TLS_SCHEME):
        return True, stripped[len(_TLS_SCHEME) :]
    return False, part


def parse_url(url: str) -> ClientUrl:
    """Parse a client URL: ``host:port`` or ``failover:(host:port,...)?options``.

    ActiveMQ's spelling ``failover://(tcp://host:port,...)`` is the same URL. The list may
    also be written without parentheses (``failover:a:1,b:2``), and an address may carry
    the ``tcp://`` prefix. IPv6 hosts go in brackets. Options (names are
    case-insensitive): ``initialReconnectDelay`` and ``maxReconnectDelay`` in positive
    milliseconds, ``timeout`` in milliseconds (0 or negative: retry forever),
    ``maxReconnectAttempts`` a count of further rounds over the addresses (-1: forever),
    ``randomize`` true or false. Credentials may prefix either form, percent-encoded:
    ``user:password@host:port`` or ``user:password@failover:(...)``. ``ssl://host:port``
    (every address of a failover list, or none) connects over TLS.

    Raises ValueError naming the URL and what is wrong with it.
    """
    if not isinstance(url, str):
        raise ValueError(f"bad client URL {url!r}: not a string")
    text = url.strip()
    user = password = ""
    if "@" in text:
        # Addresses never hold an '@': the last one ends the credentials.
        userinfo, _, text = text.rpartition("@")
        name, sep, secret = userinfo.partition(":")
        user, password = unquote(name), unquote(secret)
        url = f"{name}{':***' if sep else ''}@{text}"  # errors never show the password
        if not user:
            raise ValueError(f"bad client URL {url!r}: no user before '@'")
    if not text:
        raise ValueError(f"bad client URL {url!r}: empty")
    if user:
        parsed = _parse_url(text, url)
        return replace(parsed, user=user, password=password)
    return _parse_url(text, url)


def _parse_url(text: str, url: str) -> ClientUrl:
    if not text.lower().startswith("failover:"):
        if "?" in text:
            raise ValueError(f"bad client URL {url!r}: options need a failover:(...) URL")
        tls, address = _tls_prefix(text)
        return ClientUrl(addresses=(_parse_address(address, url),), tls=tls)

    rest = text[len("failover:") :]
    if rest.startswith("//"):
        rest = rest[2:]
    if rest.startswith("("):
        close = rest.find(")")
        if close < 0:
            raise ValueError(f"bad client URL {url!r}: missing ')'")
        inner, tail = rest[1:close], rest[close + 1 :]
        if tail and not tail.startswith("?"):
            raise ValueError(f"bad client URL {url!r}: unexpected {tail!r} after ')'")
        query = tail[1:]
    else:
        inner, _, query = rest.partition("?")
    if not inner.strip():
        raise ValueError(f"bad client URL {url!r}: no addresses")
    parts = [_tls_prefix(part) for part in inner.split(",")]
    if len({tls for tls, _ in parts}) > 1:
        raise ValueError(f"bad client URL {url!r}: every address or none is ssl://")
    addresses = tuple(_parse_address(part, url) for _, part in parts)
    return ClientUrl(
        addresses=addresses, failover=True, tls=parts[0][0], **_parse_options(query, url)
    )


def _parse_address(text: str, url: str) -> str:
    """Check one ``host:port`` (optionally ``tcp://host:port``) and return it normalised."""
    try:
        return str(parse_address(text))
    except AddressError as e:
        raise ValueError(f"bad client URL {url!r}: {_reason(e)}") from None


def _reason(error: AddressError) -> str:
    """What is wrong with one address of a client URL, in the client's words."""
    problem, given, part = error.problem, error.text, error.part
    if problem is Problem.EMPTY:
        return "empty address"
    if problem is Problem.TRANSPORT:
        return f"unsupported scheme {part + '://'!r}"
    if problem is Problem.PATH:
        return f"bad port in {given!r}: no path or options may follow host:port"
    if problem in (Problem.BRACKET, Problem.IPV6):
        return f"bad IPv6 address in {given!r}"
    if problem is Problem.UNBRACKETED_IPV6:
        return "IPv6 addresses go in brackets, as [::1]:61616"
    if problem is Problem.NO_PORT:
        return f"no port in {given!r}"
    if problem is Problem.IPV4:
        return f"bad IPv4 address {part!r}"
    if problem in (Problem.NO_HOST, Problem.HOST):
        return f"bad host {part!r}"
    return f"bad port {part!r}"  # none, not digits, or out of range


def _parse_options(query: str, url: str) -> dict[str, Any]:
    """Turn a failover URL's query string into ClientUrl keyword arguments."""
    options: dict[str, Any] = {}
    seen: set[str] = set()
    for item in query.split("&") if query else ():
        key, sep, value = item.partition("=")
        name = _OPTION_NAMES.get(key.strip().lower())
        if not sep or not key.strip():
            raise ValueError(f"bad client URL {url!r}: option {item!r} is not name=value")
        if name is None:
            known = ", ".join(sorted(_OPTION_NAMES.values()))
            raise ValueError(f"bad client URL {url!r}: unknown option {key!r} (known: {known})")
        if name in seen:
            raise ValueError(f"bad client URL {url!r}: option {name} given twice")
        seen.add(name)
        value = value.strip()
        if name == "randomize":
            if value.lower() not in ("true", "false"):
                raise ValueError(f"bad client URL {url!r}: randomize must be true or false")
            options["randomize"] = value.lower() == "true"
            continue
        try:
            millis = int(value)
        except ValueError:
            unit = "a whole number" if name == "maxReconnectAttempts" else "whole milliseconds"
            raise ValueError(
                f"bad client URL {url!r}: {name} must be {unit}, not {value!r}"
            ) from None
        if name == "maxReconnectAttempts":
            if millis < -1:
                raise ValueError(
                    f"bad client URL {url!r}: maxReconnectAttempts must be -1 (forever) or more"
                )
            options["max_reconnect_attempts"] = None if millis == -1 else millis
        elif name == "timeout":
            options["timeout"] = millis / 1000 if millis > 0 else None
        elif millis <= 0:
            raise ValueError(f"bad client URL {url!r}: {name} must be positive")
        elif name == "initialReconnectDelay":
            options["initial_reconnect_delay"] = millis / 1000
        else:
            options["max_reconnect_delay"] = millis / 1000
    return options
