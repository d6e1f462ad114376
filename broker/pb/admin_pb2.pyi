from broker.pb import message_pb2 as _message_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNKNOWN: _ClassVar[Role]
    ROLE_STANDALONE: _ClassVar[Role]
    ROLE_MASTER: _ClassVar[Role]
    ROLE_SLAVE: _ClassVar[Role]
    ROLE_ELECTING: _ClassVar[Role]
    ROLE_STOPPED: _ClassVar[Role]

class LinkState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LINK_STATE_UNKNOWN: _ClassVar[LinkState]
    LINK_CONNECTING: _ClassVar[LinkState]
    LINK_UP: _ClassVar[LinkState]
    LINK_BACKOFF: _ClassVar[LinkState]
ROLE_UNKNOWN: Role
ROLE_STANDALONE: Role
ROLE_MASTER: Role
ROLE_SLAVE: Role
ROLE_ELECTING: Role
ROLE_STOPPED: Role
LINK_STATE_UNKNOWN: LinkState
LINK_CONNECTING: LinkState
LINK_UP: LinkState
LINK_BACKOFF: LinkState

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("name", "role", "client_address", "version", "components", "started_ms", "refusal", "role_kind", "group", "bridges")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    STARTED_MS_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    ROLE_KIND_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    BRIDGES_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    client_address: str
    version: str
    components: _containers.RepeatedCompositeFieldContainer[Component]
    started_ms: int
    refusal: str
    role_kind: Role
    group: GroupStatus
    bridges: _containers.RepeatedCompositeFieldContainer[BridgeStatus]
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., client_address: _Optional[str] = ..., version: _Optional[str] = ..., components: _Optional[_Iterable[_Union[Component, _Mapping]]] = ..., started_ms: _Optional[int] = ..., refusal: _Optional[str] = ..., role_kind: _Optional[_Union[Role, str]] = ..., group: _Optional[_Union[GroupStatus, _Mapping]] = ..., bridges: _Optional[_Iterable[_Union[BridgeStatus, _Mapping]]] = ...) -> None: ...

class GroupStatus(_message.Message):
    __slots__ = ("name", "role", "epoch", "position", "in_sync", "master", "master_address", "waiting", "replication_error", "lock", "lags", "elections", "became_master")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    MASTER_FIELD_NUMBER: _ClassVar[int]
    MASTER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_ERROR_FIELD_NUMBER: _ClassVar[int]
    LOCK_FIELD_NUMBER: _ClassVar[int]
    LAGS_FIELD_NUMBER: _ClassVar[int]
    ELECTIONS_FIELD_NUMBER: _ClassVar[int]
    BECAME_MASTER_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: Role
    epoch: int
    position: int
    in_sync: _containers.RepeatedScalarFieldContainer[str]
    master: str
    master_address: str
    waiting: str
    replication_error: str
    lock: str
    lags: _containers.RepeatedCompositeFieldContainer[ReplicaLag]
    elections: int
    became_master: int
    def __init__(self, name: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., epoch: _Optional[int] = ..., position: _Optional[int] = ..., in_sync: _Optional[_Iterable[str]] = ..., master: _Optional[str] = ..., master_address: _Optional[str] = ..., waiting: _Optional[str] = ..., replication_error: _Optional[str] = ..., lock: _Optional[str] = ..., lags: _Optional[_Iterable[_Union[ReplicaLag, _Mapping]]] = ..., elections: _Optional[int] = ..., became_master: _Optional[int] = ...) -> None: ...

class ReplicaLag(_message.Message):
    __slots__ = ("follower", "entries", "seconds")
    FOLLOWER_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    follower: str
    entries: int
    seconds: float
    def __init__(self, follower: _Optional[str] = ..., entries: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class BridgeStatus(_message.Message):
    __slots__ = ("label", "state", "peer", "address", "forwarded", "last_error", "inbound", "received", "unacknowledged", "last_error_at")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    FORWARDED_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    INBOUND_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    UNACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_AT_FIELD_NUMBER: _ClassVar[int]
    label: str
    state: LinkState
    peer: str
    address: str
    forwarded: int
    last_error: str
    inbound: bool
    received: int
    unacknowledged: int
    last_error_at: float
    def __init__(self, label: _Optional[str] = ..., state: _Optional[_Union[LinkState, str]] = ..., peer: _Optional[str] = ..., address: _Optional[str] = ..., forwarded: _Optional[int] = ..., last_error: _Optional[str] = ..., inbound: _Optional[bool] = ..., received: _Optional[int] = ..., unacknowledged: _Optional[int] = ..., last_error_at: _Optional[float] = ...) -> None: ...

class Component(_message.Message):
    __slots__ = ("kind", "name", "state", "detail")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name: str
    state: str
    detail: str
    def __init__(self, kind: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class QueueInfo(_message.Message):
    __slots__ = ("name", "depth", "pending", "in_flight", "enqueued", "dequeued", "consumers", "expired", "dead_lettered")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    ENQUEUED_FIELD_NUMBER: _ClassVar[int]
    DEQUEUED_FIELD_NUMBER: _ClassVar[int]
    CONSUMERS_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERED_FIELD_NUMBER: _ClassVar[int]
    name: str
    depth: int
    pending: int
    in_flight: int
    enqueued: int
    dequeued: int
    consumers: int
    expired: int
    dead_lettered: int
    def __init__(self, name: _Optional[str] = ..., depth: _Optional[int] = ..., pending: _Optional[int] = ..., in_flight: _Optional[int] = ..., enqueued: _Optional[int] = ..., dequeued: _Optional[int] = ..., consumers: _Optional[int] = ..., expired: _Optional[int] = ..., dead_lettered: _Optional[int] = ...) -> None: ...

class ListQueuesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListQueuesResponse(_message.Message):
    __slots__ = ("queues", "topics", "published", "dropped")
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    queues: _containers.RepeatedCompositeFieldContainer[QueueInfo]
    topics: _containers.RepeatedCompositeFieldContainer[TopicInfo]
    published: int
    dropped: int
    def __init__(self, queues: _Optional[_Iterable[_Union[QueueInfo, _Mapping]]] = ..., topics: _Optional[_Iterable[_Union[TopicInfo, _Mapping]]] = ..., published: _Optional[int] = ..., dropped: _Optional[int] = ...) -> None: ...

class TopicInfo(_message.Message):
    __slots__ = ("name", "subscriptions", "subscribers")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    subscriptions: int
    subscribers: _containers.RepeatedCompositeFieldContainer[SubscriptionInfo]
    def __init__(self, name: _Optional[str] = ..., subscriptions: _Optional[int] = ..., subscribers: _Optional[_Iterable[_Union[SubscriptionInfo, _Mapping]]] = ...) -> None: ...

class SubscriptionInfo(_message.Message):
    __slots__ = ("durable", "client_id", "subscription", "active", "depth", "pending", "in_flight", "enqueued", "dequeued", "label")
    DURABLE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    ENQUEUED_FIELD_NUMBER: _ClassVar[int]
    DEQUEUED_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    durable: bool
    client_id: str
    subscription: str
    active: bool
    depth: int
    pending: int
    in_flight: int
    enqueued: int
    dequeued: int
    label: str
    def __init__(self, durable: _Optional[bool] = ..., client_id: _Optional[str] = ..., subscription: _Optional[str] = ..., active: _Optional[bool] = ..., depth: _Optional[int] = ..., pending: _Optional[int] = ..., in_flight: _Optional[int] = ..., enqueued: _Optional[int] = ..., dequeued: _Optional[int] = ..., label: _Optional[str] = ...) -> None: ...

class PurgeRequest(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: str
    def __init__(self, queue: _Optional[str] = ...) -> None: ...

class PurgeResponse(_message.Message):
    __slots__ = ("purged",)
    PURGED_FIELD_NUMBER: _ClassVar[int]
    purged: int
    def __init__(self, purged: _Optional[int] = ...) -> None: ...

class BrowseRequest(_message.Message):
    __slots__ = ("queue", "limit")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    queue: str
    limit: int
    def __init__(self, queue: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class BrowseResponse(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_message_pb2.Message]
    def __init__(self, messages: _Optional[_Iterable[_Union[_message_pb2.Message, _Mapping]]] = ...) -> None: ...
