"""Every CLI failure is one readable `netbroker: ...` line and a non-zero exit, no traceback.

These run `python -m broker` as a user would; none needs a running broker.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from broker.ports import listen_port

ROOT = Path(__file__).resolve().parents[2]


def netbroker(
    *args: str, cwd: Path = ROOT, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH: `python -m broker` from any directory, installed or not.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "broker", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed run (asserting that it is one)."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("netbroker: "), lines[0]
    return lines[0]


def free_port() -> int:
    """A port nothing listens on now (below the ephemeral range: broker/ports.py)."""
    return listen_port()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["send", "--bogus", "q", "x"], "netbroker: send: unrecognized arguments: --bogus"),
        (["frobnicate"], "netbroker: argument COMMAND: invalid choice: 'frobnicate'"),
        ([], "netbroker: the following arguments are required: COMMAND"),
        (["send"], "netbroker: send: the following arguments are required: DEST"),
        (["send", "q"], "netbroker: send: give a message BODY or --file F"),
        (["recv", "q", "--count", "0"], "netbroker: recv: argument --count: expected an "
         "integer >= 1, got '0'"),
        (["broker", "--name", "a", "--port", "x", "--data", "d"],
         "netbroker: broker: argument --port: expected an integer 0-65535, got 'x'"),
        (["broker", "--name", "a/b", "--port", "0", "--data", "d"],
         "netbroker: broker: argument --name: invalid name 'a/b'"),
        (["send", "--header", "novalue", "q", "x"],
         "netbroker: send: argument --header: expected KEY=VALUE, got 'novalue'"),
    ],
)
def test_usage_errors(args: list[str], expected: str) -> None:
    result = netbroker(*args)
    assert result.returncode == 2
    assert one_line_error(result).startswith(expected)
    assert result.stdout == ""


def test_hints_name_the_command_as_typed(tmp_path: Path) -> None:
    """From a checkout, `netbroker` is not on PATH: hints name `scripts/netbroker`."""
    env = {k: v for k, v in os.environ.items() if k != "NETBROKER_PROG"}
    result = subprocess.run(
        ["scripts/netbroker", "send"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "netbroker: send: the following arguments are required: DEST "
        "(see 'scripts/netbroker send --help')"
    )
    (tmp_path / "t.yaml").write_text(
        f"data: run/t\ngroups: {{A: {{brokers: {{a: {{port: {free_port()}}}}}}}}}\n"
    )
    result = subprocess.run(
        [str(ROOT / "scripts" / "netbroker"), "down", "t.yaml"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert f"(brokers started by `{ROOT}/scripts/netbroker up` are recorded there)" in (
        result.stderr
    )


def test_help_exits_zero() -> None:
    result = netbroker("--help")
    assert result.returncode == 0
    assert "send" in result.stdout and "up" in result.stdout


@pytest.mark.parametrize("command", [["send", "q", "hello"], ["recv", "q"], ["stat"]])
def test_no_broker_listening(command: list[str]) -> None:
    port = free_port()
    result = netbroker(*command, "--url", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert one_line_error(result) == (
        f"netbroker: cannot connect to 127.0.0.1:{port}: connection refused "
        "(is a broker running there?)"
    )


def test_bad_url() -> None:
    line = one_line_error(netbroker("send", "--url", "nonsense:1:2", "q", "x"))
    assert line.startswith("netbroker: --url: bad client URL 'nonsense:1:2'")


def test_send_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.bin"
    line = one_line_error(netbroker("send", "q", "--file", str(missing)))
    assert line == f"netbroker: {missing}: No such file or directory"


def test_up_bad_topology_names_file_key_and_reason(tmp_path: Path) -> None:
    topo = tmp_path / "bad.yaml"
    topo.write_text("data: run/bad\ngroups:\n  A:\n    brokers:\n      a: {port: abc}\n")
    result = netbroker("up", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert one_line_error(result) == (
        "netbroker: bad.yaml: groups.A.brokers.a.port: expected an integer 1-65535, got 'abc'"
    )
    assert not (tmp_path / "run").exists()  # nothing was started or created


def test_up_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("groups:\n  A: b: c\n")
    line = one_line_error(netbroker("up", "bad.yaml", cwd=tmp_path))
    assert line == (
        "netbroker: bad.yaml: line 2, column 7: invalid YAML: mapping values are not allowed here"
    )


@pytest.mark.parametrize("command", ["up", "status", "down"])
def test_missing_topology_file(tmp_path: Path, command: str) -> None:
    line = one_line_error(netbroker(command, "nope.yaml", cwd=tmp_path))
    assert line == "netbroker: nope.yaml: no such file"


def test_down_with_nothing_running_is_not_an_error(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(
        f"data: run/t\ngroups: {{A: {{brokers: {{a: {{port: {free_port()}}}}}}}}}\n"
    )
    result = netbroker("down", "t.yaml", cwd=tmp_path)
    assert result.returncode == 0
    assert "nothing to stop" in result.stderr


def test_quorum_sync_without_replication_is_refused(tmp_path: Path) -> None:
    # A lockfile pair shares one store: nothing replicates, so there is no quorum to wait
    # for (before, this started with fsync off).
    result = netbroker(
        "broker", "--name", "a", "--port", "0", "--data", str(tmp_path / "d"), "--group", "G",
        "--election", "lockfile", "--shared-dir", str(tmp_path / "s"), "--sync", "quorum_disk",
    )  # fmt: skip
    assert result.returncode == 1
    assert one_line_error(result) == (
        "netbroker: --sync quorum_disk needs members that replicate (--election zookeeper); "
        "use local_disk or local_mem"
    )


def test_broker_data_dir_not_creatable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = netbroker("broker", "--name", "a", "--port", "0", "--data", str(blocker / "d"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"netbroker: broker a: cannot create data directory {blocker / 'd'}")


def test_broker_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = netbroker("broker", "--name", "a", "--port", str(port), "--data",
                           str(tmp_path / "a"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    # gRPC's core may log its own line about the failed bind first; ours closes the run.
    assert result.stderr.splitlines()[-1] == (
        f"netbroker: broker a: cannot listen on 127.0.0.1:{port}: port in use or not bindable"
    )


def test_broker_config_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "broker.json"
    path.write_text('{"name": "a", "port": 1, "data_dir": "d", "prot": 2}')
    result = netbroker("broker", "--config", str(path))
    assert result.returncode == 1
    assert one_line_error(result) == (
        f"netbroker: {path}: prot: unknown setting (did you mean 'port'?)"
    )


def test_broker_config_file_takes_no_other_option(tmp_path: Path) -> None:
    result = netbroker("broker", "--config", str(tmp_path / "b.json"), "--name", "a")
    assert result.returncode == 2
    assert one_line_error(result) == (
        "netbroker: broker: --config takes every setting from its file; give no other option "
        "with it but --log-level (given: --name) (see 'netbroker broker --help')"
    )
