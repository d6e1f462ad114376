from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Message(_message.Message):
    __slots__ = ("id", "destination", "body", "headers", "persistent", "priority", "expiration_ms", "redelivery_count", "broker_path", "timestamp_ms", "topic", "topic_targets")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    PERSISTENT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    EXPIRATION_MS_FIELD_NUMBER: _ClassVar[int]
    REDELIVERY_COUNT_FIELD_NUMBER: _ClassVar[int]
    BROKER_PATH_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    TOPIC_TARGETS_FIELD_NUMBER: _ClassVar[int]
    id: str
    destination: str
    body: bytes
    headers: _containers.ScalarMap[str, str]
    persistent: bool
    priority: int
    expiration_ms: int
    redelivery_count: int
    broker_path: _containers.RepeatedScalarFieldContainer[str]
    timestamp_ms: int
    topic: bool
    topic_targets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., destination: _Optional[str] = ..., body: _Optional[bytes] = ..., headers: _Optional[_Mapping[str, str]] = ..., persistent: _Optional[bool] = ..., priority: _Optional[int] = ..., expiration_ms: _Optional[int] = ..., redelivery_count: _Optional[int] = ..., broker_path: _Optional[_Iterable[str]] = ..., timestamp_ms: _Optional[int] = ..., topic: _Optional[bool] = ..., topic_targets: _Optional[_Iterable[str]] = ...) -> None: ...
