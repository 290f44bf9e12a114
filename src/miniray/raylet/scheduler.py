"""Lease scheduling policy for one node, as pure state (no I/O).

Requests wait in arrival order; each scheduling pass grants, first-fit,
every request whose resources are free now. Resources of a lease whose
worker is blocked in ``get`` are lent back (CPU only, as in Ray) and
re-acquired when it unblocks, even if that oversubscribes the node.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from miniray.common import resources as res


@dataclass
class LeaseRequest:
    request_id: int
    resources: dict
    job_id: bytes
    requester: bytes          # WorkerID of the owner asking (empty: the GCS)
    name: str = ""
    placement: dict = field(default_factory=dict)   # must fit, not held
    actor_id: bytes = b""


@dataclass
class Lease:
    lease_id: bytes
    resources: dict
    requester: bytes
    job_id: bytes
    worker_id: bytes = b""
    blocked: bool = False
    actor_id: bytes = b""     # a dedicated actor worker: ends with the actor


@dataclass
class LeaseScheduler:
    total: dict
    available: dict = field(default_factory=dict)
    queue: list = field(default_factory=list)

    def __post_init__(self):
        if not self.available:
            self.available = dict(self.total)

    def feasible(self, request: dict, placement: dict | None = None) -> bool:
        """Could the node ever grant this, with nothing else running?"""
        return res.fits(request, self.total) and res.fits(placement or {}, self.total)

    def submit(self, request: LeaseRequest) -> None:
        self.queue.append(request)

    def schedule(self) -> list[LeaseRequest]:
        """Grant every queued request that fits now, in order (first fit)."""
        granted, waiting = [], []
        for request in self.queue:
            if res.fits(request.resources, self.available) and \
                    res.fits(request.placement, self.available):
                res.subtract(self.available, request.resources)
                granted.append(request)
            else:
                waiting.append(request)
        self.queue = waiting
        return granted

    def release(self, lease: Lease) -> None:
        res.add(self.available, self._held(lease))

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

    def _held(self, lease: Lease) -> dict:
        if not lease.blocked:
            return lease.resources
        return {k: v for k, v in lease.resources.items() if not _is_cpu(k)}


def _is_cpu(name: str) -> bool:
    """CPU, or a placement group bundle's CPU (CPU_group_...)."""
    return name == "CPU" or name.startswith("CPU_group_")


def _cpus(resources: dict) -> dict:
    return {k: v for k, v in resources.items() if _is_cpu(k)}
