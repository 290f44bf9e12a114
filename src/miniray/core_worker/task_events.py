"""This process's task events, buffered and sent to the GCS in batches.

The hot path only appends a tuple (``record``); protobuf messages are
built when the buffer is flushed, every TASK_EVENTS_REPORT_INTERVAL_MS on
the io loop. A full buffer drops its oldest entries and counts them (the
GCS reports the count as Ray does). Owners record a task's submission
states; the worker running it records RUNNING and the outcome.
"""
from __future__ import annotations

import collections
import logging
import time

from miniray.common import config
from miniray.protocol import gcs_pb2

log = logging.getLogger("miniray.core_worker")

PENDING_ARGS_AVAIL = gcs_pb2.PENDING_ARGS_AVAIL
PENDING_NODE_ASSIGNMENT = gcs_pb2.PENDING_NODE_ASSIGNMENT
SUBMITTED_TO_WORKER = gcs_pb2.SUBMITTED_TO_WORKER
RUNNING = gcs_pb2.RUNNING
FINISHED = gcs_pb2.FINISHED
FAILED = gcs_pb2.FAILED


class TaskEventBuffer:
    def __init__(self, max_entries: int | None = None, enabled: bool | None = None):
        self.enabled = config.TASK_EVENTS_REPORT_INTERVAL_MS > 0 if enabled is None \
            else enabled
        self.max_entries = config.TASK_EVENTS_MAX_BUFFER if max_entries is None \
            else max_entries
        # (spec or None, task_id, attempt, status, time_ns, extra dict or None)
        self._entries: collections.deque = collections.deque()
        self.num_dropped = 0

    def record(self, spec, status: int, extra: dict | None = None,
               task_id: bytes | None = None, attempt: int | None = None) -> None:
        """A state change of ``spec``'s task attempt, now. ``extra``: fields
        of gcs_pb2.TaskEvent to set (node_id, worker_id, error_type, ...)."""
        if not self.enabled:
            return
        entries = self._entries
        if len(entries) >= self.max_entries:
            entries.popleft()
            self.num_dropped += 1
        entries.append((spec, task_id, attempt, status, time.time_ns(), extra))

    def __len__(self) -> int:
        return len(self._entries)

    def drain(self) -> gcs_pb2.AddTaskEventsRequest | None:
        """Everything buffered, as one report (None if there is nothing)."""
        if not self._entries and not self.num_dropped:
            return None
        entries, self._entries = self._entries, collections.deque()
        request = gcs_pb2.AddTaskEventsRequest(num_dropped=self.num_dropped)
        self.num_dropped = 0
        seen: dict[tuple[bytes, int], gcs_pb2.TaskEvent] = {}
        for spec, task_id, attempt, status, time_ns, extra in entries:
            if spec is not None:
                task_id, attempt = spec.task_id, spec.attempt
            key = (task_id, attempt)
            event = seen.get(key)
            if event is None:
                event = seen[key] = request.events.add(task_id=task_id, attempt=attempt)
                if spec is not None:
                    _describe(event, spec)
            event.changes.add(status=status, time_ns=time_ns)
            if extra:
                for name, value in extra.items():
                    setattr(event, name, value)
        return request


def _describe(event: gcs_pb2.TaskEvent, spec) -> None:
    """The task's static fields, from its spec."""
    event.job_id = spec.job_id
    event.type = spec.type
    event.parent_task_id = spec.parent_task_id
    if spec.actor_id:
        event.actor_id = spec.actor_id
    # function_name: the function's (or .options(name=)), "Class.method"
    # for actor tasks, "Class.__init__" for an actor's creation.
    event.func_or_class_name = event.name = spec.function_name
    if spec.resources:
        event.required_resources.update(spec.resources)
    if spec.scheduling_strategy.placement_group_id:
        event.placement_group_id = spec.scheduling_strategy.placement_group_id


async def flush_loop(buffer: TaskEventBuffer, gcs) -> None:
    """Send the buffer to the GCS every report interval until cancelled."""
    import asyncio
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
        buffer.num_dropped += len(request.events)
        log.debug("could not report task events: %s", exc)
