"""The topology schema: keys, types and ranges of a topology file, with did-you-mean hints.

`validate(raw, ...)` is a pure function from the parsed YAML to a `Topology` (reading the
file is `loader.load`). The shape is pydantic models (`TopologyFile`, `GroupFile`,
`BrokerFile`, `ConnectorFile`: their types say the keys, types, ranges and choices, with
our words for each refusal); the rules across keys are `rules`' functions, run as the
models' validators. Every problem is reported as a `TopologyError` whose text is
`FILE: KEY.PATH: reason`, one line an operator can act on, e.g.
`topologies/x.yaml: groups.A.brokers.a.port: expected an integer 1-65535, got 'abc'`
(`refusal.topology_error` writes pydantic's locations that way).

The shape (see docs/topology.md):

    zookeeper: embedded          # or "host:port,host:port" (or a list); required when a
                                 # group elects through ZooKeeper
    zookeeper_port: 2181         # optional, embedded only: fixed client port (default free)
    console_port: 8161           # optional: the web console of `up` (default 8161; 0: none)
    securityToken: s3cret        # optional; a group's own securityToken overrides it
    data: run/ab_c               # optional; default run/<file name without .yaml>
    groups:
      A:
        brokers:
          a: {port: 61616}       # host, replication_port, stomp_port, metrics_port
                                 # (a port, or auto: `up` picks a free one),
                                 # max_message_bytes, sync, weight
        connectors:
          - uri: "masterslave:(b,c)"
      B:
        election: zookeeper      # or lockfile; default zookeeper for 2+ brokers
        replicas: 2              # default: the number of brokers listed
        sync: quorum_mem         # default for zookeeper groups
        min_insync: 1            # default replicas/2+1 for 3 or more, 1 for a pair
        zkPath: /netbroker/groups/B
        session_timeout: 1.0
        brokers:
          b: {port: 61617, replication_port: 62621, weight: 2}
          c: {port: 61618, replication_port: 62622}
        connectors:
          - uri: "static:(a)"    # a broker of this file by name, or host:port
            networkTTL: 1        # options as YAML keys, or in the URI's query string

A group of one broker without `election` is a standalone broker. A group of two or more
brokers is a master/slave group: by ZooKeeper election unless it says `election:
lockfile`. Settings that only a ZooKeeper group acts on (replicas, min_insync, zkPath,
session_timeout, quorum sync, replication_port, weight) are refused elsewhere rather than
silently ignored, and so is a connector that would present the wrong securityToken to
the group it links to (those rules are in `rules`).

Connectors are checked in full while validating, with the connector parser the caller passes in (the
CLI passes `netconnector.uri.parse_connector`, the one every broker runs on its
`--connector` arguments, so a file that loads is one every broker accepts), after broker
names in their address lists have been replaced by those
brokers' client addresses. So a typo in an option or a broker name stops `netbroker up`
before any process starts, with the file, the key and the reason. The master/slave keys
are checked as far as a file can be: a ZooKeeper group needs `zookeeper:` and a
replication port per member, `replicas` covers the brokers listed, `min_insync` fits in
`replicas`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import PurePath
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    InstanceOf,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)

from broker import config
from broker.address import AddressError, parse_address
from broker.cluster import rules
from broker.cluster.model import (
    AUTO_PORT,
    DEFAULT_HOST,
    ELECTIONS,
    NAME_RE,
    NAME_RULE,
    SYNC_POLICIES,
    BrokerSpec,
    Connector,
    ConnectorParser,
    GroupSpec,
    TlsFiles,
    Topology,
    ZooKeeper,
)
from broker.cluster.refusal import GROUP, describe, refuse, topology_error
from broker.security.authorization import parse_authorization
from broker.security.errors import SecurityError
from broker.security.settings import KEYS as SECURITY_KEYS
from broker.security.users import parse_users


def check_name(name: object) -> str | None:
    """Why `name` is not a valid broker or group name, or None when it is."""
    if not isinstance(name, str):
        return f"a name must be a string, got {describe(name)}"
    return config.check_name(name)


def validate(raw: Any, source: str, parse_connector: ConnectorParser) -> Topology:
    """Check parsed YAML against the topology shape. Pure; raises the first TopologyError.

    Problems are found in document order, so the error an operator sees is the first one
    in the file: pydantic validates keys in the order the models declare them (the order
    they are checked in), mappings in the file's order, and `refusal.topology_error`
    puts an unknown key before what is inside the mapping holding it.
    """
    context = {"source": source, "parse_connector": parse_connector}
    try:
        model = TopologyFile.model_validate(raw, context=context)
    except ValidationError as e:
        raise topology_error(e, raw, source, _section_keys()) from None
    return model.topology


# -- types: what pydantic checks, in the words a refusal uses


def _worded(template: str) -> WrapValidator:
    """Refuse anything the wrapped type refuses (and YAML's null, which no key takes) with
    `template`, its `{got}` the value as YAML shows it; a refusal of our own inside it
    passes through as it is."""

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if value is not None:
            try:
                return handler(value)
            except ValidationError as e:
                inner = e.errors()[0]
                if inner["type"] == "topology":
                    ctx = inner.get("ctx") or {}
                    raise refuse(ctx["reason"], ctx["at"], in_group=ctx["in_group"]) from None
        raise refuse(template.format(got=describe(value)))

    return WrapValidator(check)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("blank")
    return value


def _among(choices: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError("not a choice")
        return value

    return AfterValidator(check)


def _host(value: str) -> str:
    # The host alone, checked as the shared address parser checks it in host:port.
    parse_address(f"[{value}]:1" if ":" in value else f"{value}:1")
    return value


def _zk_path(value: str) -> str:
    if not config.is_zk_path(value):
        raise ValueError("not an absolute path")
    return value


def _finite(value: float) -> float:
    if value == float("inf"):
        raise refuse("expected a finite number of seconds")
    return value


_PORT = "expected an integer 1-65535, got {got}"
_CONSOLE_PORT = "expected an integer 0-65535 (0: no console), got {got}"
_METRICS_PORT = "expected an integer 1-65535, or auto (`up` picks a free port), got {got}"
_POSITIVE = "expected an integer >= 1, got {got}"
_WEIGHT = "expected an integer >= 0, got {got}"
_SYNC = f"expected one of {', '.join(SYNC_POLICIES)}; got {{got}}"
_ELECTION = f"expected one of {', '.join(ELECTIONS)}; got {{got}}"
_SECONDS = "expected a number of seconds > 0, got {got}"
# Not echoed back in the error: it is a secret, even when mistyped.
_TOKEN = "expected a non-empty string (the shared secret)"
_ZK_PATH = "expected an absolute ZooKeeper path, got {got}"
_HOST = "expected a host name or address, got {got}"
_DATA = "expected a directory path, got {got}"
_URI = "expected a connector URI string, got {got}"

# Strict: YAML's `true` is a Python bool, which is an int; a port of `true` is a mistake.
# Each type carries its refusal outermost; a key the file may leave out is `T | None`
# worded the same (None is its absence: null itself is refused).
Port = Annotated[int, Field(strict=True, ge=1, le=65535), _worded(_PORT)]
MaybePort = Annotated[Port | None, _worded(_PORT)]
ConsolePort = Annotated[int, Field(strict=True, ge=0, le=65535), _worded(_CONSOLE_PORT)]
MaybeConsolePort = Annotated[ConsolePort | None, _worded(_CONSOLE_PORT)]
_BarePort = Annotated[int, Field(strict=True, ge=1, le=65535)]
MaybeMetricsPort = Annotated[_BarePort | Literal["auto"] | None, _worded(_METRICS_PORT)]
PositiveInt = Annotated[int, Field(strict=True, ge=1), _worded(_POSITIVE)]
MaybePositiveInt = Annotated[PositiveInt | None, _worded(_POSITIVE)]
Weight = Annotated[int, Field(strict=True, ge=0), _worded(_WEIGHT)]
MaybeWeight = Annotated[Weight | None, _worded(_WEIGHT)]
Sync = Annotated[str, Field(strict=True), _among(SYNC_POLICIES), _worded(_SYNC)]
MaybeSync = Annotated[Sync | None, _worded(_SYNC)]
Election = Annotated[str, Field(strict=True), _among(ELECTIONS), _worded(_ELECTION)]
MaybeElection = Annotated[Election | None, _worded(_ELECTION)]
Seconds = Annotated[float, Field(strict=True, gt=0), AfterValidator(_finite), _worded(_SECONDS)]
MaybeSeconds = Annotated[Seconds | None, _worded(_SECONDS)]
Token = Annotated[str, Field(strict=True), AfterValidator(_not_blank), _worded(_TOKEN)]
MaybeToken = Annotated[Token | None, _worded(_TOKEN)]
Text = Annotated[str, Field(strict=True), AfterValidator(_not_blank)]
ZkPath = Annotated[Text, AfterValidator(_zk_path), _worded(_ZK_PATH)]
MaybeZkPath = Annotated[ZkPath | None, _worded(_ZK_PATH)]
Host = Annotated[Text, AfterValidator(_host), _worded(_HOST)]
Data = Annotated[Text, _worded(_DATA)]
MaybeData = Annotated[Data | None, _worded(_DATA)]
Uri = Annotated[Text, _worded(_URI)]


def _name(kind: str) -> WrapValidator:
    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if not isinstance(value, str):
            raise refuse(f"{kind} name must be a string, got {describe(value)}")
        if not NAME_RE.fullmatch(value):
            raise refuse(f"invalid {kind} name {value!r}: {NAME_RULE}")
        return handler(value)

    return WrapValidator(check)


def _mapping_of(what: str, empty: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise refuse(f"expected {what}, got {describe(value)}")
        if not value:
            raise refuse(empty)
        return value

    return BeforeValidator(check)


def _list_of(what: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        if not isinstance(value, list):
            raise refuse(f"expected {what}, got {describe(value)}")
        return value

    return BeforeValidator(check)


def _zookeeper(value: Any) -> ZooKeeper:
    """`embedded`, or an ensemble's host:port entries (comma-separated, or a list)."""
    if value == "embedded":
        return ZooKeeper(embedded=True)
    if isinstance(value, str):
        entries: list[tuple[tuple[int, ...], Any]] = [((), s.strip()) for s in value.split(",")]
    elif isinstance(value, list) and value:
        entries = [((i,), s) for i, s in enumerate(value)]
    else:
        raise refuse(f"expected 'embedded' or a list of host:port, got {describe(value)}")
    servers = []
    for at, entry in entries:
        try:
            if not isinstance(entry, str):
                raise ValueError(entry)
            address = parse_address(entry)
        except (AddressError, ValueError):
            raise refuse(
                f"expected host:port with a port 1-65535, got {describe(entry)}", at
            ) from None
        servers.append(str(address))  # normalised: kazoo takes no tcp:// prefix
    return ZooKeeper(embedded=False, servers=tuple(servers))


def _security(key: str) -> BeforeValidator:
    """A users-file key (users, anonymous, authorization), checked as the broker will."""

    def check(value: Any) -> Any:
        try:
            if key == "users" and not isinstance(value, str):
                parse_users(value, "")
            elif key == "authorization":
                parse_authorization(value, "")
            elif key == "anonymous" and not isinstance(value, bool):
                raise SecurityError("", "expected true or false")
            elif key == "users" and not value.strip():
                raise SecurityError("", "expected a users file path or a list of users")
        except SecurityError as e:
            at = tuple(int(p) if p.isdigit() else p for p in e.key.split(".") if p)
            raise refuse(e.reason, at) from None
        return value

    return BeforeValidator(check)


MaybeUsers = Annotated[Any, _security("users")]
MaybeAnonymous = Annotated[Any, _security("anonymous")]
MaybeAuthorization = Annotated[Any, _security("authorization")]
MaybeCredential = Annotated[Data | None, _worded("expected the path of a file, got {got}")]


BrokerName = Annotated[str, _name("broker")]
GroupName = Annotated[str, _name("group")]


# -- the sections of a file


class _Section(BaseModel):
    """A mapping of the file: its keys are the fields (YAML spellings as aliases); a key it
    does not know is refused (`extra="forbid"`, worded with a did-you-mean hint)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False)
    # What the section is, for a value that is no mapping at all.
    shape: ClassVar[str]

    @model_validator(mode="before")
    @classmethod
    def _is_mapping(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise refuse(f"expected {cls.shape}, got {describe(value)}")
        return value

    def given(self) -> set[str]:
        """The YAML keys the file gives for this section."""
        fields = type(self).model_fields
        return {fields[name].alias or name for name in self.model_fields_set}


class TlsFile(_Section):
    """`tls:` at the top level or per broker: a `netbroker certs` directory (each broker's
    files named after it; `up` creates what is missing), or the files themselves."""

    shape = "a mapping with 'certs', or 'cert', 'key' and 'ca'"

    certs: MaybeData = None
    cert: MaybeData = None
    key: MaybeData = None
    ca: MaybeData = None

    def keys(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in ("certs", "cert", "key", "ca") if getattr(self, k)}


def tls_files(
    name: str, outer: dict[str, str] | None, own: dict[str, str] | None, path: tuple[str, ...]
) -> TlsFiles | None:
    """A broker's TLS files: its own `tls:` keys over the file's (None: no TLS)."""
    if outer is None and own is None:
        return None
    merged = {**(outer or {}), **(own or {})}
    certs = merged.get("certs")
    if certs is not None:
        merged.setdefault("cert", str(PurePath(certs) / f"{name}.pem"))
        merged.setdefault("key", str(PurePath(certs) / f"{name}.key"))
        merged.setdefault("ca", str(PurePath(certs) / "ca.pem"))
    for key in ("cert", "key", "ca"):
        if key not in merged:
            raise refuse(
                f"TLS needs '{key}' for broker {name!r} (or 'certs': a `netbroker certs` "
                "directory)",
                (*path, "tls"),
            )
    return TlsFiles(merged["cert"], merged["key"], merged["ca"], certs)


class _Secured(_Section):
    """The security keys a topology gives at the top level or per broker."""

    tls: TlsFile | None = None
    users: MaybeUsers = None
    anonymous: MaybeAnonymous = None
    authorization: MaybeAuthorization = None
    broker_credential: MaybeCredential = Field(default=None, alias="brokerCredential")

    def security(self, outer: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """These keys over `outer`'s, as a users file holds them (None: none given)."""
        own = {k: getattr(self, k) for k in SECURITY_KEYS if getattr(self, k) is not None}
        merged = {**(outer or {}), **own}
        return merged or None


class BrokerFile(_Secured):
    shape = "a mapping with 'port'"

    port: Port
    host: Host = DEFAULT_HOST
    replication_port: MaybePort = None
    stomp_port: MaybePort = None
    metrics_port: MaybeMetricsPort = None
    bridge_port: MaybePort = None
    max_message_bytes: MaybePositiveInt = None
    sync: MaybeSync = None
    weight: MaybeWeight = None

    def spec(self, name: str, group: str) -> BrokerSpec:
        return BrokerSpec(
            name=name,
            group=group,
            port=self.port,
            host=self.host,
            replication_port=self.replication_port,
            stomp_port=self.stomp_port,
            metrics_port=AUTO_PORT if self.metrics_port == "auto" else self.metrics_port,
            max_message_bytes=self.max_message_bytes,
            sync=self.sync,
            weight=self.weight,
            security=self.security(),
            broker_credential=self.broker_credential,
            bridge_port=self.bridge_port,
        )


class ConnectorFile(_Section):
    """A connector: its `uri`; every other key is one of its options, checked by the
    connector parser once the file's brokers are known."""

    model_config = ConfigDict(extra="allow")
    shape = "a mapping with a 'uri'"

    uri: Uri

    def connector(self) -> Connector:
        return Connector(uri=self.uri, options=dict(self.model_extra or {}))


class GroupFile(_Section):
    shape = "a mapping with 'brokers'"

    brokers: Annotated[
        dict[BrokerName, BrokerFile],
        _mapping_of("a mapping of broker names", "expected at least one broker"),
    ]
    connectors: Annotated[tuple[ConnectorFile, ...], _list_of("a list of connectors")] = ()
    election: MaybeElection = None
    replicas: MaybePositiveInt = None
    sync: MaybeSync = None
    min_insync: MaybePositiveInt = None
    zk_path: MaybeZkPath = Field(default=None, alias="zkPath")
    session_timeout: MaybeSeconds = None
    security_token: MaybeToken = Field(default=None, alias="securityToken")

    # The group as a GroupSpec named GROUP (its name is its key, which it cannot see),
    # after its rules: the election and replicas defaulted.
    _spec: GroupSpec | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> Self:
        group = GroupSpec(
            name=GROUP,
            brokers=tuple(b.spec(name, GROUP) for name, b in self.brokers.items()),
            election=self.election,
            replicas=self.replicas,
            sync=self.sync,
            min_insync=self.min_insync,
            zk_path=self.zk_path,
            session_timeout=self.session_timeout,
            security_token=self.security_token,
            connectors=tuple(c.connector() for c in self.connectors),
        )
        given = {name: b.given() for name, b in self.brokers.items()}
        zookeeper = (info.context or {}).get("zookeeper")
        self._spec = rules.group_semantics(group, self.given(), given, zookeeper)
        return self

    def named(self, name: str, file_token: str | None) -> GroupSpec:
        assert self._spec is not None
        spec = self._spec
        return replace(
            spec,
            name=name,
            brokers=tuple(replace(b, group=name) for b in spec.brokers),
            security_token=spec.security_token if "securityToken" in self.given() else file_token,
        )


class TopologyFile(_Secured):
    shape = "a mapping with 'groups' at the top level"

    zookeeper: Annotated[InstanceOf[ZooKeeper] | None, BeforeValidator(_zookeeper)] = None
    zookeeper_port: MaybePort = None
    console_port: MaybeConsolePort = None
    security_token: MaybeToken = Field(default=None, alias="securityToken")
    data: MaybeData = None
    groups: Annotated[
        dict[GroupName, GroupFile],
        _mapping_of("a mapping of group names", "expected at least one group"),
    ]

    _topology: Topology | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if value is None:
            raise refuse("the file is empty; expected a mapping with 'groups'")
        return value

    @field_validator("zookeeper", mode="after")
    @classmethod
    def _share_zookeeper(cls, value: ZooKeeper | None, info: ValidationInfo) -> ZooKeeper | None:
        # The groups, validated next, need it for their rules.
        if info.context is not None:
            info.context["zookeeper"] = value
        return value

    @field_validator("zookeeper_port", mode="after")
    @classmethod
    def _embedded_only(cls, value: int | None, info: ValidationInfo) -> int | None:
        zookeeper = info.data.get("zookeeper")
        if value is not None and (zookeeper is None or not zookeeper.embedded):
            raise refuse(
                "only for 'zookeeper: embedded' (an external ensemble's ports are in "
                "its connect string)"
            )
        return value

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> Self:
        context = info.context or {}
        source: str = context["source"]
        zookeeper = self.zookeeper
        if zookeeper is not None and self.zookeeper_port is not None:
            zookeeper = replace(zookeeper, port=self.zookeeper_port)
        token = self.security_token
        data = (
            PurePath(self.data)
            if self.data is not None
            else PurePath("run") / PurePath(source).stem
        )
        groups = [g.named(name, token) for name, g in self.groups.items()]
        # A broker's own security keys over the file's.
        outer = self.security()
        outer_tls = self.tls.keys() if self.tls is not None else None

        def own_tls(group: str, broker: str) -> dict[str, str] | None:
            spec = self.groups[group].brokers[broker].tls
            return spec.keys() if spec is not None else None

        groups = [
            replace(g, brokers=tuple(
                replace(
                    b, security={**(outer or {}), **b.security} if b.security else outer,
                    broker_credential=b.broker_credential or self.broker_credential,
                    tls=tls_files(
                        b.name, outer_tls, own_tls(name, b.name),
                        ("groups", name, "brokers", b.name),
                    ),
                )
                for b in g.brokers
            ))
            for name, g in zip(self.groups, groups, strict=True)
        ]  # fmt: skip
        rules.no_duplicates(groups, zookeeper, self.console_port)
        # Connectors last: they may name brokers of any group, also ones further down.
        groups = [rules.resolve_connectors(g, groups, context["parse_connector"]) for g in groups]
        self._topology = Topology(
            source=source, data=data, groups=tuple(groups), zookeeper=zookeeper,
            security_token=token, console_port=self.console_port,
        )  # fmt: skip
        return self

    @property
    def topology(self) -> Topology:
        assert self._topology is not None
        return self._topology


def _keys(section: type[_Section]) -> tuple[str, ...]:
    """A section's YAML keys, as the file spells them."""
    return tuple(f.alias or name for name, f in section.model_fields.items())


def _section_keys() -> dict[int, tuple[str, ...]]:
    """The keys a section allows, by the depth of its key path: the top, groups.G and
    groups.G.brokers.B (connectors take any option key)."""
    return {0: _keys(TopologyFile), 2: _keys(GroupFile), 4: _keys(BrokerFile)}
