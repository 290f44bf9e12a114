"""Objects as user code sees them: put, get, wait and futures, on top of
the memory store, the node's shared-memory store and the owners.

A mixin of CoreWorker (it uses the worker's loop, RPC helpers, reference
counter and submitter); kept apart because it is the larger half.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time

import grpc

from miniray import exceptions
from miniray.common import config
from miniray.common.ids import ObjectID, WorkerID
from miniray.common.serialization import SerializedObject, deserialize, serialize
from miniray.core_worker import object_references, task_context
from miniray.core_worker.object_ref import ObjectRef
from miniray.object_store import client as plasma
from miniray.protocol import common_pb2, core_worker_pb2 as cw_pb2, raylet_pb2
from miniray.rpc import is_unavailable

WORKER = "worker"


class ObjectAccess:
    def put(self, value, owner=None) -> ObjectRef:
        """Store ``value``; this process owns it, or ``owner`` (the
        WorkerAddress of an actor's process, for ``put(_owner=actor)``)."""
        if isinstance(value, ObjectRef):
            raise TypeError(
                "Calling 'put' on an ObjectRef is not allowed. If you really "
                "want to do this, you can wrap the ObjectRef in a list and "
                "call 'put' on it.")
        serialized = serialize(value)
        object_id = self.next_put_id()
        if owner is not None and owner.worker_id != self.worker_id:
            return self._put_owned_by(object_id, serialized, owner)
        return self.put_serialized(object_id, serialized)

    def put_serialized(self, object_id: ObjectID, serialized: SerializedObject) -> ObjectRef:
        """Store an already serialized value as ``object_id``, owned here."""
        with self._lock:
            self.refs.add_owned(object_id)
            self.refs.add_contained(object_id, serialized.nested_refs)
            if config.RECORD_REF_CREATION_SITES:
                self.refs.set_call_site(object_id, object_references.call_site("put object"))
        payload = self.make_payload(object_id, serialized, self.worker_id)
        self.memory_store.put(object_id, payload)
        return ObjectRef(object_id, self.address)

    def _put_owned_by(self, object_id: ObjectID, serialized: SerializedObject,
                      owner) -> ObjectRef:
        """Hand a new object to another owner; we are its first borrower
        (counted by the owner before this returns)."""
        payload = self.make_payload(object_id, serialized, owner.worker_id)
        self.call(owner, "AssignObjectOwner", cw_pb2.AssignObjectOwnerRequest(
            payload=payload, borrower_id=self.worker_id))
        ref = ObjectRef(object_id, owner)
        with self._lock:
            self.refs.mark_registered(object_id)
        return ref

    async def adopt_object(self, payload, borrower: WorkerID) -> None:
        """AssignObjectOwner (io thread): own an object another process made."""
        object_id = ObjectID(payload.object_id)
        from miniray.core_worker.submitter import nested_ref_infos
        with self._lock:
            self.refs.add_owned(object_id)
            self.refs.add_contained(object_id, nested_ref_infos(payload))
            self.refs.update_borrower(object_id, borrower, 1)
        self.memory_store.put(object_id, payload)
        await self.register_borrows()     # the refs it holds: we borrow them now

    def make_payload(self, object_id: ObjectID, serialized: SerializedObject,
                     owner_id: WorkerID):
        """Inline small values; write large ones to this node's store."""
        payload = common_pb2.ObjectPayload(object_id=object_id, size=serialized.size,
                                           is_error=serialized.is_error)
        for ref in serialized.nested_refs:
            ref_proto = payload.nested_refs.add(object_id=ref.id)
            ref.owner.to_proto(ref_proto.owner)
        if serialized.size <= config.MAX_INLINE_OBJECT_BYTES:
            payload.data = serialized.to_bytes()
        else:
            self.write_to_plasma(object_id, serialized, owner_id)
            payload.in_plasma = True
            payload.node_id = self.node_id
        return payload

    def write_to_plasma(self, object_id: ObjectID, serialized: SerializedObject,
                        owner_id: WorkerID) -> None:
        async def reserve():
            if self._pending_frees:       # let frees land before asking for room
                await asyncio.gather(*list(self._pending_frees), return_exceptions=True)
            return await self.raylet.ReserveObject(raylet_pb2.ReserveObjectRequest(
                object_id=object_id, size=serialized.size, owner_worker_id=owner_id,
                writer_worker_id=self.worker_id))

        if self.in_loop_thread():
            raise RuntimeError("write_to_plasma must not run on the io thread")
        self._flush_decrefs_from_user_thread()
        reply = self.run(reserve())
        if reply.error:
            raise exceptions.ObjectStoreFullError(reply.error)
        if reply.exists:
            return
        plasma.create_and_write(reply.path, serialized.size, serialized.write_to)
        self.call("raylet", "SealObject", raylet_pb2.SealObjectRequest(object_id=object_id))

    def _flush_decrefs_from_user_thread(self) -> None:
        if self._pending_decrefs:
            self.run(self._async_flush())

    async def _async_flush(self) -> None:
        self._flush_decrefs()

    def read_payload(self, payload, owner=None):
        """Deserialize a payload; returns (value, is_error). A copy pulled from
        another node is reported to ``owner`` (its object directory)."""
        if not payload.in_plasma:
            return deserialize(payload.data)
        object_id = ObjectID(payload.object_id)
        if len(object_id) != ObjectID.SIZE:       # never an arbitrary file name
            raise ValueError(f"malformed object id of {len(object_id)} bytes")
        path = os.path.join(self.store_directory, object_id.hex())
        try:
            buffer = plasma.read(path)
        except FileNotFoundError:
            source = ""
            dead = exceptions.ObjectLostError(object_id.hex(), detail=(
                f"Its copy was on node {payload.node_id.hex()}, which is dead."))
            if payload.node_id and payload.node_id != self.node_id:
                source = self.raylet_address_of(payload.node_id) or ""
                if not source:
                    raise dead from None
            others = self._other_sources(object_id, payload) if source else []
            try:
                reply = self.call("raylet", "EnsureLocal", raylet_pb2.EnsureLocalRequest(
                    object_id=object_id, source_address=source, other_sources=others))
            except grpc.RpcError as exc:
                if not source or exc.code() != grpc.StatusCode.PERMISSION_DENIED:
                    raise
                # Our raylet knows the node is gone (we had its address cached).
                self._node_addresses.pop(payload.node_id, None)
                raise dead from None
            if not reply.found:
                raise exceptions.ObjectLostError(object_id.hex()) from None
            buffer = plasma.read(reply.path)
            if source and owner is not None:
                self._report_location(object_id, owner)
        self.pinned.note(object_id, buffer)     # while values read from it live
        return deserialize(buffer)

    def _other_sources(self, object_id: ObjectID, payload) -> list[str]:
        """Raylets other than the primary's known to hold a copy."""
        nodes = set(payload.copy_node_ids)
        nodes |= self.locations.get(object_id, set())       # the owner's own view
        nodes.discard(payload.node_id)
        nodes.discard(bytes(self.node_id))
        addresses = (self.raylet_address_of(n) for n in nodes)
        return [a for a in addresses if a]

    def _report_location(self, object_id: ObjectID, owner) -> None:
        if owner.worker_id == self.worker_id:
            self.loop.call_soon_threadsafe(self.add_location, object_id, self.node_id)
            return
        request = cw_pb2.AddObjectLocationRequest(object_id=object_id,
                                                  node_id=self.node_id)

        async def report():
            try:
                await self.worker_stub(owner).AddObjectLocation(request)
            except Exception:       # noqa: BLE001 - the owner is gone
                pass

        self.loop.call_soon_threadsafe(lambda: self.spawn(report()))

    def add_location(self, object_id: ObjectID, node_id: bytes) -> None:
        """Owner side (io thread): another node holds a copy."""
        if self.memory_store.contains(object_id):
            self.locations.setdefault(object_id, set()).add(node_id)

    def relocate(self, object_id: ObjectID) -> bool:
        """Owner side: point a lost object's payload at another copy, if any."""
        payload = self.memory_store.get(object_id)
        copies = self.locations.get(object_id)
        if payload is None or not copies:
            return False
        copies.discard(payload.node_id)
        if not copies:
            return False
        moved = type(payload)()
        moved.CopyFrom(payload)
        moved.node_id = copies.pop()
        self.memory_store.put(object_id, moved)
        return True

    def get(self, refs: list[ObjectRef], timeout: float | None = None) -> list:
        payloads = self.wait_for_payloads(refs, timeout, stop_at_error=True)
        if len(payloads) < len(refs) and any(r.id not in payloads for r in refs):
            # The wait ended early, at an error: raise the first one (in list
            # order) of those known, as Ray does, without waiting for the rest.
            refs = [next(r for r in refs if r.id in payloads and payloads[r.id].is_error)]
        values = []
        for ref in refs:
            value, is_error = self._read_or_recover(ref, payloads[ref.id], timeout)
            if is_error:
                self.flush_borrows()
                raise _as_raisable(value)
            values.append(value)
        self.flush_borrows()
        return values

    def _read_or_recover(self, ref: ObjectRef, payload, timeout: float | None):
        """read_payload, rebuilding the object from lineage if its copy is lost."""
        for _ in range(3):
            try:
                return self.read_payload(payload, ref.owner)
            except exceptions.ObjectLostError as lost:
                error = lost
                if ref.owner.worker_id == self.worker_id:
                    if not self.run(self._recover(ref.id, payload)):
                        raise
                    payload = self.wait_for_payloads([ref], timeout)[ref.id]
                else:
                    self.memory_store.delete(ref.id)
                    # Blocked: the owner may need our CPU to rebuild the object.
                    try:
                        with self._blocked():
                            reply = self.call(ref.owner, "GetObject", cw_pb2.GetObjectRequest(
                                object_id=ref.id, lost=True, lost_node_id=payload.node_id,
                                timeout=-1.0 if timeout is None else timeout))
                    except Exception as exc:       # noqa: BLE001 - checked below
                        if is_unavailable(exc):    # its owner is gone, and its lineage
                            raise exceptions.OwnerDiedError(
                                ref.hex(), owner_address=ref.owner.target) from None
                        raise
                    if reply.status != cw_pb2.GetObjectReply.READY:
                        raise
                    payload = reply.payload
        raise error

    async def _recover(self, object_id: ObjectID, stale=None,
                       lost_node: bytes = b"") -> bool:
        """An owned object's copy is lost (io thread): point it at another
        copy, else rebuild it from lineage, else store the error saying why
        it is lost for good. False if nothing here references it any more.
        ``stale``, or a borrower's ``lost_node``: the payload found lost, or
        the node its copy was on (recovered since if ours is not that one)."""
        current = self.memory_store.get(object_id)
        if current is not None:
            if stale is not None and current is not stale:
                return True
            if lost_node and (not current.in_plasma or current.node_id != lost_node):
                return True
        return self.relocate(object_id) or self.submitter.reconstruct(object_id)

    def wait_for_payloads(self, refs: list[ObjectRef], timeout: float | None,
                          stop_at_error: bool = False) -> dict:
        """Block until every ref's payload is known (GetTimeoutError if not).
        ``stop_at_error``: or until one of them is known to hold an error;
        then the payloads known so far, that one among them."""
        payloads: dict = {}
        missing_owned: list[ObjectID] = []
        missing_borrowed: list[ObjectRef] = []
        for ref in refs:
            payload = self.memory_store.get(ref.id)
            if payload is not None:
                payloads[ref.id] = payload
            elif ref.owner.worker_id == self.worker_id:
                missing_owned.append(ref.id)
            else:
                missing_borrowed.append(ref)
        if not missing_owned and not missing_borrowed:
            return payloads
        if stop_at_error and any(p.is_error for p in payloads.values()):
            return payloads
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._blocked():
            # Borrowed objects are fetched from their owners while we wait for
            # the owned ones; an error in either ends both waits early.
            error_seen = threading.Event()
            fetch = None
            if missing_borrowed:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                fetch = asyncio.run_coroutine_threadsafe(
                    self._fetch_all(missing_borrowed, remaining, stop_at_error), self.loop)
                if stop_at_error and missing_owned:
                    fetch.add_done_callback(
                        lambda done: _fetched_an_error(done) and error_seen.set())
            try:
                if missing_owned:
                    self._wait_owned(missing_owned, len(set(missing_owned)), deadline,
                                     stop=error_seen if stop_at_error else None)
                    for object_id in missing_owned:
                        payload = self.memory_store.get(object_id)
                        if payload is not None:
                            payloads[object_id] = payload
                stopped = stop_at_error and any(p.is_error for p in payloads.values())
                if fetch is not None and not stopped:
                    fetched = fetch.result()
                    for ref, payload in zip(missing_borrowed, fetched):
                        if payload is not None:
                            payloads[ref.id] = payload
                    stopped = stop_at_error and any(
                        p is not None and p.is_error for p in fetched)
            finally:
                if fetch is not None and not fetch.done():
                    fetch.cancel()
        if stopped:
            return payloads
        for object_id in missing_owned:
            if object_id not in payloads:
                # Freed while we waited: only possible if its refs died.
                raise exceptions.ObjectLostError(object_id.hex(), self.address.target,
                                                 self.refs.call_site(object_id))
        for ref in missing_borrowed:
            if ref.id not in payloads:
                raise exceptions.GetTimeoutError(
                    f"Get timed out: some object(s) not ready after {timeout}s.")
        return payloads

    def _wait_owned(self, object_ids: list[ObjectID], needed: int,
                    deadline: float | None, raise_on_timeout: bool = True,
                    stop: threading.Event | None = None) -> int:
        """Wait until ``needed`` of the (distinct) objects are ready. With
        ``stop``: or until one of them holds an error, or someone else sets
        ``stop`` (it is set on an error here too)."""
        event = stop if stop is not None else threading.Event()
        state = {"ready": 0}
        lock = threading.Lock()
        store = self.memory_store

        def on_ready(object_id):
            with lock:
                state["ready"] += 1
                if state["ready"] >= needed:
                    event.set()
            if stop is not None:
                payload = store.get(object_id)
                if payload is not None and payload.is_error:
                    event.set()

        registered = []
        for object_id in set(object_ids):
            if self.memory_store.add_waiter(object_id, on_ready):
                registered.append(object_id)
            else:
                on_ready(object_id)
        try:
            while not event.is_set():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                event.wait(remaining if remaining is None else min(remaining, 1.0))
                if self._shutdown:
                    raise exceptions.RaySystemError("miniray was shut down")
            if not event.is_set() and raise_on_timeout:
                raise exceptions.GetTimeoutError(
                    "Get timed out: some object(s) not ready.")
            return state["ready"]
        finally:
            for object_id in registered:
                self.memory_store.remove_waiter(object_id, on_ready)

    async def _fetch_all(self, refs: list[ObjectRef], timeout: float | None,
                         stop_at_error: bool = False) -> list:
        """Each ref's payload (None: not ready within ``timeout``). With
        ``stop_at_error``, the first error ends the fetch: refs not fetched
        by then are None."""
        # Bounded: thousands of concurrent unary calls on one HTTP/2
        # connection get streams reset by gRPC.
        limit = asyncio.Semaphore(256)

        async def fetch(ref):
            async with limit:
                return await self.fetch_from_owner(ref, timeout)

        if not stop_at_error or len(refs) == 1:
            return await asyncio.gather(*(fetch(r) for r in refs))
        tasks = [asyncio.ensure_future(fetch(r)) for r in refs]
        try:
            for next_done in asyncio.as_completed(tasks):
                payload = await next_done
                if payload is not None and payload.is_error:
                    break
        finally:
            for task in tasks:
                task.cancel()           # the ones still fetching
        return [t.result() if t.done() and not t.cancelled() and t.exception() is None
                else None for t in tasks]

    async def fetch_from_owner(self, ref: ObjectRef, timeout: float | None):
        """Ask a borrowed object's owner for its payload (None on timeout)."""
        cached = self.memory_store.get(ref.id)
        if cached is not None:
            return cached
        try:
            reply = await self.worker_stub(ref.owner).GetObject(cw_pb2.GetObjectRequest(
                object_id=ref.id, timeout=-1.0 if timeout is None else timeout))
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            # The owner is gone, and the object with it: that is its value
            # from now on (a wait sees it ready; Ray marks it failed).
            payload = self._owner_died_payload(ref)
            with self._lock:
                known = ref.id in self.refs
            if known:
                self.memory_store.put(ref.id, payload)
            return payload
        if reply.status == cw_pb2.GetObjectReply.PENDING:
            return None
        if reply.status == cw_pb2.GetObjectReply.FREED:
            return error_payload(ref.id, exceptions.ObjectFreedError(ref.hex()))
        with self._lock:
            cache = ref.id in self.refs
        if cache:
            self.memory_store.put(ref.id, reply.payload)
        return reply.payload

    def _owner_died_payload(self, ref: ObjectRef):
        return error_payload(ref.id, exceptions.OwnerDiedError(
            ref.hex(), owner_address=ref.owner.target))

    def _blocked(self):
        return _BlockedScope(self)

    def wait(self, refs: list[ObjectRef], num_returns: int, timeout: float | None,
             fetch_local: bool = True) -> tuple[list, list]:
        deadline = None if timeout is None else time.monotonic() + timeout
        ready_ids = {r.id for r in refs if self.memory_store.contains(r.id)}
        owned = [r.id for r in refs if r.id not in ready_ids
                 and r.owner.worker_id == self.worker_id]
        borrowed = [r for r in refs if r.id not in ready_ids
                    and r.owner.worker_id != self.worker_id]
        if len(ready_ids) < num_returns and (timeout is None or timeout > 0):
            with self._blocked():
                if borrowed:
                    self._wait_borrowed(borrowed, deadline)
                    ready_ids |= {r.id for r in borrowed if self.memory_store.contains(r.id)}
                need = num_returns - len(ready_ids)
                if owned and need > 0:
                    self._wait_owned(owned, min(need, len(set(owned))), deadline,
                                     raise_on_timeout=False)
        ready_ids = {r.id for r in refs if self.memory_store.contains(r.id)}
        ready, not_ready = [], []
        for ref in refs:
            if ref.id in ready_ids and len(ready) < num_returns:
                ready.append(ref)
            else:
                not_ready.append(ref)
        return ready, not_ready

    def _wait_borrowed(self, refs: list[ObjectRef], deadline: float | None) -> None:
        # Borrowed objects: ask owners with the remaining time (simple, and
        # fine for the few borrowed refs a wait usually holds).
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.run(self._fetch_all(refs, remaining))

    def get_future(self, ref: ObjectRef):
        import concurrent.futures
        future: concurrent.futures.Future = concurrent.futures.Future()

        def resolve():
            if not future.set_running_or_notify_cancel():
                return                  # the waiter gave up (an await cancelled)
            try:
                value = self.get([ref])[0]
            except BaseException as exc:       # noqa: BLE001 - handed to the future
                future.set_exception(exc)
                return
            future.set_result(value)

        if ref.owner.worker_id == self.worker_id:
            def on_ready(_):
                threading.Thread(target=resolve, daemon=True).start() \
                    if self.in_loop_thread() else resolve()
            if not self.memory_store.add_waiter(ref.id, on_ready):
                resolve()
        else:
            threading.Thread(target=resolve, daemon=True).start()
        return future


class _BlockedScope:
    """While a worker's task waits in get/wait, give its CPU back to the raylet."""

    __slots__ = ("worker", "active")

    def __init__(self, worker: "ObjectAccess"):
        self.worker = worker
        self.active = False

    def __enter__(self):
        worker = self.worker
        if worker.mode == WORKER and task_context.current() is not None \
                and not worker.in_loop_thread():
            self.active = True
            self._notify(True)

    def __exit__(self, *exc):
        if self.active:
            self._notify(False)

    def _notify(self, blocked: bool) -> None:
        worker = self.worker
        try:
            worker.call("raylet", "NotifyBlocked", raylet_pb2.NotifyBlockedRequest(
                worker_id=worker.worker_id, blocked=blocked))
        except Exception:
            pass


def _fetched_an_error(fetch) -> bool:
    """Whether a finished _fetch_all (a concurrent future) found an error."""
    if fetch.cancelled() or fetch.exception() is not None:
        return False
    return any(p is not None and p.is_error for p in fetch.result())


def error_payload(object_id: ObjectID, error: BaseException):
    serialized = serialize(error, is_error=True)
    return common_pb2.ObjectPayload(object_id=object_id, data=serialized.to_bytes(),
                                    size=serialized.size, is_error=True)


def _as_raisable(error):
    if isinstance(error, exceptions.RayTaskError):
        return error.as_instanceof_cause()
    return error
