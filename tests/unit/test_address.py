"""The shared host:port parser: one set of rules for client URLs, connectors and topologies."""

from __future__ import annotations

import pytest

from broker.address import Address, AddressError, Problem, parse_address
from broker.client import parse_url
from netconnector.uri import ConnectorError, parse_connector

# --------------------------------------------------------------------------- accepted


@pytest.mark.parametrize(
    ("text", "host", "port", "normalised"),
    [
        ("127.0.0.1:61616", "127.0.0.1", 61616, "127.0.0.1:61616"),
        ("0.0.0.0:1", "0.0.0.0", 1, "0.0.0.0:1"),
        ("255.255.255.255:65535", "255.255.255.255", 65535, "255.255.255.255:65535"),
        ("localhost:61616", "localhost", 61616, "localhost:61616"),
        ("broker-1.example.com:1", "broker-1.example.com", 1, "broker-1.example.com:1"),
        ("zk_1:2181", "zk_1", 2181, "zk_1:2181"),
        ("  host:5  ", "host", 5, "host:5"),
        ("tcp://host:5", "host", 5, "host:5"),
        ("TCP://host:5", "host", 5, "host:5"),
        ("host:065535", "host", 65535, "host:65535"),
        ("[::1]:61616", "::1", 61616, "[::1]:61616"),
        ("tcp://[::1]:2", "::1", 2, "[::1]:2"),
        ("[fe80::1%eth0]:5", "fe80::1%eth0", 5, "[fe80::1%eth0]:5"),
        (
            "[2001:db8::8a2e:370:7334]:7",
            "2001:db8::8a2e:370:7334",
            7,
            "[2001:db8::8a2e:370:7334]:7",
        ),
    ],
)
def test_accepted(text: str, host: str, port: int, normalised: str) -> None:
    address = parse_address(text)
    assert address == Address(host, port)
    assert str(address) == normalised


def test_a_host_name_of_253_characters_is_accepted() -> None:
    host = ".".join(["a" * 63] * 3 + ["b" * 61])
    assert len(host) == 253
    assert parse_address(f"{host}:1").host == host


# --------------------------------------------------------------------------- refused


@pytest.mark.parametrize(
    ("text", "problem", "part", "message"),
    [
        ("", Problem.EMPTY, "", "empty address"),
        ("   ", Problem.EMPTY, "", "empty address"),
        ("ssl://a:1", Problem.TRANSPORT, "ssl", "unsupported transport 'ssl' in 'ssl://a:1'"),
        ("://a:1", Problem.TRANSPORT, "", "unsupported transport ''"),
        ("a:1/", Problem.PATH, "a:1/", "address 'a:1/' may not carry a path or options"),
        ("tcp://a:1?x=1", Problem.PATH, "tcp://a:1?x=1", "may not carry a path or options"),
        ("[::1:5", Problem.BRACKET, "[::1:5", "missing ']' in address '[::1:5'"),
        ("[::zz]:5", Problem.IPV6, "::zz", "bad IPv6 address '::zz' in '[::zz]:5'"),
        ("[1.2.3.4]:5", Problem.IPV6, "1.2.3.4", "bad IPv6 address '1.2.3.4'"),
        ("[]:5", Problem.IPV6, "", "bad IPv6 address ''"),
        ("[::1]", Problem.NO_PORT, "[::1]", "missing port in address '[::1]'"),
        ("[::1]5", Problem.NO_PORT, "[::1]5", "missing port in address '[::1]5'"),
        ("::1:5", Problem.UNBRACKETED_IPV6, "::1", "IPv6 address in '::1:5' must be in brackets"),
        (":5", Problem.NO_HOST, "", "missing host in address ':5'"),
        ("999.1.1.1:1", Problem.IPV4, "999.1.1.1", "bad IPv4 address '999.1.1.1' in '999.1.1.1:1'"),
        ("1.1.1.256:1", Problem.IPV4, "1.1.1.256", "bad IPv4 address '1.1.1.256'"),
        ("1.2.3:1", Problem.IPV4, "1.2.3", "bad IPv4 address '1.2.3'"),
        ("1.2.3.4.5:1", Problem.IPV4, "1.2.3.4.5", "bad IPv4 address"),
        ("01.2.3.4:1", Problem.IPV4, "01.2.3.4", "bad IPv4 address"),
        ("bad host:1", Problem.HOST, "bad host", "bad host name 'bad host' in 'bad host:1'"),
        ("-bad:1", Problem.HOST, "-bad", "bad host name '-bad'"),
        ("bad-:1", Problem.HOST, "bad-", "bad host name 'bad-'"),
        ("a..b:1", Problem.HOST, "a..b", "bad host name 'a..b'"),
        (".a:1", Problem.HOST, ".a", "bad host name '.a'"),
        ("a!:1", Problem.HOST, "a!", "bad host name 'a!'"),
        ("localhost", Problem.NO_PORT, "localhost", "missing port in address 'localhost'"),
        ("localhost:", Problem.EMPTY_PORT, "", "missing port in address 'localhost:'"),
        ("localhost:http", Problem.PORT, "http", "bad port 'http' in address 'localhost:http'"),
        ("localhost:-1", Problem.PORT, "-1", "bad port '-1'"),
        ("localhost:+1", Problem.PORT, "+1", "bad port '+1'"),
        ("localhost:1 2", Problem.PORT, "1 2", "bad port '1 2'"),
        ("localhost:\u0661", Problem.PORT, "\u0661", "bad port"),  # an Arabic-Indic digit
        ("localhost:0", Problem.PORT_RANGE, "0", "port 0 out of range 1-65535"),
        ("localhost:65536", Problem.PORT_RANGE, "65536", "port 65536 out of range 1-65535"),
    ],
)
def test_refused(text: str, problem: Problem, part: str, message: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address(text)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.problem is problem
    assert error.part == part
    assert error.text == text.strip()
    assert message in str(error)


def test_a_host_name_over_253_characters_is_refused() -> None:
    host = ".".join(["a" * 63] * 4)
    with pytest.raises(AddressError) as caught:
        parse_address(f"{host}:1")
    assert caught.value.problem is Problem.HOST


# --------------------------------------------------------------------------- one rule everywhere


@pytest.mark.parametrize(
    "address", ["999.1.1.1:1", "1.2.3:1", "a..b:1", "[::zz]:1", "a:0", "a:65536", "a:1/"]
)
def test_client_urls_and_connectors_refuse_the_same_addresses(address: str) -> None:
    with pytest.raises(AddressError):
        parse_address(address)
    with pytest.raises(ValueError, match="bad client URL"):
        parse_url(address)
    with pytest.raises(ValueError, match="bad client URL"):
        parse_url(f"failover:(a:1,{address})")
    with pytest.raises(ConnectorError):
        parse_connector(f"static:({address})")


@pytest.mark.parametrize(
    ("address", "normalised"),
    [
        ("tcp://h:061616", "h:61616"),
        ("[fe80::1%eth0]:5", "[fe80::1%eth0]:5"),
        ("10.0.0.1:2", "10.0.0.1:2"),
        ("node_1.local:3", "node_1.local:3"),
    ],
)
def test_client_urls_and_connectors_normalise_alike(address: str, normalised: str) -> None:
    assert parse_url(address).addresses == (normalised,)
    assert parse_connector(f"static:({address})").addresses == (normalised,)


def test_the_client_names_its_url_and_the_connector_its_uri() -> None:
    with pytest.raises(ValueError) as client:
        parse_url("999.1.1.1:1")
    assert str(client.value) == "bad client URL '999.1.1.1:1': bad IPv4 address '999.1.1.1'"
    with pytest.raises(ConnectorError) as connector:
        parse_connector("static:(999.1.1.1:1)")
    assert str(connector.value) == (
        "static:(999.1.1.1:1): bad IPv4 address '999.1.1.1' in '999.1.1.1:1'"
    )
