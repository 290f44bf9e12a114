"""Lineage: what an owner keeps to rebuild lost objects, retries, the byte
budget and pinned arguments (no sockets)."""
from __future__ import annotations

import random

import pytest

from miniray import exceptions
from miniray.common.ids import JobID, ObjectID, TaskID, WorkerID
from miniray.core_worker import lineage as lin
from miniray.core_worker.lineage import CannotRebuild, Lineage, Resubmit, lost_error
from miniray.protocol import common_pb2

OWNER = WorkerID.from_random()
JOB = JobID.from_int(1)


def spec(name="f", args=(), num_returns=1, actor=False, padding=0):
    """A finished task's spec; ``args``: object ids it took by reference."""
    task = common_pb2.TaskSpec(task_id=TaskID.of(JOB), function_name=name,
                               num_returns=num_returns, name="x" * padding)
    if actor:
        task.actor_id = b"a" * 16
    for object_id in args:
        arg = task.args.add()
        arg.ref.object_id = object_id
        arg.ref.owner.worker_id = OWNER
    return task


def ret(task, index=1) -> ObjectID:
    return ObjectID.for_return(TaskID(task.task_id), index)


@pytest.fixture
def lineage():
    table = Lineage(OWNER, max_bytes=10_000)
    yield table
    table.validate()


def test_a_kept_spec_is_resubmitted_and_dropped_when_its_returns_are_freed(lineage):
    task = spec()
    lineage.record(ret(task), task, retries_left=3)
    assert lineage.statistics().kept_bytes == task.ByteSize()
    plan = lineage.rebuild(ret(task))
    assert plan == Resubmit(task, 2)
    lineage.forget(ret(task))
    assert lineage.statistics() == lin.LineageStatistics(0, 0, 0, 0)
    assert lineage.rebuild(ret(task)) == CannotRebuild(lin.UNKNOWN)


def test_each_rebuild_takes_a_retry_until_none_is_left(lineage):
    task = spec("g")
    lineage.record(ret(task), task, retries_left=1)
    assert lineage.rebuild(ret(task)) == Resubmit(task, 0)
    # A second loss while its last retry is rebuilding it: nothing to start.
    assert lineage.rebuild(ret(task)) == CannotRebuild(lin.OUT_OF_RETRIES, "g")
    lineage.record(ret(task), task, retries_left=0)      # the re-run finished
    assert lineage.statistics().kept == 0
    assert lineage.rebuild(ret(task)) == CannotRebuild(lin.OUT_OF_RETRIES, "g")


def test_unlimited_retries_never_run_out(lineage):
    task = spec()
    lineage.record(ret(task), task, retries_left=-1)
    for _ in range(5):
        assert lineage.rebuild(ret(task)) == Resubmit(task, -1)
        lineage.record(ret(task), task, retries_left=-1)


def test_tasks_without_retries_keep_no_spec(lineage):
    normal, method = spec("f"), spec("A.m", actor=True)
    lineage.record(ret(normal), normal, retries_left=0, could_retry=False)
    lineage.record(ret(method), method, retries_left=0, could_retry=False)
    assert lineage.statistics().kept_bytes == 0
    assert lineage.rebuild(ret(normal)) == CannotRebuild(lin.NO_RETRIES, "f")
    assert lineage.rebuild(ret(method)) == CannotRebuild(lin.NO_RETRIES, "A.m", True)


def test_put_objects_have_no_lineage(lineage):
    put_id = ObjectID.for_put(TaskID.of(JOB), 1)
    assert lineage.rebuild(put_id) == CannotRebuild(lin.PUT)


def test_every_return_of_a_task_must_be_freed_to_drop_it(lineage):
    task = spec(num_returns=2)
    lineage.record(ret(task, 1), task, 3)
    lineage.record(ret(task, 2), task, 3)
    lineage.forget(ret(task, 1))
    assert isinstance(lineage.rebuild(ret(task, 2)), Resubmit)
    lineage.forget(ret(task, 2))
    assert lineage.statistics().tasks == 0


def test_the_oldest_lineage_is_evicted_over_the_budget():
    size = spec(padding=3000).ByteSize()
    lineage = Lineage(OWNER, max_bytes=3 * size)
    tasks = [spec(padding=3000) for _ in range(5)]
    for task in tasks:
        lineage.record(ret(task), task, 3)
        lineage.validate()
    stats = lineage.statistics()
    assert (stats.kept, stats.evicted, stats.tasks) == (3, 2, 5)
    assert stats.kept_bytes <= 3 * size
    for task in tasks[:2]:
        assert lineage.rebuild(ret(task)) == CannotRebuild(lin.EVICTED, "f")
    for task in tasks[2:]:
        assert isinstance(lineage.rebuild(ret(task)), Resubmit)
    for task in tasks:             # freed: even the tombstones go
        lineage.forget(ret(task))
        lineage.validate()
    assert lineage.statistics().tasks == 0


def test_a_spec_bigger_than_the_budget_is_not_kept():
    lineage = Lineage(OWNER, max_bytes=100)
    task = spec(padding=500)
    lineage.record(ret(task), task, 3)
    lineage.validate()
    assert lineage.rebuild(ret(task)) == CannotRebuild(lin.EVICTED, "f")


def test_a_kept_spec_pins_the_lineage_of_its_arguments(lineage):
    first = spec("first")
    lineage.record(ret(first), first, 3)
    second = spec("second", args=[ret(first)])
    lineage.record(ret(second), second, 3)
    lineage.forget(ret(first))          # its value is freed, its lineage stays
    lineage.validate()
    assert lineage.rebuild(ret(first)) == Resubmit(first, 2)
    lineage.forget(ret(second))         # nothing needs either any more
    assert lineage.statistics().tasks == 0


def test_an_evicted_argument_stays_known_as_evicted_while_pinned():
    first = spec("first", padding=2000)
    size = first.ByteSize()
    lineage = Lineage(OWNER, max_bytes=size + 500)
    lineage.record(ret(first), first, 3)
    second = spec("second", args=[ret(first)])
    lineage.record(ret(second), second, 3)
    lineage.forget(ret(first))
    third = spec("third", padding=2000)
    lineage.record(ret(third), third, 3)     # over budget: "first" goes
    lineage.validate()
    assert lineage.rebuild(ret(first)) == CannotRebuild(lin.EVICTED, "first")
    assert isinstance(lineage.rebuild(ret(second)), Resubmit)
    lineage.forget(ret(second))
    lineage.validate()
    assert lineage.statistics().tasks == 1       # "third"


def test_an_evicted_spec_unpins_its_arguments():
    first = spec("first")
    second = spec("second", args=[ret(first)], padding=2000)
    lineage = Lineage(OWNER, max_bytes=second.ByteSize() + 500)
    lineage.record(ret(first), first, 0, could_retry=False)
    lineage.record(ret(second), second, 3)
    lineage.forget(ret(first))                   # pinned by "second"
    assert lineage.rebuild(ret(first)) == CannotRebuild(lin.NO_RETRIES, "first")
    third = spec("third", padding=2000)
    lineage.record(ret(third), third, 3)         # over budget: "second" goes
    lineage.validate()
    assert lineage.rebuild(ret(second)) == CannotRebuild(lin.EVICTED, "second")
    assert lineage.rebuild(ret(first)) == CannotRebuild(lin.UNKNOWN)


def test_running_out_of_retries_unpins_the_arguments(lineage):
    first = spec("first")
    lineage.record(ret(first), first, 3)
    second = spec("second", args=[ret(first)])
    lineage.record(ret(second), second, 1)
    lineage.forget(ret(first))
    lineage.rebuild(ret(second))
    lineage.record(ret(second), second, 0)    # rebuilt with its last retry
    lineage.validate()
    assert lineage.statistics().tasks == 1
    assert lineage.rebuild(ret(first)) == CannotRebuild(lin.UNKNOWN)


def test_errors_name_the_reason():
    object_id = ret(spec())
    put = lost_error(object_id, CannotRebuild(lin.PUT), "owner", 1)
    assert type(put) is exceptions.ObjectLostError and "put()" in str(put)
    method = lost_error(object_id, CannotRebuild(lin.NO_RETRIES, "A.m", True), "o", 1)
    assert type(method) is exceptions.ObjectReconstructionFailedError
    assert "A.m" in str(method) and "max_task_retries" in str(method)
    task = lost_error(object_id, CannotRebuild(lin.NO_RETRIES, "f"), "o", 1)
    assert type(task) is exceptions.ObjectReconstructionFailedMaxAttemptsExceededError
    used = lost_error(object_id, CannotRebuild(lin.OUT_OF_RETRIES, "A.m", True), "o", 1)
    assert type(used) is exceptions.ObjectReconstructionFailedMaxAttemptsExceededError
    assert "max_task_retries" in str(used)
    evicted = lost_error(object_id, CannotRebuild(lin.EVICTED, "f"), "o", 1234)
    assert type(evicted) is exceptions.ObjectReconstructionFailedLineageEvictedError
    assert "MINIRAY_MAX_LINEAGE_BYTES=1234" in str(evicted)
    for error in (put, method, task, used, evicted):
        assert object_id.hex() in str(error)


def test_random_histories_keep_the_invariants():
    rng = random.Random(7)
    lineage = Lineage(OWNER, max_bytes=4000)
    live: list[ObjectID] = []
    for _ in range(1000):
        choice = rng.random()
        if choice < 0.45 or not live:
            deps = rng.sample(live, min(len(live), rng.randint(0, 2)))
            task = spec(args=deps, num_returns=rng.randint(1, 2),
                        padding=rng.randint(0, 800))
            retries = rng.choice([-1, 0, 1, 2])
            for index in range(task.num_returns):
                lineage.record(ret(task, index + 1), task, retries, retries != 0)
                live.append(ret(task, index + 1))
        elif choice < 0.8:
            lineage.forget(live.pop(rng.randrange(len(live))))
        else:
            object_id = rng.choice(live)
            plan = lineage.rebuild(object_id)
            if isinstance(plan, Resubmit):
                lineage.record(object_id, plan.spec, plan.retries_left)
        lineage.validate()
    for object_id in live:
        lineage.forget(object_id)
    lineage.validate()
    assert lineage.statistics().tasks == 0
