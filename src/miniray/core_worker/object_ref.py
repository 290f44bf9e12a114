"""ObjectRef: a handle to an object, carrying its id and owner's address.

Creating an ObjectRef counts as a local reference in the process's core
worker; its destruction is queued and applied by the core worker's event
loop, so ``__del__`` (which may run inside the garbage collector, in any
thread) never touches reference-counting state directly.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging

from miniray.common import config
from miniray.common.address import WorkerAddress
from miniray.common.ids import NodeID, ObjectID, WorkerID
from miniray.common.serialization import note_nested_ref

# Set by the core worker of this process when it starts.
_worker = None


def set_core_worker(worker) -> None:
    global _worker
    _worker = worker


def core_worker():
    return _worker


class ObjectRef:
    __slots__ = ("id", "owner", "_worker", "__weakref__")

    def __init__(self, object_id: ObjectID | bytes, owner: WorkerAddress | None = None,
                 *, _count: bool = True):
        if type(object_id) is not ObjectID:
            object_id = ObjectID.from_binary(bytes(object_id))     # checks the length
        if owner is None and _worker is not None:
            # Ray's ObjectRef(binary): the owner, if this process knows it.
            owner = _worker.owner_of(object_id)
        self.id = object_id
        self.owner = owner
        self._worker = _worker if _count and owner is not None else None
        if self._worker is not None:
            self._worker.add_local_ref(object_id, owner)

    @classmethod
    def from_random(cls) -> "ObjectRef":
        """A ref to no object (Ray's ObjectRef.from_random)."""
        return cls(ObjectID.from_random(), None, _count=False)

    @classmethod
    def nil(cls) -> "ObjectRef":
        return cls(ObjectID.nil(), None, _count=False)

    def is_nil(self) -> bool:
        return self.id.is_nil()

    def __del__(self):
        try:
            worker = self._worker
        except AttributeError:          # __init__ refused its arguments
            return
        if worker is not None:
            worker.remove_local_ref(self.id)

    # --- identity -------------------------------------------------------
    def hex(self) -> str:
        return self.id.hex()

    def binary(self) -> bytes:
        return bytes(self.id)

    def task_id(self):
        return self.id.task_id()

    def job_id(self):
        return self.id.task_id().job_id()

    def __hash__(self):
        return hash(self.id)

    def __eq__(self, other):
        return isinstance(other, ObjectRef) and other.id == self.id

    def __repr__(self):
        return f"ObjectRef({self.id.hex()})"

    def __reduce__(self):
        owner = self.owner
        if owner is None:
            return ObjectRef, (bytes(self.id),)
        note_nested_ref(self)
        return _rebuild_object_ref, (bytes(self.id), owner.ip, owner.port,
                                     bytes(owner.worker_id), bytes(owner.node_id))

    # --- futures ----------------------------------------------------------
    def future(self) -> concurrent.futures.Future:
        """A concurrent.futures.Future resolved with the object's value."""
        return _require_worker().get_future(self)

    def _on_completed(self, callback) -> None:
        """Ray's private hook: call ``callback(value)`` once the object is
        ready (the exception, as a value, if the task failed), on a thread
        of miniray's; it must not block."""
        def done(future: concurrent.futures.Future) -> None:
            error = future.exception()
            try:
                callback(future.result() if error is None else error)
            except Exception as exc:     # noqa: BLE001 - the caller's code
                # Logged without its traceback: one kept by a log handler
                # would keep the callback alive (Ray releases it).
                logging.getLogger("miniray").error(
                    "ObjectRef._on_completed callback raised %s: %s",
                    type(exc).__name__, str(exc))
        self.future().add_done_callback(done)

    def __await__(self):
        return asyncio.wrap_future(self.future()).__await__()

    def as_future(self):
        return asyncio.wrap_future(self.future())


def _require_worker():
    if _worker is None:
        from miniray.exceptions import RaySystemError
        raise RaySystemError("miniray is not initialized; call miniray.init()")
    return _worker


def _rebuild_object_ref(object_id: bytes, ip: str, port: int, worker_id: bytes,
                        node_id: bytes) -> ObjectRef:
    ref = ObjectRef(ObjectID(object_id),
                    WorkerAddress(ip, port, WorkerID(worker_id), NodeID(node_id)))
    if config.RECORD_REF_CREATION_SITES and ref._worker is not None:
        ref._worker.note_deserialized(ref.id)
    return ref
