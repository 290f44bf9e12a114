"""Which accelerator instances (GPU ids, ...) each lease holds: pure state,
no I/O. The ``LeaseScheduler`` asks it before granting a request.

As in Ray: a node with ``num_gpus=N`` has GPU ids ``0..N-1`` of capacity
1 each (a fractional node total adds one last, partial id). A request for
a whole number of GPUs gets that many ids that are entirely free, lowest
first; a fractional request (< 1) goes to the id whose free fraction fits
it most tightly, so fractional leases pack onto shared ids and leave whole
ids whole. Amounts above 1 that are not whole are refused at the API; here
they would take whole ids plus a best-fit fraction, as Ray does.

A placement group bundle reserves instances out of the node's pool when
it is placed. The names the bundle exposes (``GPU_group_<i>_<pg>`` and the
group-wide ``GPU_group_<pg>``) each get a pool made of exactly the reserved
instances (the group-wide pool is the sum over the group's bundles on this
node), so a task in a bundle gets ids from that bundle's reservation.

Resources without instances (CPU, memory, custom ones) have no pool: an
assignment reports them as a single instance 0 holding the amount, which
is how Ray reports them to the worker.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from miniray.common.resources import ACCELERATOR_RESOURCES

EPS = 1e-9

# resource name -> instance id -> amount held (ids in ascending order)
Assignment = dict[str, dict[int, float]]


def node_instances(amount: float) -> dict[int, float]:
    """The instances of a node's accelerator resource: whole ids, then the
    fraction left over (if any) as one more id."""
    whole = int(math.floor(amount + EPS))
    instances = {i: 1.0 for i in range(whole)}
    rest = amount - whole
    if rest > EPS:
        instances[whole] = rest
    return instances


@dataclass
class InstancePool:
    capacity: dict[int, float]
    free: dict[int, float] = field(default_factory=dict)

    def __post_init__(self):
        if not self.free:
            self.free = dict(self.capacity)

    def take(self, demand: float) -> dict[int, float] | None:
        """The instances ``demand`` would take (Ray's policy), or None."""
        if demand <= EPS:
            return {}
        whole = int(math.floor(demand + EPS))
        rest = demand - whole
        taken: dict[int, float] = {}
        if whole:
            # Whole units only from ids that are entirely free.
            empty = [i for i in sorted(self.free) if self.free[i] >= 1.0 - EPS]
            if len(empty) < whole:
                return None
            taken = {i: 1.0 for i in empty[:whole]}
        if rest > EPS:
            # The tightest fit among ids not already taken; lowest id on ties.
            fits = [(self.free[i] - rest, i) for i in sorted(self.free)
                    if i not in taken and self.free[i] + EPS >= rest]
            if not fits:
                return None
            taken[min(fits)[1]] = rest
        return dict(sorted(taken.items()))

    def subtract(self, instances: Mapping[int, float]) -> None:
        for i, amount in instances.items():
            self.free[i] = _snap(self.free[i] - amount, self.capacity[i])

    def add(self, instances: Mapping[int, float]) -> None:
        for i, amount in instances.items():
            if i in self.free:
                self.free[i] = _snap(self.free[i] + amount, self.capacity[i])


def _snap(value: float, capacity: float) -> float:
    """Absorb float drift, so repeated 0.1s come back to exactly 0 or full."""
    if abs(value) <= EPS:
        return 0.0
    if abs(value - capacity) <= EPS:
        return capacity
    return value


class ResourceInstances:
    """The instance pools of one node, by resource name."""

    def __init__(self, total: Mapping[str, float]):
        self.pools: dict[str, InstancePool] = {
            name: InstancePool(node_instances(amount))
            for name, amount in total.items()
            if name in ACCELERATOR_RESOURCES and amount > EPS}

    # --- leases -------------------------------------------------------------
    def allocate(self, request: Mapping[str, float]) -> Assignment | None:
        """Take instances for every pooled resource of ``request``, all or
        nothing; the assignment also lists the other resources (instance 0)."""
        assignment: Assignment = {}
        for name, amount in request.items():
            if amount <= EPS:
                continue
            pool = self.pools.get(name)
            if pool is None:
                assignment[name] = {0: float(amount)}
                continue
            taken = pool.take(amount)
            if taken is None:
                self.free(assignment)
                return None
            pool.subtract(taken)
            assignment[name] = taken
        return assignment

    def free(self, assignment: Mapping[str, Mapping[int, float]]) -> None:
        """Give an assignment's instances back (names with no pool any more,
        such as a removed bundle's, are ignored)."""
        for name, instances in assignment.items():
            pool = self.pools.get(name)
            if pool is not None:
                pool.add(instances)

    def feasible(self, request: Mapping[str, float]) -> bool:
        """Could the request's pooled resources be assigned with nothing held?"""
        for name, amount in request.items():
            pool = self.pools.get(name)
            if pool is not None and InstancePool(dict(pool.capacity)).take(amount) is None:
                return False
        return True

    # --- placement group bundles -------------------------------------------
    def add_pool(self, name: str, instances: Mapping[int, float]) -> None:
        """Make ``instances`` (a bundle's reservation) available under ``name``;
        a pool that exists already grows by them."""
        pool = self.pools.get(name)
        if pool is None:
            self.pools[name] = InstancePool({i: a for i, a in instances.items() if a > EPS})
            return
        for i, amount in instances.items():
            pool.capacity[i] = pool.capacity.get(i, 0.0) + amount
            pool.free[i] = pool.free.get(i, 0.0) + amount

    def remove_pool(self, name: str, instances: Mapping[int, float]) -> None:
        """Undo add_pool; the pool goes once nothing is left in it."""
        pool = self.pools.get(name)
        if pool is None:
            return
        for i, amount in instances.items():
            if i not in pool.capacity:
                continue
            pool.capacity[i] = _snap(pool.capacity[i] - amount, 0.0)
            left = min(pool.free[i] - amount, pool.capacity[i])
            pool.free[i] = max(0.0, _snap(left, 0.0))
            if pool.capacity[i] <= EPS:
                del pool.capacity[i], pool.free[i]
        if not pool.capacity:
            del self.pools[name]

    # --- checking -----------------------------------------------------------
    def validate(self, total: Mapping[str, float], available: Mapping[str, float],
                 held: Iterable[Mapping[str, Mapping[int, float]]] | None = None,
                 tolerance: float = 1e-6) -> None:
        """Assert the invariants: no id over-allocated, every pool agrees with
        the scalar ``total``/``available``, and (given what every holder has,
        leases and bundle reservations) free + held == capacity per id."""
        for name, pool in self.pools.items():
            assert set(pool.free) == set(pool.capacity), name
            for i, capacity in pool.capacity.items():
                assert 0.0 < capacity <= 1.0 + tolerance, (name, i, capacity)
                assert -tolerance <= pool.free[i] <= capacity + tolerance, \
                    (name, i, pool.free[i], capacity)
            assert abs(sum(pool.capacity.values()) - total.get(name, 0.0)) <= tolerance, \
                (name, pool.capacity, total.get(name))
            assert abs(sum(pool.free.values()) - available.get(name, 0.0)) <= tolerance, \
                (name, pool.free, available.get(name))
        if held is None:
            return
        used: dict[str, dict[int, float]] = {name: {} for name in self.pools}
        for assignment in held:
            for name, instances in assignment.items():
                if name not in self.pools:
                    continue
                for i, amount in instances.items():
                    assert i in self.pools[name].capacity, (name, i)
                    used[name][i] = used[name].get(i, 0.0) + amount
        for name, pool in self.pools.items():
            for i, capacity in pool.capacity.items():
                total_i = pool.free[i] + used[name].get(i, 0.0)
                assert abs(total_i - capacity) <= tolerance, (name, i, total_i, capacity)
