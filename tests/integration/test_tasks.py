"""Tasks and objects on a real single-node cluster (GCS, raylet, workers)."""
from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest

import miniray as ray
from miniray import exceptions
from miniray.testing import SignalActor, wait_for_condition

pytestmark = pytest.mark.usefixtures("ray_start")


@ray.remote
def echo(x):
    return x


@ray.remote
def add(a, b=0, *, c=0):
    return a + b + c


def test_simple_task_and_args():
    assert ray.get(echo.remote(1)) == 1
    assert ray.get(add.remote(1, 2)) == 3
    assert ray.get(add.remote(1, b=2, c=3)) == 6
    assert ray.get([echo.remote(i) for i in range(50)]) == list(range(50))


def test_object_ref_arguments_are_resolved():
    ref = ray.put(20)
    assert ray.get(add.remote(ref, echo.remote(22))) == 42
    # A chain of dependent tasks.
    value = echo.remote(0)
    for _ in range(10):
        value = add.remote(value, 1)
    assert ray.get(value) == 10


def test_nested_refs_are_not_resolved():
    inner = ray.put("inner")

    @ray.remote
    def unwrap(refs):
        assert isinstance(refs[0], ray.ObjectRef)
        return ray.get(refs[0])

    assert ray.get(unwrap.remote([inner])) == "inner"


def test_object_ref_api():
    ref = ray.put(5)
    assert isinstance(ref.hex(), str) and len(ref.hex()) == 56
    assert ref == ref and hash(ref) == hash(ref)
    assert repr(ref).startswith("ObjectRef(")
    assert ref.future().result(timeout=10) == 5

    async def main():
        return await echo.remote(7)

    assert asyncio.run(main()) == 7


def test_large_numpy_zero_copy():
    array = np.arange(5_000_000, dtype=np.float64)
    ref = ray.put(array)
    out = ray.get(ref)
    assert not out.flags.writeable
    assert np.array_equal(out, array)
    # Two gets share the same shared-memory pages, not copies.
    again = ray.get(ref)
    assert out.ctypes.data != 0 and np.shares_memory(out, out)
    assert again.sum() == array.sum()

    @ray.remote
    def total(a):
        assert not a.flags.writeable
        return float(a.sum())

    assert ray.get(total.remote(ref)) == float(array.sum())
    # A large argument passed by value is stored in shared memory too.
    assert ray.get(total.remote(array)) == float(array.sum())


def test_large_return_value():
    @ray.remote
    def make(n):
        return np.ones(n, dtype=np.uint8)

    out = ray.get(make.remote(10 * 1024 * 1024))
    assert out.shape == (10 * 1024 * 1024,) and out.sum() == 10 * 1024 * 1024


def test_application_error_is_instance_of_cause():
    class MyError(ValueError):
        pass

    @ray.remote
    def fail():
        raise MyError("boom")

    with pytest.raises(MyError) as info:
        ray.get(fail.remote())
    assert isinstance(info.value, exceptions.RayTaskError)
    assert "boom" in str(info.value)
    assert "fail" in str(info.value)

    # A task depending on a failed task fails with the same error.
    with pytest.raises(MyError):
        ray.get(echo.remote(fail.remote()))


def test_num_returns():
    @ray.remote(num_returns=3)
    def three():
        return 1, 2, 3

    a, b, c = three.remote()
    assert ray.get([a, b, c]) == [1, 2, 3]
    refs = echo.options(num_returns=2).remote((4, 5))
    assert ray.get(refs) == [4, 5]

    @ray.remote(num_returns=0)
    def nothing():
        pass

    assert nothing.remote() is None

    @ray.remote(num_returns=2)
    def wrong():
        return 1, 2, 3

    with pytest.raises(ValueError):
        ray.get(wrong.remote()[0])


def test_streaming_generator():
    @ray.remote
    def gen(n):
        for i in range(n):
            yield i * 10

    generator = gen.remote(5)
    assert isinstance(generator, ray.ObjectRefGenerator)
    assert [ray.get(ref) for ref in generator] == [0, 10, 20, 30, 40]

    @ray.remote(num_returns=3)
    def static_gen():
        yield from (1, 2, 3)

    assert ray.get(static_gen.remote()) == [1, 2, 3]

    @ray.remote
    def failing_gen():
        yield 1
        raise KeyError("bad")

    refs = list(failing_gen.remote())
    assert ray.get(refs[0]) == 1
    with pytest.raises(KeyError):
        ray.get(refs[1])

    async def consume():
        return [await ref async for ref in gen.remote(3)]

    assert asyncio.run(consume()) == [0, 10, 20]


def test_generator_completed_is_ready_once_the_task_has_finished():
    """Ray's ObjectRefGenerator.completed(): a ref that is ready, holding
    None, only after the generator task has reported its last item."""
    signal = SignalActor.remote()

    @ray.remote
    def gen(signal):
        yield 1
        ray.get(signal.wait.remote())
        yield 2

    generator = gen.remote(signal)
    completed = generator.completed()
    assert ray.get(next(generator)) == 1
    ready, _ = ray.wait([completed], timeout=0.5)
    assert not ready                          # the task is still running
    ray.get(signal.send.remote())
    assert ray.get(completed, timeout=20) is None
    assert [ray.get(ref) for ref in generator] == [2]
    assert ray.get(generator.completed(), timeout=20) is None     # after the end too


def test_static_num_returns_generator_fills_returns_in_order():
    """Ray's semantics for a generator with a fixed num_returns: each value
    is one return; an error part-way fails only the returns not reached; too
    few values is a ValueError; extra values are dropped; num_returns=1
    returns the single value, not the generator."""
    @ray.remote
    def gen(n, fail=False):
        for i in range(n):
            yield [i]
        if fail:
            raise KeyError("part-way")

    first, second, third = gen.options(num_returns=3).remote(1, fail=True)
    assert ray.get(first) == [0]
    for ref in (second, third):
        with pytest.raises(KeyError):
            ray.get(ref)
    with pytest.raises(ValueError, match="returned 2 objects"):
        ray.get(gen.options(num_returns=3).remote(2))
    assert ray.get(gen.options(num_returns=2).remote(5)) == [[0], [1]]
    assert ray.get(gen.options(num_returns=1).remote(1)) == [0]


@pytest.mark.parametrize("big", [False, True], ids=["inline", "plasma"])
def test_dynamic_generator(big):
    """num_returns="dynamic" (Ray's older generator API): one ref whose value
    is a DynamicObjectRefGenerator of the yielded values' refs; it can be
    passed to other tasks, and an error part-way is its last item."""
    @ray.remote(num_returns="dynamic")
    def gen(n, fail=False):
        for i in range(n):
            yield np.full(200_000 if big else 1, i)
        if fail:
            raise KeyError("part-way")

    @ray.remote
    def firsts(generator):
        return [int(ray.get(ref)[0]) for ref in generator]

    ref = gen.remote(4)
    assert isinstance(ref, ray.ObjectRef)
    generator = ray.get(ref)
    assert isinstance(generator, ray.DynamicObjectRefGenerator) and len(generator) == 4
    assert [int(ray.get(r)[0]) for r in generator] == [0, 1, 2, 3]
    assert ray.get(firsts.remote(gen.remote(3))) == [0, 1, 2]       # the ref
    assert ray.get(firsts.remote(ray.get(gen.remote(2)))) == [0, 1]  # the value
    assert list(ray.get(gen.remote(0))) == []
    ok, error = ray.get(gen.remote(1, fail=True))
    assert ray.get(ok)[0] == 0
    with pytest.raises(KeyError):
        ray.get(error)

    @ray.remote(num_returns="dynamic")
    def not_a_generator():
        return [1, 2]

    with pytest.raises(ValueError, match="not a generator"):
        [ray.get(r) for r in ray.get(not_a_generator.remote())]

    @ray.remote
    class Actor:
        def gen(self, n):
            yield from range(n)

    actor = Actor.remote()
    refs = ray.get(actor.gen.options(num_returns="dynamic").remote(3))
    assert ray.get(list(refs)) == [0, 1, 2]


def test_dynamic_generator_items_are_freed_with_it():
    @ray.remote(num_returns="dynamic")
    def gen():
        for i in range(3):
            yield np.full(200_000, i)

    worker = ray.api._worker()
    ref = gen.remote()
    items = list(ray.get(ref))
    ids = [ref.id] + [item.id for item in items]
    assert all(object_id in worker.refs for object_id in ids)
    del ref, items
    wait_for_condition(lambda: not any(object_id in worker.refs for object_id in ids),
                       timeout=20)


def test_streaming_generator_is_retried_on_exceptions(tmp_path):
    """retry_exceptions on a streaming generator: the task runs again and
    the caller sees each value once, then the rest of the new run."""
    marker = str(tmp_path / "failed-once")

    @ray.remote(retry_exceptions=True, max_retries=1)
    def gen():
        yield 0
        yield 1
        if not os.path.exists(marker):
            open(marker, "w").close()
            raise KeyError("first run")
        yield 2

    assert [ray.get(ref) for ref in gen.remote()] == [0, 1, 2]

    @ray.remote(retry_exceptions=[OSError], max_retries=3)
    def never_retried():
        yield 0
        raise KeyError("not an OSError")

    refs = list(never_retried.remote())
    assert ray.get(refs[0]) == 0 and len(refs) == 2
    with pytest.raises(KeyError):
        ray.get(refs[1])


def test_object_ref_generator_get_and_pickling():
    @ray.remote
    def gen():
        yield 1

    generator = gen.remote()
    assert ray.get(generator) is generator        # as in Ray
    with pytest.raises(TypeError, match="ObjectRefGenerator"):
        echo.remote(generator)
    assert [ray.get(r) for r in generator] == [1]


def test_object_ref_from_an_id():
    """Ray's ObjectRef(binary): with an id this process references, the ref
    works like the original; an unknown id (or from_random) is refused by
    get, wait and task arguments with a clear error."""
    ref = ray.put("value")
    again = ray.ObjectRef(ref.binary())
    assert again == ref and ray.get(again) == "value"
    unknown = ray.ObjectRef.from_random()
    for use in (lambda: ray.get(unknown), lambda: ray.wait([unknown]),
                lambda: echo.remote(unknown)):
        with pytest.raises(ValueError, match="object id alone"):
            use()
    with pytest.raises(ValueError, match="28 bytes"):
        ray.ObjectRef(b"short")


def test_get_timeout():
    @ray.remote
    def slow():
        time.sleep(3)

    ref = slow.remote()
    with pytest.raises(exceptions.GetTimeoutError) as info:
        ray.get(ref, timeout=0.2)
    assert isinstance(info.value, TimeoutError)


@ray.remote
def wait_for(signal):
    return ray.get(signal.wait.remote())


@ray.remote
def fail(message):
    raise ValueError(message)


@ray.remote
def get_list(refs):
    return ray.get(refs)


@ray.remote
def get_owned_and_borrowed(borrowed, signal):
    return ray.get([wait_for.remote(signal), borrowed[0]])


def test_get_raises_an_error_without_waiting_for_the_others():
    # As in Ray: get of several refs raises as soon as one is known to hold
    # an error. The other task only finishes once the signal is sent.
    signal = SignalActor.remote()
    pending = wait_for.remote(signal)
    with pytest.raises(ValueError, match="first"):
        ray.get([pending, fail.remote("first")])
    # Borrowed refs (inside a task), and an owned pending one with a
    # borrowed error.
    with pytest.raises(ValueError, match="borrowed"):
        ray.get(get_list.remote([pending, fail.remote("borrowed")]))
    with pytest.raises(ValueError, match="mixed"):
        ray.get(get_owned_and_borrowed.remote([fail.remote("mixed")], signal))
    assert ray.get(signal.cur_num_waiters.remote()) >= 1     # still waiting
    ray.get(signal.send.remote())
    assert ray.get(pending) is None


def test_get_raises_the_first_error_in_list_order():
    errors = [fail.remote("one"), fail.remote("two")]
    ray.wait(errors, num_returns=2)
    with pytest.raises(ValueError, match="one"):
        ray.get([echo.remote(0), *errors])
    with pytest.raises(ValueError, match="two"):
        ray.get(errors[::-1])


def test_wait():
    @ray.remote
    def sleep(t):
        time.sleep(t)
        return t

    fast, slow = sleep.remote(0), sleep.remote(5)
    ready, not_ready = ray.wait([slow, fast], num_returns=1, timeout=4)
    assert ready == [fast] and not_ready == [slow]
    ready, not_ready = ray.wait([slow, fast], num_returns=2, timeout=0.1)
    assert ready == [fast] and not_ready == [slow]
    refs = [echo.remote(i) for i in range(5)]
    ready, not_ready = ray.wait(refs, num_returns=5)
    assert ready == refs and not_ready == []


def test_nested_tasks_do_not_deadlock():
    @ray.remote
    def fib(n):
        if n <= 1:
            return n
        return sum(ray.get([fib.remote(n - 1), fib.remote(n - 2)]))

    assert ray.get(fib.remote(6)) == 8


def test_worker_death_is_retried(tmp_path):
    marker = tmp_path / "died"

    @ray.remote(max_retries=2)
    def die_once(path):
        if not os.path.exists(path):
            open(path, "w").close()
            os._exit(1)
        return "recovered"

    assert ray.get(die_once.remote(str(marker))) == "recovered"

    @ray.remote(max_retries=0)
    def always_die():
        os._exit(1)

    with pytest.raises(exceptions.WorkerCrashedError):
        ray.get(always_die.remote())


def test_retry_exceptions(tmp_path):
    counter = tmp_path / "count"

    @ray.remote(max_retries=3, retry_exceptions=True)
    def flaky(path):
        count = int(open(path).read()) if os.path.exists(path) else 0
        open(path, "w").write(str(count + 1))
        if count < 2:
            raise RuntimeError("flaky")
        return count

    assert ray.get(flaky.remote(str(counter))) == 2

    @ray.remote(max_retries=3)
    def no_retry(path):
        count = int(open(path).read()) if os.path.exists(path) else 0
        open(path, "w").write(str(count + 1))
        raise RuntimeError("once")

    other = tmp_path / "other"
    with pytest.raises(RuntimeError):
        ray.get(no_retry.remote(str(other)))
    assert open(other).read() == "1"


def test_cancel():
    @ray.remote
    def forever():
        while True:
            time.sleep(0.05)

    ref = forever.remote()
    wait_for_condition(lambda: _task_running(), timeout=10)
    ray.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=10)

    ref = forever.remote()
    ray.cancel(ref, force=True)
    with pytest.raises((exceptions.TaskCancelledError, exceptions.WorkerCrashedError)):
        ray.get(ref, timeout=10)
    # The cluster keeps working.
    assert ray.get(echo.remote(1)) == 1


def _task_running() -> bool:
    available = ray.available_resources().get("CPU", 0)
    return available < 2


def test_cancel_of_a_borrowed_ref_reaches_its_owner():
    """ray.cancel of a ref this process did not submit (a nested task's
    result handed back) goes to the owner, which cancels the task."""
    signal = SignalActor.remote()

    @ray.remote
    def wait_for(refs):
        return ray.get(refs[0])

    @ray.remote
    def submit(refs):
        return [wait_for.remote(refs)]

    inner = ray.get(submit.remote([signal.wait.remote()]))[0]
    with pytest.raises(exceptions.GetTimeoutError):
        ray.get(inner, timeout=0.5)
    ray.cancel(inner)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(inner, timeout=20)
    ray.get(signal.send.remote())


def test_bad_input():
    import threading

    with pytest.raises(TypeError, match="lock"):
        echo.remote(threading.Lock())
    with pytest.raises(TypeError, match="remote"):
        echo(1)
    with pytest.raises(ValueError):
        echo.options(num_cpus=-1)
    with pytest.raises(ValueError):
        echo.options(not_an_option=1)
    with pytest.raises(ValueError):
        ray.get(1)
    with pytest.raises(TypeError):            # as Ray: an element that is no ref
        ray.get([ray.put(1), "x"])
    with pytest.raises(TypeError):
        ray.wait(ray.put(1))
    with pytest.raises(TypeError):
        ray.put(ray.put(1))
    with pytest.raises(ValueError):
        ray.remote(num_returns=-2)(lambda: 1)
    assert ray.get(echo.remote(1)) == 1


def test_objects_are_freed_when_unreferenced():
    before = _store_used()
    ref = ray.put(np.zeros(20 * 1024 * 1024, dtype=np.uint8))
    assert _store_used() >= before + 20 * 1024 * 1024
    del ref
    wait_for_condition(lambda: _store_used() <= before, timeout=10)


def test_churn_through_more_than_the_store():
    # 50 x 40 MiB = 2 GB through a 512 MiB store.
    for _ in range(50):
        ref = ray.put(np.ones(40 * 1024 * 1024, dtype=np.uint8))
        assert ray.get(ref)[123] == 1
        del ref


def test_resources_and_context():
    resources = ray.cluster_resources()
    assert resources["CPU"] == 2
    context = ray.get_runtime_context()
    assert len(context.get_job_id()) == 8

    @ray.remote
    def where():
        ctx = ray.get_runtime_context()
        return ctx.get_node_id(), ctx.get_task_id()

    node_id, task_id = ray.get(where.remote())
    assert node_id == context.get_node_id() and task_id
    assert len(ray.nodes()) == 1 and ray.nodes()[0]["Alive"]


def _store_used() -> int:
    from miniray.core_worker.object_ref import core_worker
    from miniray.protocol import raylet_pb2
    worker = core_worker()
    return worker.call("raylet", "GetNodeStats", raylet_pb2.GetNodeStatsRequest()).store_used


def test_spill_when_store_is_full_and_restore():
    # 20 x 40 MiB held at once: 800 MiB through a 512 MiB store.
    refs = [ray.put(np.full(40 * 1024 * 1024, i, dtype=np.uint8)) for i in range(20)]
    for i, ref in enumerate(refs):
        assert ray.get(ref)[-1] == i
    del refs


def test_async_remote_function_is_refused_as_in_ray():
    # Ray: tasks are synchronous; 'async def' belongs in async actors.
    with pytest.raises(ValueError, match="'async def' should not be used"):
        @ray.remote
        async def slow_double(x):
            return 2 * x

    with pytest.raises(ValueError, match="'async def' should not be used"):
        @ray.remote(num_cpus=1)
        async def stream():
            yield 1


SCRIPT_WITH_A_FAILING_TASK = '''
import os
import sys
import time
import miniray as ray
from miniray.exceptions import RayTaskError, TaskCancelledError

@ray.remote
def bad():
    raise ValueError("boom")

@ray.remote
def slow(started):
    open(started, "w").close()
    time.sleep(60)

ray.init(num_cpus=1)
try:
    ray.get(bad.remote())
except ValueError as exc:
    print(str(exc))
started = sys.argv[1]
ref = slow.remote(started)
deadline = time.monotonic() + 60
while not os.path.exists(started) and time.monotonic() < deadline:
    time.sleep(0.01)
ray.cancel(ref)
try:
    ray.get(ref, timeout=30)
except TaskCancelledError as exc:
    print("cancelled as RayTaskError:", isinstance(exc, RayTaskError))
'''


def test_a_task_traceback_starts_in_the_users_file(tmp_path):
    # A function defined in the driver's script is pickled by value: its
    # traceback still names the script and shows the line, and none of
    # miniray's own frames come before it (as in Ray).
    import subprocess
    import sys
    script = tmp_path / "driver.py"
    script.write_text(SCRIPT_WITH_A_FAILING_TASK)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "started")],
                         capture_output=True, text=True, timeout=120)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("ray::bad() (pid="), out.stdout + out.stderr
    assert lines[1] == f'  File "{script}", line 10, in bad'
    assert lines[2].strip() == 'raise ValueError("boom")'
    assert "miniray" not in "".join(lines[:3])
    # A running task interrupted by cancel fails in its own code, as in Ray.
    assert "cancelled as RayTaskError: True" in out.stdout


def test_wait_takes_generators_ready_when_their_next_item_is(tmp_path):
    # Ray 2.x: ray.wait accepts ObjectRefGenerators beside ObjectRefs.
    gate = tmp_path / "gate"

    @ray.remote
    def stream(path):
        yield "first"
        deadline = time.monotonic() + 60
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        yield "second"

    gen = stream.remote(str(gate))
    ready, _ = ray.wait([gen], timeout=30)
    assert ready == [gen]
    assert ray.get(next(gen)) == "first"
    assert ray.wait([gen], timeout=0.2) == ([], [gen])      # "second" is gated
    assert gen._next_sync(0.05).is_nil()
    plain = _double_it.remote(2)
    ready, not_ready = ray.wait([gen, plain], num_returns=1, timeout=30)
    assert ready == [plain] and not_ready == [gen]
    gate.touch()
    assert ray.wait([gen, plain], num_returns=2, timeout=30)[0] == [gen, plain]
    assert ray.get(gen._next_sync()) == "second"
    with pytest.raises(StopIteration):
        gen._next_sync(30)


@ray.remote
def _double_it(x):
    return 2 * x


@ray.remote
def _numbers(n, exit_at=None):
    import sys
    for i in range(n):
        if i == exit_at:
            sys.exit(9)              # the worker process ends, as in Ray
        yield i


def test_a_task_iterating_a_generator_lends_its_cpus_while_it_waits():
    # The consumer holds every CPU of the node: the generator's task can
    # only run on the CPUs the consumer lends while it waits for an item
    # (as get does). It deadlocked before.
    @ray.remote(num_cpus=2)
    def consume(n):
        return [ray.get(ref) for ref in _numbers.remote(n)]

    assert ray.get(consume.remote(5), timeout=60) == [0, 1, 2, 3, 4]


def test_sys_exit_in_a_task_is_a_worker_crash_and_is_retried(tmp_path):
    # As in Ray: the worker exits, the task is retried within max_retries,
    # then fails with WorkerCrashedError; a generator's stream ends with it.
    attempts = tmp_path / "attempts"

    @ray.remote(max_retries=1)
    def leave(path):
        import sys
        with open(path, "a") as f:
            f.write("x")
        sys.exit(0)

    with pytest.raises(exceptions.WorkerCrashedError):
        ray.get(leave.remote(str(attempts)), timeout=60)
    assert attempts.read_text() == "xx"
    items = []
    with pytest.raises(exceptions.WorkerCrashedError):
        for ref in _numbers.options(max_retries=1).remote(10, 4):
            items.append(ray.get(ref, timeout=60))
    assert items == [0, 1, 2, 3]


def test_a_task_whose_argument_failed_fails_as_ray_says():
    """As in Ray: a task given a failed object fails with a RayTaskError of
    its own (also an instance of the original cause), saying an input
    argument could not be computed; the same for an actor call, and for a
    system error (a crashed worker) upstream."""
    @ray.remote(max_retries=0)
    def bad():
        raise ValueError("boom")

    @ray.remote(max_retries=0)
    def crash():
        os._exit(1)

    @ray.remote
    def use(*args):
        return len(args)

    @ray.remote
    class User:
        def use(self, *args):
            return len(args)

    failed = bad.remote()
    for ref in (use.remote(failed), use.remote(use.remote(failed)),
                User.remote().use.remote(failed)):
        with pytest.raises(exceptions.RayTaskError) as info:
            ray.get(ref)
        assert isinstance(info.value, ValueError)
        assert "At least one of the input arguments for this task could not be " \
               "computed" in str(info.value)
        assert "boom" in str(info.value)
        assert str(info.value).startswith("ray::use") or \
            str(info.value).startswith("ray::User.use")
    with pytest.raises(exceptions.WorkerCrashedError) as crashed:
        ray.get(use.remote(crash.remote()))
    assert isinstance(crashed.value, exceptions.RayTaskError)
    assert "could not be computed" in str(crashed.value)


def test_the_infeasible_warning_is_said_once_per_shape_and_not_for_placement_groups():
    """Ray warns when no node could ever run a request. Fifty actors of one
    such shape are one warning; actors waiting for a pending placement
    group's bundles are none (the group is what is pending)."""
    import logging
    from miniray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("miniray")
    logger.addHandler(handler)
    try:
        @ray.remote(resources={"unobtainium": 1})
        class Never:
            pass

        actors = [Never.remote() for _ in range(50)]
        wait_for_condition(lambda: any("unobtainium" in r.getMessage() for r in records),
                           timeout=20)
        pending = ray.util.placement_group([{"CPU": 1000}])
        bound = [Never.options(resources={}, scheduling_strategy=
                               PlacementGroupSchedulingStrategy(pending)).remote()
                 for _ in range(20)]
        probe = Never.options(resources={"other_unobtainium": 1}).remote()
        wait_for_condition(lambda: any("other_unobtainium" in r.getMessage()
                                       for r in records), timeout=20)
        messages = [r.getMessage() for r in records]
        assert sum("'unobtainium'" in m for m in messages) == 1
        assert not any("_group_" in m for m in messages)
        for actor in actors + bound + [probe]:
            ray.kill(actor)
        ray.util.remove_placement_group(pending)
    finally:
        logger.removeHandler(handler)
