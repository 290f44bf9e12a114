"""Ownership and distributed reference counting across real processes."""
from __future__ import annotations

import gc

import numpy as np
import pytest

import miniray as ray
from miniray import exceptions
from miniray.testing import wait_for_condition

pytestmark = pytest.mark.usefixtures("ray_start")


def _store_used() -> int:
    from miniray.core_worker.object_ref import core_worker
    from miniray.protocol import raylet_pb2
    return core_worker().call("raylet", "GetNodeStats",
                              raylet_pb2.GetNodeStatsRequest()).store_used


BIG = 8 * 1024 * 1024


def test_worker_owned_object_returned_in_a_list():
    @ray.remote
    def make():
        return [ray.put(np.full(BIG, 7, dtype=np.uint8)), ray.put("small")]

    refs = ray.get(make.remote())
    big, small = ray.get(refs)
    assert big[0] == 7 and small == "small"


def test_borrowed_ref_outlives_the_task_that_lent_it():
    @ray.remote
    def keep(refs):
        return refs            # hands the ref back inside a list

    inner = ray.put(np.ones(BIG, dtype=np.uint8))
    outer = keep.remote([inner])
    inner_id = inner.id
    del inner
    gc.collect()
    (again,) = ray.get(outer)
    assert again.id == inner_id
    assert ray.get(again).sum() == BIG


def test_object_freed_after_borrowers_release():
    before = _store_used()

    @ray.remote
    def borrow(refs):
        return ray.get(refs[0]).shape[0]

    ref = ray.put(np.ones(BIG, dtype=np.uint8))
    assert ray.get(borrow.remote([ref])) == BIG
    del ref
    wait_for_condition(lambda: _store_used() <= before, timeout=10)


def test_nested_refs_in_put_keep_inner_alive():
    inner = ray.put(np.arange(BIG // 8))
    outer = ray.put({"inner": inner})
    del inner
    gc.collect()
    assert ray.get(ray.get(outer)["inner"])[-1] == BIG // 8 - 1


def test_chain_of_borrowers():
    @ray.remote
    def level(refs, depth):
        if depth == 0:
            return int(ray.get(refs[0]).sum())
        return ray.get(level.remote(refs, depth - 1))

    ref = ray.put(np.ones(1000, dtype=np.int64))
    assert ray.get(level.remote([ref], 3)) == 1000


def test_owner_death_fails_borrowers():
    @ray.remote(max_retries=0)
    def owner_then_die():
        import os
        import threading
        ref = ray.put(np.ones(BIG, dtype=np.uint8))
        threading.Timer(0.5, os._exit, args=(1,)).start()
        return [ref]

    (ref,) = ray.get(owner_then_die.remote())
    wait_for_condition(lambda: _owner_gone(ref), timeout=15)
    with pytest.raises((exceptions.OwnerDiedError, exceptions.ObjectLostError)):
        ray.get(ref, timeout=10)


def _owner_gone(ref) -> bool:
    import psutil
    return not any(ref.owner.port == c.laddr.port
                   for c in psutil.net_connections("tcp") if c.status == "LISTEN")


def test_cancel_recursive():
    import time

    @ray.remote
    def child():
        time.sleep(60)

    @ray.remote
    def parent():
        return ray.get(child.remote())

    ref = parent.remote()
    wait_for_condition(lambda: ray.available_resources().get("CPU", 0) <= 1, timeout=10)
    ray.cancel(ref, recursive=True)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=15)
    wait_for_condition(lambda: ray.available_resources().get("CPU", 0) == 2, timeout=15)
