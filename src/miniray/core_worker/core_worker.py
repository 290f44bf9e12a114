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
import sys
import threading
import time
from typing import Iterable, Sequence

import grpc

from miniray import exceptions
from miniray.common import config
from miniray.common.address import WorkerAddress
from miniray.common.ids import JobID, NodeID, ObjectID, TaskID, WorkerID
from miniray.common.process import exit_worker, raise_open_files_limit
from miniray.common.rpc_guard import add_servicer
from miniray.common.serialization import serialize
from miniray.core_worker import (
    object_ref as object_ref_module, object_references, task_context, task_events)
from miniray.core_worker.memory_store import MemoryStore
from miniray.core_worker.object_access import ObjectAccess, error_payload
from miniray.core_worker.object_ref import ObjectRef
from miniray.core_worker.reference_counter import (
    FreeObject, ReferenceCounter, ReleaseBorrow)
from miniray.protocol import (
    common_pb2, core_worker_pb2 as cw_pb2, core_worker_pb2_grpc as cw_grpc,
    gcs_pb2, gcs_pb2_grpc, raylet_pb2, raylet_pb2_grpc)
from miniray.rpc import ChannelPool, is_unavailable, start_server
from miniray.rpc.channels import BlockingChannelPool
from miniray.runtime_env import packaging, upload
from miniray.runtime_env import runtime_env as runtime_env_module

DRIVER = "driver"
WORKER = "worker"
# warn_if_infeasible asks about one resource shape at most this often.
_INFEASIBLE_CHECK_S = 5.0


class CoreWorker(ObjectAccess):
    def __init__(self, *, mode: str, raylet_address: str, gcs_address: str,
                 worker_id: WorkerID | None = None, namespace: str = "",
                 code_search_path: Sequence[str] = (), ip: str = config.NODE_IP,
                 default_actor_detached: bool = False, runtime_env: dict | None = None):
        self.ip = ip
        raise_open_files_limit()
        self.job_driver: WorkerAddress | None = None   # where task output goes
        self.mode = mode
        self.worker_id = worker_id or WorkerID.from_random()
        self.raylet_address = raylet_address
        self.gcs_address = gcs_address
        self.namespace = namespace
        self._infeasible_checked: dict[tuple, float] = {}   # shape -> when asked
        self.memory_store = MemoryStore()
        self.pinned = object_references.PinnedBuffers()    # store objects mapped here
        self._lock = threading.RLock()
        self._pending_decrefs: collections.deque = collections.deque()
        self._inbox: collections.deque = collections.deque()     # see post()
        self._inbox_scheduled = False
        self._flush_scheduled = False
        self._shutdown = False
        self._pending_frees: set[asyncio.Task] = set()
        self._background: set[asyncio.Task] = set()

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="miniray-io",
                                        daemon=True)
        self._thread.start()
        self.channels = ChannelPool()
        self.blocking = BlockingChannelPool()      # for call() from user threads
        self.task_events = task_events.TaskEventBuffer()

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
        self._default_detached: dict[JobID, bool] = {}    # per job, see below
        self._node_addresses: dict[bytes, str] = {}
        # Owned objects' copies on other nodes than their payload's node_id.
        self.locations: dict[ObjectID, set[bytes]] = {}
        self.executor = TaskExecutor(self) if mode == WORKER else None

        self.port = self.run(self._start_server())
        self.job_id = JobID.nil()
        # The runtime env this process's tasks inherit: the job's (a driver:
        # its packages uploaded now), or the one this worker was started in.
        if mode == DRIVER:
            self.runtime_env = upload.prepare(runtime_env or {}, self.package_kv())
        else:
            self.runtime_env = runtime_env_module.deserialize(
                os.environ.get("MINIRAY_RUNTIME_ENV", ""))
        self.runtime_env_json = runtime_env_module.serialize(self.runtime_env)
        if mode == DRIVER:
            reply = self.call("gcs", "AddJob", gcs_pb2.AddJobRequest(
                driver=common_pb2.Address(ip=self.ip, port=self.port,
                                          worker_id=self.worker_id),
                driver_pid=os.getpid(),
                config=gcs_pb2.JobConfig(namespace=namespace,
                                         code_search_path=list(code_search_path),
                                         working_dir=os.getcwd(),
                                         default_actor_detached=default_actor_detached,
                                         runtime_env=self.runtime_env_json)))
            self.job_id = JobID(reply.job_id)
            self._default_detached[self.job_id] = default_actor_detached
            self.namespace = reply.namespace
            self.cluster_system_config = reply.system_config     # JSON, or ""
            self._outside_tasks = task_context.TaskContext(TaskID.for_driver(self.job_id))
        else:
            self._outside_tasks = None      # set per job (TaskExecutor.bind_job)
        # A worker waits for a busy raylet to take its connection (it dies
        # with the raylet, and the raylet gives up on it past the register
        # timeout); a driver is told at once that nothing listens there.
        reply = self.call("raylet", "RegisterWorker", raylet_pb2.RegisterWorkerRequest(
            worker_id=self.worker_id, pid=os.getpid(), port=self.port,
            is_driver=mode == DRIVER, job_id=self.job_id),
            timeout=None if mode == DRIVER else config.WORKER_REGISTER_TIMEOUT_S,
            wait_for_ready=mode != DRIVER)
        self.node_id = NodeID(reply.node_id)
        self.store_directory = reply.store_directory
        self.session_dir = reply.session_dir
        self.address = WorkerAddress(self.ip, self.port, self.worker_id, self.node_id)
        self.refs = ReferenceCounter(self.address)
        # Where tasks this process runs ran, for their events.
        self.event_location = {"node_id": bytes(self.node_id),
                               "worker_id": bytes(self.worker_id),
                               "worker_pid": os.getpid()}
        if self.task_events.enabled:
            self.loop.call_soon_threadsafe(
                lambda: self.spawn(task_events.flush_loop(self.task_events, self.gcs)))
        object_ref_module.set_core_worker(self)

    # --- runtime envs -------------------------------------------------------------
    def package_kv(self):
        return packaging.GcsKV(lambda method, request: self.call("gcs", method, request))

    def task_runtime_env(self, requested: dict | None) -> str:
        """The serialized env of a task or actor this process submits with
        ``runtime_env=requested``: its own merged over this process's (Ray's
        inheritance), local packages uploaded."""
        if not requested:
            return self.runtime_env_json
        child = upload.prepare(runtime_env_module.validate(requested), self.package_kv())
        return runtime_env_module.serialize(
            runtime_env_module.merge(self.runtime_env, child))

    def prepare_runtime_env_on_nodes(self) -> None:
        """A job's env with eager_install: every node starts setting it up now
        (in the background; a failure shows when a task needs it)."""
        if not self.runtime_env or not (self.runtime_env.get("config") or {}).get(
                "eager_install", True):
            return
        request = raylet_pb2.PrepareRuntimeEnvRequest(runtime_env=self.runtime_env_json)

        async def prepare():
            try:
                nodes = await self.gcs.GetAllNodes(gcs_pb2.GetAllNodesRequest())
            except Exception:       # noqa: BLE001 - only a head start
                return
            for node in nodes.nodes:
                if node.alive:
                    self.spawn(self._prepare_on(f"{node.ip}:{node.raylet_port}", request))

        self.loop.call_soon_threadsafe(lambda: self.spawn(prepare()))

    async def _prepare_on(self, raylet: str, request) -> None:
        try:
            await self.raylet_stub(raylet).PrepareRuntimeEnv(request)
        except Exception:           # noqa: BLE001 - only a head start
            pass

    # --- event loop -----------------------------------------------------------
    def _run_loop(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro, timeout: float | None = None):
        """Run a coroutine on the io thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, target, method: str, request, timeout: float | None = None,
             wait_for_ready: bool | None = None):
        """One RPC from a user thread; ``target`` is "raylet", "gcs" or a
        WorkerAddress. The GCS and the local raylet are called on blocking
        channels, straight from this thread (about half the latency of a hop
        through the io thread); other processes through the io thread (gRPC
        aio stubs belong to its loop)."""
        if target in ("gcs", "raylet") and not self.in_loop_thread():
            stub = self.blocking.gcs_stub(self.gcs_address) if target == "gcs" else \
                self.blocking.stub(self.raylet_address, raylet_pb2_grpc.RayletServiceStub)
            return getattr(stub, method)(request, timeout=timeout,
                                         wait_for_ready=wait_for_ready)

        async def rpc():
            if target == "raylet":
                stub = self.raylet
            elif target == "gcs":
                stub = self.gcs
            else:
                stub = self.worker_stub(target)
            return await getattr(stub, method)(request, timeout=timeout,
                                               wait_for_ready=wait_for_ready)
        return self.run(rpc())

    def post(self, callback, argument) -> None:
        """Run ``callback(argument)`` on the io thread, in posting order.
        Posts made while a drain is pending share one loop wake-up (one
        self-pipe write for a burst of ``f.remote()`` calls, not one each)."""
        self._inbox.append((callback, argument))
        if not self._inbox_scheduled:
            self._inbox_scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._drain_inbox)
            except RuntimeError:         # the loop is closed: shutting down
                pass

    def _drain_inbox(self) -> None:
        self._inbox_scheduled = False       # before draining: later posts reschedule
        inbox = self._inbox
        while inbox:
            callback, argument = inbox.popleft()
            callback(argument)

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
            add_servicer(server, CoreWorkerServicer(self),
                         cw_pb2.DESCRIPTOR.services_by_name["CoreWorkerService"])

        self._server, port = await start_server(add, self.ip)
        return port

    @property
    def raylet(self) -> raylet_pb2_grpc.RayletServiceStub:
        return self.channels.stub(self.raylet_address, raylet_pb2_grpc.RayletServiceStub)

    @property
    def gcs(self) -> gcs_pb2_grpc.GcsServiceStub:
        """Calls retry while the GCS restarts (rpc/gcs_client.py)."""
        return self.channels.gcs_stub(self.gcs_address)

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

    def flush_task_events(self) -> None:
        """Send the buffered task events now (from any thread but the io
        loop's), as a process does before it exits; best effort, 2 s at most."""
        if not self.task_events.enabled:
            return
        try:
            self.run(task_events.flush(self.task_events, self.gcs), timeout=2)
        except Exception:       # noqa: BLE001 - events are best effort
            pass

    def shutdown(self) -> None:
        if self._shutdown:
            return
        self._shutdown = True
        object_ref_module.set_core_worker(None)

        async def stop():
            self.submitter.stop()
            if self.task_events.enabled:       # what a short script ran still shows
                try:
                    await asyncio.wait_for(task_events.flush(self.task_events, self.gcs), 2)
                except (asyncio.TimeoutError, Exception):   # noqa: BLE001 - best effort
                    pass
            await self._server.stop(grace=None)
            for task in list(self._background):
                task.cancel()
            await self.channels.close()

        try:
            self.run(stop(), timeout=5)
        except Exception:
            pass
        self.blocking.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)

    # --- task context -------------------------------------------------------------
    @property
    def task_context(self) -> task_context.TaskContext:
        """The running task's context; in the driver, and in threads a task
        started itself, the process-wide one."""
        context = task_context.current()
        if context is None:
            context = self._outside_tasks
            if context is None:
                context = self._outside_tasks = task_context.TaskContext(
                    TaskID.of(self.job_id))
        return context

    @property
    def current_task_id(self) -> TaskID:
        return self.task_context.task_id

    @property
    def current_task_name(self) -> str:
        context = task_context.current()
        return context.name if context is not None else ""

    def next_put_id(self) -> ObjectID:
        return self.task_context.next_put_id()

    # --- reference counting ---------------------------------------------------------
    def owns_referenced_objects(self) -> bool:
        """Whether an object this process owns is still referenced (by it,
        a borrower, a pending task or an object containing it)."""
        with self._lock:
            return bool(self.refs.owned_ids())

    async def exit_when_unreferenced(self) -> None:
        """Exit the process (a task worker told to go) once it owns no
        object anyone still references: owners must outlive their objects."""
        while True:
            if not self.owns_referenced_objects():
                sys.stdout.flush()
                sys.stderr.flush()
                exit_worker(0)
            await asyncio.sleep(0.05)

    def owner_of(self, object_id: ObjectID):
        """The owner's address of an object this process references, else None."""
        with self._lock:
            return self.refs.owner_of(object_id)

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
                copies = self.locations.pop(action.object_id, set())
                if payload is not None and payload.in_plasma:
                    for node_id in copies | {payload.node_id}:
                        plasma_frees.setdefault(node_id, []).append(action.object_id)
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

    async def warn_if_infeasible(self, resources: dict, name: str, task_id,
                                 strategy=None) -> None:
        """Say so, as Ray does, when no live node could ever run a request;
        it stays pending in case such a node joins. Not for work in a
        placement group (its bundles' resources exist once the group is
        placed: a pending group is what the user waits for), and once per
        resource shape every few seconds (a thousand actors of one shape
        are one question)."""
        from miniray.common.resources import fits
        if strategy is not None and strategy.kind == strategy.PLACEMENT_GROUP:
            return
        shape = tuple(sorted(resources.items()))
        now = time.monotonic()
        if now - self._infeasible_checked.get(shape, -1e9) < _INFEASIBLE_CHECK_S:
            return
        self._infeasible_checked[shape] = now
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
            await stub.FreeObjects(raylet_pb2.FreeObjectsRequest(
                object_ids=object_ids, owner_worker_id=self.worker_id))
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

    # --- tasks --------------------------------------------------------------------
    def submit_task(self, spec, arg_values: Sequence, kwarg_values: dict,
                    num_returns: int, streaming: bool = False, dynamic: bool = False,
                    holds=None):
        """Returns the task's return refs, or an ObjectRefGenerator.
        ``dynamic``: the one return will hold a DynamicObjectRefGenerator.
        ``holds``: one more reference (an actor's handle) the pending task
        keeps alive."""
        task_id = spec.task_id = TaskID.of(self.current_job_id())
        held = self._build_args(spec, arg_values, kwarg_values)
        if holds is not None:
            held.append(holds)
        spec.job_id = task_id.job_id()
        context = self.task_context
        spec.parent_task_id = context.task_id
        spec.depth = context.depth + 1
        if context.root_detached:
            spec.root_detached_actor_id = context.root_detached
        self.address.to_proto(spec.caller)
        spec.num_returns = num_returns
        spec.streaming = streaming
        spec.returns_dynamic = dynamic
        return_ids = [ObjectID.for_return(task_id, i + 1) for i in range(num_returns)]
        with self._lock:
            self.refs.add_submitted(held)
            for object_id in return_ids:
                self.refs.add_owned(object_id)
            if config.RECORD_REF_CREATION_SITES:
                site = object_references.call_site(
                    "actor call" if spec.actor_id else "task call")
                for object_id in return_ids:
                    self.refs.set_call_site(object_id, site)
        refs = [ObjectRef(object_id, self.address) for object_id in return_ids]
        generator = None
        if streaming:
            from miniray.core_worker.generator import ObjectRefGenerator
            generator = ObjectRefGenerator(task_id, self)
        submitter = self.actor_submitter if spec.actor_id else self.submitter
        submitter.submit_threadsafe(spec, [r.id for r in held], generator)
        return generator if streaming else refs

    def current_job_id(self) -> JobID:
        return self.job_id if self.mode == DRIVER else self.current_task_id.job_id()

    def default_actor_detached(self) -> bool:
        """Whether the running job's actors are detached unless they say
        otherwise (JobConfig.default_actor_lifetime); asked of the GCS once
        per job."""
        job_id = self.current_job_id()
        detached = self._default_detached.get(job_id)
        if detached is None:
            reply = self.call("gcs", "GetJobConfig",
                              gcs_pb2.GetJobConfigRequest(job_id=job_id))
            detached = self._default_detached[job_id] = (
                reply.found and reply.config.default_actor_detached)
        return detached

    def _build_args(self, spec, arg_values: Sequence, kwarg_values: dict) -> list:
        """Fill spec.args: refs as refs, small values inline, big ones put."""
        held: list = []
        for value in list(arg_values) + list(kwarg_values.values()):
            arg = spec.args.add()
            if isinstance(value, ObjectRef):
                if value.owner is None:
                    raise ValueError(ownerless(value))
                value.owner.to_proto(arg.ref.owner)
                arg.ref.object_id = value.id
                held.append(value)
                continue
            try:
                serialized = serialize(value)
            except TypeError as exc:
                text = repr(value)
                raise TypeError(
                    f"Could not serialize the argument "
                    f"{text if len(text) <= 80 else text[:77] + '...'} for a task or "
                    f"actor {spec.function_name}: {exc.__cause__ or exc}. "
                    "miniray.util.inspect_serializability(value) shows which part "
                    "of it cannot be pickled.") from exc
            held.extend(serialized.nested_refs)
            if serialized.size <= config.MAX_INLINE_OBJECT_BYTES:
                arg.value.data = serialized.to_bytes()
                for ref in serialized.nested_refs:
                    nested = arg.value.nested_refs.add(object_id=ref.id)
                    ref.owner.to_proto(nested.owner)
            else:                 # too big to inline: put once, as it is
                ref = self.put_serialized(self.next_put_id(), serialized)
                ref.owner.to_proto(arg.ref.owner)
                arg.ref.object_id = ref.id
                held.append(ref)
        spec.kwarg_names.extend(kwarg_values.keys())
        return held

    def create_actor(self, spec, arg_values: Sequence, kwarg_values: dict):
        """Register an actor with the GCS. Returns the ActorInfo of an existing
        actor when get_if_exists found one, else None (the new actor is ours)."""
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
        if reply.error:              # the only one: the name is taken (a ValueError too)
            raise exceptions.ActorAlreadyExistsError(reply.error)
        if reply.found_existing:
            return reply.existing
        needed = dict(spec.resources)
        needed.update(spec.actor_options.placement_resources)
        self.loop.call_soon_threadsafe(lambda: self.spawn(self.warn_if_infeasible(
            needed, spec.actor_options.class_name, spec.task_id,
            spec.scheduling_strategy)))
        handle_id = ObjectID.for_actor_handle(actor_id)
        with self._lock:
            self.refs.add_submitted(held)     # kept for restarts
            self.refs.add_owned(handle_id)
            if config.RECORD_REF_CREATION_SITES:
                self.refs.set_call_site(handle_id, object_references.call_site(
                    "actor handle", spec.actor_options.class_name))
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

    def note_deserialized(self, object_id: ObjectID) -> None:
        """Record where a ref arrived (only when call sites are recorded):
        in a task, as Ray does, the task's name."""
        name = self.current_task_name
        site = f"(deserialize task arg) {name}" if name \
            else object_references.call_site("deserialize object")
        with self._lock:
            self.refs.set_call_site(object_id, site)

    def object_references(self, limit: int = 0):
        """GetObjectReferences (io thread): every object this process
        references or keeps mapped (object_references.describe)."""
        with self._lock:
            snapshot = self.refs.snapshot()
        infos, total = object_references.describe(
            snapshot, self.memory_store.get, self.pinned.snapshot(),
            self.submitter.task_status, self.worker_id, limit,
            attempt_of=self.submitter.task_attempt)
        return cw_pb2.GetObjectReferencesReply(
            refs=infos, total=total, worker_id=self.worker_id, pid=os.getpid(),
            is_driver=self.mode == DRIVER,
            call_sites_recorded=config.RECORD_REF_CREATION_SITES)

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        if ref.owner.worker_id == self.worker_id:
            self.run(self.submitter.cancel(ref.id.task_id(), force, recursive))
            return
        # A borrowed ref: its owner submitted the task, and cancels it.
        try:
            self.call(ref.owner, "CancelTask", cw_pb2.CancelTaskRequest(
                task_id=ref.id.task_id(), force=force, recursive=recursive,
                as_owner=True))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise ValueError(exc.details()) from None
            if not is_unavailable(exc):
                raise
            # The owner is gone, and its tasks' results with it: nothing to cancel.


def ownerless(ref) -> str:
    return (f"{ref!r} was made from an object id alone and this process does "
            f"not know the object's owner, so it cannot be fetched or passed "
            f"to a task; pass the ObjectRef itself instead")
