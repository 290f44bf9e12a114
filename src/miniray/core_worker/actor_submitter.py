"""Submitting actor method calls, on the caller's io thread.

Calls to one actor are sent in submission order, each numbered per
(caller, actor incarnation) so the actor runs them in that order even if
the RPCs overtake each other. The caller learns the actor's address and
state from the GCS (a long poll while it has calls pending); calls made
before the actor is up wait here. When the actor's worker dies, calls in
flight are retried on the restarted actor up to ``max_task_retries``,
otherwise they fail with RayActorError (ActorDiedError once it is dead).
"""
from __future__ import annotations

import asyncio
import collections
import threading

from miniray import exceptions
from miniray.common.address import WorkerAddress
from miniray.common.ids import ActorID, ObjectID
from miniray.common.serialization import deserialize
from miniray.core_worker.submitter import _Task
from miniray.protocol import common_pb2, core_worker_pb2 as cw_pb2, gcs_pb2

ALIVE, DEAD = common_pb2.ALIVE, common_pb2.DEAD


class _CallStream:
    """One PushActorTasks stream to one incarnation of an actor."""

    def __init__(self, submitter: "ActorTaskSubmitter", queue: "_ActorQueue"):
        self.submitter = submitter
        self.queue = queue
        self.incarnation = queue.incarnation
        self.call = queue.stub.PushActorTasks()
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.inflight: dict[bytes, _Task] = {}
        worker = submitter.worker
        worker.spawn(self._write())
        worker.spawn(self._read())

    def send(self, task: _Task) -> None:
        self.inflight[task.spec.task_id] = task
        self.outbox.put_nowait(task)

    async def _write(self) -> None:
        try:
            while True:
                task = await self.outbox.get()
                await self.call.write(cw_pb2.PushTaskRequest(spec=task.spec))
        except Exception:       # noqa: BLE001 - the reader sees the stream fail
            pass

    async def _read(self) -> None:
        submitter, queue = self.submitter, self.queue
        try:
            async for reply in self.call:
                task = self.inflight.pop(reply.task_id, None)
                if task is None:
                    continue
                queue.inflight.pop(task.spec.sequence_number, None)
                if reply.system_error:
                    submitter.worker.spawn(
                        submitter._on_push_failed(queue, task, self.incarnation))
                else:
                    submitter.tasks.on_reply(task, reply)
        except Exception:       # noqa: BLE001 - the actor's worker went away
            pass
        if queue.stream is self:
            queue.stream = None
        failed = sorted(self.inflight.values(), key=lambda t: t.order)
        self.inflight.clear()
        for task in failed:
            queue.inflight.pop(task.spec.sequence_number, None)
            submitter.worker.spawn(submitter._on_push_failed(queue, task, self.incarnation))

    def close(self) -> None:
        self.call.cancel()


class _ActorQueue:
    __slots__ = ("actor_id", "state", "incarnation", "stub", "queue", "inflight",
                 "next_seq", "watching", "death_cause", "max_task_retries", "counter",
                 "stream")

    def __init__(self, actor_id: ActorID):
        self.actor_id = actor_id
        self.state: int | None = None          # unknown until the GCS answers
        self.incarnation = -1
        self.stub = None
        self.queue: collections.deque[_Task] = collections.deque()  # not sent yet
        self.inflight: dict[int, _Task] = {}
        self.next_seq = 0
        self.watching = False
        self.death_cause: bytes = b""
        self.max_task_retries = 0
        self.counter = 0                        # submission order, for retries
        self.stream: _CallStream | None = None


class ActorTaskSubmitter:
    def __init__(self, worker, normal_submitter):
        self.worker = worker
        self.tasks = normal_submitter          # shares completion and bookkeeping
        self._actors: dict[ActorID, _ActorQueue] = {}
        self._pending: collections.Counter = collections.Counter()   # per actor
        self._pending_lock = threading.Lock()

    def check_pending_limit(self, actor_id: ActorID, limit: int) -> None:
        """Raise PendingCallsLimitExceeded before submitting one call too many."""
        if limit > 0 and self._pending[actor_id] >= limit:
            raise exceptions.PendingCallsLimitExceeded(
                f"The actor {actor_id.hex()} has {self._pending[actor_id]} calls "
                f"pending, the limit set by max_pending_calls={limit}.")

    def on_task_done(self, task: _Task) -> None:
        with self._pending_lock:
            self._pending[ActorID(task.spec.actor_id)] -= 1

    def submit_threadsafe(self, spec, arg_ids, generator=None) -> None:
        with self._pending_lock:
            self._pending[ActorID(spec.actor_id)] += 1
        task = _Task(spec, arg_ids)
        task.generator = generator
        self.worker.loop.call_soon_threadsafe(self._submit, task)

    def _submit(self, task: _Task) -> None:
        actor_id = ActorID(task.spec.actor_id)
        queue = self._actors.get(actor_id)
        if queue is None:
            queue = self._actors[actor_id] = _ActorQueue(actor_id)
        task.key = ("actor", actor_id)
        task.items_seen = 0
        queue.counter += 1
        task.waiting_deps = 0
        task.order = queue.counter
        self.tasks.register(task)
        if queue.state == DEAD:
            self._fail_dead(queue, task)
            return
        task.retries_left = None            # known once the GCS describes the actor
        queue.queue.append(task)
        self.tasks.resolve_dependencies(task, lambda t: self._send_ready(queue))
        self._ensure_watch(queue)

    # --- sending -------------------------------------------------------------------
    def _send_ready(self, queue: _ActorQueue) -> None:
        """Send, in order, the calls at the head of the queue that are ready."""
        while queue.queue and queue.state == ALIVE:
            task = queue.queue[0]
            if not self.tasks.is_pending(task):     # failed before sending
                queue.queue.popleft()
                continue
            if task.waiting_deps or not task.resolved:
                return
            queue.queue.popleft()
            if task.cancelled:
                self.tasks.fail(task, exceptions.TaskCancelledError(task.task_id.hex()))
                continue
            if task.retries_left is None:
                task.retries_left = queue.max_task_retries
            seq = queue.next_seq
            queue.next_seq += 1
            task.spec.sequence_number = seq
            queue.inflight[seq] = task
            if queue.stream is None or queue.stream.incarnation != queue.incarnation:
                if queue.stream is not None:
                    queue.stream.close()
                queue.stream = _CallStream(self, queue)
            queue.stream.send(task)

    async def _on_push_failed(self, queue: _ActorQueue, task: _Task,
                              incarnation: int) -> None:
        if queue.incarnation == incarnation and queue.state == ALIVE:
            queue.state = None              # ask the GCS what happened
        if task.cancelled:
            self.tasks.fail(task, exceptions.TaskCancelledError(task.task_id.hex()))
        elif task.retries_left != 0:
            if task.retries_left > 0:
                task.retries_left -= 1
            task.spec.attempt += 1
            self._requeue(queue, task)
        else:
            info = await self._wait_settled(queue, incarnation)
            if info is not None and info.state == DEAD:
                queue.death_cause = info.death_cause
                self._fail_dead(queue, task)
            else:
                self.tasks.fail(task, exceptions.RayActorError(
                    "The actor died unexpectedly before finishing this task; it "
                    "is restarting, and the task is not retried "
                    "(max_task_retries=0)."))
        self._ensure_watch(queue)

    async def _wait_settled(self, queue: _ActorQueue, incarnation: int):
        """The GCS's view once it has noticed the failure of ``incarnation``."""
        try:
            reply = await self.worker.gcs.WaitActorChange(gcs_pb2.WaitActorChangeRequest(
                actor_id=queue.actor_id, known_state=ALIVE,
                known_num_restarts=max(incarnation, 0), timeout=10))
        except Exception:
            return None
        return reply.info if reply.found else None

    def retry(self, task: _Task) -> None:
        """Run a call again after an exception its retry_exceptions allows."""
        queue = self._actors[ActorID(task.spec.actor_id)]
        if task.retries_left > 0:
            task.retries_left -= 1
        task.spec.attempt += 1
        self._requeue(queue, task)
        self._send_ready(queue)

    def _requeue(self, queue: _ActorQueue, task: _Task) -> None:
        """Put a retried call back in submission order."""
        position = 0
        for position, queued in enumerate(queue.queue):
            if queued.order > task.order:
                break
        else:
            position = len(queue.queue)
        queue.queue.insert(position, task)

    def _fail_dead(self, queue: _ActorQueue, task: _Task) -> None:
        cause = None
        if queue.death_cause:
            try:
                cause, _ = deserialize(queue.death_cause)
            except Exception:       # noqa: BLE001 - the cause is informative only
                cause = None
        if isinstance(cause, exceptions.ActorDiedError):
            error = cause
        else:
            error = exceptions.ActorDiedError(cause)
        self.tasks.fail(task, error)

    # --- watching the actor's state in the GCS ---------------------------------------
    def _ensure_watch(self, queue: _ActorQueue) -> None:
        if not queue.watching and (queue.queue or queue.inflight or queue.state is None):
            queue.watching = True
            self.worker.spawn(self._watch(queue))

    async def _watch(self, queue: _ActorQueue) -> None:
        gcs = self.worker.gcs
        try:
            reply = await gcs.GetActorInfo(gcs_pb2.GetActorInfoRequest(
                actor_id=queue.actor_id))
            if reply.found:
                self._apply(queue, reply.info)
            while (queue.queue or queue.inflight) and queue.state != DEAD:
                reply = await gcs.WaitActorChange(gcs_pb2.WaitActorChangeRequest(
                    actor_id=queue.actor_id, known_state=queue.state or 0,
                    known_num_restarts=max(queue.incarnation, 0), timeout=30))
                if not reply.found:
                    break
                self._apply(queue, reply.info)
        except Exception:
            pass            # the GCS is gone: the cluster is shutting down
        finally:
            queue.watching = False

    def _apply(self, queue: _ActorQueue, info) -> None:
        queue.max_task_retries = info.max_task_retries
        if info.state == ALIVE:
            if info.num_restarts != queue.incarnation or queue.state != ALIVE:
                queue.incarnation = info.num_restarts
                queue.stub = self.worker.worker_stub(WorkerAddress.from_proto(info.address))
                queue.next_seq = 0
                queue.state = ALIVE
            self._send_ready(queue)
        elif info.state == DEAD:
            queue.state = DEAD
            queue.death_cause = info.death_cause
            while queue.queue:
                self._fail_dead(queue, queue.queue.popleft())
        else:
            queue.state = info.state

    # --- cancellation ------------------------------------------------------------------
    async def cancel(self, task: _Task, force: bool, recursive: bool) -> None:
        queue = self._actors.get(task.key[1])
        if queue is None:
            return
        if task in queue.queue:
            queue.queue.remove(task)
            self.tasks.fail(task, exceptions.TaskCancelledError(task.task_id.hex()))
            return
        if any(t is task for t in queue.inflight.values()) and queue.stub is not None:
            try:
                await queue.stub.CancelTask(cw_pb2.CancelTaskRequest(
                    task_id=task.task_id, force=False, recursive=recursive))
            except Exception:
                pass


def return_ids(task: _Task) -> list[ObjectID]:
    return [ObjectID.for_return(task.task_id, i + 1) for i in range(task.spec.num_returns)]
