"""miniray.util.as_completed and miniray.util.map_unordered (Ray's
``ray.util.as_completed``/``map_unordered``): results as tasks finish.

A task that must finish late waits for a *gate* file the test creates, so
"finished first" never depends on timing.
"""
from __future__ import annotations

import os
import time

import pytest

import miniray
from miniray.util import as_completed, map_unordered

pytestmark = pytest.mark.timeout(120)

LONG = 30


class MyError(Exception):
    pass


def _wait_for(gate):
    deadline = time.monotonic() + LONG
    while gate is not None and not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise RuntimeError("gate never opened")
        time.sleep(0.005)


@miniray.remote
def _value_after(value, gate=None):
    """``value``, once ``gate`` exists (at once without a gate)."""
    _wait_for(gate)
    return value


@miniray.remote
def _item_after(item):
    """``value`` of a ``(value, gate)`` item, once ``gate`` exists."""
    value, gate = item
    _wait_for(gate)
    return value


@miniray.remote
def _square(x):
    return x * x


@miniray.remote
def _fail(x):
    raise MyError(x)


@pytest.fixture
def gate(tmp_path):
    path = str(tmp_path / "gate")
    yield path
    open(path, "w").close()              # never leave a task waiting


def test_as_completed_yields_finished_results_before_waiting_ones(ray_start, gate):
    refs = [_value_after.remote("late", gate), _value_after.remote("early")]
    results = as_completed(refs, chunk_size=1)
    assert next(results) == "early"       # "late" is still waiting for the gate
    open(gate, "w").close()
    assert list(results) == ["late"]


def test_as_completed_yields_every_value_or_ref(ray_start):
    refs = [_square.remote(x) for x in range(25)]
    assert sorted(as_completed(refs)) == [x * x for x in range(25)]
    yielded = list(as_completed(refs, chunk_size=4, yield_obj_refs=True))
    assert sorted(yielded, key=refs.index) == refs
    assert list(as_completed([])) == []


def test_as_completed_passes_wait_options_and_checks_its_own(ray_start, gate):
    refs = [_value_after.remote("late", gate), _value_after.remote("early")]
    # With a timeout a round yields what is ready, then waits again.
    results = as_completed(refs, chunk_size=2, timeout=0.05)
    assert next(results) == "early"
    open(gate, "w").close()
    assert list(results) == ["late"]
    with pytest.raises(ValueError):
        next(as_completed(refs, chunk_size=0))
    with pytest.raises(ValueError):
        next(as_completed(refs, num_returns=1))


def test_as_completed_raises_the_tasks_error(ray_start):
    with pytest.raises(MyError):
        list(as_completed([_fail.remote(1)]))


def test_map_unordered_yields_every_result(ray_start):
    assert sorted(map_unordered(_square, range(30), chunk_size=3)) == [
        x * x for x in range(30)]
    refs = list(map_unordered(_square, range(5), yield_obj_refs=True))
    assert sorted(miniray.get(refs)) == [0, 1, 4, 9, 16]


def test_map_unordered_limits_tasks_in_flight(ray_start):
    consumed = []

    def items():
        for x in range(10):
            consumed.append(x)
            yield x

    results = map_unordered(_square, items(), backpressure_size=3, chunk_size=1)
    first = next(results)
    # Three tasks were in flight when the first result was handed out.
    assert consumed == [0, 1, 2] and first in (0, 1, 4)
    assert sorted([first, *results]) == [x * x for x in range(10)]


def test_map_unordered_yields_finished_results_before_waiting_ones(ray_start, gate):
    results = map_unordered(_item_after, [(0, gate), (1, None)], chunk_size=1)
    assert next(results) == 1             # 0 is still waiting for the gate
    open(gate, "w").close()
    assert list(results) == [0]


def test_map_unordered_checks_its_options(ray_start):
    for kwargs in ({"backpressure_size": 0}, {"chunk_size": 0}, {"num_returns": 2}):
        with pytest.raises(ValueError):
            next(map_unordered(_square, [1], **kwargs))
    assert sorted(map_unordered(_square, range(4), backpressure_size=None)) == [0, 1, 4, 9]
