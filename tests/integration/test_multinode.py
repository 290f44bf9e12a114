"""Several nodes on this machine (miniray.testing.Cluster): placement,
object transfer and node failure."""
from __future__ import annotations

import os
import time

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
    """Two SPREAD tasks running at once land on different nodes, though each
    needs so little CPU that DEFAULT would pack both on the head (as Ray's
    own SPREAD test does, the tasks block, so lease reuse can't serialize
    them onto one worker)."""
    from miniray.testing import SignalActor

    # Like Ray's own test: run a task on each node first, so the head raylet's
    # cluster view (refreshed with heartbeats) already has the new node.
    head, worker = _head_and_worker(cluster)
    for target in (head, worker):
        strategy = NodeAffinitySchedulingStrategy(target, soft=False)
        assert ray.get(node_id.options(scheduling_strategy=strategy).remote()) == target
    signal = SignalActor.remote()

    @ray.remote(num_cpus=0.25)
    def where(signal, spread):
        ray.get(signal.wait.remote())
        return ray.get_runtime_context().get_node_id()

    def run(strategy):
        refs = [where.options(scheduling_strategy=strategy).remote(signal, True)
                for _ in range(2)]
        wait_for_condition(lambda: ray.get(signal.cur_num_waiters.remote()) == 2,
                           timeout=30)
        ray.get(signal.send.remote(clear=True))
        return set(ray.get(refs, timeout=30))

    assert run("SPREAD") == set(_head_and_worker(cluster))
    assert run("DEFAULT") == {cluster.head_node.node_id.hex()}


def test_queued_task_moves_to_a_node_that_frees_up(cluster, tmp_path):
    """A task queued on a full node goes to another node as soon as that
    one has room, rather than waiting for its first node (Ray's spillback
    of queued work): here the head stays busy throughout."""
    head, worker = _head_and_worker(cluster)

    @ray.remote(num_cpus=1)
    def hold(path):
        # Busy, not blocked in get: the CPU stays taken until the file exists.
        while not os.path.exists(path):
            time.sleep(0.01)
        return ray.get_runtime_context().get_node_id()

    release_head = str(tmp_path / "head")
    release_worker = str(tmp_path / "worker")
    on_head = NodeAffinitySchedulingStrategy(head, soft=False)
    on_worker = NodeAffinitySchedulingStrategy(worker, soft=False)
    head_task = hold.options(scheduling_strategy=on_head).remote(release_head)
    worker_tasks = [hold.options(scheduling_strategy=on_worker).remote(release_worker)
                    for _ in range(2)]
    wait_for_condition(lambda: ray.available_resources().get("CPU", 0) == 0, timeout=30)
    queued = node_id.options(num_cpus=1).remote()      # nowhere to run yet
    open(release_worker, "w").close()
    assert ray.get(worker_tasks, timeout=30) == [worker, worker]
    assert ray.get(queued, timeout=30) == worker
    assert ray.wait([head_task], timeout=0)[0] == []     # the head never freed up
    open(release_head, "w").close()
    assert ray.get(head_task, timeout=30) == head


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


def test_node_failure_retries_tasks_and_restarts_actors(cluster, tmp_path):
    head, worker = _head_and_worker(cluster)

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

    marker = str(tmp_path / "started")      # made again by the retry: pytest's to clean
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


def test_placement_groups(cluster):
    from miniray.util import (
        get_placement_group, placement_group, placement_group_table,
        remove_placement_group)
    from miniray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    head, worker = _head_and_worker(cluster)
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD", name="pair")
    assert ray.get(pg.ready(), timeout=30) == pg
    table = placement_group_table(pg)
    assert table["state"] == "CREATED" and table["strategy"] == "STRICT_SPREAD"
    assert set(table["bundles_to_node_id"].values()) == {head, worker}
    assert get_placement_group("pair") == pg

    for index in (0, 1):
        strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index)
        where = ray.get(node_id.options(scheduling_strategy=strategy).remote())
        assert where == table["bundles_to_node_id"][index]

    @ray.remote(num_cpus=1)
    class InGroup:
        def where(self):
            return ray.get_runtime_context().get_node_id()

    actor = InGroup.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
        pg, placement_group_bundle_index=1)).remote()
    assert ray.get(actor.where.remote()) == table["bundles_to_node_id"][1]

    # Three 1-CPU bundles can't STRICT_PACK on any node: pending, not an error.
    too_big = placement_group([{"CPU": 1}] * 3, strategy="STRICT_PACK")
    assert not too_big.wait(timeout_seconds=0.5)
    assert placement_group_table(too_big)["state"] == "PENDING"
    remove_placement_group(too_big)
    remove_placement_group(pg)
    wait_for_condition(lambda: placement_group_table(pg)["state"] == "REMOVED")
    wait_for_condition(lambda: ray.available_resources().get("CPU", 0) >= 1)
    with pytest.raises(ValueError):
        placement_group([{"CPU": 1}], strategy="NOPE")
    with pytest.raises(ValueError):
        placement_group([{}])


def test_lost_objects_are_rebuilt_from_lineage(cluster):
    head, worker = _head_and_worker(cluster)
    strategy = NodeAffinitySchedulingStrategy(worker, soft=True)

    @ray.remote
    def produce(seed):
        return np.full(2_000_000, seed, dtype=np.int64)

    ref = produce.options(scheduling_strategy=strategy).remote(7)
    ray.wait([ref], timeout=30)
    put_ref = ray.put(np.ones(10))          # owned and stored by the driver's node
    cluster.kill_node(cluster.worker_nodes[0])
    value = ray.get(ref, timeout=60)         # its only copy died with the node
    assert value[0] == 7 and len(value) == 2_000_000
    assert ray.get(put_ref).sum() == 10


@pytest.mark.parametrize("num_returns", ["dynamic", "streaming"])
def test_lost_generator_items_are_rebuilt(cluster, num_returns):
    """A generator's values lost with their node come back by re-running
    the generator (a worker fetching one as an argument waits for it
    without holding its CPU, which the re-run may need)."""
    head, worker = _head_and_worker(cluster)
    strategy = NodeAffinitySchedulingStrategy(worker, soft=True)

    @ray.remote(num_returns=num_returns)
    def produce(n):
        for i in range(n):
            yield np.full(500_000, i, dtype=np.int64)

    @ray.remote
    def first(array):
        return int(array[0])

    result = produce.options(scheduling_strategy=strategy).remote(4)
    refs = list(ray.get(result) if num_returns == "dynamic" else result)
    assert len(refs) == 4
    ray.wait(refs, num_returns=4, timeout=30)
    cluster.kill_node(cluster.worker_nodes[0])
    assert ray.get([first.remote(ref) for ref in refs], timeout=60) == [0, 1, 2, 3]
    assert [int(ray.get(ref, timeout=60)[0]) for ref in refs] == [0, 1, 2, 3]


def test_copies_are_tracked_and_freed(cluster):
    head, worker = _head_and_worker(cluster)

    @ray.remote(resources={"special": 1})
    def consume(array):
        return int(array[0])

    ref = ray.put(np.full(4_000_000, 3, dtype=np.uint8))
    assert ray.get(consume.remote(ref)) == 3       # pulls a copy to the worker node
    from miniray.core_worker.object_ref import core_worker
    worker_core = core_worker()
    wait_for_condition(lambda: worker_core.locations.get(ref.id) == {bytes.fromhex(worker)})
    far = cluster.worker_nodes[0]
    far_store = _store_used_at(far)
    assert far_store >= 4_000_000
    del ref
    wait_for_condition(lambda: _store_used_at(far) < far_store, timeout=10)


def _store_used_at(node) -> int:
    from miniray.node import get_nodes
    from miniray.protocol import raylet_pb2, raylet_pb2_grpc
    from miniray.rpc.channels import authenticated, sync_channel
    info = next(n for n in get_nodes(ray.get_runtime_context().gcs_address)
                if n.node_id == node.node_id)
    with sync_channel(f"{info.ip}:{info.raylet_port}") as channel:
        stub = authenticated(raylet_pb2_grpc.RayletServiceStub(channel))
        return stub.GetNodeStats(raylet_pb2.GetNodeStatsRequest(), timeout=5).store_used


def test_placement_group_captures_child_tasks(cluster):
    from miniray.util import get_current_placement_group, placement_group
    from miniray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    head, worker = _head_and_worker(cluster)
    # One CPU: the child only fits because the parent lends its CPU while it
    # waits in get().
    pg = placement_group([{"CPU": 1}], strategy="STRICT_PACK")
    ray.get(pg.ready(), timeout=30)
    bundle_node = ray.util.placement_group_table(pg)["bundles_to_node_id"][0]

    @ray.remote(num_cpus=1)
    def child():
        return ray.get_runtime_context().get_node_id(), get_current_placement_group()

    @ray.remote(num_cpus=1)
    def parent():
        return ray.get(child.remote()), get_current_placement_group()

    strategy = PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)
    (child_node, child_pg), parent_pg = ray.get(
        parent.options(scheduling_strategy=strategy).remote(), timeout=30)
    assert child_node == bundle_node
    assert child_pg == pg and parent_pg == pg

    # placement_group=None (Ray's older option) opts a child out of capture.
    @ray.remote(num_cpus=0)
    def outside():
        return get_current_placement_group()

    @ray.remote(num_cpus=1)
    def parent_opting_out():
        return ray.get(outside.options(placement_group=None).remote())

    assert ray.get(parent_opting_out.options(scheduling_strategy=strategy).remote(),
                   timeout=30) is None

    # A pending group lists every bundle, with "" for where it is not placed.
    pending = placement_group([{"CPU": 100}, {"CPU": 1}])
    table = ray.util.placement_group_table(pending)
    assert table["state"] == "PENDING"
    assert table["bundles_to_node_id"] == {0: "", 1: ""}
    ray.util.remove_placement_group(pending)


def test_node_on_another_address():
    # 127.0.0.2 is loopback too: a second "machine" whose processes listen on
    # and advertise another address than the head's.
    cluster = Cluster()
    cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1, resources={"far": 1}, node_ip_address="127.0.0.2")
    cluster.wait_for_nodes()
    cluster.connect()
    try:
        @ray.remote(resources={"far": 1})
        def total(array):
            return int(array.sum())

        assert ray.get(total.remote(np.ones(2_000_000, dtype=np.int64))) == 2_000_000
        addresses = sorted(n["NodeManagerAddress"] for n in ray.nodes())
        assert addresses == ["127.0.0.1", "127.0.0.2"]
        assert ray.cluster_resources()["node:127.0.0.2"] == 1
    finally:
        cluster.shutdown()


def test_placement_group_bundles_move_off_a_dead_node():
    from miniray.util import placement_group, placement_group_table

    cluster = Cluster()
    cluster.add_node(num_cpus=2)
    doomed = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    cluster.connect()
    try:
        pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="SPREAD")
        ray.get(pg.ready(), timeout=30)
        placed = placement_group_table(pg)["bundles_to_node_id"]
        assert set(placed.values()) == {cluster.head_node.node_id.hex(), doomed.node_id.hex()}
        cluster.kill_node(doomed)
        head = cluster.head_node.node_id.hex()

        def moved():
            table = placement_group_table(pg)
            return table["state"] == "CREATED" and \
                set(table["bundles_to_node_id"].values()) == {head}

        wait_for_condition(moved, timeout=30)
    finally:
        cluster.shutdown()


def test_node_killed_under_load_loses_nothing(cluster):
    @ray.remote(max_retries=5, scheduling_strategy="SPREAD")
    def work(i):
        import time
        time.sleep(0.02)
        return np.full(20_000, i)      # big enough for the store

    refs = [work.remote(i) for i in range(120)]
    ray.wait(refs, num_returns=20, timeout=60)      # the far node is busy too
    cluster.kill_node(cluster.worker_nodes[0])
    values = ray.get(refs, timeout=120)
    assert [int(v[0]) for v in values] == list(range(120))


def test_an_actor_queued_on_a_busy_node_moves_to_one_that_frees_up():
    """As in Ray, a raylet spills queued actor creations back too: an actor
    sent to a node that is full moves to another node as soon as that one
    has room, instead of waiting for the first to free up."""
    from miniray.testing import SignalActor
    cluster = Cluster()
    try:
        first = cluster.add_node(num_cpus=1, resources={"slot": 1})
        second = cluster.add_node(num_cpus=1, resources={"slot": 1})
        cluster.wait_for_nodes()
        cluster.connect()

        @ray.remote(num_cpus=0, resources={"slot": 1})
        class Holder:
            def node(self):
                return ray.get_runtime_context().get_node_id()

        @ray.remote(num_cpus=0, resources={"slot": 1})
        def hold(signal):
            ray.get(signal.wait.remote())

        signal = SignalActor.options(num_cpus=0).remote()
        pinned = Holder.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            first.node_id.hex(), soft=False)).remote()
        assert ray.get(pinned.node.remote()) == first.node_id.hex()
        held = hold.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            second.node_id.hex(), soft=False)).remote(signal)
        wait_for_condition(lambda: ray.get(signal.cur_num_waiters.remote()) == 1,
                           timeout=30)
        wait_for_condition(lambda: ray.available_resources().get("slot", 0) == 0,
                           timeout=30)
        # Both nodes are full, as the GCS sees them: it sends the new actor
        # to one of them (the first, on a tie), where it queues.
        waiting = Holder.remote()
        ready, _ = ray.wait([waiting.node.remote()], timeout=1)
        assert not ready
        ray.get(signal.send.remote())
        ray.get(held, timeout=30)
        assert ray.get(waiting.node.remote(), timeout=30) == second.node_id.hex()
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_actors_created_together_spread_over_the_nodes_that_fit():
    # The GCS's view of free CPUs lags the raylets': all three may pick the
    # same node first, and its raylet sends the others on (spillback).
    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=0)
        for _ in range(3):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        cluster.connect()

        @ray.remote(num_cpus=1)
        class Where:
            def node(self):
                return ray.get_runtime_context().get_node_id()

        actors = [Where.remote() for _ in range(3)]
        nodes = ray.get([a.node.remote() for a in actors], timeout=60)
        assert sorted(nodes) == sorted(n.node_id.hex() for n in cluster.worker_nodes)
        # One that names no resources holds no CPU, yet needs a node that
        # has one: never the head's, which has none.
        @ray.remote
        class Plain:
            def node(self):
                return ray.get_runtime_context().get_node_id()

        plains = [Plain.remote() for _ in range(3)]
        head = cluster.head_node.node_id.hex()
        assert head not in ray.get([p.node.remote() for p in plains], timeout=60)
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_tasks_of_an_owner_on_a_dead_node_are_stopped_elsewhere():
    """Fate sharing across nodes: an actor on node A runs a task on node B;
    when A dies, B ends that task's lease (its owner is gone) and frees the
    resources it held, as in Ray."""
    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=0)
        parent = cluster.add_node(num_cpus=1, resources={"parent": 1})
        cluster.add_node(num_cpus=1, resources={"child": 1})
        cluster.wait_for_nodes()
        cluster.connect()

        @ray.remote(resources={"child": 1})
        def child():
            import time
            time.sleep(600)

        @ray.remote(resources={"child": 1})
        def probe():
            return "ran"

        @ray.remote(resources={"parent": 1})
        class Parent:
            def start_child(self):
                ray.get(child.remote())

        actor = Parent.remote()
        actor.start_child.remote()
        wait_for_condition(
            lambda: ray.available_resources().get("child", 0) == 0, timeout=30)
        cluster.kill_node(parent)
        assert ray.get(probe.remote(), timeout=60) == "ran"
    finally:
        cluster.shutdown()


def test_workers_know_their_raylet_and_die_with_it():
    """RAY_RAYLET_PID (Ray's name) in a worker is its raylet's pid; killing
    that raylet takes the node's workers with it."""
    import psutil
    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=0)
        node = cluster.add_node(num_cpus=1, resources={"doomed": 1})
        cluster.wait_for_nodes()
        cluster.connect()

        @ray.remote(resources={"doomed": 1})
        class Resident:
            def pids(self):
                return os.getpid(), int(os.environ["RAY_RAYLET_PID"])

        worker_pid, raylet_pid = ray.get(Resident.remote().pids.remote())
        assert raylet_pid in [p.pid for p in node.processes]
        psutil.Process(raylet_pid).kill()
        wait_for_condition(lambda: not psutil.pid_exists(worker_pid)
                           or psutil.Process(worker_pid).status() == psutil.STATUS_ZOMBIE,
                           timeout=30)
    finally:
        cluster.shutdown()


def test_a_task_waiting_on_a_dead_local_raylet_fails_with_local_raylet_died():
    """The driver's own raylet dies while a task waits there for a lease:
    the task fails with LocalRayletDiedError (LOCAL_RAYLET_DIED in the state
    API), as in Ray, instead of a generic system error."""
    from miniray.util.state import list_tasks
    cluster = Cluster()
    try:
        head = cluster.add_node(num_cpus=1, resources={"foo": 1})
        cluster.wait_for_nodes()
        cluster.connect()

        @ray.remote(resources={"foo": 1})
        def hold():
            import time
            time.sleep(600)

        hold.remote()
        waiting = hold.options(name="waits-for-a-lease").remote()

        def pending():
            tasks = list_tasks(filters=[("name", "=", "waits-for-a-lease")])
            return [t.state for t in tasks] == ["PENDING_NODE_ASSIGNMENT"]

        wait_for_condition(pending, timeout=30)
        for proc in head.processes:
            if "miniray.raylet" in proc.args:
                proc.kill()
                proc.wait()
        with pytest.raises(exceptions.LocalRayletDiedError,
                           match="failed to receive a response from the local raylet"):
            ray.get(waiting, timeout=30)

        def recorded():
            [task] = list_tasks(filters=[("name", "=", "waits-for-a-lease")], detail=True)
            return task.state == "FAILED" and task.error_type == "LOCAL_RAYLET_DIED"

        wait_for_condition(recorded, timeout=20)
    finally:
        cluster.shutdown()
