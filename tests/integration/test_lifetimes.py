"""Lifetimes as Ray has them: an actor lives while any handle exists or any
call on it is pending; an object lives while any ref, pending task or
containing object needs it."""
from __future__ import annotations

import pytest

import miniray as ray
from miniray import exceptions
from miniray.testing import SignalActor, wait_for_condition
from miniray.util import state


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2)
    yield
    ray.shutdown()


@ray.remote
class Counter:
    def __init__(self, value=0):
        self.value = value

    def inc(self):
        self.value += 1
        return self.value

    def wait_then_inc(self, signal):
        ray.get(signal.wait.remote())
        return self.inc()


def _actor_state(actor_id_hex):
    actors = [a for a in state.list_actors() if a.actor_id == actor_id_hex]
    return actors[0].state if actors else None


def test_temporary_handle_call_completes():
    assert ray.get(Counter.remote(41).inc.remote()) == 42


def test_temporary_handles_in_a_comprehension():
    refs = [Counter.remote(i).inc.remote() for i in range(3)]
    assert ray.get(refs) == [1, 2, 3]


def test_actor_lives_while_a_call_is_pending_then_exits():
    signal = SignalActor.remote()
    counter = Counter.remote(0)
    actor_id = counter._actor_id.hex()
    ref = counter.wait_then_inc.remote(signal)
    del counter                      # only the pending call holds the actor now
    wait_for_condition(lambda: ray.get(signal.cur_num_waiters.remote()) == 1, timeout=30)
    assert _actor_state(actor_id) == "ALIVE"
    ray.get(signal.send.remote())
    assert ray.get(ref, timeout=30) == 1
    # With the call done and no handle left, the actor goes away.
    wait_for_condition(lambda: _actor_state(actor_id) == "DEAD", timeout=30)


def test_handle_passed_to_a_task_and_dropped_by_the_caller():
    @ray.remote
    def use(counter):
        return ray.get(counter.inc.remote())

    assert ray.get(use.remote(Counter.remote(5))) == 6


def test_handle_returned_by_a_task_outlives_the_task():
    @ray.remote
    def make():
        return Counter.remote(10)

    counter = ray.get(make.remote())
    assert ray.get(counter.inc.remote()) == 11


def test_ref_in_a_list_dropped_by_the_caller():
    @ray.remote
    def first(refs):
        return ray.get(refs[0])

    assert ray.get(first.remote([ray.put("payload")])) == "payload"


def test_ref_held_only_by_a_pending_task():
    signal = SignalActor.remote()

    @ray.remote
    def produce(signal):
        ray.get(signal.wait.remote())
        return "made"

    @ray.remote
    def consume(value):
        return value + "!"

    dependency = produce.remote(signal)
    result = consume.remote(dependency)
    del dependency
    ray.get(signal.send.remote())
    assert ray.get(result, timeout=30) == "made!"


def test_ref_returned_inside_a_value():
    @ray.remote
    def wrap():
        return [ray.put("inner")]

    (inner,) = ray.get(wrap.remote())
    assert ray.get(inner) == "inner"


def test_an_actor_never_gets_a_worker_that_ran_tasks():
    # That worker owns the objects its tasks put: they must not die with
    # the actor (Ray starts actors only in workers that never ran a task).
    import os

    @ray.remote
    def put_one():
        return os.getpid(), ray.put("y" * 200_000)      # a store object it owns

    made = ray.get([put_one.remote() for _ in range(4)])
    task_pids = {pid for pid, _ in made}
    # Their leases returned: the task workers are idle in the raylet's pool.
    wait_for_condition(lambda: ray.available_resources().get("CPU") == 2, timeout=30)

    @ray.remote
    class Pid:
        def pid(self):
            return os.getpid()

    actors = [Pid.remote() for _ in range(2)]
    actor_pids = set(ray.get([a.pid.remote() for a in actors], timeout=60))
    assert not actor_pids & task_pids
    for actor in actors:
        ray.kill(actor)
    wait_for_condition(lambda: all(not _alive(pid) for pid in actor_pids), timeout=30)
    assert ray.get([ref for _, ref in made], timeout=30) == ["y" * 200_000] * 4


def _alive(pid):
    import psutil
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_dead_actor_calls_fail_after_kill():
    counter = Counter.remote()
    assert ray.get(counter.inc.remote()) == 1
    ray.kill(counter)
    with pytest.raises(exceptions.RayActorError):
        ray.get(counter.inc.remote(), timeout=30)


@ray.remote
class Keeper:
    def __init__(self):
        self.refs = []

    def keep(self, refs):
        self.refs.extend(refs)

    def values(self):
        return ray.get(self.refs)


@ray.remote
class Creator:
    def make(self, keeper, owned_by_keeper):
        owner = keeper if owned_by_keeper else None
        ref = ray.put("x" * 200_000, _owner=owner)     # a store object
        ray.get(keeper.keep.remote([ref]))


def test_put_with_an_owner_outlives_its_creator():
    keeper, creator = Keeper.remote(), Creator.remote()
    ray.get(creator.make.remote(keeper, True))
    ray.kill(creator)
    assert ray.get(keeper.values.remote(), timeout=30) == ["x" * 200_000]


def test_put_without_an_owner_dies_with_its_creator():
    keeper, creator = Keeper.remote(), Creator.remote()
    ray.get(creator.make.remote(keeper, False))
    ray.kill(creator)
    with pytest.raises(exceptions.RayError):
        ray.get(keeper.values.remote(), timeout=30)


def test_put_owner_must_be_an_actor_handle():
    with pytest.raises(TypeError):
        ray.put(1, _owner="not an actor")


@ray.remote
class Exiter:
    def exit_first(self, counter):
        import sys
        if ray.get(counter.inc.remote()) == 1:
            sys.exit(1)                 # as in Ray: the actor's process ends
        return "survived"


def test_sys_exit_in_a_method_is_an_actor_failure_and_the_call_is_retried():
    counter = Counter.remote()
    actor = Exiter.options(max_restarts=1).remote()
    ref = actor.exit_first.options(max_task_retries=1).remote(counter)
    assert ray.get(ref, timeout=60) == "survived"
    assert ray.get(counter.inc.remote()) == 3          # two attempts ran


def test_sys_exit_without_restarts_kills_the_actor():
    counter = Counter.remote()
    actor = Exiter.remote()
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(actor.exit_first.remote(counter), timeout=60)


def test_builtin_ready_and_call_methods():
    counter = Counter.remote(5)
    assert ray.get(counter.__ray_ready__.remote()) is True
    assert ray.get(counter.__ray_call__.remote(lambda self, n: self.value + n, 2)) == 7

    @ray.remote
    class AsyncCounter:
        def __init__(self):
            self.value = 1

        async def get(self):
            return self.value

    actor = AsyncCounter.remote()
    assert ray.get(actor.__ray_ready__.remote()) is True
    assert ray.get(actor.__ray_call__.remote(lambda self: self.value * 10)) == 10
