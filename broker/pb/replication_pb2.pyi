from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FollowRequest(_message.Message):
    __slots__ = ("member", "token", "epoch", "position", "received", "synced")
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FIELD_NUMBER: _ClassVar[int]
    member: str
    token: str
    epoch: int
    position: int
    received: int
    synced: int
    def __init__(self, member: _Optional[str] = ..., token: _Optional[str] = ..., epoch: _Optional[int] = ..., position: _Optional[int] = ..., received: _Optional[int] = ..., synced: _Optional[int] = ...) -> None: ...

class Ops(_message.Message):
    __slots__ = ("keys", "values", "deleted")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    values: _containers.RepeatedScalarFieldContainer[bytes]
    deleted: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, keys: _Optional[_Iterable[bytes]] = ..., values: _Optional[_Iterable[bytes]] = ..., deleted: _Optional[_Iterable[int]] = ...) -> None: ...

class LogEntry(_message.Message):
    __slots__ = ("position", "epoch", "ops")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    position: int
    epoch: int
    ops: Ops
    def __init__(self, position: _Optional[int] = ..., epoch: _Optional[int] = ..., ops: _Optional[_Union[Ops, _Mapping]] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("first", "last", "ops", "position", "epoch")
    FIRST_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    first: bool
    last: bool
    ops: Ops
    position: int
    epoch: int
    def __init__(self, first: _Optional[bool] = ..., last: _Optional[bool] = ..., ops: _Optional[_Union[Ops, _Mapping]] = ..., position: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class LogFrame(_message.Message):
    __slots__ = ("epoch", "entries", "snapshot")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    entries: _containers.RepeatedCompositeFieldContainer[LogEntry]
    snapshot: SnapshotChunk
    def __init__(self, epoch: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[LogEntry, _Mapping]]] = ..., snapshot: _Optional[_Union[SnapshotChunk, _Mapping]] = ...) -> None: ...
