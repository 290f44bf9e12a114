"""Unit tests for accelerator instance assignment (miniray.raylet.resource_instances
and its use by LeaseScheduler): which GPU ids each lease gets. No sockets."""
from __future__ import annotations

import itertools
import random

import pytest

from miniray.common.resources import bundle_resources
from miniray.raylet.resource_instances import (
    InstancePool, ResourceInstances, node_instances)
from miniray.raylet.scheduler import Lease, LeaseRequest, LeaseScheduler

JOB = b"job"
OWNER = b"owner"
PG = bytes.fromhex("ab" * 18)
SUFFIX = PG.hex()
_ids = itertools.count(1)


def req(resources: dict) -> LeaseRequest:
    return LeaseRequest(next(_ids), dict(resources), JOB, OWNER)


class Node:
    """A LeaseScheduler plus the leases it granted, checked after each step."""

    def __init__(self, total: dict):
        self.sched = LeaseScheduler(dict(total))
        self.leases: dict[int, Lease] = {}

    def submit(self, *shapes) -> list[LeaseRequest]:
        requests = [req(shape) for shape in shapes]
        for r in requests:
            self.sched.submit(r)
        return requests

    def schedule(self) -> list[LeaseRequest]:
        granted = self.sched.schedule()
        for r in granted:
            self.leases[r.request_id] = Lease(
                r.request_id.to_bytes(8, "big"), dict(r.resources), r.requester,
                r.job_id, resource_ids=r.resource_ids, sched_class=r.sched_class)
        self.validate()
        return granted

    def grant(self, *shapes) -> list[dict]:
        """Submit and schedule; every one must be granted. Their assignments."""
        requests = self.submit(*shapes)
        granted = self.schedule()
        assert [r.request_id for r in requests] == \
            [r.request_id for r in granted if r in requests]
        assert all(r in granted for r in requests)
        return [r.resource_ids for r in requests]

    def release(self, request: LeaseRequest | int) -> None:
        rid = request if isinstance(request, int) else request.request_id
        self.sched.release(self.leases.pop(rid))
        self.validate()

    def validate(self) -> None:
        self.sched.validate(self.leases.values())


def gpu_ids(assignment: dict, name: str = "GPU") -> list[int]:
    return sorted(assignment.get(name, {}))


# --- a node's instances ---------------------------------------------------------------

def test_node_instances():
    assert node_instances(0) == {}
    assert node_instances(1) == {0: 1.0}
    assert node_instances(3) == {0: 1.0, 1: 1.0, 2: 1.0}
    assert node_instances(1.5) == {0: 1.0, 1: 0.5}
    assert node_instances(0.25) == {0: 0.25}


def test_only_accelerators_have_pools():
    instances = ResourceInstances({"CPU": 4.0, "GPU": 2.0, "memory": 1e9, "custom": 3.0,
                                   "neuron_cores": 2.0, "TPU": 4.0, "NPU": 0.0})
    assert set(instances.pools) == {"GPU", "neuron_cores", "TPU"}


# --- whole GPUs -----------------------------------------------------------------------

def test_whole_gpus_get_distinct_ids_lowest_first():
    node = Node({"CPU": 4.0, "GPU": 2.0})
    a, b = node.grant({"CPU": 1, "GPU": 1}, {"CPU": 1, "GPU": 1})
    assert a["GPU"] == {0: 1.0} and b["GPU"] == {1: 1.0}
    # Other resources are reported as one instance 0 holding the amount.
    assert a["CPU"] == {0: 1.0}
    third, = node.submit({"GPU": 1})
    assert node.schedule() == []               # no GPU id left
    node.release(next(iter(node.leases)))       # the lease holding GPU 0
    assert node.schedule() == [third]
    assert third.resource_ids["GPU"] == {0: 1.0}


def test_multi_gpu_request_gets_distinct_whole_ids():
    node = Node({"GPU": 4.0})
    half, = node.grant({"GPU": 0.5})
    assert gpu_ids(half) == [0]
    two, = node.grant({"GPU": 2})
    assert two["GPU"] == {1: 1.0, 2: 1.0}      # whole ids only: not the shared 0
    # Two whole GPUs are not free (only 3 and half of 0), though 1.5 is.
    waiting, = node.submit({"GPU": 2})
    assert node.schedule() == []
    node.release(next(r for r in node.leases if node.leases[r].resource_ids == two))
    assert node.schedule() == [waiting]
    assert waiting.resource_ids["GPU"] == {1: 1.0, 2: 1.0}


def test_request_above_node_total_is_infeasible():
    sched = LeaseScheduler({"CPU": 2.0, "GPU": 2.0})
    assert sched.feasible({"GPU": 2})
    assert not sched.feasible({"GPU": 3})
    # 1.5 GPUs is two ids (1 and 0.5): a whole-GPU request fits only one.
    sched = LeaseScheduler({"GPU": 1.5})
    assert sched.feasible({"GPU": 1})
    assert sched.feasible({"GPU": 1.5})
    assert not sched.feasible({"GPU": 2})


# --- fractional GPUs ------------------------------------------------------------------

def test_fractions_pack_onto_one_id():
    node = Node({"GPU": 2.0})
    a, b = node.grant({"GPU": 0.5}, {"GPU": 0.5})
    assert a["GPU"] == {0: 0.5} and b["GPU"] == {0: 0.5}
    whole, = node.grant({"GPU": 1})
    assert whole["GPU"] == {1: 1.0}            # id 1 was left whole for it


def test_fraction_goes_to_the_tightest_fit():
    node = Node({"GPU": 3.0})
    quarter, = node.grant({"GPU": 0.75})       # id 0 has 0.25 left
    half, = node.grant({"GPU": 0.5})           # does not fit 0: goes to 1
    assert gpu_ids(quarter) == [0] and gpu_ids(half) == [1]
    small, = node.grant({"GPU": 0.25})         # exact fit on 0, not 1 or 2
    assert small["GPU"] == {0: 0.25}
    other, = node.grant({"GPU": 0.5})          # id 1's remaining half
    assert other["GPU"] == {1: 0.5}
    last, = node.grant({"GPU": 1})
    assert last["GPU"] == {2: 1.0}


def test_fragmented_fractions_do_not_make_a_whole_gpu():
    """0.3 free on each of two ids is 0.6 in total, but no 0.5 fits on one id:
    the request waits although the plain amounts would fit."""
    node = Node({"GPU": 2.0})
    a, b = node.submit({"GPU": 0.7}, {"GPU": 0.7})
    node.schedule()
    assert gpu_ids(a.resource_ids) == [0] and gpu_ids(b.resource_ids) == [1]
    waiting, = node.submit({"GPU": 0.5})
    assert node.sched.available["GPU"] == pytest.approx(0.6)
    assert node.schedule() == []
    assert node.sched.queue == [waiting]
    node.release(a)
    assert node.schedule() == [waiting]
    assert waiting.resource_ids["GPU"] == {0: 0.5}


def test_tenths_fill_an_id_exactly_and_come_back_whole():
    node = Node({"GPU": 1.0})
    tenths = node.submit(*[{"GPU": 0.1}] * 11)
    granted = node.schedule()
    assert granted == tenths[:10]
    assert all(r.resource_ids["GPU"] == {0: 0.1} for r in granted)
    assert node.sched.instances.pools["GPU"].free == {0: 0.0}
    for r in granted:
        node.release(r)
    assert node.sched.instances.pools["GPU"].free == {0: 1.0}
    assert node.schedule() == [tenths[10]]


def test_pool_take_is_all_or_nothing():
    pool = InstancePool({0: 1.0, 1: 1.0})
    pool.subtract({0: 0.5})
    assert pool.take(2) is None                 # only one whole id
    assert pool.free == {0: 0.5, 1: 1.0}        # nothing was taken
    assert pool.take(1.5) == {0: 0.5, 1: 1.0}   # whole id 1, the half of 0
    assert pool.take(0) == {}


def test_allocation_is_all_or_nothing_across_resources():
    instances = ResourceInstances({"GPU": 1.0, "TPU": 1.0})
    held = instances.allocate({"TPU": 1})
    assert held == {"TPU": {0: 1.0}}
    assert instances.allocate({"GPU": 1, "TPU": 1}) is None
    assert instances.pools["GPU"].free == {0: 1.0}    # the GPU was given back
    instances.free(held)
    assert instances.allocate({"GPU": 1, "TPU": 1}) == {"GPU": {0: 1.0}, "TPU": {0: 1.0}}


def test_other_accelerators_get_ids_too():
    node = Node({"CPU": 2.0, "neuron_cores": 2.0, "TPU": 4.0})
    a, b = node.grant({"neuron_cores": 1}, {"TPU": 2})
    assert a["neuron_cores"] == {0: 1.0}
    assert b["TPU"] == {0: 1.0, 1: 1.0}


def test_blocked_lease_keeps_its_gpu():
    """A task blocked in get lends its CPU, never its GPU id."""
    node = Node({"CPU": 1.0, "GPU": 1.0})
    first, = node.submit({"CPU": 1, "GPU": 1})
    node.schedule()
    lease = node.leases[first.request_id]
    assert node.sched.set_blocked(lease, True)
    second, = node.submit({"CPU": 1, "GPU": 1})
    assert node.schedule() == []
    cpu_only, = node.submit({"CPU": 1})
    assert node.schedule() == [cpu_only]
    node.sched.set_blocked(lease, False)
    node.release(cpu_only)
    node.release(first)
    assert node.schedule() == [second]


# --- placement group bundles ----------------------------------------------------------

def test_bundle_reserves_specific_ids_and_its_tasks_get_them():
    node = Node({"CPU": 4.0, "GPU": 2.0})
    outside, = node.grant({"GPU": 1})             # takes GPU 0
    assert gpu_ids(outside) == [0]
    assert node.sched.reserve_bundle(PG, 0, {"CPU": 1.0, "GPU": 1.0})
    node.validate()
    bundle = node.sched.bundles[PG][0]
    assert bundle.reservation == {"GPU": {1: 1.0}}
    assert node.sched.instances.pools[f"GPU_group_0_{SUFFIX}"].capacity == {1: 1.0}
    assert node.sched.instances.pools[f"GPU_group_{SUFFIX}"].capacity == {1: 1.0}
    # No plain GPU is left, though the bundle's is free.
    plain, = node.submit({"GPU": 1})
    inside, = node.submit({f"GPU_group_0_{SUFFIX}": 1, f"CPU_group_0_{SUFFIX}": 1})
    assert node.schedule() == [inside]
    assert inside.resource_ids[f"GPU_group_0_{SUFFIX}"] == {1: 1.0}
    assert inside.resource_ids[f"CPU_group_0_{SUFFIX}"] == {0: 1.0}
    node.release(inside)
    anywhere, = node.grant({f"GPU_group_{SUFFIX}": 1})
    assert anywhere[f"GPU_group_{SUFFIX}"] == {1: 1.0}
    node.release(next(iter(node.leases)))        # `outside`: GPU 0 is free again
    assert node.schedule() == [plain]
    assert gpu_ids(plain.resource_ids) == [0]


def test_bundles_on_distinct_ids_and_fractional_bundles_pack():
    node = Node({"CPU": 4.0, "GPU": 2.0})
    assert node.sched.reserve_bundle(PG, 0, {"GPU": 1.0})
    assert node.sched.reserve_bundle(PG, 1, {"GPU": 1.0})
    node.validate()
    assert [b.reservation for b in node.sched.bundles[PG]] == \
        [{"GPU": {0: 1.0}}, {"GPU": {1: 1.0}}]
    assert not node.sched.reserve_bundle(b"\x01" * 18, 0, {"GPU": 0.5})   # none left
    first, second = node.grant({f"GPU_group_1_{SUFFIX}": 1}, {f"GPU_group_0_{SUFFIX}": 1})
    assert gpu_ids(first, f"GPU_group_1_{SUFFIX}") == [1]
    assert gpu_ids(second, f"GPU_group_0_{SUFFIX}") == [0]
    for rid in list(node.leases):
        node.release(rid)
    assert node.sched.return_bundles(PG)
    node.validate()
    assert node.sched.instances.pools["GPU"].free == {0: 1.0, 1: 1.0}
    assert not any(SUFFIX in name for name in node.sched.instances.pools)

    other = bytes.fromhex("cd" * 18)
    assert node.sched.reserve_bundle(other, 0, {"GPU": 0.5})
    assert node.sched.reserve_bundle(other, 1, {"GPU": 0.5})
    node.validate()
    assert [b.reservation for b in node.sched.bundles[other]] == \
        [{"GPU": {0: 0.5}}, {"GPU": {0: 0.5}}]           # packed onto GPU 0
    wildcard = f"GPU_group_{other.hex()}"
    assert node.sched.instances.pools[wildcard].capacity == {0: 1.0}
    a, b = node.grant({f"GPU_group_0_{other.hex()}": 0.5},
                      {f"GPU_group_1_{other.hex()}": 0.5})
    assert list(a.values()) == [{0: 0.5}] and list(b.values()) == [{0: 0.5}]
    whole, = node.grant({"GPU": 1})
    assert whole["GPU"] == {1: 1.0}


def test_return_bundles_leaves_the_node_as_it_was():
    node = Node({"CPU": 2.0, "GPU": 2.0})
    before_total, before_available = dict(node.sched.total), dict(node.sched.available)
    assert node.sched.reserve_bundle(PG, 0, {"CPU": 1.0, "GPU": 1.5})
    exposed = bundle_resources(PG, 0, {"CPU": 1.0, "GPU": 1.5})
    assert all(node.sched.total[k] == v for k, v in exposed.items())
    node.validate()
    assert node.sched.bundles[PG][0].reservation == {"GPU": {0: 1.0, 1: 0.5}}
    assert node.sched.return_bundles(PG)
    assert not node.sched.return_bundles(PG)
    node.validate()
    assert node.sched.total == before_total
    assert node.sched.available == pytest.approx(before_available)


# --- randomized -----------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_randomized_instances_stay_consistent(seed):
    rng = random.Random(seed)
    node = Node({"CPU": 8.0, "GPU": 4.0, "TPU": 2.0})
    amounts = [0.1, 0.25, 0.5, 0.7, 1, 2, 3]
    groups: list[bytes] = []
    for step in range(2000):
        op = rng.random()
        if op < 0.35:
            shape = {"GPU": rng.choice(amounts)}
            if rng.random() < 0.3:
                shape["TPU"] = rng.choice([0.5, 1, 2])
            if groups and rng.random() < 0.3:
                pg = rng.choice(groups)
                bundles = node.sched.bundles[pg]
                bundle = rng.choice(bundles)
                tag = f"_group_{bundle.index}_{pg.hex()}" if rng.random() < 0.5 \
                    else f"_group_{pg.hex()}"
                shape = {"GPU" + tag: rng.choice([0.25, 0.5, 1])}
            node.submit(shape)
        elif op < 0.6:
            for r in node.schedule():
                for name, ids in r.resource_ids.items():
                    whole = [i for i, a in ids.items() if a >= 1 - 1e-9]
                    assert len(set(ids)) == len(ids)
                    if r.resources[name] >= 1:
                        assert len(whole) == int(r.resources[name]), (r.resources, ids)
        elif op < 0.85 and node.leases:
            node.release(rng.choice(sorted(node.leases)))
        elif op < 0.92 and len(groups) < 3:
            pg = rng.randbytes(18)
            sizes = [rng.choice([0.5, 1, 2]) for _ in range(rng.randint(1, 2))]
            placed = [node.sched.reserve_bundle(pg, i, {"GPU": s})
                      for i, s in enumerate(sizes)]
            if any(placed):
                groups.append(pg)
            node.validate()
        elif groups:
            pg = groups.pop(rng.randrange(len(groups)))
            for rid in [rid for rid, lease in node.leases.items()
                        if any(pg.hex() in k for k in lease.resources)]:
                node.release(rid)
            node.sched.queue = [r for r in node.sched.queue
                                if not any(pg.hex() in k for k in r.resources)]
            assert node.sched.return_bundles(pg)
            node.validate()
    for rid in list(node.leases):
        node.release(rid)
    for pg in groups:
        node.sched.return_bundles(pg)
    node.validate()
    pools = node.sched.instances.pools
    assert set(pools) == {"GPU", "TPU"}
    assert pools["GPU"].free == {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}
    assert pools["TPU"].free == {0: 1.0, 1: 1.0}


def test_bundle_names_round_trip():
    from miniray.common.resources import parse_bundle_name
    exposed = bundle_resources(PG, 3, {"GPU": 1.0, "CPU": 2.0})
    assert exposed[f"GPU_group_3_{SUFFIX}"] == 1.0
    assert exposed[f"CPU_group_{SUFFIX}"] == 2.0
    assert parse_bundle_name(f"GPU_group_3_{SUFFIX}") == ("GPU", 3)
    assert parse_bundle_name(f"GPU_group_{SUFFIX}") == ("GPU", -1)
    assert parse_bundle_name(f"neuron_cores_group_0_{SUFFIX}") == ("neuron_cores", 0)
    assert parse_bundle_name("GPU") == ("GPU", None)
    assert parse_bundle_name("my_resource") == ("my_resource", None)


def test_returning_some_of_a_groups_bundles_keeps_the_others():
    """A placement attempt rolled back returns only the bundles it reserved:
    a bundle kept from before (the group is placed again after a node died)
    stays reserved, with its resources and ids."""
    node = Node({"CPU": 4.0, "GPU": 2.0})
    assert node.sched.reserve_bundle(PG, 0, {"CPU": 1.0, "GPU": 1.0})   # kept
    assert node.sched.reserve_bundle(PG, 2, {"CPU": 2.0, "GPU": 1.0})   # this attempt
    node.validate()
    assert node.sched.return_bundles(PG, {2})
    node.validate()
    assert [b.index for b in node.sched.bundles[PG]] == [0]
    assert node.sched.available["CPU"] == 3.0 and node.sched.available["GPU"] == 1.0
    assert node.sched.total[f"CPU_group_{SUFFIX}"] == 1.0
    assert f"CPU_group_2_{SUFFIX}" not in node.sched.total
    assert node.sched.total[f"GPU_group_0_{SUFFIX}"] == 1.0
    kept, = node.grant({f"GPU_group_0_{SUFFIX}": 1})
    assert gpu_ids(kept, f"GPU_group_0_{SUFFIX}") == [0]
    node.release(next(iter(node.leases)))
    assert node.sched.return_bundles(PG)
    node.validate()
    assert PG not in node.sched.bundles and node.sched.available["GPU"] == 2.0
