"""GPU ids on a real local cluster: which ids tasks and actors get, and what
they see of them (get_gpu_ids, CUDA_VISIBLE_DEVICES, the runtime context).
The node's GPUs are only a resource count: no hardware is needed."""
from __future__ import annotations

import asyncio
import os

import pytest

import miniray as ray
from miniray.util.placement_group import placement_group, remove_placement_group
from miniray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

TIMEOUT = 60


@pytest.fixture(scope="module", autouse=True)
def gpu_cluster():
    ray.init(num_cpus=4, num_gpus=2)
    yield
    ray.shutdown()


@ray.remote(num_cpus=0)
class Barrier:
    """Holds callers until ``parties`` have arrived: tasks that pass it ran
    at the same time (so held their leases at the same time)."""

    def __init__(self, parties: int):
        self.parties = parties
        self.arrived = 0
        self.event = None

    async def wait(self):
        if self.event is None:
            self.event = asyncio.Event()
        self.arrived += 1
        if self.arrived >= self.parties:
            self.event.set()
        await asyncio.wait_for(self.event.wait(), TIMEOUT)


def _seen() -> dict:
    context = ray.get_runtime_context()
    return {"gpu_ids": ray.get_gpu_ids(),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "accelerators": context.get_accelerator_ids(),
            "assigned": context.get_assigned_resources(),
            "pid": os.getpid()}


@ray.remote
def report(barrier=None) -> dict:
    if barrier is not None:
        ray.get(barrier.wait.remote())
    return _seen()


def check_consistent(seen: dict) -> None:
    """CUDA_VISIBLE_DEVICES and the runtime context agree with get_gpu_ids()."""
    as_text = [str(i) for i in seen["gpu_ids"]]
    assert seen["cuda"] == ",".join(as_text)
    assert seen["accelerators"]["GPU"] == as_text
    assert all(isinstance(i, int) and i in (0, 1) for i in seen["gpu_ids"])


def run_together(task, n: int) -> list[dict]:
    barrier = Barrier.remote(n)
    return ray.get([task.remote(barrier) for _ in range(n)], timeout=TIMEOUT)


def test_concurrent_whole_gpu_tasks_get_distinct_ids():
    first, second = run_together(report.options(num_gpus=1), 2)
    assert first["pid"] != second["pid"]
    for seen in (first, second):
        check_consistent(seen)
        assert len(seen["gpu_ids"]) == 1
        assert seen["assigned"] == {"CPU": 1.0, "GPU": 1.0}
    assert {first["gpu_ids"][0], second["gpu_ids"][0]} == {0, 1}


def test_fractional_gpu_tasks_share_one_id():
    first, second = run_together(report.options(num_gpus=0.5), 2)
    assert first["pid"] != second["pid"]
    for seen in (first, second):
        check_consistent(seen)
        assert seen["assigned"] == {"CPU": 1.0, "GPU": 0.5}
    assert len(first["gpu_ids"]) == 1
    assert first["gpu_ids"] == second["gpu_ids"]


def test_two_gpu_task_gets_both_ids():
    # Also shows the ids came back: earlier tests' tasks held them.
    seen = ray.get(report.options(num_gpus=2).remote(), timeout=TIMEOUT)
    check_consistent(seen)
    assert seen["gpu_ids"] == [0, 1]
    assert seen["cuda"] == "0,1"
    assert seen["assigned"] == {"CPU": 1.0, "GPU": 2.0}


def test_task_without_gpus_sees_none():
    seen = ray.get(report.remote(), timeout=TIMEOUT)
    assert seen["gpu_ids"] == []
    assert seen["cuda"] is None          # as Ray 2.60: left unset
    assert seen["accelerators"]["GPU"] == []
    assert seen["assigned"] == {"CPU": 1.0}


def test_ids_come_back_after_tasks_finish():
    for _ in range(2):
        pair = run_together(report.options(num_gpus=1), 2)
        assert sorted(s["gpu_ids"][0] for s in pair) == [0, 1]
        # Needs both ids: granted only once both tasks' leases have ended.
        both = ray.get(report.options(num_gpus=2).remote(), timeout=TIMEOUT)
        assert both["gpu_ids"] == [0, 1]


def test_driver_has_no_gpu_ids():
    assert ray.get_gpu_ids() == []
    assert ray.get_runtime_context().get_accelerator_ids()["GPU"] == []


@ray.remote(num_gpus=1)
class GpuActor:
    def __init__(self):
        self.at_init = _seen()

    def init_seen(self):
        return self.at_init

    def seen(self):
        return _seen()

    def set_cuda(self, value):
        os.environ["CUDA_VISIBLE_DEVICES"] = value


def test_actor_keeps_its_gpu_for_every_call():
    actor = GpuActor.remote()
    try:
        at_init = ray.get(actor.init_seen.remote(), timeout=TIMEOUT)
        check_consistent(at_init)
        assert len(at_init["gpu_ids"]) == 1
        assert at_init["assigned"] == {"GPU": 1.0}    # an actor holds no CPU by default
        calls = ray.get([actor.seen.remote() for _ in range(5)], timeout=TIMEOUT)
        assert all(c["gpu_ids"] == at_init["gpu_ids"] for c in calls)
        assert all(c["cuda"] == at_init["cuda"] for c in calls)
        # The other id is free for tasks meanwhile.
        task = ray.get(report.options(num_gpus=1).remote(), timeout=TIMEOUT)
        assert task["gpu_ids"] != at_init["gpu_ids"] and len(task["gpu_ids"]) == 1
        # Actor calls leave the environment as the actor set it, as in Ray.
        ray.get(actor.set_cuda.remote("0,1"), timeout=TIMEOUT)
        assert ray.get(actor.seen.remote(), timeout=TIMEOUT)["cuda"] == "0,1"
    finally:
        ray.kill(actor)
    # Its id comes back when it dies: a task needing both GPUs can run.
    both = ray.get(report.options(num_gpus=2).remote(), timeout=TIMEOUT)
    assert both["gpu_ids"] == [0, 1]


def test_threaded_and_async_actor_calls_see_the_actors_gpu():
    @ray.remote(num_gpus=1, max_concurrency=4)
    class Threaded:
        def seen(self, barrier):
            ray.get(barrier.wait.remote())
            return _seen()

    @ray.remote(num_gpus=1)
    class Async:
        async def seen(self, barrier):
            await barrier.wait.remote()
            return _seen()

    threaded, async_actor = Threaded.remote(), Async.remote()
    try:
        ids = []
        for actor in (threaded, async_actor):
            # Three calls at once: on the actor's thread pool / event loop.
            barrier = Barrier.remote(3)
            calls = ray.get([actor.seen.remote(barrier) for _ in range(3)],
                            timeout=TIMEOUT)
            ids.append(calls[0]["gpu_ids"])
            assert len(ids[-1]) == 1
            for seen in calls:
                check_consistent(seen)
                assert seen["gpu_ids"] == ids[-1]
        assert ids[0] != ids[1]
    finally:
        ray.kill(threaded)
        ray.kill(async_actor)


def test_actor_without_gpus_sees_none():
    @ray.remote
    class Plain:
        def seen(self):
            return _seen()

    actor = Plain.remote()
    try:
        seen = ray.get(actor.seen.remote(), timeout=TIMEOUT)
    finally:
        ray.kill(actor)
    assert seen["gpu_ids"] == [] and seen["cuda"] is None
    assert seen["assigned"] == {}


def test_placement_group_tasks_get_their_bundles_gpu():
    pg = placement_group([{"CPU": 1, "GPU": 1}, {"CPU": 1, "GPU": 1}])
    assert pg.wait(TIMEOUT)
    try:
        def in_bundle(index):
            return report.options(num_gpus=1, scheduling_strategy=(
                PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index)))

        first = ray.get(in_bundle(0).remote(), timeout=TIMEOUT)
        second = ray.get(in_bundle(1).remote(), timeout=TIMEOUT)
        for seen in (first, second):
            check_consistent(seen)
            assert len(seen["gpu_ids"]) == 1
            assert seen["assigned"] == {"CPU": 1.0, "GPU": 1.0}
        assert {first["gpu_ids"][0], second["gpu_ids"][0]} == {0, 1}
        # Each bundle reserved one id: the same one every time.
        again = ray.get(in_bundle(0).remote(), timeout=TIMEOUT)
        assert again["gpu_ids"] == first["gpu_ids"]
        anywhere = ray.get(in_bundle(-1).remote(), timeout=TIMEOUT)
        assert anywhere["gpu_ids"][0] in (0, 1)
    finally:
        remove_placement_group(pg)
    both = ray.get(report.options(num_gpus=2).remote(), timeout=TIMEOUT)
    assert both["gpu_ids"] == [0, 1]


@ray.remote
def omp_threads():
    return os.getpid(), os.environ.get("OMP_NUM_THREADS")


@ray.remote
class OmpActor:
    def omp_threads(self):
        return os.environ.get("OMP_NUM_THREADS")


@pytest.mark.skipif("OMP_NUM_THREADS" in os.environ,
                    reason="workers inherit the OMP_NUM_THREADS set here")
def test_omp_num_threads_is_the_cpus_held():
    # As in Ray: the CPUs of the task or actor, rounded down, at least 1.
    pid, threads = ray.get(omp_threads.remote(), timeout=TIMEOUT)
    assert threads == "1"
    assert ray.get(omp_threads.options(num_cpus=2).remote(), timeout=TIMEOUT)[1] == "2"
    assert ray.get(omp_threads.options(num_cpus=0.25).remote(), timeout=TIMEOUT)[1] == "1"
    assert ray.get(OmpActor.remote().omp_threads.remote(), timeout=TIMEOUT) == "1"
    actor = OmpActor.options(num_cpus=3).remote()
    assert ray.get(actor.omp_threads.remote(), timeout=TIMEOUT) == "3"
    ray.kill(actor)                         # its CPUs go to the group
    group = placement_group([{"CPU": 3}])
    ray.get(group.ready(), timeout=TIMEOUT)
    in_group = omp_threads.options(num_cpus=3, scheduling_strategy=(
        PlacementGroupSchedulingStrategy(placement_group=group)))
    assert ray.get(in_group.remote(), timeout=TIMEOUT)[1] == "3"
    remove_placement_group(group)


def test_gpu_and_cpu_work_never_share_a_worker_process():
    """As in Ray (its issue 22504): a worker that ran CPU-only work is not
    given a GPU task, and one that ran GPU work is not given CPU-only work,
    since GPU state set up in a process stays with it."""
    cpu_pids = {r["pid"] for r in ray.get([report.remote() for _ in range(8)])}
    gpu_pids = {r["pid"] for r in ray.get([report.options(num_gpus=1).remote()
                                           for _ in range(8)])}
    assert not cpu_pids & gpu_pids
    cpu_again = {r["pid"] for r in ray.get([report.remote() for _ in range(8)])}
    assert not cpu_again & gpu_pids


@ray.remote(num_gpus=1)
def gpu_pid() -> int:
    return os.getpid()


@ray.remote(num_gpus=1, max_calls=0)
def gpu_pid_reused() -> int:
    return os.getpid()


def test_a_gpu_function_runs_each_call_in_a_fresh_worker():
    """As in Ray: ``@remote(num_gpus>0)`` means ``max_calls=1`` unless given,
    so GPU memory a call leaves behind goes with its process."""
    pids = [ray.get(gpu_pid.remote()) for _ in range(3)]
    assert len(set(pids)) == 3
    kept = [ray.get(gpu_pid_reused.remote()) for _ in range(3)]
    assert len(set(kept)) == 1                 # max_calls=0: no limit
    # The decorator's max_calls holds for calls through .options() too.
    again = [ray.get(gpu_pid.options(num_cpus=0.5).remote()) for _ in range(3)]
    assert len(set(again)) == 3
