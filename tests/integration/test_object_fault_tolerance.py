"""Objects through failures (Ray's object fault tolerance), on real
clusters: lost actor outputs rebuilt by the restarted actor, owners dying
under their borrowers, and the errors when lineage cannot help."""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import miniray as ray
from miniray import exceptions
from miniray.common import config
from miniray.testing import Cluster, wait_for_condition
from miniray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

BIG = 1_000_000            # int64s: 8 MB, always in a node's store
SPOT = {"spot": 10}        # the resource only the nodes we kill have


@pytest.fixture
def cluster():
    cluster = Cluster()
    cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1, resources=SPOT)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def _connect(cluster):
    """Connect the driver; returns the node the tests kill."""
    cluster.connect()
    return cluster.worker_nodes[0]


def _on_head(cluster):
    """Options that keep an actor on the head node, which never dies."""
    head = cluster.head_node.node_id.hex()
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(head, soft=False)}


def _node_of(ref) -> str:
    from miniray.core_worker.object_ref import core_worker
    payload = core_worker().memory_store.get(ref.id)
    return payload.node_id.hex() if payload is not None and payload.in_plasma else ""


@ray.remote
def first_value(array):
    return int(array[0])


# --- actor task outputs --------------------------------------------------------------
@ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0, resources={"spot": 1})
class Producer:
    def __init__(self, seed):
        self.seed = seed

    def big(self, offset=0):
        return np.full(BIG, self.seed + offset, dtype=np.int64)


def test_lost_actor_outputs_are_rebuilt_by_the_restarted_actor(cluster):
    doomed = _connect(cluster)
    producer = Producer.remote(5)
    read_here, read_by_task = producer.big.remote(1), producer.big.remote(2)
    ray.wait([read_here, read_by_task], num_returns=2, timeout=30)
    assert _node_of(read_here) == doomed.node_id.hex()
    cluster.kill_node(doomed)
    cluster.add_node(num_cpus=1, resources=SPOT)        # where it can restart
    start = time.monotonic()
    value = ray.get(read_here, timeout=40)
    assert value[0] == 6 and len(value) == BIG
    # A borrower finding it lost asks the owner, which rebuilds it.
    assert ray.get(first_value.remote(read_by_task), timeout=40) == 7
    assert time.monotonic() - start < 40
    assert ray.get(producer.big.remote(3), timeout=30)[0] == 8    # still usable


@ray.remote(max_restarts=-1, num_cpus=0, resources={"spot": 1})
class AtMostOnce:
    def big(self):
        return np.ones(BIG, dtype=np.int64)


@ray.remote(max_restarts=0, max_task_retries=-1, num_cpus=0, resources={"spot": 1})
class Mortal:
    def big(self):
        return np.ones(BIG, dtype=np.int64)


def test_actor_outputs_rebuilt_only_if_the_method_can_retry_and_the_actor_restart(cluster):
    doomed = _connect(cluster)
    at_most_once, mortal = AtMostOnce.remote(), Mortal.remote()
    per_method = at_most_once.big.options(max_task_retries=1).remote()
    no_retries = at_most_once.big.remote()
    of_mortal = mortal.big.remote()
    ray.wait([per_method, no_retries, of_mortal], num_returns=3, timeout=30)
    cluster.kill_node(doomed)
    cluster.add_node(num_cpus=1, resources=SPOT)
    # The method's own max_task_retries: rebuilt (the retry is not wasted on
    # the dead actor: the owner waits until the GCS has seen it die).
    assert ray.get(per_method, timeout=40).sum() == BIG
    with pytest.raises(exceptions.ObjectReconstructionFailedError,
                       match="AtMostOnce.big, which cannot be retried"):
        ray.get(no_retries, timeout=10)
    with pytest.raises(exceptions.ObjectReconstructionFailedError,
                       match="the actor is dead and cannot restart"):
        ray.get(of_mortal, timeout=40)
    # The errors are the objects' values now: borrowers get them too.
    with pytest.raises(exceptions.ObjectReconstructionFailedError):
        ray.get(first_value.remote(no_retries), timeout=20)


# --- owner death ---------------------------------------------------------------------
@ray.remote(num_cpus=0, max_concurrency=4)
class Holder:
    """A borrower: keeps the refs another process owns."""

    def __init__(self):
        self.refs = []
        self.reading = 0

    def hold(self, refs):
        self.refs = refs

    def handed(self):
        return self.refs

    def started(self):
        return self.reading

    def read(self, index):
        self.reading += 1
        try:
            value = ray.get(self.refs[index], timeout=30)
        except exceptions.RayError as exc:
            return type(exc).__name__
        return type(value).__name__


def _make_objects(holder, gate):
    """Owned by the caller: a small put, a big put, and a pending task's return."""
    @ray.remote(num_cpus=0)
    def pending(gate):
        return ray.get(gate.wait.remote())

    refs = [ray.put(7), ray.put(np.ones(BIG)), pending.remote(gate)]
    ray.get(holder.hold.remote(refs))
    return os.getpid()


@ray.remote(num_cpus=0)
class Owner:
    def make(self, holder, gate):
        return _make_objects(holder, gate)


@ray.remote(num_cpus=0)
def make_in_task(holder, gate):
    return _make_objects(holder, gate)


@pytest.mark.parametrize("owner_kind", ["actor", "task", "node"])
def test_owner_death_fails_every_borrower_promptly(cluster, owner_kind):
    from miniray.testing import _remote_signal
    doomed = _connect(cluster)
    gate = _remote_signal().options(**_on_head(cluster)).remote()   # never sent
    holder = Holder.options(**_on_head(cluster)).remote()
    if owner_kind == "task":
        pid = ray.get(make_in_task.remote(holder, gate))
    else:
        options = {"resources": {"spot": 1}} if owner_kind == "node" else {}
        owner = Owner.options(**options).remote()
        pid = ray.get(owner.make.remote(holder, gate))
    blocked = holder.read.remote(2)          # waits for the pending return
    wait_for_condition(lambda: ray.get(holder.started.remote()) == 1)
    start = time.monotonic()
    if owner_kind == "node":
        cluster.kill_node(doomed)
    else:
        os.kill(pid, signal.SIGKILL)
    assert ray.get(blocked, timeout=20) == "OwnerDiedError"
    assert ray.get([holder.read.remote(i) for i in range(3)], timeout=20) == \
        ["OwnerDiedError"] * 3
    refs = ray.get(holder.handed.remote())      # the driver borrows them too
    ready, _ = ray.wait(refs, num_returns=3, timeout=20)     # failed: ready
    assert len(ready) == 3
    for ref in refs:
        with pytest.raises(exceptions.OwnerDiedError):
            ray.get(ref, timeout=20)
    with pytest.raises(exceptions.OwnerDiedError):
        ray.get(first_value.remote(refs[1]), timeout=20)
    assert time.monotonic() - start < 15


# --- when lineage cannot help --------------------------------------------------------
@ray.remote(num_cpus=0)
class Keeper:
    def read(self, refs):
        try:
            ray.get(refs[0], timeout=20)
        except exceptions.ObjectLostError as exc:
            return type(exc).__name__, str(exc)
        return "value", ""


@ray.remote(num_cpus=0, resources={"spot": 1})
def put_owned_by(keeper):
    return [ray.put(np.ones(BIG), _owner=keeper)]


def test_a_lost_put_object_is_not_rebuilt(cluster):
    doomed = _connect(cluster)
    keeper = Keeper.options(**_on_head(cluster)).remote()     # survives
    [ref] = ray.get(put_owned_by.remote(keeper))      # its only copy: on "doomed"
    cluster.kill_node(doomed)
    with pytest.raises(exceptions.ObjectLostError, match=r"created by put\(\)") as info:
        ray.get(ref, timeout=20)
    assert type(info.value) is exceptions.ObjectLostError
    kind, message = ray.get(keeper.read.remote([ref]), timeout=20)
    assert kind == "ObjectLostError" and "put()" in message

    # The driver's own put, its copy lost (here: freed under it by the store).
    own = ray.put(np.ones(BIG))
    from miniray.core_worker.object_ref import core_worker
    worker = core_worker()
    worker.run(worker._free_plasma([bytes(own.id)]))
    with pytest.raises(exceptions.ObjectLostError, match=r"created by put\(\)"):
        ray.get(own, timeout=20)


@ray.remote(resources={"spot": 1}, max_retries=1)
def produce(seed):
    return np.full(BIG, seed, dtype=np.int64)


def test_reconstruction_attempts_are_limited_by_max_retries(cluster):
    first = cluster.worker_nodes[0]
    second = cluster.add_node(num_cpus=1, resources=SPOT)
    cluster.wait_for_nodes()
    cluster.connect()
    there = NodeAffinitySchedulingStrategy(first.node_id.hex(), soft=True)
    once = produce.options(scheduling_strategy=there).remote(1)
    never = produce.options(scheduling_strategy=there, max_retries=0).remote(2)
    ray.wait([once, never], num_returns=2, timeout=30)
    assert _node_of(once) == _node_of(never) == first.node_id.hex()
    cluster.kill_node(first)
    with pytest.raises(exceptions.ObjectReconstructionFailedMaxAttemptsExceededError,
                       match="max_retries"):
        ray.get(never, timeout=20)
    # Its one retry (read where it is rebuilt: a copy elsewhere would survive).
    read_there = first_value.options(resources={"spot": 1})
    assert ray.get(read_there.remote(once), timeout=40) == 1
    assert _node_of(once) == second.node_id.hex()
    cluster.kill_node(second)                         # lost again: none left
    with pytest.raises(exceptions.ObjectReconstructionFailedMaxAttemptsExceededError):
        ray.get(once, timeout=20)


def test_freed_arguments_are_rebuilt_first_within_the_lineage_budget(cluster, monkeypatch):
    # Small enough that only the latest few specs of a chain are kept.
    monkeypatch.setattr(config, "MAX_LINEAGE_BYTES", 2000)
    doomed = _connect(cluster)

    @ray.remote(resources={"spot": 1})
    def source(seed):
        return np.full(BIG, seed, dtype=np.int64)

    @ray.remote(resources={"spot": 1})
    def step(array):
        return array + 1

    long = source.remote(20)
    for _ in range(12):
        long = step.remote(long)
    ray.wait([long], timeout=30)
    short = step.remote(source.remote(10))        # the source's value is freed
    ray.wait([short], timeout=30)
    assert _node_of(short) == _node_of(long) == doomed.node_id.hex()
    from miniray.core_worker.object_ref import core_worker
    stats = core_worker().submitter.lineage_statistics()
    assert stats.evicted > 0 and stats.kept_bytes <= 2000
    cluster.kill_node(doomed)
    cluster.add_node(num_cpus=1, resources=SPOT)
    assert ray.get(short, timeout=40)[0] == 11     # its freed source rebuilt first
    with pytest.raises(exceptions.ObjectReconstructionFailedLineageEvictedError,
                       match="MINIRAY_MAX_LINEAGE_BYTES=2000"):
        ray.get(long, timeout=40)
