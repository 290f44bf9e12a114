"""Typed identifiers.

Every ID is an immutable ``bytes`` subclass of a fixed length, so it hashes
and compares as fast as plain bytes while keeping its type in signatures.
Layout follows Ray: an ObjectID is the ID of the task that created it plus a
4-byte index, so the creating task can be recovered from any object.
"""
from __future__ import annotations

import itertools
import os
import struct

__all__ = [
    "BaseID", "JobID", "NodeID", "WorkerID", "ActorID", "TaskID", "ObjectID",
    "PlacementGroupID", "FunctionID",
]

_INDEX = struct.Struct(">I")
# Objects created by put() have the top bit of their index set, so their
# IDs never collide with a task's return values.
_PUT_FLAG = 1 << 31
# An actor handle's id: the actor id and 12 zero bytes (a task's return or
# put id never ends so: its index is never 0).
_HANDLE_SUFFIX = b"\x00" * 12


class _UniqueBytes:
    """Unique byte strings without a syscall each: a random per-process
    prefix and a counter (a forked child draws a new prefix)."""

    def __init__(self):
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = os.urandom(12)
        self._counter = itertools.count()

    def take(self) -> bytes:
        """20 bytes never returned before in this cluster (with overwhelming
        probability: 96 random bits per process)."""
        return self._prefix + next(self._counter).to_bytes(8, "big")


_unique = _UniqueBytes()


class BaseID(bytes):
    SIZE = 0
    __slots__ = ()

    @classmethod
    def from_random(cls):
        return cls(os.urandom(cls.SIZE))

    @classmethod
    def from_hex(cls, text: str):
        return cls.from_binary(bytes.fromhex(text))

    @classmethod
    def from_binary(cls, data: bytes):
        if len(data) != cls.SIZE:
            raise ValueError(
                f"{cls.__name__} must be {cls.SIZE} bytes, got {len(data)}")
        return cls(data)

    @classmethod
    def nil(cls):
        return cls(b"\xff" * cls.SIZE)

    def is_nil(self) -> bool:
        return self == b"\xff" * self.SIZE

    def binary(self) -> bytes:
        return bytes(self)

    def __repr__(self):
        return f"{type(self).__name__}({self.hex()})"

    __str__ = __repr__

    def __reduce__(self):
        return type(self), (bytes(self),)


class JobID(BaseID):
    SIZE = 4
    __slots__ = ()

    @classmethod
    def from_int(cls, value: int) -> "JobID":
        return cls(value.to_bytes(cls.SIZE, "big"))

    def to_int(self) -> int:
        return int.from_bytes(self, "big")


class NodeID(BaseID):
    SIZE = 28
    __slots__ = ()


class WorkerID(BaseID):
    SIZE = 28
    __slots__ = ()


class ActorID(BaseID):
    SIZE = 16
    __slots__ = ()

    @classmethod
    def of(cls, job_id: JobID) -> "ActorID":
        return cls(os.urandom(12) + job_id)

    @property
    def job_id(self) -> JobID:          # a property, as Ray's ActorID.job_id
        return JobID(self[12:])


class PlacementGroupID(BaseID):
    SIZE = 18
    __slots__ = ()


class FunctionID(BaseID):
    SIZE = 20
    __slots__ = ()


class TaskID(BaseID):
    SIZE = 24
    __slots__ = ()

    @classmethod
    def of(cls, job_id: JobID) -> "TaskID":
        return cls(_unique.take() + job_id)

    @classmethod
    def for_driver(cls, job_id: JobID) -> "TaskID":
        return cls(b"\x00" * 20 + job_id)

    def job_id(self) -> JobID:
        return JobID(self[20:])


class ObjectID(BaseID):
    SIZE = 28
    __slots__ = ()

    @classmethod
    def for_return(cls, task_id: TaskID, index: int) -> "ObjectID":
        """The index-th return value (1-based, as in Ray) of a task."""
        return cls(task_id + _INDEX.pack(index))

    @classmethod
    def for_put(cls, task_id: TaskID, put_index: int) -> "ObjectID":
        return cls(task_id + _INDEX.pack(put_index | _PUT_FLAG))

    @classmethod
    def for_actor_handle(cls, actor_id: ActorID) -> "ObjectID":
        """The id under which handles to an actor are reference counted."""
        return cls(bytes(actor_id) + _HANDLE_SUFFIX)

    def is_actor_handle(self) -> bool:
        """Whether this is the id handles to an actor are counted under."""
        return self.endswith(_HANDLE_SUFFIX)

    def task_id(self) -> TaskID:
        return TaskID(self[:24])

    def index(self) -> int:
        return _INDEX.unpack_from(self, 24)[0] & ~_PUT_FLAG

    def is_put(self) -> bool:
        return bool(_INDEX.unpack_from(self, 24)[0] & _PUT_FLAG)
