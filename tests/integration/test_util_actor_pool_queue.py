"""miniray.util.actor_pool.ActorPool and miniray.util.queue.Queue.

Both utilities only use the public runtime API through the module-level name
``ray`` of their modules. The tests run them on the backend named by
MINIRAY_TEST_BACKEND:

* ``miniray`` (default): the miniray runtime;
* ``ray``: real Ray. The ``ray`` name inside both utility modules is patched to
  the real ``ray`` module, in this process and (through a worker setup hook)
  in every Ray worker, since queues are also used from tasks and actors.
  Useful to check the utilities against the reference runtime.
"""
from __future__ import annotations

import asyncio
import os
import queue as stdlib_queue
import sys
import time

import pytest

import miniray
from miniray.util import actor_pool as actor_pool_module
from miniray.util import queue as queue_module
from miniray.util.actor_pool import ActorPool
from miniray.util.queue import Empty, Full, Queue

pytestmark = pytest.mark.timeout(120)

BACKEND = os.environ.get("MINIRAY_TEST_BACKEND", "miniray")

# Upper bound for calls that should return promptly; never reached when the
# code under test works.
LONG = 30


@pytest.fixture(scope="module")
def ray():
    """The runtime module the utilities use, initialized with 2 CPUs."""
    if BACKEND == "ray":
        import ray as real_ray

        # Runs in every Ray worker before it runs anything.
        def _use_real_ray_in_util_modules():
            import ray as worker_ray

            from miniray.util import actor_pool, queue

            actor_pool.ray = worker_ray
            queue.ray = worker_ray

        # Ray workers cannot import this test module (its directory is not
        # on their sys.path): ship its classes and functions by value.
        this_module = sys.modules[__name__]
        real_ray.cloudpickle.register_pickle_by_value(this_module)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(actor_pool_module, "ray", real_ray)
            mp.setattr(queue_module, "ray", real_ray)
            real_ray.init(
                num_cpus=2, include_dashboard=False,
                runtime_env={
                    "worker_process_setup_hook": _use_real_ray_in_util_modules,
                })
            try:
                yield real_ray
            finally:
                real_ray.shutdown()
                real_ray.cloudpickle.unregister_pickle_by_value(this_module)
    elif BACKEND == "miniray":
        miniray.init(num_cpus=2)
        try:
            yield miniray
        finally:
            miniray.shutdown()
    else:
        raise ValueError(f"MINIRAY_TEST_BACKEND={BACKEND!r}: use ray or miniray")


# --------------------------------------------------------------------------
# Remote classes and functions (wrapped with the backend's ``remote``)
# --------------------------------------------------------------------------

class _Worker:
    def double(self, v):
        return 2 * v

    def scrambled_double(self, v):
        # Finish out of submission order: small values take longest.
        time.sleep(0.01 * (9 - v % 10))
        return 2 * v

    def double_unless(self, v, bad):
        if v == bad:
            raise ValueError(f"bad value {v}")
        return 2 * v

    def double_after_go(self, v, gate):
        """Returns 2*v once the driver puts something into ``gate``."""
        gate.get(timeout=LONG)
        return 2 * v

    def die(self, v):
        os._exit(1)


class _Consumer:
    def take(self, q, n):
        return [q.get(timeout=LONG) for _ in range(n)]


def _produce(q, n):
    for i in range(n):
        q.put(i)
    return n


def _put_blocking(q, item):
    q.put(item)
    return True


@pytest.fixture(scope="module")
def Worker(ray):
    return ray.remote(_Worker)


@pytest.fixture(scope="module")
def actors(Worker):
    """Two actors shared by the tests (starting actors is slow)."""
    return [Worker.remote(), Worker.remote()]


@pytest.fixture
def pool(ray, actors):
    yield ActorPool(actors)
    # Leave the actors idle for the next test (calls a test gave up on
    # finish first: actor calls run in order).
    assert ray.get([a.double.remote(1) for a in actors], timeout=LONG) == [2, 2]


def double(actor, v):
    return actor.double.remote(v)


def gated(gate):
    return lambda actor, v: actor.double_after_go.remote(v, gate)


# --------------------------------------------------------------------------
# ActorPool
# --------------------------------------------------------------------------

def test_map_is_ordered(pool):
    results = pool.map(lambda a, v: a.scrambled_double.remote(v), range(10))
    assert list(results) == [2 * v for v in range(10)]
    assert not pool.has_next()
    assert pool.has_free()


def test_map_unordered_yields_every_result(pool):
    results = list(pool.map_unordered(
        lambda a, v: a.scrambled_double.remote(v), range(10)))
    assert sorted(results) == [2 * v for v in range(10)]
    assert not pool.has_next()
    assert pool.has_free()


def test_map_unordered_yields_ready_results_first(pool):
    gate = Queue()

    def fn(actor, v):  # 0 waits for the gate; the rest run right away
        if v == 0:
            return actor.double_after_go.remote(v, gate)
        return actor.double.remote(v)

    results = pool.map_unordered(fn, [0, 1, 2])
    assert [next(results), next(results)] == [2, 4]
    gate.put("go")
    assert list(results) == [0]


def test_empty_pool_iteration(pool):
    assert not pool.has_next()
    with pytest.raises(StopIteration, match="No more results to get"):
        pool.get_next()
    with pytest.raises(StopIteration, match="No more results to get"):
        pool.get_next_unordered()
    assert list(pool.map(double, [])) == []
    assert list(pool.map_unordered(double, [])) == []


def test_submit_queues_work_until_an_actor_is_free(pool):
    for v in range(5):
        pool.submit(double, v)
    assert pool.has_next()
    assert not pool.has_free()  # both actors busy, three calls waiting
    assert pool.pop_idle() is None
    assert [pool.get_next() for _ in range(5)] == [0, 2, 4, 6, 8]
    assert not pool.has_next()
    assert pool.has_free()
    with pytest.raises(StopIteration, match="No more results to get"):
        pool.get_next()


def test_submit_and_get_next_unordered(pool):
    for v in range(6):
        pool.submit(double, v)
    results = []
    while pool.has_next():
        results.append(pool.get_next_unordered())
    assert sorted(results) == [0, 2, 4, 6, 8, 10]
    with pytest.raises(StopIteration, match="No more results to get"):
        pool.get_next_unordered()


def test_get_next_unordered_returns_the_ready_result_first(pool):
    gate = Queue()
    pool.submit(gated(gate), 1)   # blocked until the gate opens
    pool.submit(double, 2)
    assert pool.get_next_unordered(timeout=LONG) == 4
    # The ordered result #0 was overtaken by #1: get_next cannot continue.
    with pytest.raises(ValueError, match="get_next_unordered"):
        pool.get_next()
    gate.put("go")
    assert pool.get_next_unordered(timeout=LONG) == 2
    assert not pool.has_next()


def test_get_next_waits_for_results_in_order(pool):
    gate = Queue()
    pool.submit(gated(gate), 1)
    pool.submit(double, 2)
    with pytest.raises(TimeoutError) as info:
        pool.get_next(timeout=0.2)
    assert type(info.value) is TimeoutError
    assert "Timed out waiting for result" in str(info.value)
    assert pool.has_next()  # not ignored: still the next result
    gate.put("go")
    assert pool.get_next(timeout=LONG) == 2
    assert pool.get_next() == 4
    assert not pool.has_next()


def test_get_next_timeout_with_ignore_drops_the_task(pool, actors):
    gate = Queue()
    pool.submit(gated(gate), 1)
    pool.submit(double, 2)
    with pytest.raises(TimeoutError, match="has been ignored") as info:
        pool.get_next(timeout=0.2, ignore_if_timedout=True)
    assert type(info.value) is TimeoutError
    assert pool.get_next() == 4  # the dropped task no longer comes first
    assert not pool.has_next()
    # Both actors are back in the pool (one still finishing the dropped call).
    popped = [pool.pop_idle(), pool.pop_idle()]
    assert pool.pop_idle() is None
    assert set(popped) == set(actors)
    gate.put("go")


def test_get_next_unordered_timeout(pool):
    gate = Queue()
    pool.submit(gated(gate), 1)
    with pytest.raises(TimeoutError) as info:
        pool.get_next_unordered(timeout=0.2)
    assert type(info.value) is TimeoutError
    assert pool.has_next()
    gate.put("go")
    assert pool.get_next_unordered(timeout=LONG) == 2


def test_get_next_unordered_timeout_with_ignore(pool):
    gate = Queue()
    pool.submit(gated(gate), 1)
    with pytest.raises(TimeoutError, match="has been ignored"):
        pool.get_next_unordered(timeout=0.2, ignore_if_timedout=True)
    assert not pool.has_next()
    assert pool.has_free()
    gate.put("go")
    # The actor of the dropped call is usable again.
    assert sorted(pool.map_unordered(double, [1, 2, 3])) == [2, 4, 6]


def test_pop_idle_and_push(actors):
    a1, a2 = actors
    pool = ActorPool([a1])
    pool.submit(double, 1)
    assert not pool.has_free()
    assert pool.pop_idle() is None
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(a1)  # busy member
    assert pool.get_next() == 2
    assert pool.has_free()
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(a1)  # idle member
    assert pool.pop_idle() == a1
    assert not pool.has_free()
    assert pool.pop_idle() is None

    # No actor at all: the submission waits; push() starts it.
    pool.submit(double, 5)
    assert not pool.has_next()
    pool.push(a2)
    assert pool.has_next()
    assert pool.get_next(timeout=LONG) == 10
    pool.push(a1)
    assert list(pool.map(double, range(4))) == [0, 2, 4, 6]
    assert {pool.pop_idle(), pool.pop_idle()} == {a1, a2}


def test_task_error_is_raised_and_pool_keeps_working(pool, actors):
    for v in range(6):
        pool.submit(lambda a, v: a.double_unless.remote(v, 3), v)
    assert [pool.get_next() for _ in range(3)] == [0, 2, 4]
    with pytest.raises(ValueError, match="bad value 3"):
        pool.get_next()
    assert [pool.get_next() for _ in range(2)] == [8, 10]
    assert not pool.has_next()
    # The actor whose call failed went back to the pool.
    assert {pool.pop_idle(), pool.pop_idle()} == set(actors)
    for actor in actors:
        pool.push(actor)

    results = pool.map(lambda a, v: a.double_unless.remote(v, 1), range(4))
    assert next(results) == 0
    with pytest.raises(ValueError, match="bad value 1"):
        next(results)
    # A new map discards what the failed one left behind.
    assert list(pool.map(double, range(4))) == [0, 2, 4, 6]
    assert {pool.pop_idle(), pool.pop_idle()} == set(actors)


def test_unordered_error_is_raised_and_pool_keeps_working(pool):
    results = []
    errors = 0
    for v in range(4):
        pool.submit(lambda a, v: a.double_unless.remote(v, 2), v)
    while pool.has_next():
        try:
            results.append(pool.get_next_unordered())
        except ValueError:
            errors += 1
    assert errors == 1
    assert sorted(results) == [0, 2, 6]
    assert pool.has_free()


def test_dead_actor_leaves_the_pool(ray, Worker):
    a1, a2 = Worker.remote(), Worker.remote()
    pool = ActorPool([a1, a2])
    assert ray.get([a1.double.remote(0), a2.double.remote(0)]) == [0, 0]
    pool.submit(lambda a, v: a.die.remote(v), 0)
    with pytest.raises(ray.exceptions.ActorDiedError):
        pool.get_next(timeout=LONG)
    assert pool.has_free()
    survivor = pool.pop_idle()
    assert survivor in (a1, a2)
    assert pool.pop_idle() is None
    pool.push(survivor)
    assert list(pool.map(double, range(3))) == [0, 2, 4]


def test_map_discards_uncollected_results(pool):
    pool.submit(double, 100)
    pool.submit(double, 200)
    pool.submit(double, 300)  # still waiting for an actor
    assert list(pool.map(double, [1, 2])) == [2, 4]
    assert not pool.has_next()


def test_fn_may_return_a_list_of_refs(pool):
    def two_calls(actor, v):
        return [actor.double.remote(v), actor.double.remote(v + 1)]

    assert list(pool.map(two_calls, [1, 3])) == [[2, 4], [6, 8]]
    assert sorted(pool.map_unordered(two_calls, [1, 3])) == [[2, 4], [6, 8]]


# --------------------------------------------------------------------------
# Queue
# --------------------------------------------------------------------------

def test_exceptions_subclass_the_stdlib_queue_ones():
    assert issubclass(Empty, stdlib_queue.Empty)
    assert issubclass(Full, stdlib_queue.Full)


def test_put_get_fifo_and_sizes(ray):
    q = Queue()
    assert q.empty() and not q.full()
    assert len(q) == q.size() == q.qsize() == 0
    for i in range(5):
        q.put(i)
    assert len(q) == q.size() == q.qsize() == 5
    assert not q.empty() and not q.full()  # unbounded: never full
    assert [q.get() for _ in range(5)] == list(range(5))
    assert q.empty()
    q.put({"a": [1, 2]})
    assert q.get(timeout=LONG) == {"a": [1, 2]}


def test_bounded_queue_put_full_and_timeouts(ray):
    q = Queue(maxsize=2)
    q.put(1)
    q.put_nowait(2)
    assert q.full() and q.qsize() == 2
    with pytest.raises(Full):
        q.put_nowait(3)
    with pytest.raises(Full):
        q.put(3, block=False)
    start = time.monotonic()
    with pytest.raises(Full):
        q.put(3, timeout=0.2)
    assert time.monotonic() - start >= 0.15
    with pytest.raises(Full):
        q.put(3, timeout=0)
    assert q.qsize() == 2
    assert [q.get(), q.get()] == [1, 2]


def test_get_empty_and_timeouts(ray):
    q = Queue()
    with pytest.raises(Empty):
        q.get_nowait()
    with pytest.raises(Empty):
        q.get(block=False)
    start = time.monotonic()
    with pytest.raises(Empty):
        q.get(timeout=0.2)
    assert time.monotonic() - start >= 0.15
    with pytest.raises(Empty):
        q.get(timeout=0)
    with pytest.raises(stdlib_queue.Empty):
        q.get_nowait()
    q.put("x")
    assert q.get_nowait() == "x"
    q.put("y")
    assert q.get(block=False) == "y"


def test_zero_timeout_succeeds_when_possible(ray):
    q = Queue(maxsize=1)
    q.put("a", timeout=0)
    assert q.get(timeout=0) == "a"


def test_negative_timeout_is_rejected(ray):
    q = Queue()
    with pytest.raises(ValueError, match="non-negative"):
        q.put(1, timeout=-1)
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-1)
    assert q.empty()
    # Without blocking the timeout is ignored.
    q.put(1, block=False, timeout=-1)
    assert q.get(block=False, timeout=-1) == 1


def test_batches_are_all_or_nothing(ray):
    q = Queue(maxsize=3)
    q.put_nowait_batch([1, 2])
    with pytest.raises(Full, match="Cannot add 2 items"):
        q.put_nowait_batch([3, 4])
    assert q.qsize() == 2
    q.put_nowait_batch(x for x in [3])  # any iterable
    assert q.full()
    with pytest.raises(Empty, match="Cannot get 4 items"):
        q.get_nowait_batch(4)
    assert q.qsize() == 3
    assert q.get_nowait_batch(0) == []
    assert q.get_nowait_batch(3) == [1, 2, 3]
    assert q.empty()
    with pytest.raises(Empty):
        q.get_nowait_batch(1)

    with pytest.raises(TypeError):
        q.put_nowait_batch(5)
    with pytest.raises(TypeError):
        q.get_nowait_batch("2")
    with pytest.raises(ValueError):
        q.get_nowait_batch(-1)

    unbounded = Queue()
    unbounded.put_nowait_batch(range(100))
    assert unbounded.get_nowait_batch(100) == list(range(100))


def test_async_put_and_get(ray):
    q = Queue(maxsize=2)

    async def main():
        await q.put_async(1)
        await q.put_async(2, block=False)
        with pytest.raises(Full):
            await q.put_async(3, block=False)
        with pytest.raises(Full):
            await q.put_async(3, timeout=0.2)
        with pytest.raises(ValueError):
            await q.put_async(3, timeout=-1)
        assert await q.get_async() == 1
        assert await q.get_async(block=False) == 2
        with pytest.raises(Empty):
            await q.get_async(block=False)
        with pytest.raises(Empty):
            await q.get_async(timeout=0.2)
        with pytest.raises(ValueError):
            await q.get_async(timeout=-1)
        # Concurrent waiters in one event loop.
        getter = asyncio.ensure_future(q.get_async(timeout=LONG))
        await q.put_async("late")
        assert await getter == "late"

    asyncio.run(main())


def test_blocking_get_is_woken_by_a_task_put(ray):
    produce = ray.remote(_produce)
    q = Queue()
    ref = produce.remote(q, 10)
    assert [q.get(timeout=LONG) for _ in range(10)] == list(range(10))
    assert ray.get(ref) == 10
    assert q.empty()


def test_blocking_put_waits_for_room(ray):
    put_blocking = ray.remote(_put_blocking)
    q = Queue(maxsize=1)
    q.put("a")
    ref = put_blocking.remote(q, "b")
    ready, _ = ray.wait([ref], timeout=0.2)
    assert not ready  # blocked on the full queue
    assert q.get(timeout=LONG) == "a"
    assert ray.get(ref) is True
    assert q.get(timeout=LONG) == "b"


def test_queue_passed_to_an_actor(ray):
    consumer = ray.remote(_Consumer).remote()
    q = Queue()
    ref = consumer.take.remote(q, 3)
    q.put_nowait_batch(["x", "y", "z"])
    assert ray.get(ref) == ["x", "y", "z"]
    # A queue created inside a task comes back usable by the driver.
    q2 = ray.get(ray.remote(_filled_queue).remote([7, 8]))
    assert q2.get_nowait_batch(2) == [7, 8]


def _filled_queue(items):
    q = Queue()
    q.put_nowait_batch(items)
    return q


def test_actor_options(ray):
    q = Queue(maxsize=1, actor_options={"num_cpus": 0})
    q.put(1)
    assert q.full()
    assert q.get() == 1
    q.shutdown()


@pytest.mark.parametrize("force", [False, True])
def test_shutdown(ray, force):
    q = Queue()
    q.put(1)
    handle = q.actor
    q.shutdown(force=force, grace_period_s=LONG)
    assert q.actor is None
    q.shutdown()  # no-op once shut down
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(handle.qsize.remote(), timeout=LONG)
