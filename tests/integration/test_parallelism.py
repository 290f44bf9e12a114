"""Tasks use the cluster: independent tasks run at the same time on
distinct workers, a short task never waits behind a long one while a CPU
is free, wait() returns what finished first, and a cancelled task that has
not started never runs.

Concurrency is shown without timing: tasks block on a SignalActor until
the test has seen all of them waiting at once, which a runtime that
serialized them could never reach.
"""
from __future__ import annotations

import os
import time

import pytest

import miniray as ray
from miniray import exceptions
from miniray.testing import SignalActor, wait_for_condition

NUM_CPUS = 4


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=NUM_CPUS)
    yield
    ray.shutdown()


@ray.remote
def blocked(signal):
    """Wait for the signal; report which worker ran it and when."""
    start = time.time()
    ray.get(signal.wait.remote())
    return os.getpid(), start, time.time()


@ray.remote
def quick(x=None):
    return os.getpid()


@ray.remote
class Recorder:
    def __init__(self):
        self.seen = []

    def record(self, name):
        self.seen.append(name)

    def get(self):
        return self.seen


@ray.remote
def recorded(recorder, name):
    ray.get(recorder.record.remote(name))
    return name


def _wait_for_waiters(signal, count, timeout=30):
    wait_for_condition(lambda: ray.get(signal.cur_num_waiters.remote()) >= count,
                       timeout=timeout)


def test_parallel_tasks_run_at_once_on_distinct_workers(cluster):
    signal = SignalActor.remote()
    refs = [blocked.remote(signal) for _ in range(NUM_CPUS)]
    # All four are waiting at the same time: they hold four workers at once.
    _wait_for_waiters(signal, NUM_CPUS)
    ray.get(signal.send.remote())
    results = ray.get(refs, timeout=30)
    assert len({pid for pid, _, _ in results}) == NUM_CPUS
    assert max(s for _, s, _ in results) < min(e for _, _, e in results)


def test_short_tasks_do_not_wait_behind_a_long_one(cluster):
    signal = SignalActor.remote()
    long = blocked.remote(signal)
    _wait_for_waiters(signal, 1)
    # The long task still holds its worker; six short ones all finish.
    pids = ray.get([quick.remote() for _ in range(6)], timeout=30)
    ready, _ = ray.wait([long], timeout=0)
    assert ready == []
    ray.get(signal.send.remote())
    long_pid, _, _ = ray.get(long, timeout=30)
    assert long_pid not in pids


def test_wait_returns_what_finished_first(cluster):
    signal = SignalActor.remote()
    slow = blocked.remote(signal)
    fast = quick.remote()
    ready, not_ready = ray.wait([slow, fast], num_returns=1, timeout=30)
    assert ready == [fast] and not_ready == [slow]
    ray.get(signal.send.remote())
    ray.get(slow, timeout=30)


@ray.remote
def spinning(gate: str):
    """Hold a CPU until ``gate`` exists. No ``get``: a worker blocked in
    ``get`` lends its CPU back (as in Ray), which would let queued tasks run."""
    with open(f"{gate}.{os.getpid()}", "w"):
        pass
    while not os.path.exists(gate):
        time.sleep(0.01)
    return os.getpid()


def test_cancel_of_a_queued_task_fails_at_once_and_it_never_runs(cluster, tmp_path):
    recorder = Recorder.remote()
    ray.get(recorder.get.remote())           # the actor holds no CPU once up
    gate = str(tmp_path / "gate")
    blockers = [spinning.remote(gate) for _ in range(NUM_CPUS)]
    wait_for_condition(lambda: len(list(tmp_path.glob("gate.*"))) == NUM_CPUS,
                       timeout=30)
    queued = recorded.remote(recorder, "queued")
    ray.cancel(queued)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(queued, timeout=10)
    open(gate, "w").close()
    ray.get(blockers, timeout=30)
    # Whatever was queued has had its chance to run by now.
    assert ray.get(recorded.remote(recorder, "after"), timeout=30) == "after"
    assert ray.get(recorder.get.remote()) == ["after"]


def test_a_default_actor_starts_while_every_cpu_is_busy(cluster, tmp_path):
    # Ray's rule: an actor that names no resources needs a CPU on its node
    # to be placed there but holds none while it lives, so it starts now;
    # one that asks for a CPU waits for a task to give one back.
    gate = str(tmp_path / "gate")
    hogs = [spinning.remote(gate) for _ in range(NUM_CPUS)]
    wait_for_condition(lambda: len(list(tmp_path.glob("gate.*"))) == NUM_CPUS,
                       timeout=30)

    @ray.remote
    class Plain:
        def ping(self):
            return "pong"

    assert ray.get(Plain.remote().ping.remote(), timeout=30) == "pong"
    waiting = Plain.options(num_cpus=1).remote().ping.remote()
    ready, _ = ray.wait([waiting], timeout=1.0)
    assert not ready                     # every CPU is still taken
    open(gate, "w").close()
    ray.get(hogs, timeout=30)
    assert ray.get(waiting, timeout=30) == "pong"


def test_cancel_of_a_task_waiting_for_its_arguments(cluster):
    signal = SignalActor.remote()
    recorder = Recorder.remote()
    dependency = blocked.remote(signal)
    waiting = recorded.remote(recorder, dependency)
    ray.cancel(waiting)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(waiting, timeout=10)
    ray.get(signal.send.remote())
    ray.get(dependency, timeout=30)
    assert ray.get(recorder.get.remote()) == []


def test_force_cancel_kills_the_worker_and_the_node_carries_on(cluster):
    signal = SignalActor.remote()
    running = blocked.remote(signal)
    _wait_for_waiters(signal, 1)
    ray.cancel(running, force=True)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(running, timeout=10)
    assert len(set(ray.get([quick.remote() for _ in range(8)], timeout=30))) >= 1
    ray.get(signal.send.remote())


def test_cancel_recursive_reaches_children(cluster):
    signal = SignalActor.remote()
    recorder = Recorder.remote()

    @ray.remote
    def parent(signal, recorder):
        children = [blocked.remote(signal) for _ in range(2)]
        ray.get(children)

    ref = parent.remote(signal, recorder)
    _wait_for_waiters(signal, 2)
    ray.cancel(ref, recursive=True)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=10)
    # The children were cancelled: nobody waits on the signal any more.
    wait_for_condition(lambda: ray.get(signal.cur_num_waiters.remote()) == 0, timeout=20)


def test_lease_reuse_still_runs_many_tasks_on_few_workers(cluster):
    """Lease reuse is invisible: a stream of tasks completes, in any order."""
    results = ray.get([quick.remote(i) for i in range(200)], timeout=60)
    assert len(results) == 200
    assert len(set(results)) <= NUM_CPUS + 2


@ray.remote
class Sequential:
    def __init__(self):
        self.ran = []

    def block(self, signal):
        ray.get(signal.wait.remote())
        self.ran.append("block")

    def step(self, name):
        self.ran.append(name)
        return name

    def history(self):
        return self.ran


def test_cancel_of_a_queued_actor_call_never_runs_it(cluster):
    signal = SignalActor.remote()
    actor = Sequential.remote()
    first = actor.block.remote(signal)
    _wait_for_waiters(signal, 1)
    queued = actor.step.remote("queued")       # waits behind the blocked call
    ray.cancel(queued)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(queued, timeout=10)
    ray.get(signal.send.remote())
    ray.get(first, timeout=30)
    assert ray.get(actor.step.remote("after")) == "after"
    assert ray.get(actor.history.remote()) == ["block", "after"]


def test_force_cancel_of_an_actor_call_is_refused(cluster):
    actor = Sequential.remote()
    ref = actor.step.remote("x")
    with pytest.raises(ValueError, match="force=True is not supported for actor tasks"):
        ray.cancel(ref, force=True)
    assert ray.get(ref) == "x"


def test_max_calls_retires_the_worker(cluster):
    @ray.remote(max_calls=1)
    def pid():
        return os.getpid()

    pids = [ray.get(pid.remote()) for _ in range(3)]
    assert len(set(pids)) == 3            # a fresh worker each time
    with pytest.raises(ValueError):
        pid.options(max_calls=2)


def test_max_calls_worker_outlives_the_objects_it_owns(cluster):
    """As in Ray: a max_calls worker that returned a ref it owns (a task it
    submitted) stays up, taking no more tasks, until that ref is released;
    then it exits."""
    import gc

    @ray.remote
    def child():
        time.sleep(0.2)
        return "child"

    @ray.remote(max_calls=1, max_retries=0)
    def parent():
        return os.getpid(), child.remote()

    def alive(pid):
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False

    pid, ref = ray.get(parent.remote())
    assert ray.get(ref, timeout=30) == "child"      # its owner is still there
    assert alive(pid)
    del ref
    gc.collect()
    wait_for_condition(lambda: not alive(pid), timeout=30)


def test_a_worker_that_died_while_its_lease_was_idle_costs_no_retry(cluster):
    import signal as signals

    @ray.remote(max_retries=0)
    def pid():
        return os.getpid()

    first = ray.get(pid.remote())
    os.kill(first, signals.SIGKILL)          # its lease is idle, kept for reuse
    # The next task must not be pushed to the dead worker and fail with
    # WorkerCrashedError (it has no retries): it gets a live worker.
    wait_for_condition(lambda: not _alive(first), timeout=10)
    assert ray.get(pid.remote(), timeout=30) != first


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@ray.remote
def _leaf():
    return os.getpid()


@ray.remote
def _middle():
    return os.getpid(), ray.get(_leaf.remote())


@ray.remote
def _top():
    return (os.getpid(), *ray.get(_middle.remote()))


def test_nested_blocking_tasks_take_turns_instead_of_a_worker_each(cluster):
    # Ray's fair queueing (test_basic_4::test_fair_queueing): each _top
    # blocks on a _middle, which blocks on a _leaf. The CPUs a blocked task
    # lends go to the deeper classes, not to more _top tasks: those are
    # capped at what the node's CPUs hold, so 200 of them reuse a few
    # workers instead of starting one per queued task (which FIFO did).
    results = ray.get([_top.remote() for _ in range(200)], timeout=120)
    assert len(results) == 200
    workers = {pid for triple in results for pid in triple}
    assert len(workers) <= 4 * NUM_CPUS, len(workers)
