"""Submitting normal tasks: resolve dependencies, lease workers, push.

Runs on the owner's io thread. Tasks are grouped by resource shape (the
scheduling key); each key leases workers from the local raylet and pushes
queued tasks straight to them, several in flight per worker, reusing a
lease until its queue drains and the lease has been idle for a moment.
A push that fails because the worker died is retried on a new lease
(``max_retries``); application errors are retried only when the task
allows it (``retry_exceptions``).
"""
from __future__ import annotations

import asyncio
import collections
from typing import NamedTuple

from miniray import exceptions
from miniray.common import config
from miniray.common.address import WorkerAddress
from miniray.common.ids import ObjectID, TaskID
from miniray.common.resources import shape_key
from miniray.protocol import core_worker_pb2 as cw_pb2, raylet_pb2
from miniray.rpc import is_unavailable


class RefInfo(NamedTuple):
    id: ObjectID
    owner: WorkerAddress


def nested_ref_infos(payload) -> list[RefInfo]:
    return [RefInfo(ObjectID(r.object_id), WorkerAddress.from_proto(r.owner))
            for r in payload.nested_refs]


class _Task:
    __slots__ = ("spec", "task_id", "arg_ids", "retries_left", "cancelled",
                 "worker", "key", "generator", "items_seen", "waiting_deps",
                 "resolved", "order")

    def __init__(self, spec, arg_ids):
        self.spec = spec
        self.task_id = TaskID(spec.task_id)
        self.arg_ids = arg_ids
        self.retries_left = spec.max_retries
        self.cancelled = False
        self.worker = None            # _Lease while pushed
        self.key = None
        self.generator = None
        self.items_seen = 0
        self.waiting_deps = 0
        self.resolved = False
        self.order = 0            # submission order (actor calls)

    @property
    def is_actor_task(self) -> bool:
        return bool(self.spec.actor_id)


class _Lease:
    __slots__ = ("lease_id", "address", "stub", "in_flight", "idle_timer", "raylet")

    def __init__(self, lease_id: bytes, address: WorkerAddress, stub, raylet: str):
        self.raylet = raylet              # the raylet that granted it
        self.lease_id = lease_id
        self.address = address
        self.stub = stub
        self.in_flight = 0
        self.idle_timer = None


class _KeyState:
    __slots__ = ("resources", "queue", "leases", "pending_leases", "function_name",
                 "strategy", "max_in_flight")

    def __init__(self, resources: dict, function_name: str, strategy):
        self.strategy = strategy
        # SPREAD: one task per lease at a time, so tasks spread over leases.
        self.max_in_flight = 1 if strategy.kind == strategy.SPREAD \
            else config.MAX_TASKS_IN_FLIGHT_PER_WORKER
        self.resources = resources
        self.queue: collections.deque[_Task] = collections.deque()
        self.leases: dict[bytes, _Lease] = {}
        self.pending_leases = 0
        self.function_name = function_name


class NormalTaskSubmitter:
    def __init__(self, worker):
        self.worker = worker
        self.actor_submitter = None           # set by the CoreWorker
        self._tasks: dict[TaskID, _Task] = {}
        self._keys: dict[tuple, _KeyState] = {}
        # Lineage: the spec of each finished task whose returns are in a
        # node's store, so a return lost with its node can be rebuilt.
        self._lineage: dict[ObjectID, object] = {}
        self._stopped = False

    # --- entry points ---------------------------------------------------------
    def submit_threadsafe(self, spec, arg_ids: list[ObjectID], generator=None) -> None:
        task = _Task(spec, arg_ids)
        task.generator = generator
        if self.worker.in_loop_thread():
            self._submit(task)
        else:
            self.worker.loop.call_soon_threadsafe(self._submit, task)

    def num_pending(self) -> int:
        return len(self._tasks)

    def stop(self) -> None:
        self._stopped = True
        for state in self._keys.values():
            for lease in state.leases.values():
                if lease.idle_timer is not None:
                    lease.idle_timer.cancel()

    # --- dependency resolution --------------------------------------------------------
    def register(self, task: _Task) -> None:
        self._tasks[task.task_id] = task

    def is_pending(self, task: _Task) -> bool:
        return task.task_id in self._tasks

    def _submit(self, task: _Task) -> None:
        self.register(task)
        self.resolve_dependencies(task, self._enqueue)

    def resolve_dependencies(self, task: _Task, on_ready) -> None:
        """Wait for owned pending args, inline small ones, then ``on_ready``."""
        store = self.worker.memory_store
        self_id = self.worker.worker_id
        for arg in task.spec.args:
            if arg.HasField("ref") and arg.ref.owner.worker_id == self_id:
                object_id = ObjectID(arg.ref.object_id)
                if store.add_waiter(object_id,
                                    lambda _, t=task: self._dep_ready(t, on_ready)):
                    task.waiting_deps += 1
        if task.waiting_deps == 0:
            self._resolved(task, on_ready)

    def _dep_ready(self, task: _Task, on_ready) -> None:
        if not self.worker.in_loop_thread():
            self.worker.loop.call_soon_threadsafe(self._dep_ready, task, on_ready)
            return
        task.waiting_deps -= 1
        if task.waiting_deps == 0:
            self._resolved(task, on_ready)

    def _resolved(self, task: _Task, on_ready) -> None:
        if task.cancelled:
            self.fail(task, exceptions.TaskCancelledError(task.task_id.hex()))
            return
        store = self.worker.memory_store
        self_id = self.worker.worker_id
        for arg in task.spec.args:
            if arg.HasField("ref") and arg.ref.owner.worker_id == self_id:
                payload = store.get(ObjectID(arg.ref.object_id))
                if payload is None:
                    self.fail(task, exceptions.ObjectLostError(arg.ref.object_id.hex()))
                    return
                if payload.is_error:     # a failed dependency fails this task
                    self._complete(task, [_with_id(payload, oid)
                                          for oid in self._return_ids(task)])
                    if task.is_actor_task:
                        on_ready(task)      # let later calls to the actor go
                    return
                if not payload.in_plasma:
                    arg.value.CopyFrom(payload)      # inline the small value
        task.resolved = True
        on_ready(task)

    # --- leasing and pushing -------------------------------------------------------------
    def _enqueue(self, task: _Task, front: bool = False) -> None:
        resources = dict(task.spec.resources)
        strategy = task.spec.scheduling_strategy
        key = (shape_key(resources), strategy.SerializeToString())
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _KeyState(resources, task.spec.function_name,
                                                strategy)
            self.worker.spawn(self.worker.warn_if_infeasible(
                resources, task.spec.function_name, task.task_id))
        task.key = key
        if front:
            state.queue.appendleft(task)
        else:
            state.queue.append(task)
        self._dispatch(state)

    def _dispatch(self, state: _KeyState) -> None:
        limit = state.max_in_flight
        leases = state.leases
        while state.queue and leases:
            lease = min(leases.values(), key=lambda l: l.in_flight)
            if lease.in_flight >= limit:
                break
            self._push(state, lease, state.queue.popleft())
        backlog = len(state.queue) + sum(max(0, l.in_flight - 1) for l in leases.values())
        wanted = min(backlog, config.MAX_PENDING_LEASES_PER_KEY) - state.pending_leases
        for _ in range(max(0, wanted)):
            state.pending_leases += 1
            self.worker.spawn(self._request_lease(state))

    async def _request_lease(self, state: _KeyState) -> None:
        worker = self.worker
        request = raylet_pb2.RequestWorkerLeaseRequest(
            resources=state.resources, job_id=worker.job_id,
            requester_worker_id=worker.worker_id, function_name=state.function_name,
            strategy=state.strategy)
        try:
            reply, raylet = await self._lease_from_cluster(request)
        except Exception as exc:
            state.pending_leases -= 1
            if not self._stopped:
                self._fail_queue(state, exceptions.RaySystemError(
                    f"could not lease a worker from the raylet: {exc}"))
            return
        state.pending_leases -= 1
        if reply.rejected:
            self._fail_queue(state, exceptions.TaskUnschedulableError(reply.reject_reason))
            return
        address = WorkerAddress.from_proto(reply.worker)
        lease = _Lease(reply.lease_id, address, worker.worker_stub(address), raylet)
        state.leases[lease.lease_id] = lease
        self._dispatch(state)
        if lease.in_flight == 0:
            self._return_lease(state, lease)

    async def _lease_from_cluster(self, request):
        """Ask the local raylet, following spillbacks; a raylet that spilled
        us to a node that just died is asked again after a short pause."""
        worker = self.worker
        for attempt in range(100):
            raylet = worker.raylet_address
            request.grant_or_reject = False
            try:
                for _ in range(8):
                    reply = await worker.raylet_stub(raylet).RequestWorkerLease(request)
                    if not reply.spillback_address:
                        return reply, raylet
                    raylet = reply.spillback_address
                    request.grant_or_reject = True
            except Exception:
                if raylet == worker.raylet_address:
                    raise              # our own raylet is gone
            await asyncio.sleep(min(0.05 * (attempt + 1), 0.5))
        raise RuntimeError("no raylet would grant a lease")

    def _push(self, state: _KeyState, lease: _Lease, task: _Task) -> None:
        if lease.idle_timer is not None:
            lease.idle_timer.cancel()
            lease.idle_timer = None
        lease.in_flight += 1
        task.worker = lease
        self.worker.spawn(self._push_and_wait(state, lease, task))

    async def _push_and_wait(self, state: _KeyState, lease: _Lease, task: _Task) -> None:
        try:
            reply = await lease.stub.PushTask(cw_pb2.PushTaskRequest(spec=task.spec))
        except Exception as exc:
            lease.in_flight -= 1
            task.worker = None
            if state.leases.pop(lease.lease_id, None) is not None:
                self.worker.spawn(self._release(lease, exiting=True))
                self.worker.channels.forget(lease.address.target)
            self._on_system_failure(task, exc)
            self._dispatch(state)
            return
        lease.in_flight -= 1
        task.worker = None
        self.on_reply(task, reply)
        self._dispatch(state)
        if lease.in_flight == 0 and lease.lease_id in state.leases and not state.queue:
            lease.idle_timer = self.worker.loop.call_later(
                config.IDLE_LEASE_TIMEOUT_S, self._return_if_idle, state, lease)

    def _return_if_idle(self, state: _KeyState, lease: _Lease) -> None:
        lease.idle_timer = None
        if lease.in_flight == 0 and lease.lease_id in state.leases:
            self._return_lease(state, lease)

    def _return_lease(self, state: _KeyState, lease: _Lease) -> None:
        state.leases.pop(lease.lease_id, None)
        self.worker.spawn(self._release(lease, exiting=False))

    async def _release(self, lease: _Lease, exiting: bool) -> None:
        try:
            await self.worker.raylet_stub(lease.raylet).ReturnWorker(
                raylet_pb2.ReturnWorkerRequest(
                lease_id=lease.lease_id, worker_exiting=exiting))
        except Exception:
            pass       # raylet gone: nothing left to return the lease to

    # --- completion ---------------------------------------------------------------------
    def on_reply(self, task: _Task, reply) -> None:
        if reply.is_retryable_error and task.retries_left and not task.cancelled:
            if task.is_actor_task:
                self.actor_submitter.retry(task)     # max_task_retries is the budget
            else:
                self._retry(task)
            return
        if task.generator is not None:
            task.generator.finish(reply.num_dynamic_returns)
            self._complete(task, [])
            return
        self._complete(task, reply.returns)

    def _on_system_failure(self, task: _Task, exc: BaseException) -> None:
        if task.cancelled:
            self.fail(task, exceptions.TaskCancelledError(task.task_id.hex()))
        elif task.retries_left != 0 and not self._stopped:
            self._retry(task)
        else:
            detail = "" if is_unavailable(exc) else f" ({exc})"
            self.fail(task, exceptions.WorkerCrashedError(
                f"The worker died unexpectedly while executing task "
                f"{task.spec.function_name}{detail}."))

    def _retry(self, task: _Task) -> None:
        if task.retries_left > 0:
            task.retries_left -= 1
        task.spec.attempt += 1
        self._enqueue(task, front=True)

    def _return_ids(self, task: _Task) -> list[ObjectID]:
        return [ObjectID.for_return(task.task_id, i + 1)
                for i in range(task.spec.num_returns)]

    def fail(self, task: _Task, error: BaseException) -> None:
        from miniray.core_worker.core_worker import error_payload
        if task.generator is not None:
            task.generator.fail(error)
            self._complete(task, [])
            return
        self._complete(task, [error_payload(oid, error) for oid in self._return_ids(task)])

    def _fail_queue(self, state: _KeyState, error: BaseException) -> None:
        while state.queue:
            self.fail(state.queue.popleft(), error)

    def _complete(self, task: _Task, payloads) -> None:
        """Store a finished task's return values and drop its argument refs."""
        if self._tasks.pop(task.task_id, None) is not None and task.is_actor_task:
            self.actor_submitter.on_task_done(task)
        worker = self.worker
        for payload in payloads:
            self.store_owned_payload(ObjectID(payload.object_id), payload, task.spec)
        with worker._lock:
            actions = worker.refs.remove_submitted(task.arg_ids)
        if actions:
            worker.apply_ref_actions(actions)

    def store_owned_payload(self, object_id: ObjectID, payload, spec=None) -> None:
        """Keep a returned value if anyone still references it, else free it."""
        worker = self.worker
        nested = nested_ref_infos(payload)
        with worker._lock:
            alive = object_id in worker.refs
            if alive:
                worker.refs.add_contained(object_id, nested, registered_for_us=True)
        if alive:
            worker.memory_store.put(object_id, payload)
            if payload.in_plasma and spec is not None and not spec.actor_id:
                self._lineage[object_id] = spec
            return
        if payload.in_plasma:
            worker.spawn(worker._free_plasma([bytes(object_id)]))
        releases: dict = {}
        for ref in nested:        # registered on our behalf by the executor
            if ref.owner.worker_id != worker.worker_id:
                releases.setdefault(ref.owner, []).append(cw_pb2.RefCountUpdate(
                    object_id=ref.id, borrower_id=worker.worker_id, delta=-1))
        for owner, updates in releases.items():
            worker.spawn(worker._send_ref_updates(owner, updates))

    # --- lineage reconstruction ------------------------------------------------------------
    def forget_lineage(self, object_id: ObjectID) -> None:
        self._lineage.pop(object_id, None)

    def reconstruct(self, object_id: ObjectID) -> bool:
        """Re-run the task that made a lost object (io thread). False if we
        have no lineage for it (a put, or an actor task's return)."""
        spec = self._lineage.get(object_id)
        if spec is None:
            return False
        task_id = TaskID(spec.task_id)
        if task_id in self._tasks:
            return True                       # already being rebuilt
        retry = type(spec)()
        retry.CopyFrom(spec)
        retry.attempt += 1
        for i in range(retry.num_returns):
            self.worker.memory_store.delete(ObjectID.for_return(task_id, i + 1))
        self._submit(_Task(retry, []))
        return True

    # --- streaming generators ------------------------------------------------------------
    def on_generator_item(self, task_id: TaskID, index: int, payload) -> None:
        task = self._tasks.get(task_id)
        if task is None or task.generator is None or index < task.items_seen:
            return          # a retry re-reporting items we already have
        task.items_seen = index + 1
        object_id = ObjectID(payload.object_id)
        with self.worker._lock:
            self.worker.refs.add_owned(object_id)
        task.generator.add_item(object_id, index)
        self.store_owned_payload(object_id, payload)

    # --- cancellation ---------------------------------------------------------------------
    async def cancel(self, task_id: TaskID, force: bool, recursive: bool) -> None:
        task = self._tasks.get(task_id)
        if task is None:
            return
        task.cancelled = True
        if task.is_actor_task:
            await self.actor_submitter.cancel(task, force, recursive)
            return
        if task.waiting_deps:
            return       # fails with TaskCancelledError once resolved
        state = self._keys.get(task.key) if task.key is not None else None
        if state is not None and task in state.queue:
            state.queue.remove(task)
            self.fail(task, exceptions.TaskCancelledError(task_id.hex()))
            return
        lease = task.worker
        if lease is not None:
            try:
                await lease.stub.CancelTask(cw_pb2.CancelTaskRequest(
                    task_id=task_id, force=force, recursive=recursive))
            except Exception:
                pass      # the worker died: the push fails and reports cancelled

    async def cancel_children(self, parent: TaskID, force: bool) -> None:
        """Cancel every pending task this process submitted from ``parent``."""
        for task in list(self._tasks.values()):
            if task.spec.parent_task_id == parent:
                await self.cancel(task.task_id, force, recursive=True)


def _with_id(payload, object_id: ObjectID):
    copy = type(payload)()
    copy.CopyFrom(payload)
    copy.object_id = object_id
    return copy
