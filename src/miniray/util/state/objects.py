"""Every object reference held in the cluster, as Ray's ``list_objects``
and ``ray memory`` see them: one record per (process, object).

Each live driver and worker answers GetObjectReferences with its
reference table (core_worker/object_references.py): counts of local refs,
pending tasks and containing objects, whether it owns the object, whether
a value read from the store still maps it, size, inline or store, the
creating task's status and the call site if recorded. The processes are
found through the GCS's node list and each raylet's ``ListWorkers`` (their
ports), asked in parallel with a timeout each, and each returns at most
``PER_PROCESS_LIMIT`` entries, largest first; what was cut or did not
answer is reported (``ObjectListing.truncated`` / ``missing``). The raylets'
``ListObjects`` add where each store object has copies (``locations``).
``reference_type`` and ``summarize`` are pure.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from miniray.protocol import core_worker_pb2 as cw_pb2, raylet_pb2
from miniray.util.state.common import ObjectState, RayStateApiException

__all__ = ["REFERENCE_TYPES", "reference_type", "ObjectListing", "collect",
           "to_records", "summarize", "PER_PROCESS_LIMIT", "PROCESS_TIMEOUT_S"]

log = logging.getLogger("miniray.state")

# Ray's reference types, in the order one entry's type is decided.
REFERENCE_TYPES = ("ACTOR_HANDLE", "PINNED_IN_MEMORY", "USED_BY_PENDING_TASK",
                   "LOCAL_REFERENCE", "CAPTURED_IN_OBJECT", "UNKNOWN_STATUS")
PER_PROCESS_LIMIT = 10_000          # entries one process returns
PROCESS_TIMEOUT_S = 10.0            # at most, per process
_STORAGE = {cw_pb2.ObjectReferenceInfo.INLINE: "INLINE",
            cw_pb2.ObjectReferenceInfo.STORE: "STORE",
            cw_pb2.ObjectReferenceInfo.UNKNOWN: "UNKNOWN"}


def reference_type(info) -> str:
    """Ray's reference type of one process's entry (an ObjectReferenceInfo):
    an actor handle; else a value read here still maps the store object;
    else pending tasks use it; else ObjectRefs to it live here; else it is
    inside another object's value."""
    from miniray.common.ids import ObjectID
    if ObjectID(info.object_id).is_actor_handle():
        return "ACTOR_HANDLE"
    if info.pinned_in_memory:
        return "PINNED_IN_MEMORY"
    if info.submitted_task_ref_count > 0:
        return "USED_BY_PENDING_TASK"
    if info.local_ref_count > 0:
        return "LOCAL_REFERENCE"
    if info.contained_in_count > 0:
        return "CAPTURED_IN_OBJECT"
    return "UNKNOWN_STATUS"


@dataclass(frozen=True)
class Process:
    """A live driver or worker, as its raylet lists it."""
    worker_id: str
    pid: int
    is_driver: bool
    ip: str
    port: int
    node_id: str

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def describe(self) -> str:
        return f"{'driver' if self.is_driver else 'worker'} pid={self.pid} on {self.ip}"


@dataclass
class ObjectListing:
    records: list = field(default_factory=list)
    truncated: dict = field(default_factory=dict)   # process -> (returned, total)
    missing: list = field(default_factory=list)     # processes that did not answer
    call_sites_recorded: bool = False


def to_records(process: Process, reply, locations: dict | None = None) -> list:
    """The ObjectState records of one process's reply (pure)."""
    from miniray.common.ids import ObjectID
    locations = locations or {}
    records = []
    for info in reply.refs:
        object_id = ObjectID(info.object_id)
        records.append(ObjectState(
            object_id=object_id.hex(), object_size=info.object_size,
            task_status=info.task_status or "NIL", attempt_number=info.attempt_number,
            reference_type=reference_type(info),
            call_site=info.call_site or "disabled",
            type="DRIVER" if process.is_driver else "WORKER",
            pid=process.pid, ip=process.ip, node_id=process.node_id,
            owner_worker_id=info.owner_worker_id.hex() or None,
            job_id=None if object_id.is_actor_handle()
            else object_id.task_id().job_id().hex(),
            locations=sorted(locations.get(info.object_id, ())),
            worker_id=process.worker_id, owned=info.owned,
            storage=_STORAGE.get(info.storage, "UNKNOWN"),
            local_ref_count=info.local_ref_count,
            submitted_task_ref_count=info.submitted_task_ref_count,
            contained_in_count=info.contained_in_count,
            num_borrowers=info.num_borrowers, pinned_in_memory=info.pinned_in_memory))
    return records


def _processes(client, raise_on_missing_output: bool) -> tuple[list, dict]:
    """The live processes with a server, and where each store object has
    copies (object id -> node ids), from every live node's raylet."""
    from miniray.util.state.api import _each_node
    processes, locations = [], {}
    for node, reply in _each_node(client, "ListWorkers", raylet_pb2.ListWorkersRequest(),
                                  raise_on_missing_output):
        for w in reply.workers:
            if w.is_alive and w.port:
                processes.append(Process(w.worker_id.hex(), w.pid, w.is_driver, node.ip,
                                         w.port, node.node_id.hex()))
        try:
            objects = client.raylet(node, "ListObjects", raylet_pb2.ListObjectsRequest())
        except (ConnectionError, RayStateApiException):
            continue
        for info in objects.objects:
            locations.setdefault(info.object_id, set()).add(node.node_id.hex())
    return processes, locations


def collect(client, raise_on_missing_output: bool = True,
            per_process_limit: int = PER_PROCESS_LIMIT) -> ObjectListing:
    """Ask every live process for its references, in parallel."""
    processes, locations = _processes(client, raise_on_missing_output)
    listing = ObjectListing()
    if not processes:
        return listing
    request = cw_pb2.GetObjectReferencesRequest(limit=per_process_limit)
    timeout = min(client.timeout, PROCESS_TIMEOUT_S)
    replies = client.core_workers([p.address for p in processes],
                                  "GetObjectReferences", request, timeout)
    for process, reply in zip(processes, replies):
        if isinstance(reply, Exception):
            if "UNAVAILABLE" not in str(reply):     # exited since: nothing to list
                listing.missing.append(f"{process.describe()}: {reply}")
            continue
        listing.records += to_records(process, reply, locations)
        listing.call_sites_recorded |= reply.call_sites_recorded
        if reply.total > len(reply.refs):
            listing.truncated[process.describe()] = (len(reply.refs), reply.total)
    listing.records.sort(key=lambda r: -r.object_size)
    return listing


def summarize(records: list, call_sites_recorded: bool) -> dict:
    """Ray's summarize_objects: counts and sizes by call site (pure)."""
    summary: dict = {}
    pids: dict = {}
    ips: dict = {}
    for obj in records:
        key = obj.call_site
        entry = summary.setdefault(key, {
            "total_objects": 0, "total_size_mb": 0.0, "total_num_workers": 0,
            "total_num_nodes": 0, "task_state_counts": {}, "ref_type_counts": {}})
        entry["total_objects"] += 1
        if obj.object_size > 0:
            entry["total_size_mb"] += obj.object_size / 1024 ** 2
        for counts, value in ((entry["task_state_counts"], obj.task_status),
                              (entry["ref_type_counts"], obj.reference_type)):
            counts[value] = counts.get(value, 0) + 1
        pids.setdefault(key, set()).add(obj.pid)
        ips.setdefault(key, set()).add(obj.ip)
    for key, entry in summary.items():
        entry["total_num_workers"] = len(pids[key])
        entry["total_num_nodes"] = len(ips[key])
    return {"cluster": {
        "summary": summary, "summary_by": "callsite", "total_objects": len(records),
        "total_size_mb": sum(o.object_size for o in records if o.object_size > 0)
        / 1024 ** 2,
        "callsite_enabled": call_sites_recorded}}


def warn_incomplete(listing: ObjectListing) -> None:
    for process, (shown, total) in listing.truncated.items():
        log.warning("%s references %d objects: listed its %d largest", process, total,
                    shown)
    for missing in listing.missing:
        log.warning("left out %s", missing)
