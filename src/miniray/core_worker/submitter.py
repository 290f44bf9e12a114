"""Submitting normal tasks: resolve dependencies, lease workers, push.

Runs on the owner's io thread. Tasks are grouped by resource shape (the
scheduling key); each key leases workers from the local raylet and pushes
queued tasks straight to them, several in flight per worker, reusing a
lease until its queue drains and the lease has been idle for a moment.
A push that fails because the worker died is retried on a new lease
(``max_retries``); application errors are retried only when the task
allows it (``retry_exceptions``). Once a task whose worker died has no
retries left, the owner asks the raylet that granted the lease why the
worker died: ``OutOfMemoryError`` if its memory monitor killed it, else
``WorkerCrashedError`` (only this failure path pays the extra RPC).

Finished tasks leave their lineage (``lineage.py`` decides what is kept):
a return lost with its node is rebuilt by running its task again (an
actor method: on the restarted actor), its freed arguments first; one that
cannot be rebuilt gets an error saying why.
"""
from __future__ import annotations

import asyncio
import collections
import time
from typing import NamedTuple

from miniray import exceptions
from miniray.common import config
from miniray.common.address import WorkerAddress
from miniray.common.ids import ObjectID, TaskID
from miniray.common.resources import shape_key
from miniray.common.serialization import deserialize
from miniray.core_worker import task_events
from miniray.core_worker.lineage import CannotRebuild, Lineage, lost_error
from miniray.core_worker.object_access import WORKER
from miniray.core_worker.task_stream import TaskStream
from miniray.core_worker.lease_manager import (
    LeaseManager, PushTask, RequestLease, ReturnLease, StartIdleTimer)
from miniray.protocol import core_worker_pb2 as cw_pb2, raylet_pb2


# How long a worker whose raylet stopped answering waits to die with it
# before failing the tasks it was leasing workers for.
_RAYLET_GONE_GRACE_S = 2.0


class RefInfo(NamedTuple):
    id: ObjectID
    owner: WorkerAddress


def nested_ref_infos(payload) -> list[RefInfo]:
    return [RefInfo(ObjectID(r.object_id), WorkerAddress.from_proto(r.owner))
            for r in payload.nested_refs]


class _Task:
    __slots__ = ("spec", "task_id", "arg_ids", "retries_left", "cancelled",
                 "lease_id", "key", "generator", "items_seen", "waiting_deps",
                 "resolved", "order", "stale", "rebuild_of", "push_error")

    def __init__(self, spec, arg_ids):
        self.spec = spec
        self.task_id = TaskID(spec.task_id)
        self.arg_ids = arg_ids
        self.retries_left = spec.max_retries
        self.cancelled = False
        self.lease_id = None          # while pushed to a leased worker
        self.key = None
        self.generator = None
        self.items_seen = 0
        self.waiting_deps = 0
        self.resolved = False
        self.order = 0            # submission order (actor calls)
        self.stale = None         # stored returns of a failed try: {(id, node)}
        self.rebuild_of = None    # a re-run to rebuild this lost return
        self.push_error = ""      # why the connection it was sent on broke

    @property
    def is_actor_task(self) -> bool:
        return bool(self.spec.actor_id)


class _Lease:
    """A worker leased from a raylet (the raylet that granted it)."""
    __slots__ = ("lease_id", "address", "raylet", "resource_ids", "stream")

    def __init__(self, reply, raylet: str):
        self.lease_id = reply.lease_id
        self.address = WorkerAddress.from_proto(reply.worker)
        self.raylet = raylet
        self.resource_ids = reply.resource_ids
        self.stream: TaskStream | None = None     # opened by the first push


class _KeyInfo(NamedTuple):
    """What a lease request for a scheduling key asks for."""
    resources: dict
    function_name: str
    strategy: object
    retriable: bool           # max_retries != 0 (the raylet's memory monitor asks)
    runtime_env: str          # serialized; only workers in that env run the tasks
    depth: int                # of the tasks: part of the raylet's scheduling class
    root_detached: bytes      # TaskSpec.root_detached_actor_id of its tasks


class NormalTaskSubmitter:
    def __init__(self, worker):
        self.events = worker.task_events
        self.worker = worker
        self.actor_submitter = None           # set by the CoreWorker
        self._tasks: dict[TaskID, _Task] = {}
        self._policy = LeaseManager(config.MAX_PENDING_LEASES_PER_KEY,
                                    config.LEASE_REUSE_S, config.IDLE_LEASE_TIMEOUT_S)
        self._key_info: dict[tuple, _KeyInfo] = {}
        self._leases: dict[bytes, _Lease] = {}
        # Lineage: the specs of finished tasks whose returns are in a node's
        # store, so a return lost with its node can be rebuilt.
        self._lineage = Lineage(worker.worker_id, config.MAX_LINEAGE_BYTES)
        # Finished tasks that needed more than one attempt -> their last
        # attempt (for the state API's attempt_number); the latest 10,000.
        self._retried: collections.OrderedDict[TaskID, int] = collections.OrderedDict()
        self._rebuilding: dict[TaskID, set[ObjectID]] = {}   # lost dynamic items
        self._stopped = False

    # --- entry points ---------------------------------------------------------
    def submit_threadsafe(self, spec, arg_ids: list[ObjectID], generator=None) -> None:
        task = _Task(spec, arg_ids)
        task.generator = generator
        if self.worker.in_loop_thread():
            self._submit(task)
        else:
            self.worker.post(self._submit, task)

    def stop(self) -> None:
        self._stopped = True

    # --- dependency resolution --------------------------------------------------------
    def register(self, task: _Task) -> None:
        self._tasks[task.task_id] = task

    def is_pending(self, task: _Task) -> bool:
        return self._tasks.get(task.task_id) is task

    def task_attempt(self, task_id: TaskID) -> int:
        """The attempt number of a task this process submitted: the one
        under way if it is pending, else the one that made its returns."""
        task = self._tasks.get(task_id)
        if task is not None:
            return task.spec.attempt
        return self._retried.get(task_id) or self._lineage.attempt(task_id)

    def task_status(self, task_id: TaskID) -> str:
        """The state (Ray's name) of a pending task this process submitted,
        else "" (for the state API)."""
        task = self._tasks.get(task_id)
        if task is None:
            return ""
        if not task.resolved:
            return "PENDING_ARGS_AVAIL"
        if task.is_actor_task or task.lease_id is not None:
            return "SUBMITTED_TO_WORKER"
        return "PENDING_NODE_ASSIGNMENT"

    def _submit(self, task: _Task) -> None:
        self.register(task)
        self.events.record(task.spec, task_events.PENDING_ARGS_AVAIL,
                           describe=task_events.NAME)
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
        if task.waiting_deps == 0 and self.is_pending(task):
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
                    failed = _dependency_failed(task.spec.function_name, payload)
                    self._complete(task, [_with_id(failed, oid)
                                          for oid in self._return_ids(task)],
                                   (task_events.FAILED, "DEPENDENCY_RESOLUTION_FAILED"))
                    if task.is_actor_task:
                        on_ready(task)      # let later calls to the actor go
                    return
                if not payload.in_plasma:
                    arg.value.CopyFrom(payload)      # inline the small value
        task.resolved = True
        on_ready(task)

    # --- leasing and pushing (decisions in LeaseManager) -------------------------------
    def _enqueue(self, task: _Task, front: bool = False, describe: int = 0) -> None:
        spec = task.spec
        strategy = spec.scheduling_strategy
        resources = dict(spec.resources)
        # Retriable tasks get leases of their own: the raylet's memory
        # monitor kills the workers of those first.
        retriable = spec.max_retries != 0
        key = (shape_key(resources), strategy.SerializeToString(), retriable,
               spec.runtime_env, spec.depth, spec.root_detached_actor_id)
        if key not in self._key_info:
            self._key_info[key] = _KeyInfo(resources, spec.function_name, strategy,
                                           retriable, spec.runtime_env, spec.depth,
                                           spec.root_detached_actor_id)
            self.worker.spawn(self.worker.warn_if_infeasible(
                resources, spec.function_name, task.task_id, strategy))
        task.key = key
        self.events.record(spec, task_events.PENDING_NODE_ASSIGNMENT, describe=describe)
        self._apply(self._policy.enqueue(key, task.task_id, time.monotonic(), front))

    def _apply(self, actions) -> None:
        """Carry out the LeaseManager's decisions (io thread)."""
        for action in actions:
            if isinstance(action, PushTask):
                task = self._tasks[action.task_id]
                task.lease_id = action.lease_id
                self._push(task, self._leases[action.lease_id])
            elif isinstance(action, RequestLease):
                self.worker.spawn(self._request_lease(action.key))
            elif isinstance(action, ReturnLease):
                lease = self._leases.pop(action.lease_id)
                if lease.stream is not None:
                    lease.stream.close()
                if action.exiting:
                    self.worker.channels.forget(lease.address.target)
                self.worker.spawn(self._release(lease, action.exiting))
            elif isinstance(action, StartIdleTimer):
                self.worker.loop.call_later(action.delay, self._idle_expired,
                                            action.lease_id)

    def _idle_expired(self, lease_id: bytes) -> None:
        self._apply(self._policy.idle_expired(lease_id, time.monotonic()))

    async def _request_lease(self, key: tuple) -> None:
        worker = self.worker
        info = self._key_info[key]
        request = raylet_pb2.RequestWorkerLeaseRequest(
            resources=info.resources, job_id=worker.job_id,
            requester_worker_id=worker.worker_id, requester_node_id=bytes(worker.node_id),
            function_name=info.function_name,
            strategy=info.strategy, retriable=info.retriable,
            runtime_env=info.runtime_env, depth=info.depth,
            root_detached_actor_id=info.root_detached,
            backlog_size=self._policy.backlog(key))
        error = None
        try:
            reply, raylet = await self._lease_from_cluster(request)
            if reply.rejected:
                error = exceptions.TaskUnschedulableError(reply.reject_reason)
            elif reply.runtime_env_error:
                error = exceptions.RuntimeEnvSetupError(reply.runtime_env_error)
        except exceptions.LocalRayletDiedError as exc:
            error = exc
        except Exception as exc:            # noqa: BLE001 - reported to the tasks
            error = exceptions.RaySystemError(f"could not lease a worker from the raylet: {exc}")
        if error is not None:
            for task_id in self._policy.lease_request_failed(key):
                if not self._stopped:
                    self.fail(self._tasks[task_id], error)
            return
        lease = _Lease(reply, raylet)
        self._leases[lease.lease_id] = lease
        self._apply(self._policy.lease_granted(key, lease.lease_id, time.monotonic()))

    async def _lease_from_cluster(self, request):
        """Ask the local raylet, following spillbacks; a raylet that spilled
        us to a node that just died is asked again after a short pause."""
        worker = self.worker
        give_up_at = None
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
            except Exception as exc:
                if raylet == worker.raylet_address:
                    # Our own raylet is gone. A worker dies with it (a moment
                    # later: the raylet's sockets close before its children
                    # are killed), so it waits for that instead of failing
                    # tasks whose borrowers must see their owner die.
                    now = time.monotonic()
                    give_up_at = give_up_at or now + _RAYLET_GONE_GRACE_S
                    if worker.mode != WORKER or now > give_up_at:
                        raise exceptions.LocalRayletDiedError(
                            f"The worker failed to receive a response from the local "
                            f"raylet at {raylet}: {_rpc_detail(exc)}") from exc
            await asyncio.sleep(min(0.05 * (attempt + 1), 0.5))
        raise RuntimeError("no raylet would grant a lease")

    def _push(self, task: _Task, lease: _Lease) -> None:
        """Send the task over the lease's stream (one task at a time)."""
        if lease.stream is None or lease.stream.closed:
            lease.stream = TaskStream(
                self.worker, lease.address,
                on_reply=lambda t, reply: self._pushed(t, lease, reply),
                on_broken=lambda tasks: self._stream_broken(lease, tasks))
        request = cw_pb2.PushTaskRequest(spec=task.spec)
        for name, ids in lease.resource_ids.items():
            request.resource_ids[name].CopyFrom(ids)
        self.events.record(task.spec, task_events.SUBMITTED_TO_WORKER)
        lease.stream.send(task, request)

    def _stream_broken(self, lease: _Lease, tasks: list) -> None:
        """The lease's worker went away: its task (if any) failed, and the
        lease ends (even an idle one: nothing more must be pushed to it)."""
        for task in tasks:
            self._pushed(task, lease, None)
        if lease.lease_id in self._leases:
            self._apply(self._policy.lease_lost(lease.lease_id, time.monotonic()))

    def _pushed(self, task: _Task, lease: _Lease, reply) -> None:
        """The task's reply, or None: the worker died before answering."""
        task.lease_id = None
        now = time.monotonic()
        if reply is None or reply.system_error:
            self._apply(self._policy.lease_lost(lease.lease_id, now))
            if reply is None:
                self._on_system_failure(task, "", lease)
            else:
                self._on_system_failure(task, reply.system_error)
            return
        self._apply(self._policy.task_finished(lease.lease_id, now, reply.worker_exiting))
        self.on_reply(task, reply)

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
            # Returns the failed try already stored: the retry keeps those it
            # stores again (objects are immutable), the rest are freed at the end.
            stale = {(p.object_id, p.node_id) for p in reply.returns if p.in_plasma}
            if stale:
                task.stale = (task.stale or set()) | stale
            if task.is_actor_task:
                self.actor_submitter.retry(task)     # max_task_retries is the budget
            else:
                self._retry(task)
            return
        # As in Ray 2.60: a task whose own code raised failed; one that its
        # worker ran to the end, which was a cancellation interrupting it,
        # FINISHED (the caller still gets the TaskCancelledError).
        outcome = (task_events.FAILED, "") if reply.is_application_error \
            else (task_events.FINISHED, "")
        if task.generator is not None:
            for payload in reply.returns:     # the error that was not retried
                self.on_generator_item(task.task_id, reply.num_dynamic_returns - 1,
                                       payload)
            task.generator.finish(reply.num_dynamic_returns)
            self._complete(task, [], outcome)
            return
        self._complete(task, reply.returns, outcome)

    def _on_system_failure(self, task: _Task, error: str,
                           lease: _Lease | None = None) -> None:
        """The task could not finish: its worker died (``error`` empty; the
        ``lease`` it ran on) or refused it (``error`` says why)."""
        if task.cancelled:
            self.fail(task, exceptions.TaskCancelledError(task.task_id.hex()))
        elif task.retries_left != 0 and not self._stopped:
            self._retry(task)
        elif lease is not None and not self._stopped:
            self.worker.spawn(self._fail_dead_worker(task, lease))
        else:
            detail = f" ({error})" if error else ""
            self.fail(task, exceptions.WorkerCrashedError(
                f"The worker died unexpectedly while executing task "
                f"{task.spec.function_name}{detail}."))

    async def _fail_dead_worker(self, task: _Task, lease: _Lease) -> None:
        """Out of retries after its worker died: ask the raylet that granted
        the lease whether it killed the worker (memory), for the error."""
        cause = await killed_for_memory(self.worker, lease.raylet,
                                        lease.address.worker_id)
        if not self.is_pending(task):
            return
        if task.cancelled:
            self.fail(task, exceptions.TaskCancelledError(task.task_id.hex()))
        elif cause:
            self.fail(task, out_of_memory(task, cause))
        else:
            self.fail(task, exceptions.WorkerCrashedError(
                f"The worker died unexpectedly while executing task "
                f"{task.spec.function_name}."))

    def _retry(self, task: _Task) -> None:
        if task.retries_left > 0:
            task.retries_left -= 1
        self.events.record(task.spec, task_events.FAILED)     # this attempt
        task.spec.attempt += 1
        # The next attempt is a record of its own: named, like the first.
        self._enqueue(task, front=True, describe=task_events.NAME)

    def _return_ids(self, task: _Task) -> list[ObjectID]:
        return [ObjectID.for_return(task.task_id, i + 1)
                for i in range(task.spec.num_returns)]

    def fail(self, task: _Task, error: BaseException) -> None:
        from miniray.core_worker.core_worker import error_payload
        outcome = (task_events.FAILED, task_events.error_type(error), str(error))
        if task.generator is not None:
            task.generator.fail(error)
            self._complete(task, [], outcome)
            return
        self._complete(task, [error_payload(oid, error) for oid in self._return_ids(task)],
                       outcome)

    def _complete(self, task: _Task, payloads, outcome: tuple) -> None:
        """Store a finished task's return values and drop its argument refs.
        ``outcome``: the (state, error type[, message]) the state API shows."""
        if self._tasks.pop(task.task_id, None) is not None and task.is_actor_task:
            self.actor_submitter.on_task_done(task)
        if task.spec.attempt:
            self._retried[task.task_id] = task.spec.attempt
            if len(self._retried) > 10_000:
                self._retried.popitem(last=False)
        if self.events.enabled:
            state, error_type = outcome[:2]
            if state == task_events.FAILED:     # named: it may never have run
                extra = {"error_type": error_type} if error_type else {}
                if len(outcome) > 2 and outcome[2]:
                    extra["error_message"] = outcome[2][:4096]
                self.events.record(task.spec, task_events.FAILED, extra or None,
                                   describe=task_events.NAME)
            else:
                self.events.record(task.spec, task_events.FINISHED)
        worker = self.worker
        if task.task_id in self._rebuilding:
            payloads = self._complete_rebuild(task.task_id, payloads)
        # In order: a num_returns="dynamic" task's generator comes first,
        # which makes its items (the payloads after it) its contents.
        for payload in payloads:
            self.store_owned_payload(ObjectID(payload.object_id), payload, task)
        if task.stale:
            task.stale -= {(p.object_id, p.node_id) for p in payloads if p.in_plasma}
            for object_id, node_id in task.stale:
                worker.spawn(worker._free_plasma([object_id], node_id))
        with worker._lock:
            actions = worker.refs.remove_submitted(task.arg_ids)
        if actions:
            worker.apply_ref_actions(actions)

    def store_owned_payload(self, object_id: ObjectID, payload, task=None) -> None:
        """Keep a returned value if anyone still references it, else free it.
        ``task``: the task that returned it (its lineage is kept)."""
        worker = self.worker
        nested = nested_ref_infos(payload)
        with worker._lock:
            alive = object_id in worker.refs
            if alive:
                worker.refs.add_contained(object_id, nested, registered_for_us=True)
        if alive:
            if payload.in_plasma and task is not None:
                self._record_lineage(object_id, task)
            worker.memory_store.put(object_id, payload)
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
    def _record_lineage(self, object_id: ObjectID, task: _Task) -> None:
        retries = task.retries_left
        could_retry = True
        if not retries:                 # why none are left, for the error if lost
            could_retry = (self.actor_submitter.retry_budget(task) != 0
                           if task.is_actor_task else task.spec.max_retries != 0)
        self._lineage.record(object_id, task.spec, retries, could_retry)

    def forget_lineage(self, object_id: ObjectID) -> None:
        self._lineage.forget(object_id)

    def lineage_statistics(self):
        return self._lineage.statistics()

    def reconstruct(self, object_id: ObjectID) -> bool:
        """Rebuild a lost object this process owns (io thread): run the task
        that made it again, after those of its arguments freed since, or
        store the error that says why it cannot be. False if nothing here
        references the object any more."""
        with self.worker._lock:
            if object_id not in self.worker.refs:
                return False
        pending = [object_id]
        while pending:
            pending += self._rebuild(pending.pop())
        return True

    def _rebuild(self, object_id: ObjectID) -> list[ObjectID]:
        """Start rebuilding one object; returns its freed arguments, which
        are held again and must be rebuilt too."""
        worker = self.worker
        store = worker.memory_store
        task_id = object_id.task_id()
        if task_id in self._tasks and not object_id.is_put():
            lost = self._rebuilding.get(task_id)      # already being rebuilt
            if lost is not None and object_id not in lost:
                lost.add(object_id)           # another item of the same run
                store.delete(object_id)
            return []
        plan = self._lineage.rebuild(object_id)
        if isinstance(plan, CannotRebuild):
            from miniray.core_worker.object_access import error_payload
            store.put(object_id, error_payload(object_id, lost_error(
                object_id, plan, worker.address.target, self._lineage.max_bytes,
                worker.refs.call_site(object_id))))
            return []
        spec = type(plan.spec)()
        spec.CopyFrom(plan.spec)
        spec.attempt += 1
        stale = store.get(object_id)
        if spec.returns_dynamic or spec.streaming:
            # A generator's item: the generator (or the dynamic task's
            # return) stays; re-running the task yields the item again.
            self._rebuilding.setdefault(task_id, set()).add(object_id)
            store.delete(object_id)
        else:
            for i in range(spec.num_returns):
                store.delete(ObjectID.for_return(task_id, i + 1))
        freed = self._freed_arguments(spec)
        task = _Task(spec, freed)
        task.retries_left = plan.retries_left
        task.rebuild_of = object_id
        if task.is_actor_task:
            lost_node = stale.node_id if stale is not None else b""
            self.actor_submitter.resubmit(task, lost_node)
        else:
            self._submit(task)
        return freed

    def _freed_arguments(self, spec) -> list[ObjectID]:
        """The task's arguments we own that were freed since it ran: held
        again (by the re-run) so their rebuilt values are kept for it."""
        worker = self.worker
        freed = []
        for arg in spec.args:
            if arg.HasField("ref") and arg.ref.owner.worker_id == worker.worker_id:
                dep = ObjectID(arg.ref.object_id)
                with worker._lock:
                    if dep in worker.refs:
                        continue
                    worker.refs.add_submitted([RefInfo(dep, worker.address)])
                freed.append(dep)
        return freed

    def _complete_rebuild(self, task_id: TaskID, payloads) -> list:
        """A generator task re-run for lost items: keep the first run's
        generator, store the items again (a dynamic task's come in the reply
        after its generator; a streaming task's were stored as reported); an
        item the re-run did not yield (a non-deterministic generator) cannot
        be rebuilt."""
        from miniray.core_worker.core_worker import error_payload
        lost = self._rebuilding.pop(task_id)
        found = [p for p in payloads[1:] if ObjectID(p.object_id) in lost]
        missing = lost - {ObjectID(p.object_id) for p in found}
        if not missing:
            return found
        failure = next((p for p in payloads if p.is_error), None)
        if failure is not None:
            # The re-run itself failed (its worker died, its retries ran
            # out, ...): the items it did not yield again fail with that.
            return found + [_with_id(failure, oid) for oid in missing]
        name = self._lineage.function_name(task_id) or "the task"
        error = exceptions.RayTaskError(name, "", ValueError(
            f"{name} was re-executed to rebuild lost values, but this time it "
            f"did not yield them all (a generator that yields a different "
            f"number of values on each run cannot be rebuilt)"))
        return found + [error_payload(oid, error) for oid in missing]

    # --- streaming generators ------------------------------------------------------------
    def on_generator_item(self, task_id: TaskID, index: int, payload) -> None:
        task = self._tasks.get(task_id)
        object_id = ObjectID(payload.object_id)
        lost = self._rebuilding.get(task_id)
        if task is not None and lost and object_id in lost:
            lost.discard(object_id)            # a lost item, yielded again
            self.store_owned_payload(object_id, payload, task)
            return
        if task is None or task.generator is None or index < task.items_seen:
            return          # a retry re-reporting items we already have
        task.items_seen = index + 1
        with self.worker._lock:
            self.worker.refs.add_owned(object_id)
        task.generator.add_item(object_id, index)
        self.store_owned_payload(object_id, payload, task)

    # --- cancellation ---------------------------------------------------------------------
    async def cancel(self, task_id: TaskID, force: bool, recursive: bool,
                     child: bool = False) -> None:
        """Ray's cancel: a task not started yet fails with TaskCancelledError
        at once; a running one is interrupted (``force``: its worker is
        killed). ``child``: reached through a recursive cancel."""
        task = self._tasks.get(task_id)
        if task is None:
            return                        # finished already: nothing to do
        if task.is_actor_task:
            if force and not child:
                raise ValueError("force=True is not supported for actor tasks.")
            task.cancelled = True
            await self.actor_submitter.cancel(task, False, recursive)
            return
        task.cancelled = True
        if not task.resolved or self._policy.cancel(task_id):
            # Not started: waiting for its arguments or for a worker.
            self.fail(task, exceptions.TaskCancelledError(task_id.hex()))
            return
        lease = self._leases.get(task.lease_id) if task.lease_id is not None else None
        if lease is not None:
            try:
                await self.worker.worker_stub(lease.address).CancelTask(cw_pb2.CancelTaskRequest(
                    task_id=task_id, force=force, recursive=recursive))
            except Exception:
                pass      # the worker died: the push fails and reports cancelled

    async def cancel_children(self, parent: TaskID, force: bool) -> None:
        """Cancel every pending task this process submitted from ``parent``."""
        for task in list(self._tasks.values()):
            if task.spec.parent_task_id == parent:
                await self.cancel(task.task_id, force, recursive=True, child=True)


async def killed_for_memory(worker, raylet: str | None, worker_id: bytes) -> str:
    """The memory monitor's account if the raylet at ``raylet`` killed that
    worker (GetWorkerFailureCause), else "" (also when the raylet is gone)."""
    if not raylet:
        return ""
    try:
        reply = await worker.raylet_stub(raylet).GetWorkerFailureCause(
            raylet_pb2.GetWorkerFailureCauseRequest(worker_id=worker_id), timeout=5)
    except Exception:              # noqa: BLE001 - the raylet is gone too
        return ""
    if reply.cause == raylet_pb2.GetWorkerFailureCauseReply.OUT_OF_MEMORY:
        return reply.message
    return ""


def out_of_memory(task: _Task, cause: str) -> exceptions.OutOfMemoryError:
    return exceptions.OutOfMemoryError(
        f"Task {task.spec.function_name} (task ID: {task.task_id.hex()}) was "
        f"killed due to the node running low on memory.\n{cause}")


def _dependency_failed(function_name: str, payload):
    """The error payload of a task whose argument holds the error in
    ``payload``: Ray's RayTaskError of this task (see
    exceptions.dependency_failed); the argument's own error if that cannot
    be read back."""
    from miniray.core_worker.core_worker import error_payload
    try:
        error, _ = deserialize(payload.data)
    except Exception:            # noqa: BLE001 - unreadable here: keep it as it was
        return payload
    if not isinstance(error, BaseException):
        return payload
    return error_payload(ObjectID(payload.object_id),
                         exceptions.dependency_failed(function_name, error))


def _with_id(payload, object_id: ObjectID):
    copy = type(payload)()
    copy.CopyFrom(payload)
    copy.object_id = object_id
    return copy


def _rpc_detail(exc: BaseException) -> str:
    """A gRPC error's status and details, else the exception's text."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):
        return f"{code().name}: {details()}"
    return str(exc) or type(exc).__name__
