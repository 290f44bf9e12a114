"""Actors on a real local cluster: calls, concurrency, names, lifecycle."""
from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

import miniray as ray
from miniray import exceptions
from miniray.testing import wait_for_condition

pytestmark = pytest.mark.usefixtures("ray_start")


@ray.remote
class Counter:
    def __init__(self, start=0):
        self.value = start

    def incr(self, by=1):
        self.value += by
        return self.value

    def get(self):
        return self.value

    def pid(self):
        return os.getpid()

    def fail(self):
        raise KeyError("nope")

    @ray.method(num_returns=2)
    def pair(self):
        return self.value, -self.value


def test_calls_run_in_order_and_keep_state():
    counter = Counter.remote(10)
    refs = [counter.incr.remote() for _ in range(100)]
    assert ray.get(refs) == list(range(11, 111))
    assert ray.get(counter.get.remote()) == 110


def test_num_returns_and_errors():
    counter = Counter.remote(3)
    a, b = counter.pair.remote()
    assert ray.get([a, b]) == [3, -3]
    x, y, z = counter.incr.options(num_returns=1).remote(), *counter.pair.options(
        num_returns=2).remote()
    assert ray.get([x, y, z]) == [4, 4, -4]
    with pytest.raises(KeyError) as info:
        ray.get(counter.fail.remote())
    assert isinstance(info.value, exceptions.RayTaskError)
    assert ray.get(counter.get.remote()) == 4      # the actor lives on


def test_direct_calls_are_rejected():
    with pytest.raises(TypeError):
        Counter()
    counter = Counter.remote()
    with pytest.raises(TypeError):
        counter.incr()
    with pytest.raises(AttributeError):
        counter.no_such_method
    with pytest.raises(ValueError):
        Counter.options(max_concurrency=0)
    with pytest.raises(ValueError):
        Counter.options(lifetime="forever")


def test_handles_are_passed_around():
    counter = Counter.remote()

    @ray.remote
    def bump(handle, n):
        return ray.get([handle.incr.remote() for _ in range(n)])[-1]

    assert ray.get(bump.remote(counter, 5)) == 5

    @ray.remote
    def make():
        return Counter.remote(100)

    made = ray.get(make.remote())
    assert ray.get(made.incr.remote()) == 101

    @ray.remote
    class Caller:
        def call(self, handles):
            return ray.get(handles[0].incr.remote())

    caller = Caller.remote()
    assert ray.get(caller.call.remote([counter])) == 6
    stored = ray.put({"handle": counter})
    assert ray.get(ray.get(stored)["handle"].get.remote()) == 6


def test_calls_queue_while_the_actor_is_created():
    @ray.remote
    class Slow:
        def __init__(self):
            time.sleep(1)

        def ping(self, i):
            return i

    slow = Slow.remote()
    assert ray.get([slow.ping.remote(i) for i in range(5)]) == list(range(5))


def test_object_ref_arguments():
    counter = Counter.remote()
    ref = ray.put(5)
    assert ray.get(counter.incr.remote(ref)) == 5

    @ray.remote
    def seven():
        return 7

    assert ray.get(counter.incr.remote(seven.remote())) == 12


def test_async_actor_runs_calls_concurrently():
    @ray.remote
    class AsyncActor:
        def __init__(self):
            self.event = asyncio.Event()

        async def wait(self):
            await self.event.wait()
            return "released"

        async def release(self):
            self.event.set()
            return "set"

    actor = AsyncActor.remote()
    waiting = [actor.wait.remote() for _ in range(5)]
    assert ray.get(actor.release.remote()) == "set"
    assert ray.get(waiting, timeout=10) == ["released"] * 5


def test_threaded_actor():
    @ray.remote(max_concurrency=4)
    class Threaded:
        def __init__(self):
            self.barrier = threading.Barrier(4, timeout=10)

        def meet(self):
            self.barrier.wait()
            return threading.get_ident()

    actor = Threaded.remote()
    idents = ray.get([actor.meet.remote() for _ in range(4)], timeout=20)
    assert len(set(idents)) == 4


@ray.remote(num_cpus=0)
class _Gate:
    """A value that is ready only once ``open`` is called."""
    def __init__(self):
        self.event = asyncio.Event()

    async def wait(self):
        await self.event.wait()
        return "late"

    async def open(self):
        self.event.set()


@pytest.mark.parametrize("kind", ["async", "threaded", "allowed"])
def test_calls_run_ahead_of_one_waiting_for_its_argument(kind):
    """Async and threaded actors (and allow_out_of_order_execution=True) run
    a call whose argument is ready while an earlier call from the same caller
    still waits for its own, as in Ray; a plain actor keeps order (below)."""
    if kind == "async":
        @ray.remote
        class Echo:
            async def echo(self, value):
                return value
        actor = Echo.remote()
    else:
        @ray.remote
        class Echo:
            def echo(self, value):
                return value
        actor = (Echo.options(max_concurrency=2) if kind == "threaded"
                 else Echo.options(allow_out_of_order_execution=True)).remote()
    gate = _Gate.remote()
    first = actor.echo.remote(gate.wait.remote())
    second = actor.echo.remote(ray.put("early"))
    assert ray.get(second, timeout=20) == "early"
    assert ray.wait([first], timeout=0.2)[1] == [first]      # still waiting
    gate.open.remote()
    assert ray.get(first, timeout=20) == "late"


def test_a_plain_actor_keeps_order_behind_a_waiting_argument():
    gate = _Gate.remote()
    counter = Counter.remote()
    first = counter.incr.remote(_by_when.remote(gate.wait.remote()))
    second = counter.incr.remote(10)
    assert ray.wait([second], timeout=0.5)[1] == [second]    # held back
    gate.open.remote()
    assert ray.get([first, second], timeout=20) == [1, 11]


@ray.remote
def _by_when(_):
    return 1


def test_in_order_execution_cannot_be_asked_of_async_or_threaded_actors():
    @ray.remote
    class Async:
        async def f(self):
            return 1

    @ray.remote
    class Plain:
        def f(self):
            return 1

    with pytest.raises(ValueError, match="async"):
        Async.options(allow_out_of_order_execution=False).remote()
    with pytest.raises(ValueError, match="max_concurrency=3"):
        Plain.options(max_concurrency=3, allow_out_of_order_execution=False).remote()
    handle = Plain.options(allow_out_of_order_execution=False).remote()
    assert ray.get(handle.f.remote()) == 1


def test_concurrency_groups():
    @ray.remote(concurrency_groups={"io": 2})
    class Grouped:
        def __init__(self):
            self.barrier = threading.Barrier(2, timeout=10)

        @ray.method(concurrency_group="io")
        def io(self):
            self.barrier.wait()
            return "io"

        def compute(self):
            return "compute"

    actor = Grouped.remote()
    assert ray.get([actor.io.remote(), actor.io.remote()], timeout=20) == ["io", "io"]
    assert ray.get(actor.compute.remote()) == "compute"


def test_async_actor_groups_have_their_own_event_loops(tmp_path):
    """As in Ray: in an async actor each concurrency group runs on its own
    event loop and thread (sync methods of a group run on its loop), so a
    call that blocks one group's loop does not hold up another group."""
    release = str(tmp_path / "release")

    @ray.remote(concurrency_groups={"io": 2, "compute": 1})
    class Loops:
        def __init__(self):
            self.constructed_on = asyncio.get_event_loop()

        @ray.method(concurrency_group="io")
        async def io_async(self):
            return threading.get_ident(), id(asyncio.get_running_loop())

        @ray.method(concurrency_group="io")
        def io_sync(self):
            return threading.get_ident(), id(asyncio.get_event_loop())

        @ray.method(concurrency_group="compute")
        async def block_compute(self):
            while not os.path.exists(release):     # blocks this group's loop
                time.sleep(0.01)
            return "released"

        def default(self):
            return (threading.get_ident(), id(asyncio.get_event_loop()),
                    asyncio.get_event_loop() is self.constructed_on)

    actor = Loops.remote()
    io_async, io_sync = ray.get([actor.io_async.remote(), actor.io_sync.remote()])
    assert io_async == io_sync                       # same thread, same loop
    blocked = actor.block_compute.remote()
    thread, loop, is_constructor_loop = ray.get(actor.default.remote(), timeout=20)
    assert (thread, loop) != io_async and is_constructor_loop
    assert ray.get(actor.io_async.remote(), timeout=20) == io_async
    assert ray.wait([blocked], timeout=0)[0] == []
    open(release, "w").close()
    assert ray.get(blocked, timeout=20) == "released"


def test_ray_system_group_runs_beside_the_actor(tmp_path):
    release = str(tmp_path / "release")

    @ray.remote
    class Plain:
        def block(self):
            while not os.path.exists(release):
                time.sleep(0.01)
            return "released"

        def ping(self):
            return "pong"

    actor = Plain.remote()
    blocked = actor.block.options(concurrency_group="_ray_system").remote()
    assert ray.get(actor.ping.remote(), timeout=20) == "pong"
    open(release, "w").close()
    assert ray.get(blocked, timeout=20) == "released"


def test_methods_are_bound_from_the_class():
    """An instance attribute named like a method does not shadow it (Ray
    binds actor methods from the class); static and class methods work."""
    @ray.remote
    class Shadowed:
        def __init__(self):
            self.done = False

        def done(self):  # noqa: F811 - the point of the test
            return "method"

        @staticmethod
        def static(x):
            return x + 1

        @classmethod
        def name(cls):
            return cls.__name__

    actor = Shadowed.remote()
    assert ray.get(actor.done.remote()) == "method"
    assert ray.get(actor.static.remote(1)) == 2
    assert ray.get(actor.name.remote()) == "Shadowed"


def test_constructor_that_kills_its_process(tmp_path):
    """As in Ray: a constructor whose process dies is an actor failure, so
    with max_restarts=0 calls fail (ActorDiedError naming the actor) rather
    than hang, and with restarts left the constructor runs again."""
    @ray.remote(max_restarts=0)
    class Doomed:
        def __init__(self):
            os._exit(0)

        def f(self):
            return "never"

    doomed = Doomed.remote()
    with pytest.raises(exceptions.ActorDiedError) as info:
        ray.get(doomed.f.remote(), timeout=30)
    assert info.value.actor_id == doomed._actor_id.hex()

    counter = tmp_path / "attempts"

    @ray.remote(max_restarts=3)
    class Stubborn:
        def __init__(self):
            attempts = int(counter.read_text()) if counter.exists() else 0
            counter.write_text(str(attempts + 1))
            if attempts < 2:
                os._exit(0)          # the first two constructions crash

        def f(self):
            return int(counter.read_text())

    assert ray.get(Stubborn.remote().f.remote(), timeout=60) == 3


def test_kill_with_restart_right_after_creation():
    """As in Ray: ray.kill(no_restart=False) of an actor still being created
    ends that incarnation (a restart); once the restarts are used up a kill
    is final and its CPUs go to the next actor."""
    @ray.remote(num_cpus=2)          # the whole node: actors can't overlap
    class Whole:
        def foo(self):
            return ray.get_runtime_context().was_current_actor_reconstructed

    actor = Whole.options(max_restarts=1, max_task_retries=-1).remote()
    ray.kill(actor, no_restart=False)
    assert ray.get(actor.foo.remote(), timeout=30) is True      # restarted once
    ray.kill(actor, no_restart=False)                          # none left: dead
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(actor.foo.remote(), timeout=30)
    successor = Whole.remote()
    assert ray.get(successor.foo.remote(), timeout=30) is False
    ray.kill(successor)


def test_pending_actors_die_with_their_owner_and_free_the_node():
    """As Ray's test_pending_actor_removed_by_owner: when the owner of
    pending actors dies they die too (some may be starting on a worker at
    that moment); the next actor needing the same resources comes up."""
    @ray.remote(num_cpus=2)
    class Child:
        def ping(self):
            return True

    @ray.remote(num_cpus=2)
    class Parent:
        def spawn(self):
            self.children = [Child.remote() for _ in range(2)]   # pending

    for _ in range(3):           # the race is timing-dependent: try it a few times
        parent = Parent.remote()
        ray.get(parent.spawn.remote(), timeout=30)
        del parent
        child = Child.remote()
        assert ray.get(child.ping.remote(), timeout=30) is True
        ray.kill(child)


def test_named_actors_and_namespaces():
    counter = Counter.options(name="shared", namespace="ns1").remote(1)
    assert ray.get(counter.incr.remote()) == 2
    again = ray.get_actor("shared", namespace="ns1")
    assert ray.get(again.incr.remote()) == 3
    with pytest.raises(ValueError, match="already taken"):
        Counter.options(name="shared", namespace="ns1").remote()
    with pytest.raises(ValueError):
        ray.get_actor("shared")            # another namespace
    with pytest.raises(ValueError):
        ray.get_actor("missing", namespace="ns1")
    same = Counter.options(name="shared", namespace="ns1", get_if_exists=True).remote()
    assert ray.get(same.get.remote()) == 3
    names = ray.util.list_named_actors(all_namespaces=True)
    assert {"name": "shared", "namespace": "ns1"} in names
    ray.kill(counter)
    wait_for_condition(lambda: _name_free("shared", "ns1"), timeout=10)
    fresh = Counter.options(name="shared", namespace="ns1").remote(50)
    assert ray.get(fresh.get.remote()) == 50


def _name_free(name, namespace) -> bool:
    try:
        ray.get_actor(name, namespace=namespace)
        return False
    except ValueError:
        return True


def test_constructor_failure():
    @ray.remote
    class Broken:
        def __init__(self):
            raise ValueError("bad init")

        def ping(self):
            return 1

    broken = Broken.remote()
    with pytest.raises(exceptions.ActorDiedError) as info:
        ray.get(broken.ping.remote(), timeout=20)
    assert "bad init" in str(info.value)


def test_a_constructor_argument_that_failed_kills_the_actor():
    """As in Ray: the constructor never runs, the actor dies of the
    argument's error, and its calls fail instead of waiting forever."""
    @ray.remote
    def bad():
        raise ValueError("bad argument")

    @ray.remote
    class Holder:
        def __init__(self, value):
            self.value = value

        def get(self):
            return self.value

    holder = Holder.remote(bad.remote())
    with pytest.raises(exceptions.ActorDiedError) as info:
        ray.get(holder.get.remote(), timeout=20)
    assert "bad argument" in str(info.value)


def test_kill_and_terminate():
    counter = Counter.remote()
    assert ray.get(counter.incr.remote()) == 1
    ray.kill(counter)
    with pytest.raises(exceptions.ActorDiedError,
                       match="dead because it was killed by `ray.kill`"):
        ray.get(counter.incr.remote(), timeout=20)

    other = Counter.remote()
    ray.get(other.incr.remote())
    other.__ray_terminate__.remote()
    with pytest.raises(exceptions.RayActorError):
        ray.get(other.incr.remote(), timeout=20)
    with pytest.raises(ValueError):
        ray.kill("not an actor")


def test_exit_actor():
    @ray.remote
    class Quitter:
        def quit(self):
            ray.actor.exit_actor()

        def ping(self):
            return "pong"

    quitter = Quitter.remote()
    assert ray.get(quitter.ping.remote()) == "pong"
    with pytest.raises(exceptions.RayActorError):
        ray.get(quitter.quit.remote(), timeout=20)
    with pytest.raises(exceptions.ActorDiedError, match="exit_actor"):
        ray.get(quitter.ping.remote(), timeout=20)


def test_calls_in_flight_when_an_async_actor_exits_fail_with_its_cause():
    # Ray's test_asyncio regression: every call lost with the actor raises
    # ActorDiedError naming exit_actor (not "restarting": it can't restart).
    @ray.remote
    class Quitter:
        async def quit_soon(self):
            await asyncio.sleep(0.5)
            ray.actor.exit_actor()

        def ping(self):
            pass

    quitter = Quitter.remote()
    quitter.quit_soon.remote()
    refs = [quitter.ping.remote() for _ in range(10_000)]
    with pytest.raises(exceptions.ActorDiedError, match="exit_actor"):
        ray.get(refs, timeout=60)
    for ref in refs[-10:]:
        with pytest.raises(exceptions.ActorDiedError, match="exit_actor"):
            ray.get(ref, timeout=60)


def test_death_cause_of_a_killed_worker_names_its_exit():
    counter = Counter.remote()
    os.kill(ray.get(counter.pid.remote()), signal.SIGKILL)
    with pytest.raises(exceptions.ActorDiedError,
                       match="worker process has died. Worker exit type: SYSTEM_ERROR"):
        ray.get(counter.incr.remote(), timeout=20)


def test_restart_after_crash():
    @ray.remote(max_restarts=1)
    class Phoenix:
        def __init__(self):
            self.calls = 0

        def call(self):
            self.calls += 1
            return self.calls, ray.get_runtime_context().was_current_actor_reconstructed

        def pid(self):
            return os.getpid()

    actor = Phoenix.remote()
    assert ray.get(actor.call.remote()) == (1, False)
    os.kill(ray.get(actor.pid.remote()), signal.SIGKILL)
    wait_for_condition(lambda: _call_succeeds(actor), timeout=30)
    calls, reconstructed = ray.get(actor.call.remote())
    assert reconstructed and calls <= 2        # state was reset by the restart
    os.kill(ray.get(actor.pid.remote()), signal.SIGKILL)
    with pytest.raises(exceptions.ActorDiedError):
        for _ in range(50):
            ray.get(actor.call.remote(), timeout=20)


def _call_succeeds(actor) -> bool:
    try:
        ray.get(actor.call.remote(), timeout=5)
        return True
    except exceptions.RayActorError:
        return False


def test_max_task_retries(tmp_path):
    started = tmp_path / "started"

    @ray.remote(max_restarts=1, max_task_retries=1)
    class Retry:
        def slow(self, marker):
            if not os.path.exists(marker):
                with open(marker, "w") as f:
                    f.write(str(os.getpid()))
                time.sleep(60)                  # killed here on the first attempt
            return "done"

    actor = Retry.remote()
    ref = actor.slow.remote(str(started))       # sent before the actor is even up
    wait_for_condition(lambda: started.exists() and started.read_text(), timeout=20)
    os.kill(int(started.read_text()), signal.SIGKILL)
    assert ray.get(ref, timeout=30) == "done"


def test_max_pending_calls(tmp_path):
    @ray.remote(max_pending_calls=2)
    class Busy:
        def wait_for(self, path):
            while not os.path.exists(path):
                time.sleep(0.01)

    release = tmp_path / "release"
    busy = Busy.remote()
    refs = [busy.wait_for.remote(str(release)) for _ in range(2)]
    with pytest.raises(exceptions.PendingCallsLimitExceeded):
        busy.wait_for.remote(str(release))
    release.touch()
    ray.get(refs, timeout=20)
    ray.get(busy.wait_for.remote(str(release)), timeout=20)


def test_handles_going_out_of_scope_end_the_actor():
    counter = Counter.remote()
    pid = ray.get(counter.pid.remote())
    del counter
    wait_for_condition(lambda: not _alive(pid), timeout=20)


def _alive(pid: int) -> bool:
    import psutil
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_runtime_context_in_actor():
    @ray.remote
    class Introspect:
        def info(self):
            ctx = ray.get_runtime_context()
            return ctx.get_actor_id(), ctx.get_actor_name(), repr(ctx.current_actor)

    actor = Introspect.options(name="introspect").remote()
    actor_id, name, handle_repr = ray.get(actor.info.remote())
    assert actor_id == actor._actor_id.hex()
    assert name == "introspect"
    assert actor_id in handle_repr


def test_cancel_actor_tasks(tmp_path):
    started = tmp_path / "started"

    @ray.remote
    class Worker:
        def spin(self, marker):
            open(marker, "a").close()
            ctx = ray.get_runtime_context()
            for _ in range(2000):
                if ctx.is_canceled():
                    return "canceled"
                time.sleep(0.01)
            return "finished"

    worker = Worker.remote()
    ref = worker.spin.remote(str(started))
    wait_for_condition(started.exists, timeout=20)
    ray.cancel(ref)
    assert ray.get(ref, timeout=20) == "canceled"

    @ray.remote
    class AsyncWorker:
        def __init__(self):
            self.started = asyncio.Event()

        async def forever(self):
            self.started.set()
            await asyncio.sleep(600)

        async def wait_started(self):
            await self.started.wait()

    async_worker = AsyncWorker.remote()
    ref = async_worker.forever.remote()
    ray.get(async_worker.wait_started.remote(), timeout=20)
    ray.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=20)


DRIVER = """
import sys, time
import miniray as ray
ray.init(address=sys.argv[1])

@ray.remote
class Keeper:
    def pid(self):
        import os
        return os.getpid()

owned = Keeper.remote()
detached = Keeper.options(name="keeper", namespace="shared", lifetime="detached").remote()
print(ray.get(owned.pid.remote()), ray.get(detached.pid.remote()), flush=True)
if sys.argv[2] == "crash":
    import os
    os._exit(1)
"""


@pytest.mark.parametrize("ending", ["exit", "crash"])
def test_detached_actor_outlives_its_driver(tmp_path, ray_start, ending):
    import subprocess
    import sys
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    out = subprocess.run([sys.executable, str(script), ray_start.address, ending],
                         capture_output=True, text=True, timeout=60)
    owned_pid, detached_pid = map(int, out.stdout.split())
    wait_for_condition(lambda: not _alive(owned_pid), timeout=20)
    keeper = ray.get_actor("keeper", namespace="shared")
    assert ray.get(keeper.pid.remote()) == detached_pid
    ray.kill(keeper)
    wait_for_condition(lambda: not _alive(detached_pid), timeout=20)


def test_state_api():
    from miniray.util.state import list_actors, list_jobs, list_nodes

    counter = Counter.options(name="stateful").remote()
    ray.get(counter.get.remote())
    alive = list_actors(filters=[("state", "=", "ALIVE"), ("name", "=", "stateful")])
    assert len(alive) == 1 and alive[0].class_name == "Counter"
    assert alive[0]["actor_id"] == counter._actor_id.hex()
    namespace = ray.get_runtime_context().namespace
    assert alive[0].ray_namespace == alive[0].namespace == namespace    # Ray's field name
    assert list_actors(filters=[("ray_namespace", "=", namespace), ("name", "=", "stateful")])
    nodes = list_nodes()
    assert len(nodes) == 1 and nodes[0].state == "ALIVE" and nodes[0].is_head_node
    assert any(job.status == "RUNNING" for job in list_jobs())
    with pytest.raises(ValueError):
        list_actors(filters=[("state", ">", "x")])


def test_actor_generators_and_retried_exceptions():
    @ray.remote(max_task_retries=2)
    class Streamer:
        def __init__(self):
            self.failures = 0

        def numbers(self, n):
            yield from range(n)

        async def tick(self, n):
            for i in range(n):
                await asyncio.sleep(0)
                yield i * 10

        @ray.method(retry_exceptions=[ConnectionError])
        def flaky(self):
            self.failures += 1
            if self.failures < 3:
                raise ConnectionError("try again")
            return self.failures

    streamer = Streamer.remote()
    assert [ray.get(r) for r in streamer.numbers.remote(3)] == [0, 1, 2]
    assert [ray.get(r) for r in streamer.tick.remote(3)] == [0, 10, 20]
    assert ray.get(streamer.flaky.remote()) == 3


@ray.remote
def _one():
    return 1


def test_a_method_returning_an_object_ref_returns_the_ref_in_async_actors():
    @ray.remote
    class Holder:
        def __init__(self):
            self.ref = None

        async def make(self):
            self.ref = _one.remote()
            return await self.ref

        def ref_of(self):          # a sync method of an async actor
            return self.ref

    holder = Holder.remote()
    assert ray.get(holder.make.remote()) == 1
    ref = ray.get(holder.ref_of.remote())
    assert isinstance(ref, ray.ObjectRef) and ray.get(ref) == 1


def test_non_recursive_cancel_of_an_actor_call_leaves_its_children_running(tmp_path):
    gate = tmp_path / "gate"

    @ray.remote
    def child(path):
        deadline = time.monotonic() + 60
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.02)
        return "child done"

    @ray.remote
    class Parent:
        def __init__(self):
            self.children = []

        async def run(self, path):
            ref = child.remote(path)
            self.children.append(ref)
            return await ref

        def children_of(self):
            return self.children

    for recursive in (False, True):
        parent = Parent.remote()
        run = parent.run.remote(str(gate))
        wait_for_condition(lambda: len(ray.get(parent.children_of.remote())) == 1,
                           timeout=30)
        ray.cancel(run, recursive=recursive)
        with pytest.raises(exceptions.TaskCancelledError):
            ray.get(run, timeout=30)
        (kid,) = ray.get(parent.children_of.remote())
        if recursive:
            with pytest.raises(exceptions.TaskCancelledError):
                ray.get(kid, timeout=30)
        else:
            gate.touch()
            assert ray.get(kid, timeout=30) == "child done"
            gate.unlink()


def test_a_call_lost_with_a_restarting_actor_says_the_connection_broke():
    """As in Ray: a call in flight when the actor's process dies, with no
    retries left, fails with ActorUnavailableError carrying the gRPC status
    of the broken connection; the restarted actor then takes calls again."""
    import psutil

    @ray.remote(max_restarts=1)
    class Victim:
        def pid(self):
            return os.getpid()

        def hang(self):
            time.sleep(120)

    actor = Victim.remote()
    pid = ray.get(actor.pid.remote())
    lost = actor.hang.remote()
    # Running once the worker's process title says so (no sleep).
    wait_for_condition(
        lambda: psutil.Process(pid).cmdline()[0] == "ray::Victim.hang", timeout=20)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(exceptions.ActorUnavailableError, match="GrpcUnavailable") as info:
        ray.get(lost, timeout=60)
    assert "max_task_retries" in str(info.value)

    def restarted():
        try:
            return ray.get(actor.pid.remote(), timeout=10) != pid
        except exceptions.ActorUnavailableError:      # still restarting
            return False
    wait_for_condition(restarted, timeout=60)
    ray.kill(actor)


def test_a_call_to_an_unknown_concurrency_group_fails_and_the_actor_carries_on():
    """A caller's mistake: the call fails at once with a ValueError naming
    the group (it used to wait forever); later calls run."""
    @ray.remote(concurrency_groups={"io": 2})
    class Grouped:
        async def ping(self):
            return "pong"

        def sync_ping(self):
            return "pong"

    actor = Grouped.remote()
    for method in (actor.ping, actor.sync_ping):
        with pytest.raises(ValueError, match="no concurrency group 'nope'"):
            ray.get(method.options(concurrency_group="nope").remote(), timeout=20)
    assert ray.get(actor.ping.options(concurrency_group="io").remote(), timeout=20) == "pong"
    assert ray.get(actor.sync_ping.remote(), timeout=20) == "pong"


def test_an_async_constructor_is_awaited():
    """As in Ray: ``async def __init__`` runs to its end before any call,
    on the actor's event loop (or a loop of its own for a sync actor)."""
    @ray.remote
    class AsyncBuilt:
        async def __init__(self, value):
            await asyncio.sleep(0.05)
            self.loop = asyncio.get_running_loop()
            self.value = value

        async def same_loop(self):
            return asyncio.get_running_loop() is self.loop, self.value

    @ray.remote
    class SyncWithAsyncInit:
        async def __init__(self):
            await asyncio.sleep(0)
            self.value = "ready"

        def get(self):
            return self.value

    assert ray.get(AsyncBuilt.remote(7).same_loop.remote(), timeout=20) == (True, 7)
    assert ray.get(SyncWithAsyncInit.remote().get.remote(), timeout=20) == "ready"
