"""Connector URIs: ActiveMQ's `static:`, `masterslave:` and `multicast://` forms, parsed.

`parse_connector(uri, options)` turns a connector as written in a topology file (a URI,
perhaps with a query string, plus any options given as YAML keys) into a `ConnectorSpec`
with every option typed, defaulted and checked. It is pure: it resolves no host names
and opens nothing.

Forms (see docs/semantics.md, "Network connectors"):

    static:(host:port,host:port)      a bridge to each listed broker
    static:host:port                  one address needs no parentheses
    masterslave:(host:port,host:port) one bridge to whichever address is a group's master
    multicast://NAME                  bridges to brokers discovered in group NAME;
                                      `multicast://` alone means the group "default"

Addresses may carry a `tcp://` prefix, as ActiveMQ URIs usually do; it is dropped, and
`ConnectorSpec.addresses` holds plain `host:port` strings (IPv6 hosts in brackets).
`static://(...)` and `masterslave://(...)` are accepted too, again as ActiveMQ does.

Options use ActiveMQ's names. They may be given in the query string
(`static:(a:1)?networkTTL=2&duplex=true`) or as YAML keys beside the URI; a key given in
both places must have the same value there, because silently preferring one would hide a
configuration mistake. Every problem raises `ConnectorError` naming the URI and the
reason, e.g. `static:(127.0.0.1:99999): port 99999 out of range 1-65535`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal
from urllib.parse import unquote

from broker.address import AddressError, parse_address
from netconnector.filters import DestinationFilter, PatternError, check_pattern

ConnectorKind = Literal["static", "masterslave", "multicast"]

DEFAULT_DISCOVERY_GROUP = "default"

_INT_RE = re.compile(r"[+-]?[0-9]+")
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(.*)", re.DOTALL)
# Discovery group names become zeroconf service names, whose labels are at most 63 bytes.
_GROUP_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,62})")

OptionValue = bool | int | str | tuple[str, ...]


class ConnectorError(ValueError):
    """A connector URI or option that cannot be used; the text names the URI and why."""

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(f"{uri}: {reason}")
        self.uri = uri
        self.reason = reason


@dataclass(frozen=True)
class _Option:
    """One connector option: its ActiveMQ name, the ConnectorSpec attribute, its type."""

    name: str
    attr: str
    type: Literal["bool", "int", "str", "list"]
    default: OptionValue | None  # None: derived from other options after parsing
    minimum: int = 0
    # Its value is never shown: not in errors, not in the spec's repr or URI.
    secret: bool = False


# In the order they are listed in "unknown option" errors: ActiveMQ's first, ours after.
_OPTIONS: tuple[_Option, ...] = (
    _Option("duplex", "duplex", "bool", False),
    _Option("networkTTL", "network_ttl", "int", 1, minimum=1),
    _Option("messageTTL", "message_ttl", "int", None, minimum=1),
    _Option("consumerTTL", "consumer_ttl", "int", None, minimum=1),
    _Option("prefetchSize", "prefetch_size", "int", 1000, minimum=1),
    # True as in ActiveMQ 6 (AMQ-5137); 5.x defaulted to False, which ranked network
    # consumers level with local ones. Here they rank below local ones either way.
    _Option("decreaseNetworkConsumerPriority", "decrease_network_consumer_priority", "bool", True),
    _Option("conduitSubscriptions", "conduit_subscriptions", "bool", True),
    _Option("dynamicOnly", "dynamic_only", "bool", False),
    _Option("staticallyIncludedDestinations", "statically_included", "list", ()),
    _Option("dynamicallyIncludedDestinations", "dynamically_included", "list", ()),
    _Option("excludedDestinations", "excluded", "list", ()),
    _Option("name", "name", "str", None),
    _Option("maxReconnectDelay", "max_reconnect_delay_ms", "int", 1000, minimum=1),
    # 0 is allowed: retrying at once after the first failure is a legitimate choice.
    _Option("initialReconnectDelay", "initial_reconnect_delay_ms", "int", 10, minimum=0),
    _Option("keepAliveMs", "keep_alive_ms", "int", 5000, minimum=1),
    _Option("securityToken", "security_token", "str", "", secret=True),
)
_BY_NAME: dict[str, _Option] = {o.name: o for o in _OPTIONS}

#: The option names a connector accepts, in ActiveMQ spelling.
OPTION_NAMES: tuple[str, ...] = tuple(o.name for o in _OPTIONS)


def option_default(name: str) -> OptionValue | None:
    """An option's default (None: derived from other options)."""
    return _BY_NAME[name].default


@dataclass(frozen=True)
class ConnectorSpec:
    """A parsed, validated network connector.

    `addresses` are `host:port` strings (empty for multicast); `discovery_group` is the
    zeroconf group for multicast connectors and None otherwise. Every option is a typed
    attribute named after its ActiveMQ option in snake_case; times are milliseconds.
    """

    # As given, with the values of secret options (securityToken) masked.
    uri: str
    kind: ConnectorKind
    addresses: tuple[str, ...]
    discovery_group: str | None
    name: str
    duplex: bool
    network_ttl: int
    message_ttl: int
    consumer_ttl: int
    prefetch_size: int
    decrease_network_consumer_priority: bool
    conduit_subscriptions: bool
    dynamic_only: bool
    statically_included: tuple[str, ...]
    dynamically_included: tuple[str, ...]
    excluded: tuple[str, ...]
    max_reconnect_delay_ms: int
    initial_reconnect_delay_ms: int
    keep_alive_ms: int
    # Kept out of repr so logging a spec does not leak the token.
    security_token: str = field(repr=False)

    @property
    def canonical(self) -> str:
        """The URI without options, addresses normalized: `static:(h:1,h:2)`."""
        return _canonical(self.kind, self.addresses, self.discovery_group)

    @cached_property
    def destination_filter(self) -> DestinationFilter:
        """The connector's include/exclude patterns as a DestinationFilter (built once)."""
        return DestinationFilter(
            excluded=self.excluded,
            statically_included=self.statically_included,
            dynamically_included=self.dynamically_included,
        )


def _canonical(kind: str, addresses: tuple[str, ...], group: str | None) -> str:
    if kind == "multicast":
        return f"multicast://{group}"
    return f"{kind}:({','.join(addresses)})"


def parse_connector(uri: str, options: Mapping[str, object] | None = None) -> ConnectorSpec:
    """Parse a connector URI and its YAML options into a ConnectorSpec.

    `options` holds options given beside the URI (YAML keys), with values already typed
    (bool, int, str, list) or as strings. Raises ConnectorError for a malformed URI, an
    unknown option, a bad value, or an option given in both places with different values.
    """
    if not isinstance(uri, str):
        raise ConnectorError(repr(uri), "a connector URI must be a string")
    text = uri.strip()
    if not text:
        raise ConnectorError(repr(uri), "the connector URI is empty")

    shown = _redacted(uri)

    def fail(reason: str) -> ConnectorError:
        return ConnectorError(shown, reason)

    kind, addresses, group, query = _split_uri(text, fail)

    from_query = _parse_query(query, fail)
    from_yaml = _typed_yaml(options, fail)
    values: dict[str, OptionValue] = {}
    for name, raw in from_query.items():
        values[name] = _convert(_known(name, "in the query string", fail), raw, fail)
    for name, given in from_yaml.items():
        value = _convert(_known(name, "in the YAML options", fail), given, fail)
        if name in values and values[name] != value:
            if _BY_NAME[name].secret:
                raise fail(
                    f"option '{name}' differs between the query string and the YAML "
                    "options; give it in one place"
                )
            raise fail(
                f"option '{name}' is {_show(values[name])} in the query string but "
                f"{_show(value)} in the YAML options; give it in one place"
            )
        values[name] = value

    resolved: dict[str, OptionValue] = {}
    for option in _OPTIONS:
        if option.name in values:
            resolved[option.attr] = values[option.name]
        elif option.default is not None:
            resolved[option.attr] = option.default
    # ActiveMQ: messageTTL and consumerTTL default to networkTTL, which sets both.
    resolved.setdefault("message_ttl", resolved["network_ttl"])
    resolved.setdefault("consumer_ttl", resolved["network_ttl"])
    resolved.setdefault("name", _canonical(kind, addresses, group))

    initial = resolved["initial_reconnect_delay_ms"]
    maximum = resolved["max_reconnect_delay_ms"]
    assert isinstance(initial, int) and isinstance(maximum, int)
    if initial > maximum:
        raise fail(f"initialReconnectDelay {initial} is greater than maxReconnectDelay {maximum}")

    return ConnectorSpec(
        uri=shown,
        kind=kind,
        addresses=addresses,
        discovery_group=group,
        **resolved,  # type: ignore[arg-type]  # keys and types come from _OPTIONS
    )


def _split_uri(
    text: str, fail: Callable[[str], ConnectorError]
) -> tuple[ConnectorKind, tuple[str, ...], str | None, str]:
    """Split a URI into (kind, addresses, discovery group, raw query string)."""
    m = _SCHEME_RE.fullmatch(text)
    if m is None:
        raise fail(
            "missing connector scheme (expected static:(host:port,...), "
            "masterslave:(host:port,...) or multicast://NAME)"
        )
    scheme, rest = m.group(1).lower(), m.group(2)
    if scheme == "multicast":
        if not rest.startswith("//"):
            raise fail("expected multicast://NAME (or multicast:// for the group 'default')")
        name, _, query = rest[2:].partition("?")
        group = name or DEFAULT_DISCOVERY_GROUP
        if not _GROUP_RE.fullmatch(group):
            raise fail(
                f"bad discovery group name {group!r}: use letters, digits, '_', '-' and '.', "
                f"starting with a letter or digit, at most 63 characters"
            )
        return "multicast", (), group, query
    if scheme in ("static", "masterslave"):
        kind: ConnectorKind = "static" if scheme == "static" else "masterslave"
        body, query = _split_address_list(kind, rest.removeprefix("//"), fail)
        return kind, _parse_addresses(body, fail), None, query
    hint = ""
    # `tcp://h:1` or a bare `h:1` is a broker address, not a connector: say how to wrap it.
    if scheme in ("tcp", "nio", "ssl", "auto") or re.fullmatch(r"[0-9]+(\?.*)?", rest):
        hint = f"; to bridge to one broker write static:({text.partition('?')[0]})"
    raise fail(
        f"unknown connector scheme '{m.group(1)}' (expected static:, masterslave: or "
        f"multicast://){hint}"
    )


def _split_address_list(
    kind: str, rest: str, fail: Callable[[str], ConnectorError]
) -> tuple[str, str]:
    """Split `(a,b)?query` or `a?query` into the address text and the query string."""
    if rest.startswith("("):
        close = rest.find(")")
        if close < 0:
            raise fail("missing ')' after the address list")
        body, after = rest[1:close], rest[close + 1 :]
        if after and not after.startswith("?"):
            raise fail(f"unexpected text {after!r} after the address list")
        return body, after[1:]
    body, _, query = rest.partition("?")
    if "(" in body or ")" in body:
        raise fail("unbalanced parentheses around the address list")
    if "," in body:
        # The unparenthesized form is for one address; a list needs ActiveMQ's parentheses,
        # so that the options after '?' unambiguously belong to the connector.
        raise fail(f"several addresses need parentheses: {kind}:({body})")
    return body, query


def _parse_addresses(body: str, fail: Callable[[str], ConnectorError]) -> tuple[str, ...]:
    if not body.strip():
        raise fail("empty address list")
    out: list[str] = []
    for item in body.split(","):
        address = _parse_address(item.strip(), fail)
        if address in out:
            # Two bridges to one broker would forward every message twice over.
            raise fail(f"address {address} is listed twice")
        out.append(address)
    return tuple(out)


def _parse_address(text: str, fail: Callable[[str], ConnectorError]) -> str:
    """Check one `[tcp://]host:port` and return it as `host:port`."""
    if not text:
        raise fail("empty address in the address list")
    try:
        return str(parse_address(text))
    except AddressError as e:
        raise fail(str(e)) from None


def _parse_query(query: str, fail: Callable[[str], ConnectorError]) -> dict[str, str]:
    out: dict[str, str] = {}
    for piece in query.split("&"):
        if not piece:
            continue  # tolerate `?` alone, `&&` and a trailing `&`
        key, eq, value = piece.partition("=")
        key = unquote(key)
        if not eq:
            raise fail(f"option '{key}' has no value (write {key}=VALUE)")
        if key in out:
            raise fail(f"option '{key}' is given twice in the query string")
        # unquote, not unquote_plus: '+' is more likely part of a token than a space.
        out[key] = unquote(value)
    return out


def _typed_yaml(
    options: Mapping[str, object] | None, fail: Callable[[str], ConnectorError]
) -> dict[str, object]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise fail(f"connector options must be a mapping, got {type(options).__name__}")
    out: dict[str, object] = {}
    for key, value in options.items():
        if not isinstance(key, str):
            raise fail(f"option names must be strings, got {key!r}")
        out[key] = value
    return out


def _known(name: str, where: str, fail: Callable[[str], ConnectorError]) -> _Option:
    option = _BY_NAME.get(name)
    if option is not None:
        return option
    # Match case-insensitively for the suggestion: `networkttl` is the commonest slip.
    lowered = {n.lower(): n for n in OPTION_NAMES}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.75)
    suggestion = f"did you mean '{lowered[close[0]]}'? " if close else ""
    raise fail(f"unknown option '{name}' {where} ({suggestion}known: {', '.join(OPTION_NAMES)})")


def _convert(option: _Option, raw: object, fail: Callable[[str], ConnectorError]) -> OptionValue:
    """Type and check one option value, from a query-string string or a YAML value."""

    def bad(expected: str) -> ConnectorError:
        got = "a value that is not one" if option.secret else repr(raw)
        return fail(f"option '{option.name}': expected {expected}, got {got}")

    if option.type == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
            return raw.strip().lower() == "true"
        raise bad("true or false")
    if option.type == "int":
        expected = f"an integer >= {option.minimum}"
        # bool is an int subclass; `networkTTL: true` is a mistake, not 1.
        if isinstance(raw, int) and not isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str) and _INT_RE.fullmatch(raw.strip()):
            value = int(raw.strip())
        else:
            raise bad(expected)
        if value < option.minimum:
            raise bad(expected)
        return value
    if option.type == "str":
        if not isinstance(raw, str):
            raise bad("a string")
        if option.name == "name" and not raw.strip():
            raise bad("a non-empty name")
        return raw
    # A list of destination patterns: a YAML list, or a comma-separated string (the only
    # way to write a list in a query string).
    if isinstance(raw, str):
        items = [p.strip() for p in raw.split(",")]
        # Blank items from a trailing or doubled comma are dropped: they name nothing.
        patterns = [p for p in items if p]
    elif isinstance(raw, list | tuple):
        patterns = []
        for item in raw:
            if not isinstance(item, str):
                raise bad("a list of queue patterns (strings)")
            patterns.append(item.strip())
    else:
        raise bad("a list of queue patterns or a comma-separated string")
    for pattern in patterns:
        try:
            check_pattern(pattern)
        except PatternError as exc:
            raise fail(f"option '{option.name}': {exc}") from None
    return tuple(patterns)


# The value of a secret option in a query string, up to the next option.
_SECRET_VALUES = re.compile(
    "(?<=[?&](?:" + "|".join(o.name for o in _OPTIONS if o.secret) + ")=)[^&]*"
)


def _redacted(uri: str) -> str:
    """`uri` with the values of secret options masked, to show in errors and reprs."""
    return _SECRET_VALUES.sub("***", uri)


def _show(value: OptionValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return repr(",".join(value))
    if isinstance(value, str):
        return repr(value)
    return str(value)
