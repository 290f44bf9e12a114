"""Submitting actor method calls, on the caller's io thread.

Calls to one actor are sent in submission order, each numbered per
(caller, actor incarnation) so the actor runs them in that order even if
the RPCs overtake each other. The caller learns the actor's address and
state from the GCS (a long poll while it has calls pending); calls made
before the actor is up wait here. When the actor's worker dies, calls in
flight are retried on the restarted actor up to ``max_task_retries``,
otherwise they fail with RayActorError (ActorDiedError once it is dead).
A finished call whose output was lost is sent again to rebuild it
(``resubmit``), to the restarted actor if it died.
"""
from __future__ import annotations

import asyncio
import collections
import threading

from miniray import exceptions
from miniray.common.address import WorkerAddress
from miniray.common.ids import ActorID
from miniray.common.serialization import deserialize, serialize
from miniray.core_worker import task_events
from miniray.core_worker.actor_queue import (
    ALIVE, DEAD, RESTARTING, ActorCallQueue, AwaitSettled, CancelSent, Fail, Send)
from miniray.core_worker.submitter import _Task, killed_for_memory, out_of_memory
from miniray.core_worker.task_stream import TaskStream
from miniray.protocol import common_pb2, core_worker_pb2 as cw_pb2, gcs_pb2

# How long a rebuild of an actor method's lost output waits for the GCS to
# notice that the actor's node died (its health checks take a few seconds).
_REBUILD_SETTLE_S = 30.0


class _Actor:
    """The decisions (ActorCallQueue) and the I/O state for one actor."""
    __slots__ = ("calls", "stream", "incarnation", "watching", "addresses", "settling")

    def __init__(self, actor_id: ActorID):
        self.calls = ActorCallQueue(actor_id)
        self.stream: TaskStream | None = None    # to the current incarnation
        self.incarnation = -1                    # of the stream
        self.watching = False
        # Where each incarnation ran (calls lost with it ask its raylet why).
        self.addresses: dict[int, WorkerAddress] = {}
        # incarnation -> the GCS lookup of how its failure ended (_settle)
        self.settling: dict[int, asyncio.Future] = {}


class ActorTaskSubmitter:
    def __init__(self, worker, normal_submitter):
        self.worker = worker
        self.tasks = normal_submitter          # shares completion and bookkeeping
        self._actors: dict[ActorID, _Actor] = {}
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
        self.worker.post(self._submit, task)

    def _actor(self, actor_id: ActorID) -> _Actor:
        actor = self._actors.get(actor_id)
        if actor is None:
            actor = self._actors[actor_id] = _Actor(actor_id)
        return actor

    def _submit(self, task: _Task, rebuild: bool = False) -> None:
        actor_id = ActorID(task.spec.actor_id)
        actor = self._actor(actor_id)
        task.key = ("actor", actor_id)
        task.items_seen = 0
        task.waiting_deps = 0
        self.tasks.register(task)
        self._apply(actor, actor.calls.submit(task, rebuild))
        if self.tasks.is_pending(task):
            self.tasks.resolve_dependencies(task, lambda t: self._apply(
                actor, actor.calls.resolved(t, self.tasks.is_pending(t))))
        self._ensure_watch(actor)

    # --- rebuilding lost outputs -------------------------------------------------------
    def retry_budget(self, task: _Task) -> int:
        """The call's max_task_retries (its method's, else the actor's)."""
        actor = self._actors.get(ActorID(task.spec.actor_id))
        return actor.calls.retry_budget(task) if actor is not None else task.spec.max_retries

    def resubmit(self, task: _Task, lost_node: bytes) -> None:
        """Send a finished call again to rebuild its lost outputs (io thread),
        with the retries it has left, behind the calls already queued (Ray's
        rule: the owner resubmits it, to the restarted actor if it died)."""
        with self._pending_lock:
            self._pending[ActorID(task.spec.actor_id)] += 1
        actor = self._actor(ActorID(task.spec.actor_id))
        calls = actor.calls
        if lost_node and calls.state == ALIVE and calls.address is not None \
                and bytes(calls.address.node_id) == bytes(lost_node):
            self.tasks.register(task)        # a rebuild under way
            self.worker.spawn(self._resubmit_when_settled(actor, task))
        else:
            self._submit(task, rebuild=True)

    async def _resubmit_when_settled(self, actor: _Actor, task: _Task) -> None:
        """The output was lost with the node the actor ran on: wait until the
        GCS has seen the actor die (restarting, or dead) before sending, so
        the call is not spent on the dead incarnation (using a retry). Bounded:
        an actor still alive after all gets the call then."""
        calls = actor.calls
        incarnation = calls.incarnation
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _REBUILD_SETTLE_S
        try:
            while loop.time() < deadline:
                reply = await self.worker.gcs.WaitActorChange(gcs_pb2.WaitActorChangeRequest(
                    actor_id=calls.actor_id, known_state=ALIVE,
                    known_num_restarts=incarnation,
                    timeout=min(10.0, max(0.0, deadline - loop.time()))))
                if not reply.found:
                    break
                if reply.info.state != ALIVE or reply.info.num_restarts != incarnation:
                    self._on_info(actor, reply.info)
                    break
        except Exception:               # noqa: BLE001 - the GCS is gone
            pass
        if self.tasks.is_pending(task):
            self._submit(task, rebuild=True)

    def _rebuild_failed(self, task: _Task, error: BaseException) -> BaseException:
        """A call re-run to rebuild a lost output could not run: the output
        is lost, for the reason the actor gave."""
        if isinstance(error, exceptions.ActorDiedError):
            why = ("the actor is dead and cannot restart (max_restarts=0, or its "
                   "restarts are used up)")
        else:
            why = "the actor could not run it"
        return exceptions.ObjectReconstructionFailedError(
            task.rebuild_of.hex(), self.worker.address.target,
            self.worker.refs.call_site(task.rebuild_of), detail=(
                f"It was returned by the actor method {task.spec.function_name}, "
                f"which was sent again to rebuild it, but {why}: {error}"))

    # --- carrying out decisions ------------------------------------------------------
    def _apply(self, actor: _Actor, actions) -> None:
        for action in actions:
            if isinstance(action, Send):
                stream = actor.stream
                if stream is None or stream.closed or \
                        actor.incarnation != action.incarnation:
                    if stream is not None:
                        stream.close()
                    stream = actor.stream = self._open_stream(actor, action.incarnation)
                self.worker.task_events.record(action.task.spec,
                                               task_events.SUBMITTED_TO_WORKER,
                                               describe=task_events.NAME)
                stream.send(action.task)
            elif isinstance(action, Fail):
                error = self._error(actor, action)
                if action.task.rebuild_of is not None and action.reason != "cancelled":
                    error = self._rebuild_failed(action.task, error)
                self.tasks.fail(action.task, error)
            elif isinstance(action, CancelSent):
                self.worker.spawn(self._cancel_sent(actor, action.task, action.recursive))
            elif isinstance(action, AwaitSettled):
                self.worker.spawn(self._await_settled(actor, action))

    def _open_stream(self, actor: _Actor, incarnation: int) -> TaskStream:
        def on_reply(task, reply):
            if reply.system_error:
                self.push_failed(actor, task, incarnation)
            else:
                actor.calls.replied(task)
                self.tasks.on_reply(task, reply)

        def on_broken(tasks):
            actor.calls.connection_lost(incarnation)
            for task in tasks:
                task.push_error = stream.error
                self.push_failed(actor, task, incarnation)
            self._ensure_watch(actor)

        actor.incarnation = incarnation
        if actor.calls.address is not None:
            actor.addresses[incarnation] = actor.calls.address
        stream = TaskStream(self.worker, actor.calls.address, on_reply, on_broken)
        return stream

    def _error(self, actor: _Actor, action: Fail) -> BaseException:
        task = action.task
        if action.reason == "cancelled":
            return exceptions.TaskCancelledError(task.task_id.hex())
        if action.reason == "restarting":
            return exceptions.ActorUnavailableError(
                "The actor is restarting; the call is not queued because it has "
                "no retries (set max_task_retries to wait for the restart)",
                actor.calls.actor_id)
        if action.reason == "not_retried":
            # As Ray: the status of the broken connection, then why.
            lost = f": {task.push_error}" if task.push_error else ""
            return exceptions.ActorUnavailableError(
                f"The actor is temporarily unavailable{lost} (it died while running "
                "this call and is restarting; the call is not retried: its "
                "max_task_retries are used up)",
                actor.calls.actor_id)
        cause = None
        if actor.calls.death_cause:
            try:
                cause, _ = deserialize(actor.calls.death_cause)
            except Exception:       # noqa: BLE001 - the cause is informative only
                cause = None
        actor_id = actor.calls.actor_id.hex()
        if isinstance(cause, exceptions.RuntimeEnvSetupError):
            return cause
        if isinstance(cause, exceptions.ActorDiedError):
            if cause.actor_id is None:
                cause.actor_id = actor_id
            return cause
        return exceptions.ActorDiedError(cause, actor_id=actor_id)

    async def _settle(self, actor: _Actor, incarnation: int):
        """How the failure of ``incarnation`` ended, as the GCS saw it: the
        actor's info once it is dead or a later incarnation exists (the GCS
        may be slow to see a death); None if it could not tell in time."""
        info = None
        known_state, known_restarts = ALIVE, max(incarnation, 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while loop.time() < deadline:
            try:
                reply = await self.worker.gcs.WaitActorChange(gcs_pb2.WaitActorChangeRequest(
                    actor_id=actor.calls.actor_id, known_state=known_state,
                    known_num_restarts=known_restarts, timeout=10))
            except Exception:          # noqa: BLE001 - the GCS restarts, or is gone
                await asyncio.sleep(0.2)
                continue
            info = reply.info if reply.found else _forgotten(actor.calls.actor_id)
            if info.state == DEAD or info.num_restarts > incarnation:
                break
            known_state, known_restarts = info.state, info.num_restarts
        if info is not None:      # dead, or restarting: new calls see it at once
            self._on_info(actor, info)
        return info

    def push_failed(self, actor: _Actor, task: _Task, incarnation: int) -> None:
        self._apply(actor, actor.calls.push_failed(task, incarnation))
        self._ensure_watch(actor)

    async def _await_settled(self, actor: _Actor, action: AwaitSettled) -> None:
        """Fail a call that was not retried, once the GCS has noticed the
        failure of its incarnation: with the death cause if the actor died.
        Every call lost with one incarnation shares one lookup."""
        lookup = actor.settling.get(action.incarnation)
        if lookup is None:
            lookup = asyncio.ensure_future(self._settle(actor, action.incarnation))
            actor.settling[action.incarnation] = lookup
        info = await asyncio.shield(lookup)
        dead = info is not None and info.state == DEAD
        oom = await self._killed_for_memory(actor.addresses.get(action.incarnation))
        if oom and self.tasks.is_pending(action.task) and not action.task.cancelled:
            # As in Ray: a call lost because the memory monitor killed its
            # actor's worker fails with OutOfMemoryError.
            self.tasks.fail(action.task, out_of_memory(action.task, oom))
            return
        self._apply(actor, actor.calls.settled(action.task, dead))

    async def _killed_for_memory(self, address: WorkerAddress | None) -> str:
        """Whether the memory monitor killed that incarnation's worker."""
        if address is None or not address.node_id:
            return ""
        try:
            raylet = await asyncio.to_thread(self.worker.raylet_address_of,
                                             bytes(address.node_id))
        except Exception:              # noqa: BLE001 - the GCS is gone: no account
            return ""
        return await killed_for_memory(self.worker, raylet, address.worker_id)

    async def _cancel_sent(self, actor: _Actor, task: _Task, recursive: bool) -> None:
        address = actor.calls.address
        if address is None:
            return
        try:
            await self.worker.worker_stub(address).CancelTask(cw_pb2.CancelTaskRequest(
                task_id=task.task_id, force=False, recursive=recursive))
        except Exception:
            pass

    def retry(self, task: _Task) -> None:
        """Run a call again after an exception its retry_exceptions allows."""
        actor = self._actors[ActorID(task.spec.actor_id)]
        self._apply(actor, actor.calls.retry(task))

    # --- watching the actor's state in the GCS ---------------------------------------
    def _ensure_watch(self, actor: _Actor) -> None:
        calls = actor.calls
        if not actor.watching and (calls.has_work() or calls.state in (None, RESTARTING)):
            actor.watching = True
            self.worker.spawn(self._watch(actor))

    async def _watch(self, actor: _Actor) -> None:
        gcs = self.worker.gcs
        calls = actor.calls
        try:
            reply = await gcs.GetActorInfo(gcs_pb2.GetActorInfoRequest(
                actor_id=calls.actor_id))
            if reply.found:
                self._on_info(actor, reply.info)
            # While restarting, keep watching even with no calls: new calls
            # fail fast on that state, so it must not go stale.
            while (calls.has_work() or calls.state == RESTARTING) and calls.state != DEAD:
                reply = await gcs.WaitActorChange(gcs_pb2.WaitActorChangeRequest(
                    actor_id=calls.actor_id, known_state=calls.state or 0,
                    known_num_restarts=max(calls.incarnation, 0), timeout=30))
                # Not found: registered (a handle exists only then), so dead
                # long enough ago that the GCS no longer keeps its record.
                self._on_info(actor, reply.info if reply.found else _forgotten(calls.actor_id))
        except Exception:
            pass            # the GCS is gone: the cluster is shutting down
        finally:
            actor.watching = False

    def _on_info(self, actor: _Actor, info) -> None:
        address = WorkerAddress.from_proto(info.address) if info.state == ALIVE else None
        self._apply(actor, actor.calls.on_info(info.state, info.num_restarts, address,
                                               info.max_task_retries, info.death_cause))
        self._ensure_watch(actor)      # a restart learnt of here must not go stale

    # --- cancellation ------------------------------------------------------------------
    async def cancel(self, task: _Task, force: bool, recursive: bool) -> None:
        actor = self._actors.get(task.key[1])
        if actor is not None:
            self._apply(actor, actor.calls.cancel(task, recursive))


def _forgotten(actor_id) -> common_pb2.ActorInfo:
    cause = serialize(exceptions.ActorDiedError(
        "The actor is dead, and died long enough ago that the GCS no longer keeps "
        "its record (see MINIRAY_MAXIMUM_GCS_DESTROYED_ACTOR_CACHED_COUNT).",
        actor_id=actor_id.hex()), is_error=True).to_bytes()
    return common_pb2.ActorInfo(actor_id=bytes(actor_id), state=DEAD, death_cause=cause)
