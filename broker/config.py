"""A broker's settings, as one typed model: every setting with its default and its rule,
the rules between settings, and the file `netbroker up` hands each broker.

A `BrokerConfig` is made from the `broker` command's flags, by `netbroker up` from a
topology (written with `to_file`, read back by `broker --config` with `from_file`), and by
tests; whichever way, `__post_init__` checks it, so a config that exists is one a broker
can run. A setting's flag and help live in its field's metadata (`Setting`), from which the
`broker` command builds its options. This module imports no layer: every layer may read it.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, cast, get_type_hints

MiB = 1024 * 1024
# A broker's config file is a few KiB; the bound keeps a wrong path (a store file, a log)
# from being read whole.
MAX_FILE_BYTES = 1 * MiB

# Broker and group names become directory names (DATA/<broker>), ZooKeeper path
# segments and log prefixes, so they are kept to a portable, unambiguous alphabet:
# no dots (they would make KEY.PATHs ambiguous), no slashes, no spaces.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
NAME_RULE = "use letters, digits, '-' and '_', starting with a letter or digit, at most 64"


class Sync(StrEnum):
    """When a persistent send is acknowledged to its producer (docs/semantics.md, "In-sync
    set, sync modes and `min_insync`")."""

    QUORUM_MEM = "quorum_mem"  # every in-sync member holds it (in memory or on disk)
    QUORUM_DISK = "quorum_disk"  # every in-sync member has it on disk
    LOCAL_DISK = "local_disk"  # the master has it on disk
    LOCAL_MEM = "local_mem"  # the master has written it

    @property
    def fsyncs(self) -> bool:
        """Whether a broker fsyncs its own writes before acknowledging them."""
        return self in (Sync.LOCAL_DISK, Sync.QUORUM_DISK)

    @property
    def quorum(self) -> bool:
        """Whether acknowledging waits for the group's in-sync members."""
        return self in (Sync.QUORUM_MEM, Sync.QUORUM_DISK)


class Election(StrEnum):
    """How a master/slave group elects its master; NONE for a standalone broker."""

    NONE = ""
    ZOOKEEPER = "zookeeper"
    LOCKFILE = "lockfile"


class ConfigError(ValueError):
    """A setting refused. `key` names it ("" for a file as a whole), `value` is the value
    refused where the reason reads after it ("zookeeper needs ..."), and `reason` says
    why; it names other settings as `{key}`, so that each reader can name them its way
    (`str()` quotes the key, the command line gives the flag: see `told`)."""

    def __init__(self, key: str, reason: str, *, value: str = "", source: str = "") -> None:
        self.key = key
        self.reason = reason
        self.value = str(value)
        self.source = source
        what = f"{value} {self._reason(_quoted)}" if value else self._reason(_quoted)
        super().__init__(": ".join(p for p in (source, key, what) if p))

    def told(self, name: Callable[[str], str]) -> str:
        """The error as one sentence, each setting named by `name(key)`."""
        subject = " ".join(p for p in (name(self.key), self.value) if p)
        return f"{subject} {self._reason(name)}"

    def within(self, source: str) -> ConfigError:
        """The same error, said of the file `source`."""
        return ConfigError(self.key, self.reason, value=self.value, source=source)

    def _reason(self, name: Callable[[str], str]) -> str:
        return self.reason.format_map(_Names(name))


class _Names(dict[str, str]):
    def __init__(self, name: Callable[[str], str]) -> None:
        super().__init__()
        self.name = name

    def __missing__(self, key: str) -> str:
        return self.name(key)


def _quoted(key: str) -> str:
    return f"'{key}'"


def _escaped(reason: str) -> str:
    """A reason in plain words as ConfigError takes one (its braces are not names)."""
    return reason.replace("{", "{{").replace("}", "}}")


@dataclass(frozen=True)
class Setting:
    """A setting's flag and help on the `broker` command line, and its bounds."""

    # "" for a setting the command line does not set.
    flag: str = ""
    help: str = ""
    metavar: str | None = None
    # The title of the group of options it is listed in ("" for the command's own).
    section: str = ""
    # Integers: the bounds (None: unbounded), and a value that means "not set", allowed
    # outside them.
    low: int | None = None
    high: int | None = None
    unset: int | None = None
    # The default as the help shows it: "" for none, None for the field's own.
    shown: str | None = ""
    # Why a value of the right type is refused, or None.
    check: Callable[[Any], str | None] | None = None

    @property
    def bounds(self) -> str:
        if self.high is not None:
            return f"{self.low}-{self.high}"
        return f">= {self.low}"


def _meta(flag: str = "", help: str = "", **more: Any) -> dict[str, Setting]:
    return {"setting": Setting(flag, help, **more)}


def check_name(value: str) -> str | None:
    """Why `value` is not a valid broker or group name, or None when it is."""
    if not NAME_RE.fullmatch(value):
        return f"invalid name {value!r}: {NAME_RULE}"
    return None


def _group_name(value: str) -> str | None:
    return check_name(value) if value else None


def check_ip(value: str) -> str | None:
    """Why `value` is not an IP address, or None when it is."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address (give the interface's address, e.g. 127.0.0.1)"
    return None


def _interfaces(value: tuple[str, ...]) -> str | None:
    if not value:
        return "give at least one interface address"
    return next((why for why in map(check_ip, value) if why), None)


def is_zk_path(value: str) -> bool:
    """Whether `value` is an absolute ZooKeeper path: `/a/b`, no trailing or empty part."""
    return value.startswith("/") and not value.endswith("/") and "//" not in value


def _zk_path(value: str) -> str | None:
    if value and not is_zk_path(value):
        return f"expected an absolute ZooKeeper path, got {value!r}"
    return None


# `sync`'s default depends on `election` (quorum_mem under ZooKeeper, else local_disk):
# this stands for it until `__post_init__` chooses, so a built config's `sync` is a Sync.
_BY_ELECTION = cast(Sync, "by election")

_GROUP = "master/slave group"
_DISCOVERY = "discovery (multicast:// connectors)"
_TLS = "TLS (docs/security.md)"


@dataclass(frozen=True)
class BrokerConfig:
    """Every setting of one broker, with its production default; checked when made."""

    name: str = field(metadata=_meta("--name", "the broker's name", check=check_name))
    port: int = field(
        metadata=_meta(
            "--port", "client port; 0 picks a free one (see the listening line)", low=0, high=65535
        )
    )
    data_dir: Path = field(
        metadata=_meta("--data", "the broker's data directory (created if missing)", metavar="DIR")
    )
    host: str = field(
        default="127.0.0.1", metadata=_meta("--host", "address to listen on", shown=None)
    )
    # Prometheus metrics over HTTP on this port, at /metrics (on `host`); 0: none.
    metrics_port: int = field(
        default=0,
        metadata=_meta(
            "--metrics-port", "serve Prometheus metrics at http://HOST:PORT/metrics",
            metavar="PORT", low=1, high=65535, unset=0, shown="off",
        ),
    )  # fmt: skip
    # STOMP 1.0-1.2 for existing clients, on the same host (ActiveMQ's port is 61613).
    stomp_port: int = field(
        default=0,
        metadata=_meta(
            "--stomp-port", "STOMP port (ActiveMQ's is 61613); 0: no STOMP", metavar="PORT",
            low=1, high=65535, unset=0,
        ),
    )  # fmt: skip
    # Largest message a broker accepts, whole as serialized (body, headers, id, queue
    # name and the rest); gRPC's own limits are raised to match.
    max_message_bytes: int = field(
        default=100 * MiB,
        metadata=_meta(
            "--max-message-bytes", "largest message body accepted", metavar="B", low=1,
            shown="100 MiB",
        ),
    )  # fmt: skip
    # Bounds on a message's parts, each refused with INVALID_ARGUMENT past it (ActiveMQ's
    # STOMP limits for headers): an id is kept in the duplicate check long after its
    # message, and headers are copied with the message on every hop.
    max_id_length: int = field(default=1024, metadata=_meta(low=1))
    max_headers: int = field(default=1000, metadata=_meta(low=0))
    max_header_length: int = field(default=10 * 1024, metadata=_meta(low=1))
    # When a persistent send is answered: "local_disk" once fsynced here; "local_mem"
    # once written here without fsync (survives a process crash, not a power loss); in a
    # group "quorum_mem" once every in-sync member holds it, "quorum_disk" once every
    # in-sync member has fsynced it. By default quorum_mem under ZooKeeper, else local_disk.
    sync: Sync = field(
        default=_BY_ELECTION,
        metadata=_meta(
            "--sync",
            "when a persistent send is answered: after fsync (local_disk, the default "
            "standalone), after the write (local_mem), or once every in-sync group member "
            "holds it (quorum_mem, the default in a group) or has fsynced it (quorum_disk)",
        ),
    )
    # A message handed out this many times without an ack goes to DLQ.<queue> next time.
    max_redeliveries: int = field(
        default=6,
        metadata=_meta(
            "--max-redeliveries", "deliveries without ack before DLQ.<queue>", metavar="K",
            low=0, shown=None,
        ),
    )  # fmt: skip
    # Pending persistent messages kept in memory per queue; the rest are paged from the
    # store as the window drains.
    memory_window: int = field(default=10_000, metadata=_meta(low=1))
    # Bytes of non-persistent messages the broker holds before producers are slowed.
    nonpersistent_memory_limit: int = field(default=256 * MiB, metadata=_meta(low=1))
    # Ids of consumed messages remembered for the duplicate check, so that a failover
    # resend of a message already consumed is not delivered again.
    dedup_window: int = field(default=1_000_000, metadata=_meta(low=0))
    # How often expired pending messages are swept to their DLQ, in seconds.
    expiry_interval: float = 1.0
    # The master/slave group this broker belongs to ("" for none).
    group: str = field(
        default="",
        metadata=_meta(
            "--group", "the master/slave group this broker belongs to", metavar="NAME",
            check=_group_name,
        ),
    )  # fmt: skip
    # Network connector URIs (options in the query string), e.g. "static:(h:p)?networkTTL=2".
    # Parsed by the network layer when the broker starts.
    connectors: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "--connector",
            "a network connector, e.g. 'static:(127.0.0.1:61617)?networkTTL=2' (repeatable)",
            metavar="URI",
        ),
    )
    # Shared secret that links and replication connections must present ("" accepts any).
    token: str = field(
        default="",
        repr=False,  # kept out of logs and tracebacks
        # No flag: a secret on the command line shows in `ps`. `up` writes it into the
        # 0600 config file; by hand, use --broker-credential FILE.
        metadata=_meta(),
    )
    # The users file: users with argon2 hashes and groups, whether anonymous clients are
    # let in, the authorization map (docs/security.md). None: every client is let in.
    users_file: Path | None = field(
        default=None,
        metadata=_meta(
            "--users", "users file: clients must authenticate (docs/security.md)",
            metavar="FILE", shown="none: open",
        ),
    )  # fmt: skip
    # A file (mode 0600) holding the credential brokers present to each other on
    # bridges and replication; it takes the place of the securityToken.
    broker_credential_file: Path | None = field(
        default=None,
        metadata=_meta(
            "--broker-credential",
            "file (mode 0600) with the credential bridges and replication present and require",
            metavar="FILE",
        ),
    )  # fmt: skip
    # TLS on every port (docs/security.md): the certificate chain and key this broker
    # presents (the key file mode 0600), and the CA that bridges, followers and the
    # brokers it dials are checked against. All three, or none: plaintext.
    tls_cert: Path | None = field(
        default=None,
        metadata=_meta(
            "--tls-cert", "certificate (PEM) the broker presents: TLS on every port",
            metavar="FILE", section=_TLS, shown="none: plaintext",
        ),
    )  # fmt: skip
    tls_key: Path | None = field(
        default=None,
        metadata=_meta(
            "--tls-key", "its private key (PEM, mode 0600)", metavar="FILE", section=_TLS,
        ),
    )  # fmt: skip
    tls_ca: Path | None = field(
        default=None,
        metadata=_meta(
            "--tls-ca", "CA (PEM) that peer brokers' certificates are checked against",
            metavar="FILE", section=_TLS,
        ),
    )  # fmt: skip
    # Bridges connect here under TLS, presenting their broker certificate (gRPC's
    # client port cannot ask clients for one without requiring it of all); 0: bridges use
    # the client port (plaintext only).
    bridge_port: int = field(
        default=0,
        metadata=_meta(
            "--bridge-port", "port other brokers' bridges connect to (mutual TLS)",
            metavar="PORT", section=_TLS, low=1, high=65535, unset=0,
        ),
    )  # fmt: skip
    # The brokers whose certificates the bridge port accepts, and the members whose
    # certificates the replication port accepts as followers (empty: any the CA signed).
    tls_peers: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "--tls-peer", "broker a bridge certificate may name (repeatable; none: any)",
            metavar="NAME", section=_TLS,
        ),
    )  # fmt: skip
    group_members: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "--group-member", "member a follower's certificate may name (repeatable; none: any)",
            metavar="NAME", section=_TLS,
        ),
    )  # fmt: skip
    # multicast:// connectors: the addresses of the interfaces zeroconf advertises and
    # browses on (always explicit: zeroconf alone would use every interface), and a token
    # whose digest goes in the record so that other clusters' brokers are ignored.
    discovery_interfaces: tuple[str, ...] = field(
        default=("127.0.0.1",),
        metadata=_meta(
            "--discovery-interface",
            "address of an interface zeroconf advertises and browses on (repeatable)",
            metavar="IP", section=_DISCOVERY, shown="127.0.0.1", check=_interfaces,
        ),
    )  # fmt: skip
    discovery_token: str = field(
        default="",
        repr=False,
        metadata=_meta(
            "--discovery-token",
            "advertised as a digest; brokers with another token are ignored",
            metavar="SECRET", section=_DISCOVERY,
        ),
    )  # fmt: skip
    # Master/slave: standalone, "zookeeper" or "lockfile".
    election: Election = field(
        default=Election.NONE,
        metadata=_meta(
            "--election", "how the group elects its master (needs --group)", section=_GROUP
        ),
    )
    zookeeper: str = field(
        default="",
        metadata=_meta(
            "--zookeeper", "ZooKeeper ensemble for --election zookeeper",
            metavar="HOST:PORT,...", section=_GROUP,
        ),
    )  # fmt: skip
    # The group's ZooKeeper path ("": /netbroker/groups/GROUP).
    zk_path: str = field(
        default="",
        metadata=_meta(
            "--zk-path", "the group's ZooKeeper path", metavar="PATH", section=_GROUP,
            shown="/netbroker/groups/GROUP", check=_zk_path,
        ),
    )  # fmt: skip
    replication_port: int = field(
        default=0,
        metadata=_meta(
            "--replication-port", "port slaves replicate from when this broker is master",
            metavar="PORT", section=_GROUP, low=1, high=65535, unset=0,
        ),
    )  # fmt: skip
    replicas: int = field(
        default=1,
        metadata=_meta(
            "--replicas", "members in the group", metavar="N", section=_GROUP,
            low=1, high=99, shown=None,
        ),
    )  # fmt: skip
    # Smallest in-sync set that may acknowledge (0: replicas/2+1 for 3 or more, else 1).
    min_insync: int = field(
        default=0,
        metadata=_meta(
            "--min-insync", "smallest in-sync set that may acknowledge", metavar="K",
            section=_GROUP, low=1, high=99, unset=0,
            shown="replicas/2+1 for 3 or more, 1 for a pair",
        ),
    )  # fmt: skip
    weight: int = field(
        default=1,
        metadata=_meta(
            "--weight", "election preference among equally up-to-date members", metavar="W",
            section=_GROUP, low=0, high=1000, shown=None,
        ),
    )  # fmt: skip
    session_timeout: float = field(
        default=1.0,
        metadata=_meta(
            "--session-timeout",
            "ZooKeeper session timeout: how soon a master that stops answering is replaced "
            "(a killed one, under a quorum sync mode, as soon as its slaves see its port closed)",
            metavar="S", section=_GROUP, shown=None,
        ),
    )  # fmt: skip
    # A slave that acknowledges nothing for this long while behind leaves the in-sync set.
    lag_timeout: float = field(
        default=1.0,
        metadata=_meta(
            "--lag-timeout", "a slave silent this long while behind leaves the in-sync set",
            metavar="S", section=_GROUP, shown=None,
        ),
    )  # fmt: skip
    # A persistent send the in-sync set has not acknowledged by then fails (UNAVAILABLE).
    commit_timeout: float = field(
        default=10.0,
        metadata=_meta(
            "--commit-timeout",
            "a persistent send the in-sync set has not acknowledged by then fails with "
            "UNAVAILABLE",
            metavar="S", section=_GROUP, shown=None,
        ),
    )  # fmt: skip
    # Lock-file mode: the store directory the members share (None: the data directory).
    shared_dir: Path | None = field(
        default=None,
        metadata=_meta(
            "--shared-dir", "the store directory lock-file members share", metavar="DIR",
            section=_GROUP, shown="--data",
        ),
    )  # fmt: skip

    def __post_init__(self) -> None:
        for f in fields(self):
            why = _refusal(f, _types()[f.name], getattr(self, f.name))
            if why is not None:
                raise ConfigError(f.name, _escaped(why))
        if self.sync is _BY_ELECTION:
            chosen = Sync.QUORUM_MEM if self.election is Election.ZOOKEEPER else Sync.LOCAL_DISK
            object.__setattr__(self, "sync", chosen)
        if self.election is not Election.NONE and not self.group:
            raise ConfigError("election", "needs {group}")
        if self.election is Election.ZOOKEEPER and not (self.zookeeper and self.replication_port):
            raise ConfigError(
                "election", "needs {zookeeper} and {replication_port}", value=self.election
            )
        if self.sync.quorum and self.election is not Election.ZOOKEEPER:
            raise ConfigError(
                "sync",
                "needs members that replicate ({election} zookeeper); use local_disk or local_mem",
                value=self.sync,
            )
        tls = (self.tls_cert, self.tls_key, self.tls_ca)
        if any(p is not None for p in tls) and any(p is None for p in tls):
            raise ConfigError("tls_cert", "{tls_cert}, {tls_key} and {tls_ca} go together")
        if self.bridge_port and self.tls_cert is None:
            raise ConfigError("bridge_port", "needs {tls_cert}: without TLS bridges use {port}")
        if self.min_insync > self.replicas:
            raise ConfigError(
                "min_insync",
                f"is more than {{replicas}} ({self.replicas}): no persistent send could ever "
                "be acknowledged",
                value=str(self.min_insync),
            )

    @property
    def path_name(self) -> str:
        """This broker's name in broker paths. The members of a master/slave group share
        one, the group's: a forward is the group's, so a new master's resend of what the
        old one forwarded is the same hop, and loops are judged group by group."""
        return self.group if self.election and self.group else self.name

    @property
    def client_address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def grpc_options(self) -> list[tuple[str, int]]:
        # Headroom over the body limit for headers, ids and the batch envelope.
        limit = self.max_message_bytes + MiB
        return [
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
        ]

    # ------------------------------------------------------------------- the file

    def to_dict(self) -> dict[str, Any]:
        """Every setting as JSON writes it (what `from_dict` reads back)."""
        return {f.name: _to_json(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, raw: object, *, source: str = "") -> BrokerConfig:
        """A config from parsed JSON: unknown keys, missing ones and wrong types refused."""
        if not isinstance(raw, dict):
            got = _escaped(_describe(raw))
            raise ConfigError("", f"expected a JSON object of settings, got {got}", source=source)
        known = {f.name: f for f in fields(cls)}
        for key in raw:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(str(key), f"unknown setting{hint}", source=source)
        values: dict[str, Any] = {}
        for name, f in known.items():
            if name not in raw:
                if f.default is MISSING:
                    raise ConfigError(name, "missing (a required setting)", source=source)
                continue
            try:
                values[name] = _from_json(_types()[name], raw[name])
            except ConfigError as e:
                raise ConfigError(name, e.reason, source=source) from None
        try:
            return cls(**values)
        except ConfigError as e:
            raise e.within(source) from None

    def to_file(self, path: Path) -> None:
        """Write the config as JSON, readable by its owner only (it holds the tokens):
        created 0600 under a temporary name, then renamed over `path`."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.unlink(missing_ok=True)  # a leftover may have other permissions
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def from_file(cls, path: Path) -> BrokerConfig:
        """Read a config written by `to_file`; a ConfigError says `FILE: KEY: reason`."""
        source = str(path)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except OSError as e:
            why = _escaped(f"cannot read: {e.strerror or e}")
            raise ConfigError("", why, source=source) from None
        if len(data) > MAX_FILE_BYTES:
            raise ConfigError(
                "", f"larger than {MAX_FILE_BYTES // MiB} MiB: not a broker config", source=source
            )
        try:
            raw = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise ConfigError("", "not UTF-8 text: not a broker config", source=source) from None
        except json.JSONDecodeError as e:
            where = f"line {e.lineno}, column {e.colno}"
            raise ConfigError(where, _escaped(f"invalid JSON: {e.msg}"), source=source) from None
        except RecursionError:
            raise ConfigError("", "invalid JSON: nested too deeply", source=source) from None
        return cls.from_dict(raw, source=source)


def setting(f: Field[Any]) -> Setting:
    """A field's flag, help and bounds."""
    meta = f.metadata.get("setting")
    return meta if isinstance(meta, Setting) else Setting()


def setting_type(f: Field[Any]) -> Any:
    """A field's type (str, int, float, Path, Path | None, tuple[str, ...], Sync, Election)."""
    return _types()[f.name]


def _types() -> dict[str, Any]:
    # Read from the annotations (strings here) once the class exists.
    if not _TYPES:
        _TYPES.update(get_type_hints(BrokerConfig))
    return _TYPES


_TYPES: dict[str, Any] = {}


def _refusal(f: Field[Any], kind: Any, value: Any) -> str | None:
    """Why `value` is not a valid setting `f` of type `kind`, or None."""
    meta = setting(f)
    if f.name == "sync" and value is _BY_ELECTION:
        return None
    if not _is(kind, value):
        return f"expected {_NAMES.get(kind, 'a value')}, got {_describe(value)}"
    if kind is int and value != meta.unset:
        low = meta.low if meta.low is not None else -math.inf
        high = meta.high if meta.high is not None else math.inf
        if not low <= value <= high:
            return f"expected an integer {meta.bounds}, got {value!r}"
    if kind is float and not (0 < value < math.inf):
        return f"expected a number of seconds > 0, got {value!r}"
    return meta.check(value) if meta.check is not None else None


def _is(kind: Any, value: Any) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == tuple[str, ...]:
        return isinstance(value, tuple) and all(isinstance(v, str) for v in value)
    if kind == Path | None:
        return value is None or isinstance(value, Path)
    return isinstance(value, kind)


_NAMES: dict[Any, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    Path: "a path",
    Path | None: "a path or null",
    tuple[str, ...]: "a list of strings",
    Sync: f"one of {', '.join(Sync)}",
    Election: f"one of {', '.join(repr(e.value) for e in Election)}",
}


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Path):
        return repr(str(value))
    return repr(value)


def _to_json(value: object) -> object:
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _from_json(kind: Any, value: object) -> object:
    """A JSON value as setting type `kind`; ConfigError (reason only) when it is not one."""
    if kind in (Sync, Election):
        if isinstance(value, str) and value in {m.value for m in kind}:
            return kind(value)
    elif kind is float:
        if _is(float, value):
            return float(cast(float, value))
    elif kind == tuple[str, ...]:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
    elif kind in (Path, Path | None):
        if isinstance(value, str) and value:
            return Path(value)
        if value is None and kind != Path:
            return None
    elif _is(kind, value):
        return value
    wanted = _NAMES.get(kind, "a value")
    raise ConfigError("", _escaped(f"expected {wanted}, got {_describe(value)}"))
