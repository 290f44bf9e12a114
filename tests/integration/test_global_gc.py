"""Python garbage collection under store pressure (Ray's local and global GC).

A reference cycle holding ObjectRefs keeps their objects in the store until
Python's cycle collector runs; a process that called ``gc.disable()`` (or
allocates too little to trigger it) never does. Past 70% of a node's store
the raylet asks every node's workers and drivers to collect."""
from __future__ import annotations

import gc

import numpy as np
import pytest

import miniray as ray
from miniray.testing import Cluster, wait_for_condition

pytestmark = pytest.mark.timeout(120)

MB = 1024 * 1024


@ray.remote
class CycleMaker:
    """Keeps no reference of its own to what it makes: only cycles do."""

    def __init__(self):
        gc.disable()            # only a collection someone asks for will run
        self.collections = 0
        gc.callbacks.append(self._count)

    def _count(self, phase, info):
        if phase == "stop":
            self.collections += 1

    def make_cycle(self, megabytes: int, where=None):
        if where is None:
            ref = ray.put(np.zeros(megabytes * MB, dtype=np.uint8))
        else:                   # a task on another node makes (and stores) it
            ref = where.remote(megabytes)
            ray.wait([ref], fetch_local=False)
        a, b = [], []
        a.append(b)
        b.append(a)
        a.append(ref)
        return True

    def collected(self) -> int:
        return self.collections


def _store_used_at(node_id_hex: str) -> int:
    from miniray.node import get_nodes
    from miniray.protocol import raylet_pb2, raylet_pb2_grpc
    from miniray.rpc.channels import authenticated, sync_channel
    info = next(n for n in get_nodes(ray.get_runtime_context().gcs_address)
                if n.node_id.hex() == node_id_hex)
    with sync_channel(f"{info.ip}:{info.raylet_port}") as channel:
        stub = authenticated(raylet_pb2_grpc.RayletServiceStub(channel))
        return stub.GetNodeStats(raylet_pb2.GetNodeStatsRequest(), timeout=5).store_used


def test_store_pressure_collects_cycles_and_frees_their_objects(shutdown_only):
    ray.init(num_cpus=1, object_store_memory=100 * MB)
    node = ray.get_runtime_context().get_node_id()
    maker = CycleMaker.remote()
    for _ in range(3):                       # 60% of the store: below the mark
        ray.get(maker.make_cycle.remote(20))
    assert _store_used_at(node) >= 60 * MB
    ray.get(maker.make_cycle.remote(20))     # 80%: past it
    wait_for_condition(lambda: ray.get(maker.collected.remote()) >= 1, timeout=20)
    # The cycles' refs died with the collection: their objects left the store.
    wait_for_condition(lambda: _store_used_at(node) < 20 * MB, timeout=20)


def test_pressure_on_one_node_collects_on_the_others():
    """The cycle lives in an actor on one node; the objects it holds fill the
    other node's store. Only a global GC frees them."""
    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=1, object_store_memory=256 * MB)
        cluster.add_node(num_cpus=1, resources={"full": 1},
                         object_store_memory=100 * MB)
        cluster.wait_for_nodes()
        cluster.connect()
        full_node = cluster.worker_nodes[0].node_id.hex()

        @ray.remote(resources={"full": 0.01})
        def make(megabytes):
            return np.zeros(megabytes * MB, dtype=np.uint8)

        head = cluster.head_node.node_id.hex()
        from miniray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        maker = CycleMaker.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            head, soft=False)).remote()
        for _ in range(4):                   # 80 MB of the 100 MB store
            ray.get(maker.make_cycle.remote(20, make))
        wait_for_condition(lambda: ray.get(maker.collected.remote()) >= 1, timeout=30)
        wait_for_condition(lambda: _store_used_at(full_node) < 20 * MB, timeout=30)
    finally:
        ray.shutdown()
        cluster.shutdown()
