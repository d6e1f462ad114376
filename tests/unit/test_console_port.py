"""`console_port` in topology files and `--console-port` on `up`: parsed, checked like
every port, 0 for none; which port `up` serves the console on."""

from __future__ import annotations

import pytest

from broker.cli.cluster_cmds import _console
from broker.cli.errors import CliError
from broker.cluster.loader import load
from netconnector.uri import parse_connector
from tests.unit.test_topology import ROOT, check, error

ONE = "groups: {A: {brokers: {a: {port: 61616, stomp_port: 61613}}}}"


def test_console_port_is_optional_and_zero_turns_it_off() -> None:
    assert check(ONE).console_port is None
    assert check("console_port: 9161\n" + ONE).console_port == 9161
    assert check("console_port: 0\n" + ONE).console_port == 0
    shipped = load(ROOT / "topologies" / "ab_c.yaml", parse_connector)
    assert shipped.console_port is None  # the default, 8161


@pytest.mark.parametrize("value", ["70000", "-1", "'8161'", "true", "null"])
def test_console_port_must_be_a_port_or_zero(value: str) -> None:
    assert error(f"console_port: {value}\n" + ONE).startswith(
        "topologies/x.yaml: console_port: expected an integer 0-65535 (0: no console), got "
    )


def test_console_port_is_checked_like_every_port() -> None:
    assert error("console_port: 61613\n" + ONE).endswith(
        "groups.A.brokers.a.stomp_port: port 61613 is already used by console_port"
    )
    # Another host's port is no clash (the console listens on 127.0.0.1) ...
    check("console_port: 61616\ngroups: {A: {brokers: {a: {port: 61616, host: 127.0.0.2}}}}")
    # ... a wildcard's is.
    assert "port 61616 is already used by console_port" in error(
        "console_port: 61616\ngroups: {A: {brokers: {a: {port: 61616, host: 0.0.0.0}}}}"
    )


def test_which_port_up_serves_the_console_on() -> None:
    t = check(ONE)
    assert _console(t, None) is not None  # the default port
    assert _console(t, 0) is None
    assert _console(check("console_port: 0\n" + ONE), None) is None
    assert _console(check("console_port: 0\n" + ONE), 9000) is not None
    with pytest.raises(CliError, match="--console-port 61613 is broker a's stomp_port"):
        _console(t, 61613)
