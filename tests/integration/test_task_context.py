"""The runtime context is per call: right in sync tasks, threaded actors and
async actors with many interleaved calls."""
from __future__ import annotations

import asyncio
import threading

import pytest

import miniray as ray
from miniray.testing import SignalActor, wait_for_condition
from miniray.util import get_current_placement_group, placement_group
from miniray.util.scheduling_strategies import PlacementGroupSchedulingStrategy


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=4)
    yield
    ray.shutdown()


@ray.remote
def task_id_of_self():
    return ray.get_runtime_context().get_task_id()


@ray.remote
def noop():
    return "ok"


def test_driver_context():
    context = ray.get_runtime_context()
    assert context.get_task_id() is None
    assert context.get_placement_group_id() is None
    assert context.get_actor_id() is None
    assert get_current_placement_group() is None
    assert len(context.get_job_id()) > 0 and len(context.get_node_id()) == 56


def test_sync_task_sees_its_own_task_id():
    refs = [task_id_of_self.remote() for _ in range(4)]
    assert ray.get(refs) == [ref.task_id().hex() for ref in refs]


def test_async_actor_interleaved_calls_each_see_their_own_context():
    @ray.remote
    class AsyncActor:
        async def call(self, signal):
            context = ray.get_runtime_context()
            before = context.get_task_id()
            await signal.wait.remote()          # every call is suspended here
            after = context.get_task_id()
            nested = await noop.remote()        # .remote() from a coroutine
            return before, after, nested, context.get_actor_id()

    actor = AsyncActor.remote()
    signal = SignalActor.remote()
    refs = [actor.call.remote(signal) for _ in range(5)]
    wait_for_condition(lambda: ray.get(signal.cur_num_waiters.remote()) == 5, timeout=30)
    ray.get(signal.send.remote())
    results = ray.get(refs, timeout=30)
    for ref, (before, after, nested, actor_id) in zip(refs, results):
        assert before == after == ref.task_id().hex()
        assert nested == "ok"
        assert actor_id == actor._actor_id.hex()


def test_get_inside_an_async_method():
    @ray.remote
    class AsyncActor:
        async def call(self):
            await asyncio.sleep(0)
            return ray.get(noop.remote())

    assert ray.get(AsyncActor.remote().call.remote(), timeout=30) == "ok"


def test_threaded_actor_calls_each_see_their_own_task_id():
    @ray.remote(max_concurrency=4)
    class Threaded:
        def __init__(self):
            self.barrier = threading.Barrier(4, timeout=30)

        def call(self):
            before = ray.get_runtime_context().get_task_id()
            self.barrier.wait()                 # four calls in four threads at once
            return before, ray.get_runtime_context().get_task_id()

    actor = Threaded.remote()
    refs = [actor.call.remote() for _ in range(4)]
    for ref, (before, after) in zip(refs, ray.get(refs, timeout=30)):
        assert before == after == ref.task_id().hex()


def test_concurrency_group_calls_see_their_own_task_id():
    @ray.remote(concurrency_groups={"io": 2})
    class Grouped:
        @ray.method(concurrency_group="io")
        def call(self):
            return ray.get_runtime_context().get_task_id()

    actor = Grouped.remote()
    refs = [actor.call.remote() for _ in range(4)]
    assert ray.get(refs, timeout=30) == [ref.task_id().hex() for ref in refs]


def test_placement_group_in_tasks_actors_and_captured_children():
    group = placement_group([{"CPU": 1}, {"CPU": 1}])
    ray.get(group.ready(), timeout=30)

    @ray.remote
    def where():
        context = ray.get_runtime_context()
        current = get_current_placement_group()
        return (context.get_placement_group_id(),
                current.id.hex() if current else None,
                context.should_capture_child_tasks_in_placement_group)

    @ray.remote
    def parent():
        return ray.get(where.remote())

    @ray.remote
    class InGroup:
        def where(self):
            return ray.get_runtime_context().get_placement_group_id()

    pg_hex = group.id.hex()
    plain = PlacementGroupSchedulingStrategy(group)
    capture = PlacementGroupSchedulingStrategy(group, placement_group_capture_child_tasks=True)
    assert ray.get(where.options(scheduling_strategy=plain).remote()) == (pg_hex, pg_hex, False)
    assert ray.get(where.remote()) == (None, None, False)
    # A child of a capturing task runs in the group too; otherwise it does not.
    assert ray.get(parent.options(scheduling_strategy=capture).remote()) == \
        (pg_hex, pg_hex, True)
    assert ray.get(parent.options(scheduling_strategy=plain).remote()) == (None, None, False)
    actor = InGroup.options(scheduling_strategy=plain, num_cpus=1).remote()
    assert ray.get(actor.where.remote()) == pg_hex
    ray.kill(actor)


def test_older_placement_group_options_still_place_the_task():
    group = placement_group([{"CPU": 1}])
    ray.get(group.ready(), timeout=30)

    @ray.remote
    def where():
        return ray.get_runtime_context().get_placement_group_id()

    assert ray.get(where.options(placement_group=group).remote()) == group.id.hex()
    assert ray.get(where.options(placement_group=group,
                                 placement_group_bundle_index=0).remote()) == group.id.hex()
    with pytest.raises(ValueError):
        where.options(placement_group=group,
                      scheduling_strategy=PlacementGroupSchedulingStrategy(group)).remote()


def test_deprecated_id_properties_and_get_dict():
    import warnings
    context = ray.get_runtime_context()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert context.job_id.hex() == context.get_job_id()
        assert context.node_id.hex() == context.get_node_id()
        assert context.task_id is None and context.actor_id is None
    assert any("Use get_job_id() instead" in str(w.message) for w in caught)
    info = context.get()
    assert "task_id" not in info and "actor_id" not in info
    assert info["job_id"] == context.job_id

    @ray.remote
    class Actor:
        def ids(self):
            info = ray.get_runtime_context().get()
            return info["task_id"].hex(), info["actor_id"].hex()

    actor = Actor.remote()
    ref = actor.ids.remote()
    assert ray.get(ref) == (ref.task_id().hex(), actor._actor_id.hex())


@ray.remote
def _pong():
    return "pong"


@ray.remote
class _Pinger:
    def ping(self):
        return "pong"


@ray.remote
def _ids_of_what_a_task_makes(use_a_thread):
    import warnings
    found = []

    def collect():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            task_id = ray.get_runtime_context().task_id
        actor = _Pinger.remote()
        found.extend([task_id.job_id(), _pong.remote().job_id(), ray.put(1).job_id(),
                      actor._actor_id.job_id, actor.ping.remote().job_id()])

    if use_a_thread:
        thread = threading.Thread(target=collect)
        thread.start()
        thread.join()
    else:
        collect()
    return [job_id.hex() for job_id in found]


@pytest.mark.parametrize("use_a_thread", [False, True])
def test_everything_a_task_makes_carries_the_job_id(use_a_thread):
    job = ray.get_runtime_context().get_job_id()
    assert ray.get(_ids_of_what_a_task_makes.remote(use_a_thread)) == [job] * 5


@ray.remote
def function_name_of_self():
    return ray.get_runtime_context().get_task_function_name()


@ray.remote
class Described:
    def __init__(self):
        self.at_init = ray.get_runtime_context().get_task_function_name()

    def names(self):
        return self.at_init, ray.get_runtime_context().get_task_function_name()

    async def later(self):
        await asyncio.sleep(0)
        return ray.get_runtime_context().get_task_function_name()


def test_task_function_name_is_module_and_qualified_name():
    """Ray's get_task_function_name: <module>.<function>, or
    <module>.<Class>.<method> in an actor (its creation: __init__), whatever
    name the call was given; None in the driver."""
    module = __name__
    assert ray.get_runtime_context().get_task_function_name() is None
    assert ray.get(function_name_of_self.options(name="renamed").remote()) == \
        f"{module}.function_name_of_self"
    actor = Described.remote()
    assert ray.get(actor.names.remote()) == (f"{module}.Described.__init__",
                                             f"{module}.Described.names")
    assert ray.get(actor.later.remote()) == f"{module}.Described.later"
