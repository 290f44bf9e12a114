"""Lease scheduling policy for one node, as pure state (no I/O).

Requests wait in arrival order; each scheduling pass grants, first-fit,
every request whose resources are free now. Resources of a lease whose
worker is blocked in ``get`` are lent back (CPU only, as in Ray) and
re-acquired when it unblocks, even if that oversubscribes the node.

As in Ray, the leases of one scheduling class (function, nesting depth,
resource shape) running at once are capped at what the node's CPUs hold
of that shape, blocked ones included: when they block in ``get`` on
deeper tasks, the lent CPUs go to those rather than to more of the same
(nested tasks would otherwise start a worker per queued task). Past the
cap, one more is let through after a delay that doubles with each one
(so tasks that wait on tasks of their own class still make progress).

A granted request also gets specific accelerator instances (GPU ids, ...;
see ``resource_instances``), which its lease holds until released. Placement
group bundles reserved here take their resources (and instances) out of
the node's and expose them under the bundle's names.
"""
from __future__ import annotations

import collections
import functools
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
    # An actor's placement resources (1 CPU by default): the node must have
    # them in total, and free nodes are preferred, but they are never held
    # nor waited for (Ray: "1 CPU for scheduling, 0 for running").
    placement: dict = field(default_factory=dict)
    actor_id: bytes = b""
    resource_ids: Assignment = field(default_factory=dict)   # set when granted
    spillable: bool = False   # may move to another node that has room first
    runtime_env: str = ""     # serialized: the worker must run in it
    depth: int = 0            # of its tasks (TaskSpec.depth)
    requester_node: bytes = b""   # the node the requester runs on (if known)
    root_detached: bytes = b""    # TaskSpec.root_detached_actor_id of its tasks

    @functools.cached_property
    def shape(self) -> tuple:
        """What it needs, hashable: requests of one shape fit or not alike."""
        return (tuple(sorted(self.resources.items())),
                tuple(sorted(self.placement.items())))

    @functools.cached_property
    def sched_class(self) -> tuple | None:
        """Ray's scheduling class, for the per-class cap (None: not capped:
        actors, and work that takes no CPU)."""
        if self.actor_id or not self.resources.get("CPU"):
            return None
        return (self.name, self.depth, tuple(sorted(self.resources.items())))


@dataclass
class Lease:
    lease_id: bytes
    resources: dict
    requester: bytes
    job_id: bytes
    worker_id: bytes = b""
    requester_node: bytes = b""
    blocked: bool = False
    actor_id: bytes = b""     # a dedicated actor worker: ends with the actor
    resource_ids: Assignment = field(default_factory=dict)   # instances held
    # For the memory monitor's kill order (memory_monitor.py), set when the
    # lease is handed to its requester: its tasks may be retried, and when.
    retriable: bool = False
    granted_at: float = 0.0
    runtime_env: str = ""
    sched_class: tuple | None = None    # counted against its class's cap while held
    # Its tasks descend from this detached actor: the worker is not ended
    # with the job's driver while the lease lasts.
    root_detached: bytes = b""


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
    # The per-class cap's backoff: the first delay past the cap, and its bound.
    cap_delay_s: float = 1.0
    cap_max_delay_s: float = 10.0

    def __post_init__(self):
        if not self.available:
            self.available = dict(self.total)
        self.instances = ResourceInstances(self.total)
        self.running: collections.Counter = collections.Counter()   # class -> leases
        self._admit_at: dict = {}        # class at its cap -> when one more may go

    def capacity(self, sched_class: tuple) -> int:
        cpus = dict(sched_class[2]).get("CPU", 0.0)
        return max(1, int(self.total.get("CPU", 0.0) / cpus)) if cpus else 1 << 30

    def at_cap(self, request: LeaseRequest, now: float) -> bool:
        """Would the cap hold this request back now? (Records when the
        next one of its class may go, the first time it is asked.)"""
        cls = request.sched_class
        if cls is None:
            return False
        over = self.running[cls] - self.capacity(cls)
        if over < 0:
            self._admit_at.pop(cls, None)
            return False
        if cls not in self._admit_at:
            delay = min(self.cap_max_delay_s, self.cap_delay_s * (1 << min(over, 30)))
            self._admit_at[cls] = now + delay
        return now < self._admit_at[cls]

    def next_admission(self) -> float | None:
        """When a class held at its cap may next let a request through."""
        if not self._admit_at:
            return None
        waiting = {r.sched_class for r in self.queue}
        times = [t for cls, t in self._admit_at.items() if cls in waiting]
        return min(times) if times else None

    def feasible(self, request: dict, placement: dict | None = None) -> bool:
        """Could the node ever grant this, with nothing else running?"""
        return res.fits(request, self.total) and res.fits(placement or {}, self.total) \
            and self.instances.feasible(request)

    def submit(self, request: LeaseRequest) -> None:
        self.queue.append(request)

    def schedule(self, now: float = 0.0) -> list[LeaseRequest]:
        """Grant every queued request that fits now and that its class's
        cap lets through, in order (first fit). The raylet calls again at
        ``next_admission()`` for requests held by a cap."""
        granted, waiting = [], []
        # Within one pass resources only get scarcer and capped classes stay
        # capped: a shape that did not fit, or a class held at its cap, is
        # not tried again (a long queue of one shape costs a lookup each).
        unfit: set = set()
        capped: set = set()
        for request in self.queue:
            shape, cls = request.shape, request.sched_class
            if shape in unfit or (cls is not None and cls in capped):
                waiting.append(request)
                continue
            if not (res.fits(request.resources, self.available)
                    and res.fits(request.placement, self.total)):
                unfit.add(shape)
                waiting.append(request)
                continue
            if self.at_cap(request, now):
                capped.add(cls)
                waiting.append(request)
                continue
            assignment = self.instances.allocate(request.resources)
            if assignment is None:
                unfit.add(shape)
                waiting.append(request)
                continue
            res.subtract(self.available, request.resources)
            request.resource_ids = assignment
            granted.append(request)
            if cls is not None:
                self.running[cls] += 1
                self._admit_at.pop(cls, None)   # the next one waits anew
        self.queue = waiting
        return granted

    def release(self, lease: Lease) -> None:
        res.add(self.available, self._held(lease))
        self.instances.free(lease.resource_ids)
        cls = lease.sched_class
        if cls is not None:
            self.running[cls] -= 1
            if self.running[cls] <= 0:
                del self.running[cls]
                self._admit_at.pop(cls, None)

    def set_blocked(self, lease: Lease, blocked: bool) -> bool:
        """Lend a blocked lease's CPUs back, or take them again."""
        if lease.blocked == blocked:
            return False
        (res.add if blocked else res.subtract)(self.available, _cpus(lease.resources))
        lease.blocked = blocked
        return True

    def cancel(self, requester: bytes = b"", node: bytes = b"") -> list[LeaseRequest]:
        """Drop the queued requests of ``requester``, or of every requester
        on ``node``."""
        if not (requester or node):
            return []

        def gone(r):
            return (r.requester == requester) if requester else (r.requester_node == node)
        dropped = [r for r in self.queue if gone(r)]
        self.queue = [r for r in self.queue if not gone(r)]
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

    def return_bundles(self, pg_id: bytes, indexes=None) -> bool:
        """Give a group's bundles (``indexes``: only those) back to the
        node. Leases in them must have been released first."""
        held = self.bundles.pop(pg_id, [])
        if indexes is None:
            bundles = held
        else:
            bundles = [b for b in held if b.index in indexes]
            kept = [b for b in held if b.index not in indexes]
            if kept:
                self.bundles[pg_id] = kept
        suffix = pg_id.hex()
        for bundle in bundles:
            res.subtract(self.total, bundle.exposed)
            res.subtract(self.available, bundle.exposed)
            res.add(self.available, bundle.resources)
            for name, ids in bundle.reservation.items():
                self.instances.remove_pool(f"{name}_group_{bundle.index}_{suffix}", ids)
                self.instances.remove_pool(f"{name}_group_{suffix}", ids)
            self.instances.free(bundle.reservation)
        # Names no bundle of the group exposes any more go (only the names
        # these bundles had: a node's map holds every group's).
        for key in {name for bundle in bundles for name in bundle.exposed}:
            if self.total.get(key, 0.0) <= 1e-9:
                self.total.pop(key, None)
                self.available.pop(key, None)
        return bool(bundles)

    def validate(self, leases=()) -> None:
        """Assert the instance invariants (see ResourceInstances.validate),
        given every lease granted and not yet released."""
        held = [lease.resource_ids for lease in leases]
        held += [b.reservation for group in self.bundles.values() for b in group]
        self.instances.validate(self.total, self.available, held)
        assert collections.Counter(lease.sched_class for lease in leases
                                   if lease.sched_class is not None) == self.running

    def _held(self, lease: Lease) -> dict:
        if not lease.blocked:
            return lease.resources
        return {k: v for k, v in lease.resources.items() if not _is_cpu(k)}


def _is_cpu(name: str) -> bool:
    """CPU, or a placement group bundle's CPU (CPU_group_...)."""
    return name == "CPU" or name.startswith("CPU_group_")


def _cpus(resources: dict) -> dict:
    return {k: v for k, v in resources.items() if _is_cpu(k)}
