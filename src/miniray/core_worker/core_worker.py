"""CoreWorker: the runtime library inside every driver and worker process.

It owns an asyncio event loop on a background thread ("io thread") that
runs this process's gRPC server (CoreWorkerService) and all its clients.
User threads call the public methods below; state shared with the io
thread (reference counts, the memory store) is behind locks, and anything
that talks to other processes is handed to the loop.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import time
from typing import Iterable, Sequence

from miniray import exceptions
from miniray.common import config
from miniray.common.address import WorkerAddress
from miniray.common.ids import JobID, NodeID, ObjectID, TaskID, WorkerID
from miniray.common.serialization import SerializedObject, deserialize, serialize
from miniray.core_worker import object_ref as object_ref_module
from miniray.core_worker.memory_store import MemoryStore
from miniray.core_worker.object_ref import ObjectRef
from miniray.core_worker.reference_counter import (
    FreeObject, ReferenceCounter, ReleaseBorrow)
from miniray.object_store import client as plasma
from miniray.protocol import (
    common_pb2, core_worker_pb2 as cw_pb2, core_worker_pb2_grpc as cw_grpc,
    gcs_pb2, gcs_pb2_grpc, raylet_pb2, raylet_pb2_grpc)
from miniray.rpc import ChannelPool, is_unavailable, start_server

DRIVER = "driver"
WORKER = "worker"


class _TaskContext(threading.local):
    """What the calling thread is running (a task in workers, the driver)."""
    task_id: TaskID | None = None
    put_index: int = 0
    task_name: str = ""


class CoreWorker:
    def __init__(self, *, mode: str, raylet_address: str, gcs_address: str,
                 worker_id: WorkerID | None = None, namespace: str = "",
                 code_search_path: Sequence[str] = ()):
        self.mode = mode
        self.worker_id = worker_id or WorkerID.from_random()
        self.raylet_address = raylet_address
        self.gcs_address = gcs_address
        self.namespace = namespace
        self.memory_store = MemoryStore()
        self._lock = threading.RLock()
        self._pending_decrefs: collections.deque = collections.deque()
        self._flush_scheduled = False
        self._ctx = _TaskContext()
        self._shutdown = False
        self._pending_frees: set[asyncio.Task] = set()
        self._background: set[asyncio.Task] = set()

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="miniray-io",
                                        daemon=True)
        self._thread.start()
        self.channels = ChannelPool()

        from miniray.core_worker.actor_submitter import ActorTaskSubmitter
        from miniray.core_worker.executor import TaskExecutor
        from miniray.core_worker.function_manager import FunctionManager
        from miniray.core_worker.submitter import NormalTaskSubmitter
        self.functions = FunctionManager(self)
        self.submitter = NormalTaskSubmitter(self)
        self.actor_submitter = ActorTaskSubmitter(self, self.submitter)
        self.submitter.actor_submitter = self.actor_submitter
        # Actors this process created: handle id -> (actor id, held arg ids, detached)
        self._owned_actors: dict[ObjectID, tuple] = {}
        self._node_addresses: dict[bytes, str] = {}
        # The placement group strategy children of the running task inherit.
        self.current_placement_group = None
        self.executor = TaskExecutor(self) if mode == WORKER else None

        self.port = self.run(self._start_server())
        self.job_id = JobID.nil()
        if mode == DRIVER:
            reply = self.call("gcs", "AddJob", gcs_pb2.AddJobRequest(
                driver=common_pb2.Address(ip="127.0.0.1", port=self.port,
                                          worker_id=self.worker_id),
                driver_pid=os.getpid(),
                config=gcs_pb2.JobConfig(namespace=namespace,
                                         code_search_path=list(code_search_path),
                                         working_dir=os.getcwd())))
            self.job_id = JobID(reply.job_id)
            self.namespace = reply.namespace
            self._ctx_default_task = TaskID.for_driver(self.job_id)
        else:
            self._ctx_default_task = None
        reply = self.call("raylet", "RegisterWorker", raylet_pb2.RegisterWorkerRequest(
            worker_id=self.worker_id, pid=os.getpid(), port=self.port,
            is_driver=mode == DRIVER, job_id=self.job_id))
        self.node_id = NodeID(reply.node_id)
        self.store_directory = reply.store_directory
        self.session_dir = reply.session_dir
        self.address = WorkerAddress("127.0.0.1", self.port, self.worker_id, self.node_id)
        self.refs = ReferenceCounter(self.address)
        object_ref_module.set_core_worker(self)

    # --- event loop -----------------------------------------------------------
    def _run_loop(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro, timeout: float | None = None):
        """Run a coroutine on the io thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, target, method: str, request, timeout: float | None = None):
        """One RPC from a user thread; ``target`` is "raylet", "gcs" or a
        WorkerAddress. (gRPC aio stubs belong to the io thread's loop.)"""
        async def rpc():
            if target == "raylet":
                stub = self.raylet
            elif target == "gcs":
                stub = self.gcs
            else:
                stub = self.worker_stub(target)
            return await getattr(stub, method)(request, timeout=timeout)
        return self.run(rpc())

    def spawn(self, coro) -> asyncio.Task:
        """Start a tracked background task; call only on the io thread."""
        task = self.loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def in_loop_thread(self) -> bool:
        return threading.get_ident() == self._thread.ident

    async def _start_server(self) -> int:
        from miniray.core_worker.servicer import CoreWorkerServicer

        def add(server):
            cw_grpc.add_CoreWorkerServiceServicer_to_server(CoreWorkerServicer(self), server)

        self._server, port = await start_server(add)
        return port

    @property
    def raylet(self) -> raylet_pb2_grpc.RayletServiceStub:
        return self.channels.stub(self.raylet_address, raylet_pb2_grpc.RayletServiceStub)

    @property
    def gcs(self) -> gcs_pb2_grpc.GcsServiceStub:
        return self.channels.stub(self.gcs_address, gcs_pb2_grpc.GcsServiceStub)

    def raylet_stub(self, address: str) -> raylet_pb2_grpc.RayletServiceStub:
        return self.channels.stub(address, raylet_pb2_grpc.RayletServiceStub)

    def raylet_address_of(self, node_id: bytes) -> str | None:
        """The raylet address of a node (cached from the GCS node table)."""
        address = self._node_addresses.get(node_id)
        if address is None:
            reply = self.call("gcs", "GetAllNodes", gcs_pb2.GetAllNodesRequest()) \
                if not self.in_loop_thread() else None
            if reply is not None:
                for node in reply.nodes:
                    if node.alive:
                        self._node_addresses[node.node_id] = f"{node.ip}:{node.raylet_port}"
            address = self._node_addresses.get(node_id)
        return address

    def worker_stub(self, address: WorkerAddress) -> cw_grpc.CoreWorkerServiceStub:
        return self.channels.stub(address.target, cw_grpc.CoreWorkerServiceStub)

    def shutdown(self) -> None:
        if self._shutdown:
            return
        self._shutdown = True
        object_ref_module.set_core_worker(None)

        async def stop():
            self.submitter.stop()
            await self._server.stop(grace=None)
            for task in list(self._background):
                task.cancel()
            await self.channels.close()

        try:
            self.run(stop(), timeout=5)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)

    # --- task context -------------------------------------------------------------
    @property
    def current_task_id(self) -> TaskID:
        return self._ctx.task_id or self._ctx_default_task

    def set_task_context(self, task_id: TaskID | None, name: str = "") -> None:
        self._ctx.task_id = task_id
        self._ctx.put_index = 0
        self._ctx.task_name = name

    @property
    def current_task_name(self) -> str:
        return self._ctx.task_name

    def next_put_id(self) -> ObjectID:
        ctx = self._ctx
        ctx.put_index += 1
        return ObjectID.for_put(self.current_task_id, ctx.put_index)

    # --- reference counting ---------------------------------------------------------
    def add_local_ref(self, object_id: ObjectID, owner: WorkerAddress) -> None:
        with self._lock:
            self.refs.add_local(object_id, owner)

    def remove_local_ref(self, object_id: ObjectID) -> None:
        """Called from ObjectRef.__del__, possibly inside the GC: only queue."""
        self._pending_decrefs.append(object_id)
        if not self._flush_scheduled and not self._shutdown:
            self._flush_scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._flush_decrefs)
            except RuntimeError:     # loop closed during interpreter exit
                pass

    def _flush_decrefs(self) -> None:
        self._flush_scheduled = False
        actions: list = []
        pending = self._pending_decrefs
        with self._lock:
            while pending:
                actions += self.refs.remove_local(pending.popleft())
        if actions:
            self.apply_ref_actions(actions)

    def apply_ref_actions(self, actions: Iterable) -> None:
        """Carry out reference-counter actions; call on the io thread."""
        plasma_frees: dict[bytes, list[bytes]] = {}       # node id -> objects
        releases: dict[WorkerAddress, list] = {}
        for action in actions:
            if isinstance(action, FreeObject):
                if action.object_id in self._owned_actors:
                    self._actor_out_of_scope(action.object_id)
                    continue
                self.submitter.forget_lineage(action.object_id)
                payload = self.memory_store.delete(action.object_id)
                if payload is not None and payload.in_plasma:
                    plasma_frees.setdefault(payload.node_id, []).append(action.object_id)
            elif isinstance(action, ReleaseBorrow):
                self.memory_store.delete(action.object_id)
                if action.delta:
                    releases.setdefault(action.owner, []).append(
                        cw_pb2.RefCountUpdate(object_id=action.object_id,
                                              borrower_id=self.worker_id,
                                              delta=action.delta))
        for node_id, object_ids in plasma_frees.items():
            task = self.spawn(self._free_plasma(object_ids, node_id))
            self._pending_frees.add(task)
            task.add_done_callback(self._pending_frees.discard)
        for owner, updates in releases.items():
            self.spawn(self._send_ref_updates(owner, updates))

    def _actor_out_of_scope(self, handle_id: ObjectID) -> None:
        """Every handle to an actor we created is gone: it can exit."""
        actor_id, held, detached = self._owned_actors.pop(handle_id)
        with self._lock:
            actions = self.refs.remove_submitted(held)
        if actions:
            self.apply_ref_actions(actions)
        if not detached:
            self.spawn(self._gcs_call("KillActor", gcs_pb2.KillActorRequest(
                actor_id=actor_id, out_of_scope=True)))

    async def warn_if_infeasible(self, resources: dict, name: str, task_id) -> None:
        """Say so, as Ray does, when no live node could ever run a request;
        it stays pending in case such a node joins."""
        from miniray.common.resources import fits
        try:
            reply = await self.gcs.GetAllNodes(gcs_pb2.GetAllNodesRequest())
        except Exception:
            return
        if any(fits(resources, n.resources_total) for n in reply.nodes if n.alive):
            return
        logging.getLogger("miniray").warning(
            "The actor or task %s (id %s) cannot be scheduled right now. It requires "
            "%s for placement, but no node in the cluster has these resources. It "
            "stays pending until a node that has them joins the cluster.",
            name, task_id.hex(), resources)

    async def _gcs_call(self, method: str, request) -> None:
        try:
            await getattr(self.gcs, method)(request)
        except Exception:
            pass          # the GCS is gone: the cluster is shutting down

    async def _free_plasma(self, object_ids: list[bytes], node_id: bytes = b"") -> None:
        if node_id and node_id != self.node_id:
            address = self._node_addresses.get(node_id)
            if address is None:
                try:
                    reply = await self.gcs.GetAllNodes(gcs_pb2.GetAllNodesRequest())
                except Exception:
                    return
                address = next((f"{n.ip}:{n.raylet_port}" for n in reply.nodes
                                if n.node_id == node_id and n.alive), None)
                if address is None:
                    return            # the node is gone, and its store with it
            stub = self.raylet_stub(address)
        else:
            stub = self.raylet
        try:
            await stub.FreeObjects(raylet_pb2.FreeObjectsRequest(object_ids=object_ids))
        except Exception:
            pass     # the raylet is gone; its store went with it

    async def _send_ref_updates(self, owner: WorkerAddress, updates: list) -> None:
        if owner.worker_id == self.worker_id:
            self.handle_ref_updates(updates)
            return
        try:
            await self.worker_stub(owner).UpdateRefCounts(
                cw_pb2.UpdateRefCountsRequest(updates=updates))
        except Exception:
            pass     # the owner died: its objects are gone anyway

    def handle_ref_updates(self, updates) -> None:
        actions: list = []
        with self._lock:
            for u in updates:
                actions += self.refs.update_borrower(ObjectID(u.object_id),
                                                     WorkerID(u.borrower_id), u.delta)
        if actions:
            self.apply_ref_actions(actions)

    async def register_borrows(self, borrower: WorkerID | None = None,
                               refs: Iterable | None = None) -> None:
        """Tell owners that we (or ``borrower``) now hold their objects.

        Without arguments: every foreign ref this process holds that its
        owner doesn't know about yet. Must finish before we acknowledge
        whatever handed us the refs (a task reply, a get).
        """
        by_owner: dict[WorkerAddress, list] = {}
        if refs is None:
            with self._lock:
                pending = self.refs.unregistered_borrows()
                for object_id, _ in pending:
                    self.refs.mark_registered(object_id)
            borrower = self.worker_id
        else:
            pending = [(r.id, r.owner) for r in refs]
        for object_id, owner in pending:
            by_owner.setdefault(owner, []).append(cw_pb2.RefCountUpdate(
                object_id=object_id, borrower_id=borrower, delta=1))
        if by_owner:
            await asyncio.gather(*(self._send_ref_updates(o, u)
                                   for o, u in by_owner.items()))

    def flush_borrows(self) -> None:
        """register_borrows() from a user thread, only when needed."""
        with self._lock:
            needed = bool(self.refs.unregistered_borrows())
        if needed:
            self.run(self.register_borrows())

    # --- objects -----------------------------------------------------------------------
    def put(self, value, _owner_address=None) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise TypeError(
                "Calling 'put' on an ObjectRef is not allowed. If you really "
                "want to do this, you can wrap the ObjectRef in a list and "
                "call 'put' on it.")
        serialized = serialize(value)
        object_id = self.next_put_id()
        with self._lock:
            self.refs.add_owned(object_id)
            self.refs.add_contained(object_id, serialized.nested_refs)
        payload = self.make_payload(object_id, serialized, self.worker_id)
        self.memory_store.put(object_id, payload)
        return ObjectRef(object_id, self.address)

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
                object_id=object_id, size=serialized.size, owner_worker_id=owner_id))

        if self.in_loop_thread():
            raise RuntimeError("write_to_plasma must not run on the io thread")
        self._flush_decrefs_from_user_thread()
        reply = self.run(reserve())
        if reply.error:
            raise exceptions.ObjectStoreFullError(reply.error)
        plasma.create_and_write(reply.path, serialized.size, serialized.write_to)
        self.call("raylet", "SealObject", raylet_pb2.SealObjectRequest(object_id=object_id))

    def _flush_decrefs_from_user_thread(self) -> None:
        if self._pending_decrefs:
            self.run(self._async_flush())

    async def _async_flush(self) -> None:
        self._flush_decrefs()

    def read_payload(self, payload):
        """Deserialize a payload; returns (value, is_error)."""
        if not payload.in_plasma:
            return deserialize(payload.data)
        object_id = ObjectID(payload.object_id)
        path = os.path.join(self.store_directory, object_id.hex())
        try:
            buffer = plasma.read(path)
        except FileNotFoundError:
            source = ""
            if payload.node_id and payload.node_id != self.node_id:
                source = self.raylet_address_of(payload.node_id) or ""
                if not source:
                    raise exceptions.ObjectLostError(
                        object_id.hex(), call_site="its node is dead") from None
            reply = self.call("raylet", "EnsureLocal", raylet_pb2.EnsureLocalRequest(
                object_id=object_id, source_address=source))
            if not reply.found:
                raise exceptions.ObjectLostError(object_id.hex()) from None
            buffer = plasma.read(reply.path)
        return deserialize(buffer)

    def get(self, refs: list[ObjectRef], timeout: float | None = None) -> list:
        payloads = self.wait_for_payloads(refs, timeout)
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
                return self.read_payload(payload)
            except exceptions.ObjectLostError as lost:
                error = lost
                if ref.owner.worker_id == self.worker_id:
                    if not self.run(self._reconstruct(ref.id)):
                        raise
                    payload = self.wait_for_payloads([ref], timeout)[ref.id]
                else:
                    self.memory_store.delete(ref.id)
                    reply = self.call(ref.owner, "GetObject", cw_pb2.GetObjectRequest(
                        object_id=ref.id, lost=True,
                        timeout=-1.0 if timeout is None else timeout))
                    if reply.status != cw_pb2.GetObjectReply.READY:
                        raise
                    payload = reply.payload
        raise error

    async def _reconstruct(self, object_id: ObjectID) -> bool:
        return self.submitter.reconstruct(object_id)

    def wait_for_payloads(self, refs: list[ObjectRef], timeout: float | None) -> dict:
        """Block until every ref's payload is known (GetTimeoutError if not)."""
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
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._blocked():
            if missing_owned:
                self._wait_owned(missing_owned, len(set(missing_owned)), deadline)
                for object_id in missing_owned:
                    payload = self.memory_store.get(object_id)
                    if payload is None:
                        # Freed while we waited: only possible if its refs died.
                        raise exceptions.ObjectLostError(object_id.hex())
                    payloads[object_id] = payload
            if missing_borrowed:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                fetched = self.run(self._fetch_all(missing_borrowed, remaining))
                for ref, payload in zip(missing_borrowed, fetched):
                    if payload is None:
                        raise exceptions.GetTimeoutError(
                            f"Get timed out: some object(s) not ready after {timeout}s.")
                    payloads[ref.id] = payload
        return payloads

    def _wait_owned(self, object_ids: list[ObjectID], needed: int,
                    deadline: float | None, raise_on_timeout: bool = True) -> int:
        """Wait until ``needed`` of the (distinct) objects are ready."""
        event = threading.Event()
        state = {"ready": 0}
        lock = threading.Lock()

        def on_ready(_):
            with lock:
                state["ready"] += 1
                if state["ready"] >= needed:
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
                    "Get timed out: some object(s) not ready after the timeout.")
            return state["ready"]
        finally:
            for object_id in registered:
                self.memory_store.remove_waiter(object_id, on_ready)

    async def _fetch_all(self, refs: list[ObjectRef], timeout: float | None) -> list:
        return await asyncio.gather(*(self.fetch_from_owner(r, timeout) for r in refs))

    async def fetch_from_owner(self, ref: ObjectRef, timeout: float | None):
        """Ask a borrowed object's owner for its payload (None on timeout)."""
        cached = self.memory_store.get(ref.id)
        if cached is not None:
            return cached
        try:
            reply = await self.worker_stub(ref.owner).GetObject(cw_pb2.GetObjectRequest(
                object_id=ref.id, timeout=-1.0 if timeout is None else timeout))
        except Exception as exc:
            if is_unavailable(exc):
                return self._owner_died_payload(ref)
            raise
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
            try:
                future.set_result(self.get([ref])[0])
            except BaseException as exc:       # noqa: BLE001 - handed to the future
                future.set_exception(exc)

        if ref.owner.worker_id == self.worker_id:
            def on_ready(_):
                threading.Thread(target=resolve, daemon=True).start() \
                    if self.in_loop_thread() else resolve()
            if not self.memory_store.add_waiter(ref.id, on_ready):
                resolve()
        else:
            threading.Thread(target=resolve, daemon=True).start()
        return future

    # --- tasks --------------------------------------------------------------------
    def submit_task(self, spec, arg_values: Sequence, kwarg_values: dict,
                    num_returns: int, streaming: bool = False):
        """Returns the task's return refs, or an ObjectRefGenerator."""
        task_id = spec.task_id = TaskID.of(self.current_job_id())
        held = self._build_args(spec, arg_values, kwarg_values)
        spec.job_id = task_id.job_id()
        spec.parent_task_id = self.current_task_id
        self.address.to_proto(spec.caller)
        spec.num_returns = num_returns
        spec.streaming = streaming
        return_ids = [ObjectID.for_return(task_id, i + 1) for i in range(num_returns)]
        with self._lock:
            self.refs.add_submitted(held)
            for object_id in return_ids:
                self.refs.add_owned(object_id)
        refs = [ObjectRef(object_id, self.address) for object_id in return_ids]
        generator = None
        if streaming:
            from miniray.core_worker.generator import ObjectRefGenerator
            generator = ObjectRefGenerator(task_id, self)
        submitter = self.actor_submitter if spec.actor_id else self.submitter
        submitter.submit_threadsafe(spec, [r.id for r in held], generator)
        return generator if streaming else refs

    submit_actor_task = submit_task

    def current_job_id(self) -> JobID:
        return self.job_id if self.mode == DRIVER else self.current_task_id.job_id()

    def _build_args(self, spec, arg_values: Sequence, kwarg_values: dict) -> list:
        """Fill spec.args: refs as refs, small values inline, big ones put."""
        held: list = []
        for value in list(arg_values) + list(kwarg_values.values()):
            arg = spec.args.add()
            if isinstance(value, ObjectRef):
                value.owner.to_proto(arg.ref.owner)
                arg.ref.object_id = value.id
                held.append(value)
                continue
            serialized = serialize(value)
            held.extend(serialized.nested_refs)
            if serialized.size <= config.MAX_INLINE_OBJECT_BYTES:
                arg.value.data = serialized.to_bytes()
                for ref in serialized.nested_refs:
                    nested = arg.value.nested_refs.add(object_id=ref.id)
                    ref.owner.to_proto(nested.owner)
            else:
                ref = self.put(value)
                ref.owner.to_proto(arg.ref.owner)
                arg.ref.object_id = ref.id
                held.append(ref)
        spec.kwarg_names.extend(kwarg_values.keys())
        return held

    def create_actor(self, spec, arg_values: Sequence, kwarg_values: dict):
        """Register an actor with the GCS. Returns the ActorInfo of an existing
        actor when get_if_exists found one, else None (the new actor is ours)."""
        from miniray.actor import handle_object_id
        from miniray.common.ids import ActorID
        job_id = self.current_job_id()
        actor_id = ActorID.of(job_id)
        spec.actor_id = actor_id
        spec.task_id = TaskID.of(job_id)
        spec.job_id = job_id
        spec.parent_task_id = self.current_task_id
        self.address.to_proto(spec.caller)
        held = self._build_args(spec, arg_values, kwarg_values)
        reply = self.call("gcs", "RegisterActor",
                          gcs_pb2.RegisterActorRequest(creation_spec=spec))
        if reply.error:
            raise ValueError(reply.error)
        if reply.found_existing:
            return reply.existing
        needed = dict(spec.resources)
        needed.update(spec.actor_options.placement_resources)
        self.loop.call_soon_threadsafe(lambda: self.spawn(self.warn_if_infeasible(
            needed, spec.actor_options.class_name, spec.task_id)))
        handle_id = handle_object_id(actor_id)
        with self._lock:
            self.refs.add_submitted(held)     # kept for restarts
            self.refs.add_owned(handle_id)
        self._owned_actors[handle_id] = (actor_id, [r.id for r in held],
                                         spec.actor_options.detached)
        return None

    def placement_group_ready(self, placement_group) -> ObjectRef:
        """An owned ObjectRef set to ``placement_group`` once it is placed."""
        object_id = self.next_put_id()
        with self._lock:
            self.refs.add_owned(object_id)
        ref = ObjectRef(object_id, self.address)

        async def wait():
            try:
                reply = await self.gcs.WaitPlacementGroupReady(
                    gcs_pb2.WaitPlacementGroupReadyRequest(
                        placement_group_id=placement_group.id, timeout=-1))
                if reply.found and reply.info.state == common_pb2.PG_CREATED:
                    value = serialize(placement_group)
                    payload = common_pb2.ObjectPayload(
                        object_id=object_id, data=value.to_bytes(), size=value.size)
                else:
                    payload = error_payload(object_id, exceptions.RaySystemError(
                        "the placement group was removed before it was placed"))
            except Exception as exc:           # noqa: BLE001 - the GCS went away
                payload = error_payload(object_id, exceptions.RaySystemError(str(exc)))
            self.memory_store.put(object_id, payload)

        self.loop.call_soon_threadsafe(lambda: self.spawn(wait()))
        return ref

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        if ref.owner.worker_id != self.worker_id:
            raise ValueError(
                "cancel() only works on ObjectRefs of tasks this process submitted")
        self.run(self.submitter.cancel(ref.id.task_id(), force, recursive))


class _BlockedScope:
    """While a worker's task waits in get/wait, give its CPU back to the raylet."""

    __slots__ = ("worker", "active")

    def __init__(self, worker: CoreWorker):
        self.worker = worker
        self.active = False

    def __enter__(self):
        worker = self.worker
        if worker.mode == WORKER and worker._ctx.task_id is not None \
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


def error_payload(object_id: ObjectID, error: BaseException):
    serialized = serialize(error, is_error=True)
    return common_pb2.ObjectPayload(object_id=object_id, data=serialized.to_bytes(),
                                    size=serialized.size, is_error=True)


def _as_raisable(error):
    if isinstance(error, exceptions.RayTaskError):
        return error.as_instanceof_cause()
    return error
