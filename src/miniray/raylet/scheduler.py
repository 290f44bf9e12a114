"""Lease scheduling policy for one node, as pure state (no I/O).

Requests wait in arrival order; each scheduling pass grants, first-fit,
every request whose resources are free now. Resources of a lease whose
worker is blocked in ``get`` are lent back (CPU only, as in Ray) and
re-acquired when it unblocks, even if that oversubscribes the node.

A granted request also gets specific accelerator instances (GPU ids, ...;
see ``resource_instances``), which its lease holds until released. Placement
group bundles reserved here take their resources (and instances) out of
the node's and expose them under the bundle's names.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from miniray.common import resources as res
from miniray.raylet.resource_instances import Assignment, ResourceInstances


@dataclass
class LeaseRequest:
    request_id: int
    resources: dict
    job_id: bytes
    requester: bytes          # WorkerID of the owner asking (empty: the GCS)
    name: str = ""
    placement: dict = field(default_factory=dict)   # must fit, not held
    actor_id: bytes = b""
    resource_ids: Assignment = field(default_factory=dict)   # set when granted
    spillable: bool = False   # may move to another node that has room first
    runtime_env: str = ""     # serialized: the worker must run in it


@dataclass
class Lease:
    lease_id: bytes
    resources: dict
    requester: bytes
    job_id: bytes
    worker_id: bytes = b""
    blocked: bool = False
    actor_id: bytes = b""     # a dedicated actor worker: ends with the actor
    resource_ids: Assignment = field(default_factory=dict)   # instances held
    # For the memory monitor's kill order (memory_monitor.py), set when the
    # lease is handed to its requester: its tasks may be retried, and when.
    retriable: bool = False
    granted_at: float = 0.0
    runtime_env: str = ""


@dataclass
class Bundle:
    """A placement group bundle reserved on this node."""
    index: int
    resources: dict           # taken out of the node's resources
    exposed: dict             # the names it adds (bundle_resources)
    reservation: Assignment   # the node's instances it holds (GPU ids, ...)


@dataclass
class LeaseScheduler:
    total: dict
    available: dict = field(default_factory=dict)
    queue: list = field(default_factory=list)
    bundles: dict = field(default_factory=dict)      # pg id -> [Bundle]

    def __post_init__(self):
        if not self.available:
            self.available = dict(self.total)
        self.instances = ResourceInstances(self.total)

    def feasible(self, request: dict, placement: dict | None = None) -> bool:
        """Could the node ever grant this, with nothing else running?"""
        return res.fits(request, self.total) and res.fits(placement or {}, self.total) \
            and self.instances.feasible(request)

    def submit(self, request: LeaseRequest) -> None:
        self.queue.append(request)

    def schedule(self) -> list[LeaseRequest]:
        """Grant every queued request that fits now, in order (first fit)."""
        granted, waiting = [], []
        for request in self.queue:
            if res.fits(request.resources, self.available) and \
                    res.fits(request.placement, self.available):
                assignment = self.instances.allocate(request.resources)
                if assignment is not None:
                    res.subtract(self.available, request.resources)
                    request.resource_ids = assignment
                    granted.append(request)
                    continue
            waiting.append(request)
        self.queue = waiting
        return granted

    def release(self, lease: Lease) -> None:
        res.add(self.available, self._held(lease))
        self.instances.free(lease.resource_ids)

    def set_blocked(self, lease: Lease, blocked: bool) -> bool:
        """Lend a blocked lease's CPUs back, or take them again."""
        if lease.blocked == blocked:
            return False
        (res.add if blocked else res.subtract)(self.available, _cpus(lease.resources))
        lease.blocked = blocked
        return True

    def cancel(self, requester: bytes) -> list[LeaseRequest]:
        dropped = [r for r in self.queue if r.requester == requester]
        self.queue = [r for r in self.queue if r.requester != requester]
        return dropped

    # --- placement group bundles ----------------------------------------------------
    def reserve_bundle(self, pg_id: bytes, index: int, resources: dict) -> bool:
        """Take a bundle's resources and instances out of the node's and expose
        them under the bundle's names; False if they are not free now."""
        if not res.fits(resources, self.available):
            return False
        taken = self.instances.allocate(resources)
        if taken is None:
            return False
        reservation = {name: ids for name, ids in taken.items()
                       if name in self.instances.pools}
        res.subtract(self.available, resources)
        exposed = res.bundle_resources(pg_id, index, resources)
        res.add(self.total, exposed)
        res.add(self.available, exposed)
        suffix = pg_id.hex()
        for name, ids in reservation.items():
            self.instances.add_pool(f"{name}_group_{index}_{suffix}", ids)
            self.instances.add_pool(f"{name}_group_{suffix}", ids)
        self.bundles.setdefault(pg_id, []).append(
            Bundle(index, dict(resources), exposed, reservation))
        return True

    def return_bundles(self, pg_id: bytes) -> bool:
        """Give a group's bundles back to the node. Leases in them must have
        been released first."""
        bundles = self.bundles.pop(pg_id, [])
        suffix = pg_id.hex()
        for bundle in bundles:
            res.subtract(self.total, bundle.exposed)
            res.subtract(self.available, bundle.exposed)
            res.add(self.available, bundle.resources)
            for name, ids in bundle.reservation.items():
                self.instances.remove_pool(f"{name}_group_{bundle.index}_{suffix}", ids)
                self.instances.remove_pool(f"{name}_group_{suffix}", ids)
            self.instances.free(bundle.reservation)
        for key in [k for k, v in self.total.items() if k.endswith(suffix) and v <= 1e-9]:
            self.total.pop(key, None)
            self.available.pop(key, None)
        return bool(bundles)

    def validate(self, leases=()) -> None:
        """Assert the instance invariants (see ResourceInstances.validate),
        given every lease granted and not yet released."""
        held = [lease.resource_ids for lease in leases]
        held += [b.reservation for group in self.bundles.values() for b in group]
        self.instances.validate(self.total, self.available, held)

    def _held(self, lease: Lease) -> dict:
        if not lease.blocked:
            return lease.resources
        return {k: v for k, v in lease.resources.items() if not _is_cpu(k)}


def _is_cpu(name: str) -> bool:
    """CPU, or a placement group bundle's CPU (CPU_group_...)."""
    return name == "CPU" or name.startswith("CPU_group_")


def _cpus(resources: dict) -> dict:
    return {k: v for k, v in resources.items() if _is_cpu(k)}
