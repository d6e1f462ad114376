from broker.pb import message_pb2 as _message_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BridgeHello(_message.Message):
    __slots__ = ("broker", "group", "protocol", "duplex", "network_ttl", "message_ttl", "prefetch", "token", "excluded", "statically_included", "dynamically_included", "decrease_priority", "conduit", "path_name")
    BROKER_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    DUPLEX_FIELD_NUMBER: _ClassVar[int]
    NETWORK_TTL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_TTL_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_FIELD_NUMBER: _ClassVar[int]
    STATICALLY_INCLUDED_FIELD_NUMBER: _ClassVar[int]
    DYNAMICALLY_INCLUDED_FIELD_NUMBER: _ClassVar[int]
    DECREASE_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CONDUIT_FIELD_NUMBER: _ClassVar[int]
    PATH_NAME_FIELD_NUMBER: _ClassVar[int]
    broker: str
    group: str
    protocol: int
    duplex: bool
    network_ttl: int
    message_ttl: int
    prefetch: int
    token: str
    excluded: _containers.RepeatedScalarFieldContainer[str]
    statically_included: _containers.RepeatedScalarFieldContainer[str]
    dynamically_included: _containers.RepeatedScalarFieldContainer[str]
    decrease_priority: bool
    conduit: bool
    path_name: str
    def __init__(self, broker: _Optional[str] = ..., group: _Optional[str] = ..., protocol: _Optional[int] = ..., duplex: _Optional[bool] = ..., network_ttl: _Optional[int] = ..., message_ttl: _Optional[int] = ..., prefetch: _Optional[int] = ..., token: _Optional[str] = ..., excluded: _Optional[_Iterable[str]] = ..., statically_included: _Optional[_Iterable[str]] = ..., dynamically_included: _Optional[_Iterable[str]] = ..., decrease_priority: _Optional[bool] = ..., conduit: _Optional[bool] = ..., path_name: _Optional[str] = ...) -> None: ...

class Demand(_message.Message):
    __slots__ = ("queue", "consumers", "hops", "capacity")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    CONSUMERS_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    queue: str
    consumers: int
    hops: int
    capacity: int
    def __init__(self, queue: _Optional[str] = ..., consumers: _Optional[int] = ..., hops: _Optional[int] = ..., capacity: _Optional[int] = ...) -> None: ...

class Credit(_message.Message):
    __slots__ = ("queue", "count")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    queue: str
    count: int
    def __init__(self, queue: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class ForwardBatch(_message.Message):
    __slots__ = ("batch_id", "messages")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    messages: _containers.RepeatedCompositeFieldContainer[_message_pb2.Message]
    def __init__(self, batch_id: _Optional[int] = ..., messages: _Optional[_Iterable[_Union[_message_pb2.Message, _Mapping]]] = ...) -> None: ...

class ForwardAck(_message.Message):
    __slots__ = ("batch_id", "ok", "error", "refused")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    ok: bool
    error: str
    refused: _containers.RepeatedCompositeFieldContainer[Refusal]
    def __init__(self, batch_id: _Optional[int] = ..., ok: _Optional[bool] = ..., error: _Optional[str] = ..., refused: _Optional[_Iterable[_Union[Refusal, _Mapping]]] = ...) -> None: ...

class Refusal(_message.Message):
    __slots__ = ("position", "reason")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    position: int
    reason: str
    def __init__(self, position: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class BridgeFrame(_message.Message):
    __slots__ = ("hello", "demand", "forward", "acks", "credits", "topics")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    DEMAND_FIELD_NUMBER: _ClassVar[int]
    FORWARD_FIELD_NUMBER: _ClassVar[int]
    ACKS_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    hello: BridgeHello
    demand: _containers.RepeatedCompositeFieldContainer[Demand]
    forward: ForwardBatch
    acks: _containers.RepeatedCompositeFieldContainer[ForwardAck]
    credits: _containers.RepeatedCompositeFieldContainer[Credit]
    topics: TopicDemand
    def __init__(self, hello: _Optional[_Union[BridgeHello, _Mapping]] = ..., demand: _Optional[_Iterable[_Union[Demand, _Mapping]]] = ..., forward: _Optional[_Union[ForwardBatch, _Mapping]] = ..., acks: _Optional[_Iterable[_Union[ForwardAck, _Mapping]]] = ..., credits: _Optional[_Iterable[_Union[Credit, _Mapping]]] = ..., topics: _Optional[_Union[TopicDemand, _Mapping]] = ...) -> None: ...

class TopicDemand(_message.Message):
    __slots__ = ("routes",)
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[TopicRoute]
    def __init__(self, routes: _Optional[_Iterable[_Union[TopicRoute, _Mapping]]] = ...) -> None: ...

class TopicRoute(_message.Message):
    __slots__ = ("pattern", "broker", "hops", "durable")
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    BROKER_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    DURABLE_FIELD_NUMBER: _ClassVar[int]
    pattern: str
    broker: str
    hops: int
    durable: bool
    def __init__(self, pattern: _Optional[str] = ..., broker: _Optional[str] = ..., hops: _Optional[int] = ..., durable: _Optional[bool] = ...) -> None: ...
