"""The GCS's table of task events (no I/O): one merged record per task
attempt, bounded.

Owners and workers report a task's state changes in batches
(AddTaskEvents); reports of one attempt are merged here (fields set by a
later report win, as protobuf's MergeFrom does; state changes accumulate,
kept as plain tuples until a query builds its records). Past
``max_tasks`` attempts the oldest are evicted, as Ray's GCS does
(RAY_task_events_max_num_task_in_gcs), and counted as dropped along with
what reporters dropped from their own full buffers.
"""
from __future__ import annotations

from collections import OrderedDict

from miniray.protocol import gcs_pb2

# A task attempt that reached one of these is over.
TERMINAL = (gcs_pb2.FINISHED, gcs_pb2.FAILED)


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


class _Attempt:
    __slots__ = ("event", "changes")

    def __init__(self, event: gcs_pb2.TaskEvent):
        self.event = event                       # fields (its changes kept apart)
        self.changes: list[tuple[int, int]] = []  # (status, time_ns)


class TaskEventTable:
    def __init__(self, max_tasks: int):
        self.max_tasks = max(1, max_tasks)
        self._tasks: OrderedDict[tuple[bytes, int], _Attempt] = OrderedDict()
        self.num_dropped = 0

    def __len__(self) -> int:
        return len(self._tasks)

    def _attempt(self, task_id: bytes, attempt: int) -> _Attempt:
        key = (task_id, attempt)
        known = self._tasks.get(key)
        if known is None:
            known = self._tasks[key] = _Attempt(
                gcs_pb2.TaskEvent(task_id=task_id, attempt=attempt))
            if len(self._tasks) > self.max_tasks:
                self._tasks.popitem(last=False)
                self.num_dropped += 1
        return known

    def add(self, events=(), num_dropped: int = 0, changes=()) -> None:
        """Merge a report: ``events`` (fields of attempts; fields set win)
        and ``changes``, (task_id, attempt, status, time_ns) tuples."""
        self.num_dropped += max(0, num_dropped)
        tasks = self._tasks
        for event in events:
            if event.changes:
                changes_of = [(c.status, c.time_ns) for c in event.changes]
                del event.changes[:]
            else:
                changes_of = ()
            known = tasks.get((event.task_id, event.attempt))
            if known is None:                 # the common case: keep it as is
                known = self._attempt(event.task_id, event.attempt)
                known.event = event
            else:
                known.event.MergeFrom(event)
            known.changes.extend(changes_of)
        for task_id, attempt, status, time_ns in changes:
            known = tasks.get((task_id, attempt))
            if known is None:
                known = self._attempt(task_id, attempt)
            known.changes.append((status, time_ns))

    def add_request(self, request: gcs_pb2.AddTaskEventsRequest) -> None:
        self.add(request.events, request.num_dropped,
                 zip(request.change_task_ids, request.change_attempts,
                     request.change_statuses, request.change_times_ns))

    def get(self, job_id: bytes = b"", task_id: bytes = b"",
            limit: int = 0) -> tuple[list[gcs_pb2.TaskEvent], int]:
        """Matching attempts (with their changes), newest first, at most
        ``limit`` (0: all), and how many matched before the limit."""
        matched = [a for a in reversed(self._tasks.values())
                   if (not job_id or a.event.job_id == job_id)
                   and (not task_id or a.event.task_id == task_id)]
        total = len(matched)
        if limit > 0:
            matched = matched[:limit]
        out = []
        for attempt in matched:
            event = gcs_pb2.TaskEvent()
            event.CopyFrom(attempt.event)
            if not event.func_or_class_name:
                event.func_or_class_name = event.name
            # Each state once, at its first report (owner and worker both
            # report the outcome), in time order.
            first: dict[int, int] = {}
            for status, time_ns in attempt.changes:
                if status not in first or time_ns < first[status]:
                    first[status] = time_ns
            event.changes.extend(
                gcs_pb2.TaskStatusChange(status=st, time_ns=t)
                for st, t in sorted(first.items(), key=lambda item: item[1]))
            out.append(event)
        return out, total
