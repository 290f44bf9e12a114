"""The in-process store: each owned or fetched object's payload.

A payload (protocol ObjectPayload) either holds a small value inline or
says which node's shared-memory store has it. Waiters are callbacks fired,
outside the lock, when an object becomes ready.
"""
from __future__ import annotations

import threading
from typing import Callable

from miniray.common.ids import ObjectID


class MemoryStore:
    def __init__(self):
        self._lock = threading.Lock()
        self._objects: dict[ObjectID, object] = {}
        self._waiters: dict[ObjectID, list[Callable[[ObjectID], None]]] = {}

    def put(self, object_id: ObjectID, payload) -> None:
        with self._lock:
            self._objects[object_id] = payload
            waiters = self._waiters.pop(object_id, None)
        if waiters:
            for callback in waiters:
                callback(object_id)

    def get(self, object_id: ObjectID):
        """The payload, or None while the object is not ready."""
        return self._objects.get(object_id)

    def contains(self, object_id: ObjectID) -> bool:
        return object_id in self._objects

    def add_waiter(self, object_id: ObjectID,
                   callback: Callable[[ObjectID], None]) -> bool:
        """Call ``callback`` when ready; False (no call) if already ready."""
        with self._lock:
            if object_id in self._objects:
                return False
            self._waiters.setdefault(object_id, []).append(callback)
            return True

    def remove_waiter(self, object_id: ObjectID, callback) -> None:
        with self._lock:
            waiters = self._waiters.get(object_id)
            if waiters and callback in waiters:
                waiters.remove(callback)
                if not waiters:
                    del self._waiters[object_id]

    def delete(self, object_id: ObjectID):
        with self._lock:
            return self._objects.pop(object_id, None)

    def __len__(self) -> int:
        return len(self._objects)
