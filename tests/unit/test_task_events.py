"""Task events without sockets: the per-process buffer (core_worker/
task_events.py) and the GCS's bounded table (gcs/task_events.py)."""
from __future__ import annotations

from miniray.common.ids import JobID, TaskID
from miniray.core_worker.task_events import FULL, NAME, TaskEventBuffer
from miniray.gcs.task_events import TaskEventTable, latest_status, status_time
from miniray.protocol import common_pb2, gcs_pb2

JOB = JobID.from_int(1)


def spec(name="f", attempt=0, job=JOB):
    return common_pb2.TaskSpec(task_id=TaskID.from_random(), job_id=job,
                               function_name=name, attempt=attempt,
                               resources={"CPU": 1.0})


def merged(table: TaskEventTable, task_id: bytes):
    tasks, _ = table.get(task_id=task_id)
    return tasks[0]


def test_owner_and_worker_reports_make_one_record():
    owner, worker = TaskEventBuffer(enabled=True), TaskEventBuffer(enabled=True)
    task = spec("square")
    owner.record(task, gcs_pb2.PENDING_ARGS_AVAIL, describe=NAME)
    owner.record(task, gcs_pb2.SUBMITTED_TO_WORKER)
    worker.record(task, gcs_pb2.RUNNING, {"worker_pid": 42}, describe=FULL)
    worker.record(task, gcs_pb2.FINISHED)
    owner.record(task, gcs_pb2.FINISHED)
    table = TaskEventTable(max_tasks=10)
    for buffer in (owner, worker):
        request = buffer.drain()
        table.add_request(gcs_pb2.AddTaskEventsRequest.FromString(
            request.SerializeToString()))
        assert buffer.drain() is None                  # nothing left
    event = merged(table, task.task_id)
    assert event.name == event.func_or_class_name == "square"
    assert event.job_id == JOB and event.worker_pid == 42
    assert dict(event.required_resources) == {"CPU": 1.0}
    assert latest_status(event) == gcs_pb2.FINISHED
    assert status_time(event, gcs_pb2.RUNNING) <= status_time(event, gcs_pb2.FINISHED)
    assert sorted({c.status for c in event.changes}) == [
        gcs_pb2.PENDING_ARGS_AVAIL, gcs_pb2.SUBMITTED_TO_WORKER, gcs_pb2.RUNNING,
        gcs_pb2.FINISHED]


def test_a_full_buffer_drops_the_oldest_changes_and_counts_them():
    buffer = TaskEventBuffer(max_entries=3, enabled=True)
    tasks = [spec(f"t{i}") for i in range(5)]
    for task in tasks:
        buffer.record(task, gcs_pb2.PENDING_ARGS_AVAIL)
    request = buffer.drain()
    assert request.num_dropped == 2
    assert list(request.change_task_ids) == [t.task_id for t in tasks[2:]]


def test_disabled_buffer_records_nothing():
    buffer = TaskEventBuffer(enabled=False)
    buffer.record(spec(), gcs_pb2.RUNNING)
    assert len(buffer) == 0 and buffer.drain() is None


def event(task_id, attempt, *changes, **fields):
    e = gcs_pb2.TaskEvent(task_id=task_id, attempt=attempt, **fields)
    for status, t in changes:
        e.changes.add(status=status, time_ns=t)
    return e


def test_fields_set_later_win_and_changes_accumulate():
    table = TaskEventTable(max_tasks=10)
    tid = TaskID.from_random()
    table.add([event(tid, 0, (gcs_pb2.PENDING_ARGS_AVAIL, 1), job_id=JOB, name="f")])
    table.add([event(tid, 0, worker_pid=7)],
              changes=[(tid, 0, gcs_pb2.RUNNING, 3), (tid, 0, gcs_pb2.FINISHED, 5)])
    table.add(changes=[(tid, 0, gcs_pb2.FINISHED, 6)])        # the owner's view, later
    e = merged(table, tid)
    assert e.name == "f" and e.worker_pid == 7 and e.job_id == JOB
    assert latest_status(e) == gcs_pb2.FINISHED
    assert status_time(e, gcs_pb2.RUNNING) == 3
    assert status_time(e, gcs_pb2.FINISHED) == 5


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


def test_a_retry_is_reported_as_a_named_attempt_of_its_own():
    """The owner's submitter, without sockets: a task retried after its
    worker died reports the new attempt under the task's name at once (it
    may wait long for a worker before anything else names it)."""
    from miniray.common.ids import WorkerID
    from miniray.core_worker.submitter import NormalTaskSubmitter, _Task

    class Worker:                      # what the submitter uses of its CoreWorker
        task_events = TaskEventBuffer(enabled=True)
        worker_id = WorkerID.from_random()

        @staticmethod
        def spawn(coroutine):
            coroutine.close()          # no lease requests here

        @staticmethod
        async def warn_if_infeasible(*args):
            return None

    submitter = NormalTaskSubmitter(Worker())
    task = _Task(spec("flaky"), [])
    task.spec.max_retries = task.retries_left = 1
    submitter._tasks[task.task_id] = task
    submitter._retry(task)
    table = TaskEventTable(max_tasks=10)
    table.add_request(gcs_pb2.AddTaskEventsRequest.FromString(
        Worker.task_events.drain().SerializeToString()))
    attempts, _ = table.get(task_id=task.spec.task_id)
    by_attempt = {event.attempt: event for event in attempts}
    assert latest_status(by_attempt[0]) == gcs_pb2.FAILED
    assert latest_status(by_attempt[1]) == gcs_pb2.PENDING_NODE_ASSIGNMENT
    assert by_attempt[1].name == "flaky"
