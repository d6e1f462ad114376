"""Unit tests for connector URI parsing (netconnector.uri)."""

from __future__ import annotations

import dataclasses

import pytest

from netconnector.filters import DestinationFilter
from netconnector.uri import OPTION_NAMES, ConnectorError, ConnectorSpec, parse_connector


def error(uri: str, options: dict[str, object] | None = None) -> str:
    with pytest.raises(ConnectorError) as info:
        parse_connector(uri, options)
    assert isinstance(info.value, ValueError)
    return str(info.value)


# ---- forms --------------------------------------------------------------------------------


def test_static_list() -> None:
    spec = parse_connector("static:(127.0.0.1:61616,broker-b.example:61617)")
    assert spec.kind == "static"
    assert spec.addresses == ("127.0.0.1:61616", "broker-b.example:61617")
    assert spec.discovery_group is None
    assert spec.uri == "static:(127.0.0.1:61616,broker-b.example:61617)"


def test_static_single_address_without_parentheses() -> None:
    assert parse_connector("static:localhost:61616").addresses == ("localhost:61616",)


@pytest.mark.parametrize(
    "uri",
    [
        "static:(tcp://127.0.0.1:61616)",
        "static:tcp://127.0.0.1:61616",
        "static://(tcp://127.0.0.1:61616)",
        "static:(TCP://127.0.0.1:61616)",
        "STATIC:(127.0.0.1:61616)",
        "  static:( 127.0.0.1:61616 )  ",
    ],
)
def test_static_accepts_activemq_spellings(uri: str) -> None:
    spec = parse_connector(uri)
    assert spec.kind == "static"
    assert spec.addresses == ("127.0.0.1:61616",)
    assert spec.uri == uri  # kept exactly as written, for messages


def test_tcp_prefix_stripped_per_address() -> None:
    spec = parse_connector("static:(tcp://a:1, b:2,tcp://c:3)")
    assert spec.addresses == ("a:1", "b:2", "c:3")


def test_ipv6_address_in_brackets() -> None:
    spec = parse_connector("static:(tcp://[::1]:61616,[fe80::1]:2)")
    assert spec.addresses == ("[::1]:61616", "[fe80::1]:2")


def test_masterslave() -> None:
    spec = parse_connector("masterslave:(tcp://127.0.0.1:61617,127.0.0.1:61618)")
    assert spec.kind == "masterslave"
    assert spec.addresses == ("127.0.0.1:61617", "127.0.0.1:61618")
    assert spec.discovery_group is None


def test_masterslave_single_address_allowed() -> None:
    assert parse_connector("masterslave:(h:1)").addresses == ("h:1",)


@pytest.mark.parametrize(
    ("uri", "group"),
    [
        ("multicast://default", "default"),
        ("multicast://", "default"),
        ("multicast://?networkTTL=2", "default"),
        ("multicast://eu-west.prod", "eu-west.prod"),
        ("MULTICAST://grp", "grp"),
    ],
)
def test_multicast(uri: str, group: str) -> None:
    spec = parse_connector(uri)
    assert spec.kind == "multicast"
    assert spec.addresses == ()
    assert spec.discovery_group == group


# ---- options ------------------------------------------------------------------------------


def test_defaults() -> None:
    spec = parse_connector("static:(h:1)")
    assert spec.duplex is False
    assert spec.network_ttl == 1
    assert spec.message_ttl == 1
    assert spec.consumer_ttl == 1
    assert spec.prefetch_size == 1000
    assert spec.decrease_network_consumer_priority is True
    assert spec.conduit_subscriptions is True
    assert spec.dynamic_only is False
    assert spec.statically_included == ()
    assert spec.dynamically_included == ()
    assert spec.excluded == ()
    assert spec.max_reconnect_delay_ms == 1000
    assert spec.initial_reconnect_delay_ms == 10
    assert spec.keep_alive_ms == 5000
    assert spec.security_token == ""
    assert spec.name == "static:(h:1)"


def test_default_name_is_normalized_uri_without_options() -> None:
    assert parse_connector("static:(tcp://a:1,b:2)?duplex=true").name == "static:(a:1,b:2)"
    assert parse_connector("masterslave:(a:1,b:2)").name == "masterslave:(a:1,b:2)"
    assert parse_connector("multicast://").name == "multicast://default"
    spec = parse_connector("static:tcp://a:1")
    assert spec.canonical == "static:(a:1)"


def test_query_string_options_typed() -> None:
    spec = parse_connector(
        "static:(a:1,b:2)?networkTTL=3&duplex=TRUE&prefetchSize=10&conduitSubscriptions=false"
        "&decreaseNetworkConsumerPriority=False&dynamicOnly=false&name=to-b"
        "&maxReconnectDelay=30000&initialReconnectDelay=0&keepAliveMs=250"
        "&securityToken=s3cr%2Bt+x"
    )
    assert spec.network_ttl == 3
    assert spec.duplex is True
    assert spec.prefetch_size == 10
    assert spec.conduit_subscriptions is False
    assert spec.decrease_network_consumer_priority is False
    assert spec.dynamic_only is False
    assert spec.name == "to-b"
    assert spec.max_reconnect_delay_ms == 30000
    assert spec.initial_reconnect_delay_ms == 0
    assert spec.keep_alive_ms == 250
    # Percent-escapes are decoded; '+' stays literal (tokens contain it more than spaces).
    assert spec.security_token == "s3cr+t+x"


def test_message_and_consumer_ttl_default_to_network_ttl() -> None:
    spec = parse_connector("static:(a:1)?networkTTL=4")
    assert (spec.network_ttl, spec.message_ttl, spec.consumer_ttl) == (4, 4, 4)
    spec = parse_connector("static:(a:1)?networkTTL=4&messageTTL=9&consumerTTL=1")
    assert (spec.network_ttl, spec.message_ttl, spec.consumer_ttl) == (4, 9, 1)
    spec = parse_connector("static:(a:1)", {"networkTTL": 2, "messageTTL": 5})
    assert (spec.network_ttl, spec.message_ttl, spec.consumer_ttl) == (2, 5, 2)


def test_yaml_options_typed_values() -> None:
    spec = parse_connector(
        "static:(a:1)",
        {
            "duplex": True,
            "networkTTL": 2,
            "prefetchSize": "50",
            "conduitSubscriptions": "False",
            "excludedDestinations": ["secret.>", "tmp.*"],
            "staticallyIncludedDestinations": "audit, billing.>",
            "name": "bridge-a",
        },
    )
    assert spec.duplex is True
    assert spec.network_ttl == 2
    assert spec.prefetch_size == 50
    assert spec.conduit_subscriptions is False
    assert spec.excluded == ("secret.>", "tmp.*")
    assert spec.statically_included == ("audit", "billing.>")
    assert spec.name == "bridge-a"


def test_destination_lists_in_query_string() -> None:
    spec = parse_connector(
        "static:(a:1)?excludedDestinations=a.>,b.*&dynamicallyIncludedDestinations=orders.>,"
    )
    assert spec.excluded == ("a.>", "b.*")
    assert spec.dynamically_included == ("orders.>",)  # trailing comma ignored


def test_destination_filter_built_from_spec() -> None:
    spec = parse_connector(
        "static:(a:1)",
        {"excludedDestinations": "orders.secret", "dynamicallyIncludedDestinations": "orders.>"},
    )
    flt = spec.destination_filter
    assert isinstance(flt, DestinationFilter)
    assert flt is spec.destination_filter  # built once
    assert flt.forwards_dynamically("orders.eu")
    assert not flt.forwards_dynamically("orders.secret")
    assert not flt.forwards_dynamically("billing")


def test_same_option_in_both_places_with_same_value_is_fine() -> None:
    spec = parse_connector("static:(a:1)?networkTTL=2&duplex=true", {"networkTTL": 2,
                                                                    "duplex": "TRUE"})
    assert spec.network_ttl == 2
    assert spec.duplex is True
    spec = parse_connector("static:(a:1)?excludedDestinations=a,b", {"excludedDestinations":
                                                                    ["a", "b"]})
    assert spec.excluded == ("a", "b")


def test_same_option_in_both_places_with_different_values_is_rejected() -> None:
    msg = error("static:(a:1)?networkTTL=2", {"networkTTL": 3})
    assert msg.startswith("static:(a:1)?networkTTL=2: ")
    assert "option 'networkTTL' is 2 in the query string but 3 in the YAML options" in msg


def test_conflicting_security_token_is_not_echoed() -> None:
    msg = error("static:(a:1)?securityToken=alpha", {"securityToken": "beta"})
    assert "securityToken" in msg
    assert "beta" not in msg
    assert "alpha" not in msg  # not even as part of the URI the operator wrote


def test_security_token_not_in_repr() -> None:
    spec = parse_connector("static:(a:1)", {"securityToken": "hunter2"})
    assert spec.security_token == "hunter2"
    assert "hunter2" not in repr(spec)



@pytest.mark.parametrize(
    ("uri", "options"),
    [
        ("static:(a:99999)?securityToken=hunter2", {}),  # an error about something else
        ("static:(a:1)?securityToken=hunter2&networkTTL=x", {}),
        ("static:(a:1)", {"securityToken": 123456}),  # the bad value itself
    ],
)
def test_errors_never_show_the_security_token(uri: str, options: dict[str, object]) -> None:
    msg = error(uri, options)
    assert "hunter2" not in msg and "123456" not in msg, msg


def test_the_spec_never_shows_the_security_token() -> None:
    spec = parse_connector("static:(a:1)?networkTTL=2&securityToken=hunter2&duplex=true")
    assert spec.security_token == "hunter2"
    assert "hunter2" not in repr(spec) and "hunter2" not in spec.uri
    assert spec.uri == "static:(a:1)?networkTTL=2&securityToken=***&duplex=true"

def test_spec_is_frozen() -> None:
    spec = parse_connector("static:(a:1)")
    assert isinstance(spec, ConnectorSpec)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.network_ttl = 5  # type: ignore[misc]


def test_empty_query_pieces_tolerated() -> None:
    assert parse_connector("static:(a:1)?").network_ttl == 1
    assert parse_connector("static:(a:1)?networkTTL=2&&duplex=true&").network_ttl == 2


def test_no_options_mapping_equals_empty() -> None:
    assert parse_connector("static:(a:1)", {}) == parse_connector("static:(a:1)", None)


# ---- errors -------------------------------------------------------------------------------


def test_port_out_of_range_message() -> None:
    assert error("static:(127.0.0.1:99999)") == (
        "static:(127.0.0.1:99999): port 99999 out of range 1-65535"
    )
    assert "port 0 out of range 1-65535" in error("static:(a:0)")


def test_unknown_option_message() -> None:
    msg = error("static:(a:1)?netwrkTTL=2")
    assert msg.startswith("static:(a:1)?netwrkTTL=2: unknown option 'netwrkTTL'")
    assert "did you mean 'networkTTL'?" in msg
    assert "known: " + ", ".join(OPTION_NAMES) in msg
    assert "known: duplex, networkTTL, " in msg


def test_unknown_option_suggestion_ignores_case() -> None:
    assert "did you mean 'prefetchSize'?" in error("static:(a:1)?prefetchsize=5")


def test_unknown_yaml_option() -> None:
    msg = error("static:(a:1)", {"ttl": 2})
    assert "unknown option 'ttl' in the YAML options" in msg
    assert "did you mean" not in msg


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("static:(a:1", "missing ')'"),
        ("static:a:1)", "unbalanced parentheses"),
        ("static:(a:1)x", "unexpected text 'x' after the address list"),
        ("static:()", "empty address list"),
        ("static:", "empty address list"),
        ("masterslave:()", "empty address list"),
        ("static:(a:1,,b:2)", "empty address"),
        ("static:(a:1,)", "empty address"),
        ("static:a:1,b:2", "several addresses need parentheses: static:(a:1,b:2)"),
        ("static:(a)", "missing port in address 'a'"),
        ("static:(a:)", "missing port in address 'a:'"),
        ("static:(:5)", "missing host"),
        ("static:(a:http)", "bad port 'http'"),
        ("static:(a:-1)", "bad port '-1'"),
        ("static:(a:1,a:1)", "address a:1 is listed twice"),
        ("static:(tcp://a:1,tcp://a:1)", "address a:1 is listed twice"),
        ("static:(ssl://a:1)", "unsupported transport 'ssl'"),
        ("static:(tcp://a:1?wireFormat.x=1)", "may not carry a path or options"),
        ("static:(::1:5)", "must be in brackets"),
        ("static:([::zz]:5)", "bad IPv6 address"),
        ("static:([::1]5)", "missing port"),
        ("static:(300.1.1.1:5)", "bad IPv4 address"),
        ("static:(bad_host!:5)", "bad host name"),
        ("static:(-bad:5)", "bad host name"),
        ("multicast:default", "expected multicast://NAME"),
        ("multicast://bad/name", "bad discovery group name"),
        ("fanout:(a:1)", "unknown connector scheme 'fanout'"),
        ("tcp://a:1", "write static:(tcp://a:1)"),
        ("localhost:61616", "write static:(localhost:61616)"),
        ("127.0.0.1:61616", "missing connector scheme"),
        ("", "empty"),
    ],
)
def test_malformed_uris(uri: str, reason: str) -> None:
    msg = error(uri)
    assert reason in msg
    if uri:
        assert msg.startswith(f"{uri}: ")


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("networkTTL=0", "option 'networkTTL': expected an integer >= 1, got '0'"),
        ("networkTTL=-1", "expected an integer >= 1"),
        ("networkTTL=two", "option 'networkTTL': expected an integer >= 1, got 'two'"),
        ("networkTTL=", "expected an integer >= 1, got ''"),
        ("messageTTL=0", "option 'messageTTL'"),
        ("consumerTTL=x", "option 'consumerTTL'"),
        ("prefetchSize=0", "option 'prefetchSize'"),
        ("duplex=yes", "option 'duplex': expected true or false, got 'yes'"),
        ("duplex=1", "expected true or false"),
        ("duplex", "option 'duplex' has no value"),
        ("keepAliveMs=0", "option 'keepAliveMs'"),
        ("initialReconnectDelay=-5", "option 'initialReconnectDelay'"),
        ("maxReconnectDelay=0", "option 'maxReconnectDelay'"),
        ("networkTTL=1&networkTTL=2", "option 'networkTTL' is given twice"),
        ("name=%20", "expected a non-empty name"),
        ("excludedDestinations=a.>.b", "'>' may only be the last segment"),
        ("excludedDestinations=a*", "wildcards must be a whole segment"),
        ("dynamicallyIncludedDestinations=a..b", "empty segment"),
        ("initialReconnectDelay=5000",
         "initialReconnectDelay 5000 is greater than maxReconnectDelay 1000"),
    ],
)
def test_bad_query_values(query: str, reason: str) -> None:
    uri = f"static:(a:1)?{query}"
    msg = error(uri)
    assert msg.startswith(f"{uri}: ")
    assert reason in msg


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"networkTTL": True}, "expected an integer >= 1, got True"),
        ({"networkTTL": 1.5}, "expected an integer >= 1, got 1.5"),
        ({"duplex": 1}, "expected true or false, got 1"),
        ({"duplex": None}, "expected true or false"),
        ({"name": 5}, "option 'name': expected a string, got 5"),
        ({"excludedDestinations": [1]}, "a list of queue patterns"),
        ({"excludedDestinations": {"a": 1}}, "comma-separated string"),
        ({"excludedDestinations": ["ok", ""]}, "destination pattern is empty"),
        ({5: True}, "option names must be strings"),
        ({"uri": "static:(b:2)"}, "unknown option 'uri'"),
    ],
)
def test_bad_yaml_values(options: dict[object, object], reason: str) -> None:
    msg = error("static:(a:1)", options)  # type: ignore[arg-type]
    assert msg.startswith("static:(a:1): ")
    assert reason in msg


def test_connector_error_carries_uri_and_reason() -> None:
    with pytest.raises(ConnectorError) as info:
        parse_connector("static:(a:99999)")
    assert info.value.uri == "static:(a:99999)"
    assert info.value.reason == "port 99999 out of range 1-65535"


def test_non_string_uri_rejected() -> None:
    with pytest.raises(ConnectorError, match="must be a string"):
        parse_connector(42)  # type: ignore[arg-type]


def test_options_must_be_a_mapping() -> None:
    assert "must be a mapping" in error("static:(a:1)", ["duplex"])  # type: ignore[arg-type]
