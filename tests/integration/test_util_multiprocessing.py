"""miniray.util.multiprocessing.Pool: multiprocessing's Pool on actors.

Most tests share one 2-process pool on the module's 2-CPU cluster and leave
it idle. Work that must wait does so on a *gate*: a file the test creates,
which the task polls for with a deadline (the pool's processes share this
machine's file system).
"""
from __future__ import annotations

import itertools
import math
import os
import time

import psutil
import pytest

import miniray
from miniray.exceptions import RayActorError, RayTaskError
from miniray.testing import wait_for_condition
from miniray.util.multiprocessing import Pool, TimeoutError
from miniray.util.multiprocessing.pool import PoolTaskError

pytestmark = pytest.mark.timeout(120)

# Upper bound for waits that end at once when the code under test works.
LONG = 30


class MyError(Exception):
    pass


# --------------------------------------------------------------------------
# Functions run by the pool (module level: workers import them by name)
# --------------------------------------------------------------------------

_STATE: dict = {}


def _wait_for_path(path: str, timeout: float = LONG) -> bool:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _touch(path: str) -> None:
    with open(path, "w"):
        pass


def _pid(_=None) -> int:
    return os.getpid()


def _square(x: int) -> int:
    return x * x


def _add(a, b, c=0):
    return a + b + c


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise MyError(f"bad item {x}")
    return x


def _meet(args) -> tuple:
    """Records (pid, start, end); stays running until ``n`` calls have started."""
    rendezvous, n = args
    start = time.time()
    _touch(os.path.join(rendezvous, str(os.getpid())))
    deadline = time.monotonic() + LONG
    while len(os.listdir(rendezvous)) < n and time.monotonic() < deadline:
        time.sleep(0.005)
    return os.getpid(), start, time.time()


def _gated(args) -> int:
    """Item ``x`` waits for ``gate`` if it is the gated one; marks it is done."""
    x, gated_item, gate, done_dir = args
    if x == gated_item and not _wait_for_path(gate):
        raise RuntimeError("gate never opened")
    _touch(os.path.join(done_dir, str(x)))
    return x


def _start_then_wait(args) -> int:
    started_dir, gate = args
    _touch(os.path.join(started_dir, str(os.getpid())))
    _wait_for_path(gate)
    return os.getpid()


def _init_state(value, pid_dir=None) -> None:
    _STATE["value"] = value
    if pid_dir is not None:
        _touch(os.path.join(pid_dir, str(os.getpid())))


def _read_state(_=None):
    return _STATE.get("value")


def _nested_map(n: int) -> list:
    with Pool(2, ray_address="auto") as inner:
        return inner.map(math.sqrt, [i * i for i in range(n)])


def _gone(pids) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pool(ray_start):
    """A 2-process pool shared by the tests that leave it idle."""
    shared = Pool(2)
    yield shared
    shared.terminate()
    shared.join()


@pytest.fixture
def gate(tmp_path):
    """(gate path, done dir); the gate is opened on teardown at the latest,
    so no call stays blocked after its test."""
    done_dir = tmp_path / "done"
    done_dir.mkdir()
    path = str(tmp_path / "gate")
    yield path, str(done_dir)
    _touch(path)


# --------------------------------------------------------------------------
# Starting a pool
# --------------------------------------------------------------------------

def test_pool_starts_a_local_cluster_when_none_is_running(shutdown_only):
    if miniray.is_initialized():
        pytest.skip("needs no running cluster (runs first in this module)")
    pool = Pool(processes=2)
    try:
        assert miniray.is_initialized()
        assert miniray.cluster_resources()["CPU"] == 2
        assert len(set(pool.map(_pid, range(2)))) == 2
    finally:
        pool.terminate()
        pool.join()


def test_processes_default_to_the_cluster_cpus_and_cannot_exceed_them(ray_start):
    with Pool() as default_pool:
        assert len(set(default_pool.map(_pid, range(2)))) == 2
        assert repr(default_pool) == "<Pool state=RUN pool_size=2>"
    with pytest.raises(ValueError):
        Pool(3)
    with pytest.raises(ValueError):
        Pool(0)


def test_initializer_runs_once_in_each_process(ray_start, tmp_path):
    with Pool(2, initializer=_init_state, initargs=("ready", str(tmp_path))) as pool:
        started = {int(name) for name in os.listdir(tmp_path)}
        assert len(started) == 2          # both ran it before Pool() returned
        assert set(pool.map(_pid, range(4), chunksize=1)) <= started
        assert pool.map(_read_state, range(4), chunksize=1) == ["ready"] * 4


# --------------------------------------------------------------------------
# Running work
# --------------------------------------------------------------------------

def test_map_runs_in_parallel_on_distinct_processes(pool, tmp_path):
    calls = pool.map(_meet, [(str(tmp_path), 2)] * 2, chunksize=1)
    pids = {pid for pid, _, _ in calls}
    assert len(pids) == 2
    assert max(start for _, start, _ in calls) < min(end for _, _, end in calls)


def test_map_and_starmap_return_results_in_order(pool):
    assert pool.map(_square, range(100)) == [x * x for x in range(100)]
    assert pool.map(_square, (x for x in range(7)), chunksize=3) == [x * x for x in range(7)]
    assert pool.starmap(_add, [(1, 2), (3, 4, 5)]) == [3, 12]
    assert pool.starmap_async(_add, zip([1, 2], [10, 20])).get(LONG) == [11, 22]
    assert pool.map(_square, []) == [] and pool.starmap(_add, []) == []


def test_apply_passes_args_and_kwds(pool):
    assert pool.apply(_add, (1, 2), {"c": 3}) == 6
    assert pool.apply(_add, args=(1, 2), kwds={"c": 4}) == 7
    assert pool.apply(_add, args=(1, 2), kwargs={"c": 5}) == 8     # Ray's name
    assert pool.apply_async(_add, (1, 2)).get(LONG) == 3


def test_chunksize_sends_items_together_to_one_process(pool):
    pids = pool.map(_pid, range(8), chunksize=4)
    assert len(set(pids[:4])) == 1 and len(set(pids[4:])) == 1
    assert pids[0] != pids[4]              # both processes were free
    with pytest.raises(ValueError):
        pool.map(_pid, range(8), chunksize=0)


def test_imap_yields_in_item_order(pool, gate):
    path, done = gate
    results = pool.imap(_gated, [(x, 0, path, done) for x in range(2)])
    wait_for_condition(lambda: os.path.exists(os.path.join(done, "1")), timeout=LONG)
    with pytest.raises(TimeoutError):
        results.next(timeout=0.2)          # 1 is done but 0 comes first
    _touch(path)
    assert list(results) == [0, 1]
    assert list(pool.imap(_square, range(30), chunksize=4)) == [x * x for x in range(30)]


def test_imap_unordered_yields_in_completion_order(pool, gate):
    path, done = gate
    results = pool.imap_unordered(_gated, [(x, 0, path, done) for x in range(2)])
    assert next(results) == 1              # 0 is still waiting for the gate
    _touch(path)
    assert list(results) == [0]
    assert sorted(pool.imap_unordered(_square, range(30), chunksize=4)) == [
        x * x for x in range(30)]


def test_imap_reads_its_input_lazily(pool):
    results = pool.imap(_square, itertools.count())     # endless
    assert [next(results) for _ in range(10)] == [x * x for x in range(10)]
    assert list(pool.imap(_square, [])) == []
    with pytest.raises(TypeError):
        pool.imap(_square, 3)


def test_async_result_waits_times_out_and_becomes_ready(pool, gate):
    path, done = gate
    result = pool.apply_async(_gated, ((0, 0, path, done),))
    with pytest.raises(TimeoutError):
        result.get(timeout=0.1)
    result.wait(timeout=0.01)
    assert not result.ready()
    with pytest.raises(ValueError, match="not ready"):
        result.successful()
    _touch(path)
    result.wait(timeout=LONG)
    assert result.ready() and result.successful()
    assert result.get() == 0


def test_callbacks_run_once_before_get_returns(pool):
    calls = []
    result = pool.map_async(_square, range(10), chunksize=3,
                            callback=calls.append, error_callback=calls.append)
    assert result.get(LONG) == [x * x for x in range(10)]
    assert calls == [[x * x for x in range(10)]]
    calls.clear()
    result = pool.map_async(_fail_on_three, range(10), chunksize=2,
                            callback=calls.append, error_callback=calls.append)
    result.wait(LONG)
    assert len(calls) == 1 and isinstance(calls[0], MyError)
    calls.clear()
    assert pool.apply_async(_square, (3,), callback=calls.append).get(LONG) == 9
    assert calls == [9]


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

def test_errors_reraise_as_the_users_exception_type(pool):
    with pytest.raises(MyError, match="bad item 3") as info:
        pool.map(_fail_on_three, range(6), chunksize=2)
    assert isinstance(info.value, RayTaskError)      # with the remote traceback
    assert "_fail_on_three" in str(info.value)
    with pytest.raises(MyError):
        pool.apply(_fail_on_three, (3,))
    result = pool.map_async(_fail_on_three, range(6))
    result.wait(LONG)
    assert result.ready() and not result.successful()
    with pytest.raises(MyError):
        result.get()
    with pytest.raises(TypeError):
        pool.apply(_add, (1,))             # wrong arguments fail in the actor


def test_imap_yields_an_items_error_and_goes_on(pool):
    # As in Ray (multiprocessing would raise it): the failed item's result is
    # a PoolTaskError holding the user's exception; the other items follow.
    for ordered in (True, False):
        results = list((pool.imap if ordered else pool.imap_unordered)(
            _fail_on_three, range(6), chunksize=2))
        errors = [r for r in results if isinstance(r, Exception)]
        values = [r for r in results if not isinstance(r, Exception)]
        assert len(errors) == 1 and isinstance(errors[0], PoolTaskError)
        assert isinstance(errors[0].underlying, MyError)
        assert isinstance(errors[0].underlying, RayTaskError)   # remote traceback
        assert "bad item 3" in str(errors[0])
        assert (values if ordered else sorted(values)) == [0, 1, 2, 4, 5]
        if ordered:
            assert results.index(errors[0]) == 3


def test_unpicklable_function_fails_its_result(pool):
    import threading
    lock = threading.Lock()
    result = pool.apply_async(lambda: lock)
    with pytest.raises(TypeError):
        result.get(LONG)
    assert pool.apply(_square, (2,)) == 4   # the pool still works


def test_a_pool_can_be_used_inside_a_pool_task(pool):
    assert pool.apply(_nested_map, (3,)) == [0.0, 1.0, 2.0]


# --------------------------------------------------------------------------
# Lifetime
# --------------------------------------------------------------------------

def test_close_finishes_outstanding_work_then_join_stops_the_actors(ray_start, gate):
    path, done = gate
    pool = Pool(2)
    pids = set(pool.map(_pid, range(2)))
    result = pool.map_async(_gated, [(x, x, path, done) for x in range(4)], chunksize=1)
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply(_square, (1,))
    with pytest.raises(ValueError):
        pool.imap(_square, range(3))
    assert not result.ready()
    _touch(path)
    pool.join()
    assert result.ready() and result.successful()
    assert result.get() == [0, 1, 2, 3]
    wait_for_condition(lambda: _gone(pids), timeout=LONG)


def test_join_needs_close_or_terminate(ray_start):
    with Pool(1) as pool:
        with pytest.raises(ValueError, match="still running"):
            pool.join()


def test_terminate_stops_running_work_and_the_actors(ray_start, tmp_path):
    started = tmp_path / "started"
    started.mkdir()
    never = str(tmp_path / "never")
    pool = Pool(2)
    pids = set(pool.map(_pid, range(2)))
    result = pool.map_async(_start_then_wait, [(str(started), never)] * 4, chunksize=1)
    wait_for_condition(lambda: len(os.listdir(started)) == 2, timeout=LONG)
    pool.terminate()
    pool.join()
    assert result.ready() and not result.successful()
    with pytest.raises(RayActorError):
        result.get()
    with pytest.raises(ValueError):
        pool.map(_square, range(2))
    wait_for_condition(lambda: _gone(pids), timeout=LONG)


def test_context_manager_terminates_the_pool(ray_start):
    with Pool(2) as pool:
        pids = set(pool.map(_pid, range(2)))
    with pytest.raises(ValueError):
        pool.apply(_square, (1,))
    wait_for_condition(lambda: _gone(pids), timeout=LONG)


def test_maxtasksperchild_replaces_worn_out_actors(ray_start):
    pool = Pool(2, maxtasksperchild=1)
    pids = pool.map(_pid, range(4), chunksize=1)
    assert len(set(pids)) == 4
    pool.close()
    pool.join()
    wait_for_condition(lambda: _gone(pids), timeout=LONG)
