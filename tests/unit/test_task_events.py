"""Task events without sockets: the per-process buffer (core_worker/
task_events.py) and the GCS's bounded table (gcs/task_events.py)."""
from __future__ import annotations

from miniray.common.ids import JobID, TaskID
from miniray.core_worker.task_events import TaskEventBuffer
from miniray.gcs.task_events import TaskEventTable, latest_status, status_time
from miniray.protocol import common_pb2, gcs_pb2

JOB = JobID.from_int(1)


def spec(name="f", attempt=0, job=JOB):
    return common_pb2.TaskSpec(task_id=TaskID.from_random(), job_id=job,
                               function_name=name, attempt=attempt,
                               resources={"CPU": 1.0})


def test_buffer_merges_changes_per_attempt_and_describes_the_task():
    buffer = TaskEventBuffer(max_entries=100, enabled=True)
    task = spec("square")
    buffer.record(task, gcs_pb2.PENDING_ARGS_AVAIL)
    buffer.record(task, gcs_pb2.SUBMITTED_TO_WORKER)
    buffer.record(None, gcs_pb2.FINISHED, task_id=task.task_id, attempt=0,
                  extra={"worker_pid": 42})
    request = buffer.drain()
    assert len(request.events) == 1
    event = request.events[0]
    assert event.name == "square" and event.job_id == JOB
    assert dict(event.required_resources) == {"CPU": 1.0}
    assert [c.status for c in event.changes] == [
        gcs_pb2.PENDING_ARGS_AVAIL, gcs_pb2.SUBMITTED_TO_WORKER, gcs_pb2.FINISHED]
    assert event.worker_pid == 42
    assert buffer.drain() is None                   # nothing left


def test_a_full_buffer_drops_the_oldest_and_counts_them():
    buffer = TaskEventBuffer(max_entries=3, enabled=True)
    tasks = [spec(f"t{i}") for i in range(5)]
    for task in tasks:
        buffer.record(task, gcs_pb2.PENDING_ARGS_AVAIL)
    request = buffer.drain()
    assert request.num_dropped == 2
    assert [e.name for e in request.events] == ["t2", "t3", "t4"]


def test_disabled_buffer_records_nothing():
    buffer = TaskEventBuffer(enabled=False)
    buffer.record(spec(), gcs_pb2.RUNNING)
    assert len(buffer) == 0 and buffer.drain() is None


def event(task_id, attempt, *changes, **fields):
    e = gcs_pb2.TaskEvent(task_id=task_id, attempt=attempt, **fields)
    for status, t in changes:
        e.changes.add(status=status, time_ns=t)
    return e


def test_table_merges_reports_of_owner_and_worker():
    table = TaskEventTable(max_tasks=10)
    tid = TaskID.from_random()
    table.add([event(tid, 0, (gcs_pb2.PENDING_ARGS_AVAIL, 1), (gcs_pb2.SUBMITTED_TO_WORKER, 2),
                     job_id=JOB, name="f")])
    table.add([event(tid, 0, (gcs_pb2.RUNNING, 3), (gcs_pb2.FINISHED, 5), worker_pid=7)])
    table.add([event(tid, 0, (gcs_pb2.FINISHED, 6))])          # the owner's view, later
    tasks, total = table.get()
    assert total == 1
    merged = tasks[0]
    assert merged.name == "f" and merged.worker_pid == 7
    assert latest_status(merged) == gcs_pb2.FINISHED
    assert status_time(merged, gcs_pb2.RUNNING) == 3
    assert status_time(merged, gcs_pb2.FINISHED) == 5


def test_a_terminal_state_wins_over_a_late_running_report():
    e = event(b"t", 0, (gcs_pb2.FAILED, 5), (gcs_pb2.RUNNING, 9))
    assert latest_status(e) == gcs_pb2.FAILED


def test_table_is_bounded_and_filters_by_job_and_task():
    table = TaskEventTable(max_tasks=3)
    other = JobID.from_int(2)
    ids = [TaskID.from_random() for _ in range(5)]
    for i, tid in enumerate(ids):
        table.add([event(tid, 0, (gcs_pb2.RUNNING, i), job_id=JOB if i % 2 else other)])
    assert len(table) == 3 and table.num_dropped == 2
    tasks, total = table.get()
    assert [t.task_id for t in tasks] == [ids[4], ids[3], ids[2]]     # newest first
    assert [t.task_id for t in table.get(job_id=JOB)[0]] == [ids[3]]
    assert table.get(task_id=ids[2])[1] == 1
    assert len(table.get(limit=2)[0]) == 2 and table.get(limit=2)[1] == 3
    table.add([], num_dropped=4)                    # a reporter's own drops
    assert table.num_dropped == 6
