"""This process's task events, buffered and sent to the GCS in batches.

The hot path only appends tuples (``record``); the report is built when
the buffer is drained, every TASK_EVENTS_REPORT_INTERVAL_MS on the io
loop: state changes as packed parallel arrays (cheap to build and to
merge), plus what is known of some tasks. The owner names a task when it
submits it (``describe=NAME``); the worker that runs it sends the rest
(``describe=FULL``) with where it ran, and errors come with FAILED. A
full buffer drops its oldest entries and counts them (the GCS reports the
count, as Ray does).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time

from miniray import exceptions
from miniray.common import config
from miniray.protocol import gcs_pb2

log = logging.getLogger("miniray.core_worker")

PENDING_ARGS_AVAIL = gcs_pb2.PENDING_ARGS_AVAIL
PENDING_NODE_ASSIGNMENT = gcs_pb2.PENDING_NODE_ASSIGNMENT
SUBMITTED_TO_WORKER = gcs_pb2.SUBMITTED_TO_WORKER
RUNNING = gcs_pb2.RUNNING
FINISHED = gcs_pb2.FINISHED
FAILED = gcs_pb2.FAILED

NAME, FULL = 1, 2           # how much of a task record(describe=) sends


class TaskEventBuffer:
    def __init__(self, max_entries: int | None = None, enabled: bool | None = None):
        self.enabled = config.TASK_EVENTS_REPORT_INTERVAL_MS > 0 if enabled is None \
            else enabled
        self.max_entries = config.TASK_EVENTS_MAX_BUFFER if max_entries is None \
            else max_entries
        self._changes: collections.deque = collections.deque()  # (id, attempt, status, ns)
        self._details: collections.deque = collections.deque()  # (spec, describe, extra)
        self.num_dropped = 0

    def record(self, spec, status: int, extra: dict | None = None, *,
               describe: int = 0) -> None:
        """A state change of ``spec``'s task attempt, now. ``extra``: fields
        of gcs_pb2.TaskEvent to set (node_id, error_type, ...); ``describe``:
        NAME (what a listing needs) or FULL (every field the spec gives)."""
        if not self.enabled:
            return
        changes = self._changes
        if len(changes) >= self.max_entries:
            changes.popleft()
            self.num_dropped += 1
        changes.append((spec.task_id, spec.attempt, status, time.time_ns()))
        if describe or extra:
            details = self._details
            if len(details) >= self.max_entries:
                details.popleft()
            details.append((spec, describe, extra))

    def __len__(self) -> int:
        return len(self._changes)

    def drain(self) -> gcs_pb2.AddTaskEventsRequest | None:
        """Everything buffered, as one report (None if there is nothing)."""
        if not self._changes and not self._details and not self.num_dropped:
            return None
        changes, self._changes = self._changes, collections.deque()
        details, self._details = self._details, collections.deque()
        request = gcs_pb2.AddTaskEventsRequest(num_dropped=self.num_dropped)
        self.num_dropped = 0
        if changes:
            ids, attempts, statuses, times = zip(*changes)
            request.change_task_ids.extend(ids)
            request.change_attempts.extend(attempts)
            request.change_statuses.extend(statuses)
            request.change_times_ns.extend(times)
        add = request.events.add
        for spec, describe, extra in details:
            if describe:
                event = add(task_id=spec.task_id, attempt=spec.attempt, job_id=spec.job_id,
                            name=spec.function_name, type=spec.type)
                if describe == FULL:
                    _describe(event, spec)
            else:
                event = add(task_id=spec.task_id, attempt=spec.attempt)
            if extra:
                for name, value in extra.items():
                    setattr(event, name, value)
        return request


def _describe(event: gcs_pb2.TaskEvent, spec) -> None:
    """The rest of the task's fields, from its spec."""
    # function_name: the function's (or .options(name=)), "Class.method"
    # for actor tasks, "Class.__init__" for an actor's creation.
    event.func_or_class_name = spec.function_name
    event.parent_task_id = spec.parent_task_id
    if spec.actor_id:
        event.actor_id = spec.actor_id
    if spec.resources:
        event.required_resources.update(spec.resources)
    if spec.scheduling_strategy.placement_group_id:
        event.placement_group_id = spec.scheduling_strategy.placement_group_id


async def flush_loop(buffer: TaskEventBuffer, gcs) -> None:
    """Send the buffer to the GCS every report interval until cancelled."""
    period = config.TASK_EVENTS_REPORT_INTERVAL_MS / 1000
    while True:
        await asyncio.sleep(period)
        await flush(buffer, gcs)


async def flush(buffer: TaskEventBuffer, gcs) -> None:
    request = buffer.drain()
    if request is None:
        return
    try:
        await gcs.AddTaskEvents(request, timeout=10)
    except Exception as exc:                 # noqa: BLE001 - events are best effort
        buffer.num_dropped += len(request.change_task_ids)
        log.debug("could not report task events: %s", exc)


# Ray's ErrorType names, for the state API, of failures the owner decides.
_ERROR_TYPES = (
    (exceptions.TaskCancelledError, "TASK_CANCELLED"),
    (exceptions.LocalRayletDiedError, "LOCAL_RAYLET_DIED"),
    (exceptions.OutOfMemoryError, "OUT_OF_MEMORY"),
    (exceptions.WorkerCrashedError, "WORKER_DIED"),
    (exceptions.ActorDiedError, "ACTOR_DIED"),
    (exceptions.ActorUnavailableError, "ACTOR_UNAVAILABLE"),
    (exceptions.TaskUnschedulableError, "TASK_UNSCHEDULABLE_ERROR"),
    (exceptions.RuntimeEnvSetupError, "RUNTIME_ENV_SETUP_FAILED"),
    (exceptions.ObjectLostError, "OBJECT_LOST"),
    (exceptions.RayTaskError, "TASK_EXECUTION_EXCEPTION"),
)


def error_type(error: BaseException) -> str:
    """Ray's ErrorType name of a failure the owner decides (for FAILED)."""
    for kind, name in _ERROR_TYPES:
        if isinstance(error, kind):
            return name
    return "WORKER_DIED" if isinstance(error, exceptions.RaySystemError) else ""
