"""What this process references, for the state API (``miniray memory``,
``list_objects``): Ray's GetCoreWorkerStats with include_memory_info.

Runs in every driver and worker. ``describe`` (pure) turns the reference
counter's snapshot, the memory store's payloads, the store objects this
process keeps mapped (``PinnedBuffers``) and the status of pending tasks
into one ``ObjectReferenceInfo`` per object; the servicer's
GetObjectReferences calls it on the io thread.

Call sites are recorded only with config.RECORD_REF_CREATION_SITES
(MINIRAY_RECORD_REF_CREATION_SITES=1, Ray's RAY_record_ref_creation_sites=1
or its _system_config key), as in Ray: otherwise nothing on the put and
submit paths walks the stack (one attribute test per call).
"""
from __future__ import annotations

import os
import sys
import weakref
from typing import Callable, Iterable

from miniray.common.ids import ObjectID
from miniray.protocol import core_worker_pb2 as cw_pb2

__all__ = ["call_site", "PinnedBuffers", "describe",
           "DEFAULT_LIMIT"]


# Entries one process returns unless asked for fewer (the reply stays a few MB).
DEFAULT_LIMIT = 10_000

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Info = cw_pb2.ObjectReferenceInfo


def call_site(kind: str, task_name: str = "") -> str:
    """Where user code created a reference: ``(put object) | script.py:main:12``
    (the innermost frame outside miniray), as Ray writes it. Call only
    when config.RECORD_REF_CREATION_SITES."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
    if frame is None:
        return f"({kind}) {task_name}".rstrip()
    code = frame.f_code
    return (f"({kind}) | {os.path.basename(code.co_filename)}:{code.co_name}:"
            f"{frame.f_lineno}")


class PinnedBuffers:
    """Store objects whose mapping a value read in this process still uses
    (a numpy array from ``get`` is a view of it): Ray's PINNED_IN_MEMORY.

    ``note`` keeps a weak reference to the buffer a read returned; the
    entry goes when the last buffer of the object is collected. No lock:
    weakref callbacks may run inside the garbage collector, and each dict
    or set operation here is atomic under the GIL.
    """

    def __init__(self):
        # object id -> ({id(weakref): weakref} of its live buffers, size)
        self._held: dict[ObjectID, tuple[dict, int]] = {}

    def note(self, object_id: ObjectID, buffer) -> None:
        held = self._held.get(object_id)
        if held is None:
            held = self._held[object_id] = ({}, buffer.size)
        refs = held[0]

        def gone(ref, refs=refs, object_id=object_id, held=self._held):
            refs.pop(id(ref), None)
            if not refs and held.get(object_id, (None,))[0] is refs:
                held.pop(object_id, None)

        ref = weakref.ref(buffer, gone)
        refs[id(ref)] = ref

    def snapshot(self) -> dict[ObjectID, int]:
        """Object id -> size of the objects mapped now."""
        for _ in range(10):
            try:
                return {oid: size for oid, (refs, size) in list(self._held.items())
                        if refs}
            except RuntimeError:      # a callback changed it meanwhile: again
                continue
        return {}

    def __contains__(self, object_id: ObjectID) -> bool:
        held = self._held.get(object_id)
        return bool(held and held[0])


def describe(snapshot: Iterable, payload_of: Callable, pinned: dict,
             status_of: Callable, self_worker_id: bytes, limit: int = 0,
             attempt_of: Callable = lambda task_id: 0) -> tuple[list, int]:
    """The ObjectReferenceInfo of every object this process references or
    keeps mapped, largest first, at most ``limit`` (0: DEFAULT_LIMIT), and
    how many there were in all.

    ``snapshot``: ReferenceCounter.snapshot(); ``payload_of(id)``: the
    memory store's payload or None; ``pinned``: PinnedBuffers.snapshot();
    ``status_of(task_id)``: the status name of a pending task this process
    submitted, or ""; ``attempt_of(task_id)``: the attempt number of a task
    it submitted.
    """
    rows = []
    seen = set()
    for ref in snapshot:
        object_id = ref.object_id
        seen.add(object_id)
        payload = payload_of(object_id)
        size, storage, node_id = -1, Info.UNKNOWN, b""
        if payload is not None:
            size = payload.size
            storage = Info.STORE if payload.in_plasma else Info.INLINE
            node_id = payload.node_id if payload.in_plasma else b""
        mapped = pinned.get(object_id)
        if mapped is not None:
            storage = Info.STORE
            if size < 0:
                size = mapped
        is_put = object_id.is_put()
        status, attempt = "", 0
        if ref.owned and not object_id.is_actor_handle() and not is_put:
            attempt = attempt_of(object_id.task_id())
        if ref.owned and not object_id.is_actor_handle():
            if payload is not None:
                status = "FAILED" if payload.is_error else "FINISHED"
            elif not is_put:
                status = status_of(object_id.task_id()) or ""
        owner = ref.owner.worker_id if ref.owner is not None else self_worker_id
        rows.append((size, Info(
            object_id=object_id, local_ref_count=ref.local,
            submitted_task_ref_count=ref.submitted, contained_in_count=ref.contained_in,
            owned=ref.owned, num_borrowers=ref.num_borrowers,
            pinned_in_memory=mapped is not None, object_size=size, storage=storage,
            task_status=status, call_site=ref.call_site or "", owner_worker_id=owner,
            node_id=node_id, is_put=is_put, attempt_number=attempt)))
    for object_id, size in pinned.items():        # mapped, no ref left (Ray lists it)
        if object_id not in seen:
            rows.append((size, Info(object_id=object_id, pinned_in_memory=True,
                                    object_size=size, storage=Info.STORE,
                                    is_put=object_id.is_put())))
    rows.sort(key=lambda row: -row[0])
    total = len(rows)
    return [info for _, info in rows[:limit or DEFAULT_LIMIT]], total
