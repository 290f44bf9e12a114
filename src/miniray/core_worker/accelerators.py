"""The resources and accelerator ids (GPU ids, ...) assigned to the task or
actor running in this worker, and the environment variables exposing them.

The raylet assigns instances to each lease (``RequestWorkerLeaseReply.
resource_ids``); the owner, or the GCS for an actor's creation, passes them
in ``PushTaskRequest.resource_ids``. The CoreWorker servicer hands them
here on the io thread (``stage``); the executor applies them on the thread
that runs the task, before user code (``apply``). As in Ray:

- a normal task or an actor's creation task sets ``CUDA_VISIBLE_DEVICES``
  to its GPU ids, comma-separated; one that holds none leaves the variable
  as the worker started with it (Ray 2.60; ``RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=1``
  brings back the older "" for no GPUs); unless
  ``RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES`` is set (likewise
  ``NEURON_RT_VISIBLE_CORES``, ``ASCEND_RT_VISIBLE_DEVICES`` and
  ``HABANA_VISIBLE_MODULES``; TPU ids are reported but ``TPU_VISIBLE_CHIPS``
  is left alone);
- an actor keeps its creation's assignment for life: its calls see the
  same ids and leave the environment as the actor left it;
- when the worker started with ``CUDA_VISIBLE_DEVICES`` set, id ``i`` means
  its ``i``-th entry, and ``get_gpu_ids()`` returns those entries as strings;
- ``OMP_NUM_THREADS`` is set likewise, to the CPUs the task or actor holds
  (rounded down, at least 1: an actor holding no CPU gets 1), unless the
  worker started with it set.

The assignment of the running call lives in a ``ContextVar``; the last
applied one is also kept process-wide, for the threads and event loop an
actor runs its calls on and for threads a task starts (a worker runs one
normal task or one actor at a time, so that is the right one there).
"""
from __future__ import annotations

import math
import os
import threading
from contextvars import ContextVar
from dataclasses import dataclass, field

from miniray.common.resources import ACCELERATOR_RESOURCES, parse_bundle_name
from miniray.protocol import common_pb2

VISIBLE_DEVICES_ENV = {
    "GPU": "CUDA_VISIBLE_DEVICES",
    "neuron_cores": "NEURON_RT_VISIBLE_CORES",
    "NPU": "ASCEND_RT_VISIBLE_DEVICES",
    "HPU": "HABANA_VISIBLE_MODULES",
    "TPU": "TPU_VISIBLE_CHIPS",
}
NOSET_ENV = {
    "GPU": "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES",
    "neuron_cores": "RAY_EXPERIMENTAL_NOSET_NEURON_RT_VISIBLE_CORES",
    "NPU": "RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES",
    "HPU": "RAY_EXPERIMENTAL_NOSET_HABANA_VISIBLE_MODULES",
}


@dataclass(frozen=True)
class Assignment:
    # resource name as leased (e.g. GPU_group_0_<pg>) -> ((instance id, amount), ...)
    resource_ids: dict = field(default_factory=dict)
    # original resource name -> amount, as get_assigned_resources() reports it
    resources: dict = field(default_factory=dict)


EMPTY = Assignment()

_current: ContextVar[Assignment | None] = ContextVar("miniray_assignment", default=None)
_process_wide: Assignment | None = None
_staged: dict[bytes, dict] = {}           # task id -> resource_ids, until it runs
_lock = threading.Lock()
_MAX_STAGED = 10_000


def _visible_from_env(var: str) -> list[str] | None:
    value = os.environ.get(var)
    if value is None:
        return None
    if value in ("", "NoDevFiles"):
        return []
    return value.split(",")


# What the worker process started with (read before any task changes it).
_ORIGINAL_VISIBLE = {name: _visible_from_env(var)
                     for name, var in VISIBLE_DEVICES_ENV.items()}
_USER_OMP_NUM_THREADS = os.environ.get("OMP_NUM_THREADS")
_STARTED_WITH = {var: os.environ.get(var) for var in VISIBLE_DEVICES_ENV.values()}


# --- the hooks ----------------------------------------------------------------------
def stage(request) -> None:
    """A PushTaskRequest arrived (io thread): keep its resource_ids until the
    task runs. Actor calls carry none: they keep their actor's."""
    spec = request.spec
    if spec.type == common_pb2.ACTOR_TASK:
        return
    ids = {name: tuple(zip(entry.ids, entry.amounts))
           for name, entry in request.resource_ids.items()}
    with _lock:
        if len(_staged) >= _MAX_STAGED:
            _staged.pop(next(iter(_staged)))
        _staged[bytes(spec.task_id)] = ids


def apply(spec) -> Assignment:
    """A normal task or an actor's creation task is about to run on this
    thread: make its assignment current and set the visible-device variables."""
    global _process_wide
    with _lock:
        ids = _staged.pop(bytes(spec.task_id), None) or {}
    assignment = make_assignment(ids, dict(spec.resources))
    _current.set(assignment)
    _process_wide = assignment
    set_visible_devices(assignment)
    set_omp_num_threads(assignment)
    return assignment


def make_assignment(resource_ids: dict, spec_resources: dict) -> Assignment:
    """The assignment for a lease's instances; the amounts come from the
    instances, or from the spec when the push carried none."""
    amounts = ({name: sum(a for _, a in pairs) for name, pairs in resource_ids.items()}
               if resource_ids else spec_resources)
    resources = {}
    for name, amount in amounts.items():
        base, _ = parse_bundle_name(name)
        if amount > 0 and base != "bundle":      # bundle_group_*: a placement marker
            resources[base] = float(amount)
    return Assignment(dict(resource_ids), resources)


def set_visible_devices(assignment: Assignment) -> None:
    override_on_zero = os.environ.get("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "").lower() \
        in ("1", "true")
    for name, var in VISIBLE_DEVICES_ENV.items():
        noset = NOSET_ENV.get(name)
        if noset is None or os.environ.get(noset):
            continue
        ids = visible_ids(name, assignment)
        value = ",".join(ids) if ids or override_on_zero else _STARTED_WITH[var]
        if os.environ.get(var) != value:        # putenv only on a change
            if value is None:
                del os.environ[var]
            else:
                os.environ[var] = value


def set_omp_num_threads(assignment: Assignment) -> None:
    """OMP_NUM_THREADS: the CPUs held, rounded down, at least 1 (as Ray), so
    numerical libraries do not start a thread per core in every worker."""
    if _USER_OMP_NUM_THREADS is not None:
        return                                  # the user's setting stays
    value = str(max(1, math.floor(assignment.resources.get("CPU", 0) + 1e-9)))
    if os.environ.get("OMP_NUM_THREADS") != value:
        os.environ["OMP_NUM_THREADS"] = value


# --- what the running code sees ----------------------------------------------------------
def current() -> Assignment:
    assignment = _current.get()
    if assignment is None:
        assignment = _process_wide
    return assignment if assignment is not None else EMPTY


def instance_ids(name: str, assignment: Assignment | None = None) -> list[int]:
    """The ids of resource ``name`` held, its placement group names included.
    When a lease holds both a bundle's name (GPU_group_<i>_<pg>) and the
    group-wide one (GPU_group_<pg>), the bundle's ids are the ones it reserved."""
    assignment = assignment or current()
    plain, wildcard, indexed = set(), set(), set()
    for leased, pairs in assignment.resource_ids.items():
        base, index = parse_bundle_name(leased)
        if base != name:
            continue
        target = plain if index is None else wildcard if index == -1 else indexed
        target.update(i for i, amount in pairs if amount > 0)
    return sorted(plain | (indexed or wildcard))


def visible_ids(name: str, assignment: Assignment | None = None) -> list[str]:
    """The ids as the device runtime knows them (through the worker's original
    visible-device list, when it had one)."""
    ids = instance_ids(name, assignment)
    original = _ORIGINAL_VISIBLE.get(name)
    if original is None:
        return [str(i) for i in ids]
    return [original[i] if i < len(original) else str(i) for i in ids]


def gpu_ids() -> list:
    """miniray.get_gpu_ids(): ints, or strings when the worker started with
    CUDA_VISIBLE_DEVICES set."""
    if _ORIGINAL_VISIBLE.get("GPU") is None:
        return instance_ids("GPU")
    return visible_ids("GPU")


def accelerator_ids() -> dict[str, list[str]]:
    """get_runtime_context().get_accelerator_ids()."""
    assignment = current()
    return {name: visible_ids(name, assignment) for name in ACCELERATOR_RESOURCES}


def assigned_resources() -> dict[str, float]:
    """get_runtime_context().get_assigned_resources()."""
    return dict(current().resources)
