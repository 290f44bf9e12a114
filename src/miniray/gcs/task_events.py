"""The GCS's table of task events (no I/O): one merged record per task
attempt, bounded.

Owners and workers report a task's state changes in batches
(AddTaskEvents); reports of one attempt are merged here (fields set by a
later report win, state changes accumulate in time order). Past
``max_tasks`` attempts the oldest are evicted, as Ray's GCS does
(RAY_task_events_max_num_task_in_gcs), and counted as dropped along with
what reporters dropped from their own full buffers.
"""
from __future__ import annotations

from collections import OrderedDict

from miniray.protocol import gcs_pb2

# A task attempt that reached one of these is over.
TERMINAL = (gcs_pb2.FINISHED, gcs_pb2.FAILED)
_SCALARS = ("job_id", "name", "type", "actor_id", "parent_task_id", "node_id",
            "worker_id", "worker_pid", "error_type", "error_message",
            "placement_group_id", "func_or_class_name")


def latest_status(event: gcs_pb2.TaskEvent) -> int:
    """The attempt's current state: its latest change (a terminal state
    wins over a late RUNNING report from the other side)."""
    if not event.changes:
        return gcs_pb2.TASK_STATUS_NIL
    terminal = [c for c in event.changes if c.status in TERMINAL]
    if terminal:
        return max(terminal, key=lambda c: c.time_ns).status
    return max(event.changes, key=lambda c: (c.time_ns, c.status)).status


def status_time(event: gcs_pb2.TaskEvent, status: int) -> int:
    """When the attempt first entered ``status`` (ns), 0 if it did not."""
    times = [c.time_ns for c in event.changes if c.status == status]
    return min(times) if times else 0


class TaskEventTable:
    def __init__(self, max_tasks: int):
        self.max_tasks = max(1, max_tasks)
        self._tasks: OrderedDict[tuple[bytes, int], gcs_pb2.TaskEvent] = OrderedDict()
        self.num_dropped = 0

    def __len__(self) -> int:
        return len(self._tasks)

    def add(self, events, num_dropped: int = 0) -> None:
        self.num_dropped += max(0, num_dropped)
        for event in events:
            key = (event.task_id, event.attempt)
            known = self._tasks.get(key)
            if known is None:
                known = self._tasks[key] = gcs_pb2.TaskEvent(task_id=event.task_id,
                                                             attempt=event.attempt)
                if len(self._tasks) > self.max_tasks:
                    self._tasks.popitem(last=False)
                    self.num_dropped += 1
            _merge(known, event)

    def get(self, job_id: bytes = b"", task_id: bytes = b"",
            limit: int = 0) -> tuple[list[gcs_pb2.TaskEvent], int]:
        """Matching attempts, newest first, at most ``limit`` (0: all), and
        how many matched before the limit."""
        matched = [e for e in reversed(self._tasks.values())
                   if (not job_id or e.job_id == job_id)
                   and (not task_id or e.task_id == task_id)]
        return (matched[:limit] if limit > 0 else matched), len(matched)


def _merge(into: gcs_pb2.TaskEvent, event: gcs_pb2.TaskEvent) -> None:
    for name in _SCALARS:
        value = getattr(event, name)
        if value:
            setattr(into, name, value)
    if event.required_resources:
        into.required_resources.clear()
        into.required_resources.update(event.required_resources)
    if event.changes:
        into.changes.extend(event.changes)
