"""Several nodes on this machine (miniray.testing.Cluster): placement,
object transfer and node failure."""
from __future__ import annotations

import os

import numpy as np
import pytest

import miniray as ray
from miniray import exceptions
from miniray.testing import Cluster, wait_for_condition
from miniray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@pytest.fixture
def cluster():
    cluster = Cluster()
    cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=2, resources={"special": 1})
    cluster.wait_for_nodes()
    cluster.connect()
    yield cluster
    cluster.shutdown()


@ray.remote
def node_id():
    return ray.get_runtime_context().get_node_id()


def _head_and_worker(cluster):
    return cluster.head_node.node_id.hex(), cluster.worker_nodes[0].node_id.hex()


def test_custom_resource_places_task_on_its_node(cluster):
    head, worker = _head_and_worker(cluster)
    assert ray.get(node_id.options(resources={"special": 1}).remote()) == worker
    assert ray.cluster_resources()["CPU"] == 3
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2


def test_node_affinity(cluster):
    head, worker = _head_and_worker(cluster)
    for target in (head, worker):
        strategy = NodeAffinitySchedulingStrategy(target, soft=False)
        assert ray.get(node_id.options(scheduling_strategy=strategy).remote()) == target
    missing = NodeAffinitySchedulingStrategy("ab" * 28, soft=False)
    with pytest.raises(exceptions.TaskUnschedulableError):
        ray.get(node_id.options(scheduling_strategy=missing).remote(), timeout=20)
    soft = NodeAffinitySchedulingStrategy("ab" * 28, soft=True)
    assert ray.get(node_id.options(scheduling_strategy=soft).remote()) in (head, worker)


def test_spread_uses_both_nodes(cluster):
    import time

    @ray.remote(scheduling_strategy="SPREAD")
    def where():
        time.sleep(0.2)
        return ray.get_runtime_context().get_node_id()

    assert set(ray.get([where.remote() for _ in range(6)])) == set(_head_and_worker(cluster))


def test_objects_move_between_nodes(cluster):
    head, worker = _head_and_worker(cluster)

    @ray.remote(resources={"special": 1})
    def make(n):
        return np.arange(n, dtype=np.int64)

    @ray.remote(resources={"special": 1})
    def total(array):
        return int(array.sum())

    n = 3_000_000          # 24 MB: several chunks
    remote_array = ray.get(make.remote(n))       # pulled to the driver's node
    assert remote_array[-1] == n - 1 and not remote_array.flags.writeable
    local = ray.put(np.ones(n, dtype=np.int64))   # pushed the other way
    assert ray.get(total.remote(local)) == n
    refs = [make.remote(1000 + i) for i in range(3)]
    assert [len(a) for a in ray.get(refs)] == [1000, 1001, 1002]


def test_actor_on_another_node(cluster):
    head, worker = _head_and_worker(cluster)

    @ray.remote(resources={"special": 1})
    class Remote:
        def where(self):
            return ray.get_runtime_context().get_node_id()

        def big(self):
            return np.zeros(2_000_000)

    actor = Remote.remote()
    assert ray.get(actor.where.remote()) == worker
    assert ray.get(actor.big.remote()).shape == (2_000_000,)


def test_node_failure_retries_tasks_and_restarts_actors(cluster):
    head, worker = _head_and_worker(cluster)
    marker_dir = os.environ.get("TMPDIR", "/tmp")

    @ray.remote(max_restarts=1)
    class Survivor:
        def where(self):
            return ray.get_runtime_context().get_node_id()

    strategy = NodeAffinitySchedulingStrategy(worker, soft=True)
    survivor = Survivor.options(scheduling_strategy=strategy).remote()
    assert ray.get(survivor.where.remote()) == worker

    @ray.remote(max_retries=3)
    def slow_on(path):
        import time
        open(path, "a").close()
        time.sleep(1)
        return ray.get_runtime_context().get_node_id()

    marker = os.path.join(marker_dir, f"miniray-started-{os.getpid()}")
    ref = slow_on.options(scheduling_strategy=strategy).remote(marker)
    wait_for_condition(lambda: os.path.exists(marker), timeout=20)
    os.unlink(marker)
    cluster.kill_node(cluster.worker_nodes[0])
    assert ray.get(ref, timeout=60) == head          # retried on the survivor
    wait_for_condition(lambda: any(not n["Alive"] for n in ray.nodes()), timeout=20)
    wait_for_condition(lambda: _where(survivor) == head, timeout=60)


def _where(actor):
    try:
        return ray.get(actor.where.remote(), timeout=10)
    except exceptions.RayActorError:
        return None
