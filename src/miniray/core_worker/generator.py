"""The refs a generator task yields.

ObjectRefGenerator (num_returns="streaming", the default for generator
functions): the executing worker reports each yielded value to the owner
as soon as it is produced; the owner's io thread appends a ref here, and
the user's thread (or coroutine) iterates, blocking until the next ref
arrives.

DynamicObjectRefGenerator (num_returns="dynamic", Ray's older API): the
value of the task's single return, available once the task has finished;
it holds a ref to every value the generator yielded.
"""
from __future__ import annotations

import asyncio
import collections
import threading

from miniray.common.ids import ObjectID, TaskID
from miniray.core_worker.object_ref import ObjectRef


class ObjectRefGenerator:
    def __init__(self, task_id: TaskID, worker):
        self._task_id = task_id
        self._worker = worker
        self._refs: list[ObjectRef] = []
        self._next = 0
        self._total: int | None = None
        self._cond = threading.Condition()
        self._completed: list[ObjectID] = []      # completed() objects to resolve

    # --- called by the owner's io thread ----------------------------------------
    def add_item(self, object_id: ObjectID, index: int) -> None:
        ref = ObjectRef(object_id, self._worker.address)
        with self._cond:
            self._refs.append(ref)
            self._cond.notify_all()

    def finish(self, count: int) -> None:
        with self._cond:
            self._total = max(count, len(self._refs))
            self._cond.notify_all()
            completed, self._completed = self._completed, []
        for object_id in completed:
            self._resolve_completed(object_id)

    def _resolve_completed(self, object_id: ObjectID) -> None:
        from miniray.common.serialization import serialize
        worker = self._worker
        worker.memory_store.put(object_id, worker.make_payload(
            object_id, serialize(None), worker.worker_id))

    def fail(self, error: BaseException) -> None:
        """The task failed without reporting its error as an item."""
        from miniray.core_worker.core_worker import error_payload
        worker = self._worker
        object_id = ObjectID.for_return(self._task_id, len(self._refs) + 1)
        with worker._lock:
            worker.refs.add_owned(object_id)
        self.add_item(object_id, len(self._refs))
        worker.memory_store.put(object_id, error_payload(object_id, error))
        self.finish(len(self._refs))

    # --- iteration -----------------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self) -> ObjectRef:
        ref = self._next_ref(timeout=None)
        if ref is None:
            raise StopIteration
        return ref

    def _next_ref(self, timeout: float | None) -> ObjectRef | None:
        """The next ref, or None at the end of the stream. A task that has
        to wait for it lends its CPU back meanwhile, as in get (on a full
        node the generator's own task may need it)."""
        with self._cond:
            ready = self._has_next_or_end()
        if not ready and timeout != 0:
            with self._worker._blocked(), self._cond:
                self._cond.wait_for(self._has_next_or_end, timeout)
        with self._cond:
            if not self._has_next_or_end():
                from miniray.exceptions import GetTimeoutError
                raise GetTimeoutError("timed out waiting for the next generator item")
            if self._next >= len(self._refs):
                return None
            ref = self._refs[self._next]
            self._refs[self._next] = None      # the caller holds it now
            self._next += 1
            return ref

    def _next_sync(self, timeout_s: float | None = None) -> ObjectRef:
        """Ray's: the next ref if it comes within ``timeout_s``, else a nil
        ref; StopIteration at the end of the stream."""
        from miniray.exceptions import GetTimeoutError
        try:
            ref = self._next_ref(timeout_s)
        except GetTimeoutError:
            return ObjectRef.nil()
        if ref is None:
            raise StopIteration
        return ref

    def _has_next_or_end(self) -> bool:
        return self._next < len(self._refs) or self._total is not None

    def __aiter__(self):
        return self

    async def __anext__(self) -> ObjectRef:
        ref = await asyncio.to_thread(self._next_ref, None)
        if ref is None:
            raise StopAsyncIteration
        return ref

    def completed(self) -> ObjectRef:
        """Ray's: a ref that is ready, holding None, once the generator task
        has finished (every item has been reported)."""
        worker = self._worker
        object_id = ObjectID.from_random()
        with worker._lock:
            worker.refs.add_owned(object_id)
        ref = ObjectRef(object_id, worker.address)
        with self._cond:
            done = self._total is not None
            if not done:
                self._completed.append(object_id)
        if done:
            self._resolve_completed(object_id)
        return ref

    def is_finished(self) -> bool:
        with self._cond:
            return self._total is not None and self._next >= self._total

    def task_id(self) -> TaskID:
        return self._task_id

    def __repr__(self):
        return f"ObjectRefGenerator(task_id={self._task_id.hex()})"

    def __reduce__(self):
        raise TypeError(
            "An ObjectRefGenerator cannot be passed to a task or put in an "
            "object: iterate it and pass its ObjectRefs, or use "
            "num_returns='dynamic' for a generator that can be passed on")


class DynamicObjectRefGenerator:
    """The refs of a num_returns="dynamic" task's values, in order. It can
    be passed to other tasks and put in objects (the refs travel with it);
    iterating hands each ref out once."""

    def __init__(self, refs: list[ObjectRef]):
        self._refs = collections.deque(refs)

    def __iter__(self):
        while self._refs:
            yield self._refs.popleft()

    def __len__(self) -> int:
        return len(self._refs)

    def __reduce__(self):
        return DynamicObjectRefGenerator, (list(self._refs),)

    def __repr__(self):
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"
