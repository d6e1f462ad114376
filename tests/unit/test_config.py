"""The broker config model (broker.config): its defaults, every rule with its message, and
the config file `netbroker up` writes (round trip, 0600, and every way a file is refused)."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from broker.config import (
    MAX_FILE_BYTES,
    BrokerConfig,
    ConfigError,
    Election,
    Sync,
)

BASE: dict[str, Any] = {"name": "a", "port": 61616, "data_dir": Path("run/a")}
ZK: dict[str, Any] = {
    "group": "B", "election": Election.ZOOKEEPER, "zookeeper": "127.0.0.1:2181",
    "replication_port": 7001,
}  # fmt: skip


def make(**settings: Any) -> BrokerConfig:
    return BrokerConfig(**{**BASE, **settings})


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


# ------------------------------------------------------------------ the model


def test_defaults() -> None:
    c = make()
    assert (c.host, c.sync, c.election, c.group, c.connectors) == (
        "127.0.0.1", Sync.LOCAL_DISK, Election.NONE, "", (),
    )  # fmt: skip
    assert (c.replicas, c.min_insync, c.weight, c.replication_port) == (1, 0, 1, 0)
    assert c.discovery_interfaces == ("127.0.0.1",)
    assert c.client_address == "127.0.0.1:61616"
    # The values read as the words operators write.
    assert c.sync == "local_disk" and c.election == ""


def test_sync_defaults_to_quorum_mem_under_zookeeper_only() -> None:
    assert make(**ZK).sync is Sync.QUORUM_MEM
    assert make(group="L", election=Election.LOCKFILE).sync is Sync.LOCAL_DISK
    assert make(**ZK, sync=Sync.LOCAL_MEM).sync is Sync.LOCAL_MEM


def test_sync_vocabulary() -> None:
    assert [s.value for s in Sync] == ["quorum_mem", "quorum_disk", "local_disk", "local_mem"]
    assert [s for s in Sync if s.fsyncs] == [Sync.QUORUM_DISK, Sync.LOCAL_DISK]
    assert [s for s in Sync if s.quorum] == [Sync.QUORUM_MEM, Sync.QUORUM_DISK]


@pytest.mark.parametrize(
    ("settings", "message", "told"),
    [
        ({"group": "L", "election": Election.LOCKFILE, "sync": Sync.QUORUM_DISK},
         "sync: quorum_disk needs members that replicate ('election' zookeeper); "
         "use local_disk or local_mem",
         "--sync quorum_disk needs members that replicate (--election zookeeper); "
         "use local_disk or local_mem"),
        ({"sync": Sync.QUORUM_MEM},
         "sync: quorum_mem needs members that replicate ('election' zookeeper); "
         "use local_disk or local_mem",
         "--sync quorum_mem needs members that replicate (--election zookeeper); "
         "use local_disk or local_mem"),
        ({"election": Election.LOCKFILE}, "election: needs 'group'", "--election needs --group"),
        ({**ZK, "zookeeper": ""},
         "election: zookeeper needs 'zookeeper' and 'replication_port'",
         "--election zookeeper needs --zookeeper and --replication-port"),
        ({**ZK, "replication_port": 0},
         "election: zookeeper needs 'zookeeper' and 'replication_port'",
         "--election zookeeper needs --zookeeper and --replication-port"),
        ({**ZK, "replicas": 2, "min_insync": 3},
         "min_insync: 3 is more than 'replicas' (2): no persistent send could ever be "
         "acknowledged",
         "--min-insync 3 is more than --replicas (2): no persistent send could ever be "
         "acknowledged"),
    ],
)  # fmt: skip
def test_rules_between_settings(settings: dict[str, Any], message: str, told: str) -> None:
    with pytest.raises(ConfigError) as info:
        make(**settings)
    assert str(info.value) == message
    assert info.value.told(flag) == told


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"port": 65536}, "port: expected an integer 0-65535, got 65536"),
        ({"port": -1}, "port: expected an integer 0-65535, got -1"),
        ({"port": "61616"}, "port: expected an integer, got '61616'"),
        ({"port": True}, "port: expected an integer, got true"),
        ({"name": "a/b"}, "name: invalid name 'a/b': use letters, digits, '-' and '_', "
                          "starting with a letter or digit, at most 64"),
        ({"name": ""}, "name: invalid name '': use letters, digits, '-' and '_', "
                       "starting with a letter or digit, at most 64"),
        ({"group": "g.1"}, "group: invalid name 'g.1': use letters, digits, '-' and '_', "
                           "starting with a letter or digit, at most 64"),
        ({"data_dir": "run/a"}, "data_dir: expected a path, got 'run/a'"),
        ({"max_message_bytes": 0}, "max_message_bytes: expected an integer >= 1, got 0"),
        ({"max_redeliveries": -1}, "max_redeliveries: expected an integer >= 0, got -1"),
        ({"memory_window": 0}, "memory_window: expected an integer >= 1, got 0"),
        ({"sync": "local_disk"}, "sync: expected one of quorum_mem, quorum_disk, local_disk, "
                                 "local_mem, got 'local_disk'"),
        ({"election": "zookeeper"}, "election: expected one of '', 'zookeeper', 'lockfile', "
                                    "got 'zookeeper'"),
        ({"connectors": ["static:(h:1)"]}, "connectors: expected a list of strings, got a list"),
        ({"discovery_interfaces": ()}, "discovery_interfaces: give at least one interface "
                                       "address"),
        ({"discovery_interfaces": ("eth0",)}, "discovery_interfaces: 'eth0' is not an IP "
                                              "address (give the interface's address, e.g. "
                                              "127.0.0.1)"),
        ({"zk_path": "netbroker/B"}, "zk_path: expected an absolute ZooKeeper path, got "
                                     "'netbroker/B'"),
        ({"replication_port": 70000}, "replication_port: expected an integer 1-65535, got 70000"),
        ({"replicas": 0}, "replicas: expected an integer 1-99, got 0"),
        ({"replicas": 100}, "replicas: expected an integer 1-99, got 100"),
        ({"min_insync": 100}, "min_insync: expected an integer 1-99, got 100"),
        ({"weight": 1001}, "weight: expected an integer 0-1000, got 1001"),
        ({"session_timeout": 0.0}, "session_timeout: expected a number of seconds > 0, got 0.0"),
        ({"lag_timeout": -1.0}, "lag_timeout: expected a number of seconds > 0, got -1.0"),
        ({"commit_timeout": float("inf")}, "commit_timeout: expected a number of seconds > 0, "
                                           "got inf"),
        ({"expiry_interval": float("nan")}, "expiry_interval: expected a number of seconds > "
                                            "0, got nan"),
        ({"shared_dir": "s"}, "shared_dir: expected a path or null, got 's'"),
    ],
)  # fmt: skip
def test_each_setting_is_checked(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make(**settings)
    assert str(info.value) == message
    assert info.value.key == next(iter(settings))


def test_unset_values_are_allowed_outside_the_bounds() -> None:
    # 0 means "none" (replication port) or "the default" (min_insync).
    c = make(replication_port=0, min_insync=0)
    assert (c.replication_port, c.min_insync) == (0, 0)


def test_a_reason_keeps_braces_of_values() -> None:
    with pytest.raises(ConfigError) as info:
        make(name="{group}")
    assert str(info.value).startswith("name: invalid name '{group}': ")


def test_replace_checks_again() -> None:
    c = make(**ZK)
    assert dataclasses.replace(c, port=5).port == 5
    with pytest.raises(ConfigError, match="election: needs 'group'"):
        dataclasses.replace(c, group="")


def test_path_name() -> None:
    assert make(**ZK).path_name == "B"
    assert make(group="A").path_name == "a"


# ------------------------------------------------------------------ the file


def full() -> BrokerConfig:
    return make(
        **ZK, host="0.0.0.0", sync=Sync.QUORUM_DISK, replicas=3, min_insync=2, weight=5,
        connectors=("static:(127.0.0.1:1)?networkTTL=2", "masterslave:(h:1,h:2)"),
        token="s3cr=t&x", discovery_interfaces=("127.0.0.1", "::1"), zk_path="/x/B",
        session_timeout=2.5, shared_dir=Path("/s"), max_message_bytes=1000,
    )  # fmt: skip


@pytest.mark.parametrize("config", [make(), full(), make(group="L", election=Election.LOCKFILE)])
def test_file_round_trip(config: BrokerConfig, tmp_path: Path) -> None:
    path = tmp_path / "broker.json"
    config.to_file(path)
    assert BrokerConfig.from_file(path) == config
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["broker.json"]  # no temporary left
    raw = json.loads(path.read_text())
    assert raw["sync"] == config.sync.value and raw["election"] == config.election.value


def test_file_replaces_one_with_other_permissions(tmp_path: Path) -> None:
    path = tmp_path / "broker.json"
    path.write_text("old")
    path.chmod(0o644)
    (tmp_path / ".broker.json.tmp").write_text("a leftover")
    (tmp_path / ".broker.json.tmp").chmod(0o666)
    full().to_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert BrokerConfig.from_file(path) == full()
    assert [p.name for p in tmp_path.iterdir()] == ["broker.json"]


def test_file_mode_is_0600_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        make().to_file(tmp_path / "broker.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "broker.json").stat().st_mode) == 0o600


def written(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "broker.json"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def settings_text(**changes: Any) -> str:
    raw = make().to_dict()
    raw.update(changes)
    return json.dumps({k: v for k, v in raw.items() if v is not ...})


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (settings_text(prot=1), "prot: unknown setting (did you mean 'port'?)"),
        (settings_text(colour="red"), "colour: unknown setting"),
        (settings_text(port="61616"), "port: expected an integer, got '61616'"),
        (settings_text(port=1.5), "port: expected an integer, got 1.5"),
        (settings_text(port=None), "port: expected an integer, got null"),
        (settings_text(port=70000), "port: expected an integer 0-65535, got 70000"),
        (settings_text(sync="fast"), "sync: expected one of quorum_mem, quorum_disk, "
                                     "local_disk, local_mem, got 'fast'"),
        (settings_text(election="raft"), "election: expected one of '', 'zookeeper', "
                                         "'lockfile', got 'raft'"),
        (settings_text(connectors="static:(h:1)"), "connectors: expected a list of strings, "
                                                   "got 'static:(h:1)'"),
        (settings_text(connectors=[1]), "connectors: expected a list of strings, got a list"),
        (settings_text(session_timeout=True), "session_timeout: expected a number, got true"),
        (settings_text(data_dir=""), "data_dir: expected a path, got ''"),
        (settings_text(data_dir=None), "data_dir: expected a path, got null"),
        (settings_text(token={"a": 1}), "token: expected a string, got an object"),
        (settings_text(port=...), "port: missing (a required setting)"),
        (settings_text(election="lockfile"), "election: needs 'group'"),
        (settings_text(sync="quorum_mem"), "sync: quorum_mem needs members that replicate "
                                           "('election' zookeeper); use local_disk or local_mem"),
        ("[1, 2]", "expected a JSON object of settings, got a list"),
        ('"{port}"', "expected a JSON object of settings, got '{port}'"),
        (settings_text()[:40], "line 1, column 41: invalid JSON: "),  # truncated
        ("", "line 1, column 1: invalid JSON: Expecting value"),
        ("{nope", "line 1, column 2: invalid JSON: Expecting property name enclosed in double "
                  "quotes"),
        (b"\xff\xfe{}", "not UTF-8 text: not a broker config"),
        ("[" * 100_000 + "]" * 100_000, "invalid JSON: nested too deeply"),
    ],
)  # fmt: skip
def test_file_refused(tmp_path: Path, text: str | bytes, reason: str) -> None:
    path = written(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        BrokerConfig.from_file(path)
    assert str(info.value).startswith(f"{path}: {reason}"), str(info.value)
    assert info.value.source == str(path)


def test_file_too_large(tmp_path: Path) -> None:
    path = written(tmp_path, " " * MAX_FILE_BYTES + settings_text())
    with pytest.raises(ConfigError) as info:
        BrokerConfig.from_file(path)
    assert str(info.value) == f"{path}: larger than 1 MiB: not a broker config"


def test_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as info:
        BrokerConfig.from_file(path)
    assert str(info.value) == f"{path}: cannot read: No such file or directory"


def test_file_floats_may_be_written_as_integers(tmp_path: Path) -> None:
    path = written(tmp_path, settings_text(session_timeout=2))
    c = BrokerConfig.from_file(path)
    assert c.session_timeout == 2.0 and isinstance(c.session_timeout, float)


# ------------------------------------------------------- the broker command's options


def broker_args(*argv: str) -> Any:
    from broker.cli.parser import build_parser

    return build_parser().parse_args(["broker", *argv])


def test_the_command_line_makes_the_same_config() -> None:
    from broker.cli.broker_cmd import config_of

    assert config_of(broker_args("--name", "a", "--port", "61616", "--data", "run/a")) == make()
    argv = [
        "--name", "a", "--port", "61616", "--data", "run/a", "--host", "0.0.0.0",
        "--sync", "quorum_disk", "--max-message-bytes", "1000", "--group", "B",
        "--connector", "static:(127.0.0.1:1)?networkTTL=2", "--connector",
        "masterslave:(h:1,h:2)", "--discovery-interface", "127.0.0.1",
        "--discovery-interface", "::1", "--election", "zookeeper", "--zookeeper",
        "127.0.0.1:2181", "--zk-path", "/x/B", "--replication-port", "7001", "--replicas", "3",
        "--min-insync", "2", "--weight", "5", "--session-timeout", "2.5", "--shared-dir", "/s",
    ]  # fmt: skip
    # The securityToken has no flag (a secret on a command line shows in `ps`).
    assert config_of(broker_args(*argv)) == replace(full(), token="")


def test_no_secret_has_a_flag() -> None:
    from broker.cli.errors import UsageError

    with pytest.raises(UsageError):
        broker_args("--name", "a", "--port", "1", "--data", "d", "--token", "x")


def test_every_flag_is_a_setting_with_the_models_default() -> None:
    from broker.cli.broker_cmd import config_of

    # No default lives in argparse: an option not given is absent, and the model fills it.
    args = broker_args("--name", "a", "--port", "1", "--data", "d")
    assert not hasattr(args, "sync") and not hasattr(args, "replicas")
    c = config_of(args)
    assert (c.sync, c.replicas, c.weight, c.session_timeout) == (Sync.LOCAL_DISK, 1, 1, 1.0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--name", "a", "--port", "1", "--data", "d", "--election", "lockfile"],
         "--election needs --group"),
        (["--name", "a", "--port", "1", "--data", "d", "--group", "G", "--replicas", "2",
          "--min-insync", "3"],
         "--min-insync 3 is more than --replicas (2): no persistent send could ever be "
         "acknowledged"),
        (["--name", "a"], "broker: the following arguments are required: --port, --data "
                          "(see 'netbroker broker --help')"),
        (["--config", "f.json", "--port", "1"],
         "broker: --config takes every setting from its file; give no other option with it "
         "but --log-level (given: --port) (see 'netbroker broker --help')"),
    ],
)  # fmt: skip
def test_the_command_line_says_the_models_rules_in_flags(argv: list[str], message: str) -> None:
    from broker.cli.broker_cmd import config_of
    from broker.cli.errors import CliError

    with pytest.raises(CliError) as info:
        config_of(broker_args(*argv))
    assert str(info.value) == message


def test_config_file_and_log_level(tmp_path: Path) -> None:
    from broker.cli.broker_cmd import config_of

    full().to_file(tmp_path / "broker.json")
    args = broker_args("--config", str(tmp_path / "broker.json"), "--log-level", "debug")
    assert config_of(args) == full()
