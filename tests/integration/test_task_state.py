"""Task events end to end: owners and workers report each task attempt's
state changes to the GCS, and the state API reads them back."""
from __future__ import annotations

import os

import pytest

import miniray as ray
from miniray.testing import SignalActor, wait_for_condition
from miniray.util import state

pytestmark = pytest.mark.usefixtures("ray_start")


@ray.remote
def square(x):
    return x * x


@ray.remote(max_retries=0)
def boom():
    raise ValueError("nope")


@ray.remote
def wait_on(signal):
    ray.get(signal.wait.remote())
    return os.getpid()


@ray.remote
class Counter:
    def inc(self):
        return 1


def tasks_named(name: str) -> list:
    return [t for t in state.list_tasks(limit=10_000, detail=True) if t.name == name]


def done(name: str, count: int, status: str = "FINISHED") -> bool:
    """``count`` attempts of ``name`` in ``status``, as both their owner and
    the worker that ran them reported (workers report where they ran)."""
    tasks = tasks_named(name)
    return len(tasks) == count and all(t.state == status and t.worker_pid
                                       for t in tasks)


def test_finished_tasks_show_every_state_and_where_they_ran():
    ray.get([square.remote(i) for i in range(3)])
    wait_for_condition(lambda: done("square", 3), timeout=20)
    task = tasks_named("square")[0]
    assert [e["state"] for e in task.events] == [
        "PENDING_ARGS_AVAIL", "PENDING_NODE_ASSIGNMENT", "SUBMITTED_TO_WORKER",
        "RUNNING", "FINISHED"]
    assert task.type == "NORMAL_TASK" and task.func_or_class_name == "square"
    assert task.worker_pid and task.node_id and task.job_id == \
        ray.get_runtime_context().get_job_id()
    assert task.required_resources == {"CPU": 1.0}
    assert task.start_time_ms <= task.end_time_ms


def failed_once(function, name: str):
    """Run ``function`` (which raises ValueError) once; its FAILED record,
    an execution failure, once both its owner and its worker reported."""
    with pytest.raises(ValueError):
        ray.get(function.remote())
    wait_for_condition(lambda: done(name, 1, "FAILED"), timeout=20)
    task = tasks_named(name)[0]
    assert task.error_type == "TASK_EXECUTION_EXCEPTION"
    return task


def test_a_failed_task_says_why():
    task = failed_once(boom, "boom")
    # As in Ray: the error's whole text, from the process it ran in to the
    # exception.
    assert task.error_message.startswith("ray::boom() (pid=")
    assert task.error_message.endswith("ValueError: nope")


@ray.remote(max_calls=1, max_retries=0)
def boom_once():
    raise ValueError("last call")


def test_a_failed_last_call_reports_the_workers_exit_too():
    """A worker that ran its function's max_calls exits right after the
    reply; the task's failure still reaches the GCS, naming both."""
    task = failed_once(boom_once, "boom_once")
    assert task.error_message.startswith("User exception:\nray::boom_once() (pid=")
    assert task.error_message.endswith(
        "ValueError: last call\n\nSystem error:\nIntentionalSystemExit: Worker exits "
        "with an exit code 0. Exited because worker reached max_calls=1 for this method.")


def test_a_running_task_is_listed_as_running():
    signal = SignalActor.remote()
    ref = wait_on.remote(signal)
    wait_for_condition(lambda: [t.state for t in tasks_named("wait_on")] == ["RUNNING"],
                       timeout=20)
    ray.get(signal.send.remote())
    ray.get(ref)
    wait_for_condition(lambda: [t.state for t in tasks_named("wait_on")] == ["FINISHED"],
                       timeout=20)


def test_actor_tasks_and_summary():
    counter = Counter.remote()
    ray.get([counter.inc.remote() for _ in range(4)])
    wait_for_condition(lambda: done("Counter.inc", 4), timeout=20)
    inc = tasks_named("Counter.inc")[0]
    assert inc.type == "ACTOR_TASK" and inc.actor_id == counter._actor_id.hex()
    wait_for_condition(lambda: tasks_named("Counter.__init__"), timeout=20)
    summary = state.summarize_tasks()["cluster"]
    assert summary["summary"]["Counter.inc"]["state_counts"]["FINISHED"] >= 4
    assert summary["summary"]["Counter.inc"]["type"] == "ACTOR_TASK"
    assert summary["total_actor_tasks"] >= 4


def test_timeline_has_one_slice_per_task_run():
    ray.get([square.options(name="sliced").remote(i) for i in range(5)])
    wait_for_condition(lambda: done("sliced", 5), timeout=20)
    events = state.timeline_events()
    slices = [e for e in events if e["name"] == "sliced" and e["ph"] == "X"]
    assert len(slices) == 5
    names = {(e["pid"], e["tid"], e["name"]): e["args"]["name"]
             for e in events if e["ph"] == "M"}
    for piece in slices:
        assert piece["dur"] >= 0
        assert names[(piece["pid"], 0, "process_name")].startswith("Node ")
        assert names[(piece["pid"], piece["tid"], "thread_name")].startswith("Worker ")


@ray.remote
def sleeper():
    import time
    time.sleep(60)


@ray.remote
class Napper:
    async def nap(self, signal):
        await signal.wait.remote()


def _state(name: str):
    tasks = tasks_named(name)
    return [(t.state, t.error_type) for t in tasks]


def test_cancelled_tasks_show_ray_s_states():
    """As Ray 2.60 shows them: a running task that the cancel interrupted
    ran to its end (FINISHED; the caller gets a RayTaskError that is a
    TaskCancelledError); a task cancelled while waiting for its arguments
    failed (TASK_CANCELLED); a running async actor call that was cancelled
    failed with an execution exception."""
    signal = SignalActor.remote()
    running = sleeper.remote()
    wait_for_condition(lambda: _state("sleeper") == [("RUNNING", None)], timeout=20)
    ray.cancel(running)
    with pytest.raises(ray.exceptions.TaskCancelledError) as info:
        ray.get(running, timeout=20)
    assert isinstance(info.value, ray.exceptions.RayTaskError)
    wait_for_condition(lambda: _state("sleeper") == [("FINISHED", None)], timeout=20)

    waiting = square.options(name="square_waiting").remote(signal.wait.remote())
    ray.cancel(waiting)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(waiting, timeout=20)
    wait_for_condition(lambda: _state("square_waiting") == [("FAILED", "TASK_CANCELLED")],
                       timeout=20)

    napper = Napper.remote()
    call = napper.nap.remote(signal)
    wait_for_condition(lambda: _state("Napper.nap") == [("RUNNING", None)], timeout=20)
    ray.cancel(call)
    with pytest.raises(ray.exceptions.TaskCancelledError) as info:
        ray.get(call, timeout=20)
    assert isinstance(info.value, ray.exceptions.RayTaskError)
    wait_for_condition(
        lambda: _state("Napper.nap") == [("FAILED", "TASK_EXECUTION_EXCEPTION")], timeout=20)
    ray.get(signal.send.remote())
